"""A store's records read straight from Redis, for tests that compare what
the engine wrote: the stream's document frequencies, and every key of a
store with its value (to compare two runs byte for byte)."""
from __future__ import annotations

import numpy as np

from storyengine.document_frequencies import as_base, fold
from storyengine.store import RedisStore
from storyengine.vectors import Vectorizer

# Wall-clock times in article hashes: two runs of the same stream differ in them.
TIME_FIELDS = {b"processed_ts", b"received_ts", b"received_at", b"processed_at"}


def all_df_counts(store: RedisStore) -> np.ndarray:
    """Every document frequency, read from Redis: {p}:df with {p}:df:deltas folded in."""
    k = store.keys
    return fold(store.redis.get(k.df), store.redis.lrange(k.df_deltas, 0, -1), store.settings.hash_features)


def df_counts(store: RedisStore, terms: list[str]) -> dict[str, int]:
    """The stream's document frequency of each term, read from Redis."""
    vec, counts = Vectorizer(store.settings.hash_features), all_df_counts(store)
    return {t: int(counts[vec.feature_of(t)]) for t in terms}


def df_docs(store: RedisStore) -> int:
    return int(store.redis.get(store.keys.df_docs) or 0)


def df_counts_of_features(store: RedisStore, features) -> np.ndarray:
    return all_df_counts(store)[np.asarray(features, dtype=np.int64)].astype(np.float64)


def state(store: RedisStore) -> dict[str, object]:
    """Every key under the store's prefix (prefix stripped) with its value,
    wall-clock fields, {p}:df:version and the change log ({p}:changes: one
    entry per transaction, so it differs between batch sizes) left out, and
    the document frequencies as counts (when deltas are folded depends on
    the batches too). Read in pipelines."""
    r, prefix = store.redis, store.keys.prefix
    keys = sorted(k for k in r.scan_iter(match=f"{prefix}:*", count=1000)
                  if not k.endswith((b":df", b":df:deltas", b":df:version", b":clock:seen", b":changes")))
    with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        kinds = pipe.execute()
    with r.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, kinds):
            if kind == b"hash":
                pipe.hgetall(key)
            elif kind == b"zset":
                pipe.zrange(key, 0, -1, withscores=True)
            elif kind == b"set":
                pipe.smembers(key)
            else:
                pipe.get(key)
        values = pipe.execute()
    out = {}
    for key, value in zip(keys, values):
        if isinstance(value, dict):
            value = {f: v for f, v in value.items() if f not in TIME_FIELDS
                     and not (key.endswith(b":metrics") and f.startswith(b"latency"))}  # wall-clock waits
        out[key.decode()[len(prefix) + 1:]] = value
    counts = all_df_counts(store)
    if counts.any():
        out["df"] = as_base(counts)
    return out
