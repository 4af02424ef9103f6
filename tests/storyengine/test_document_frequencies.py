"""The document frequencies' record (storyengine.document_frequencies): a
delta appended or the counters folded, against a real Redis, count as
BITFIELD's saturating u32 counters did; a fold computed at a version that is
no longer current is appended as a delta instead."""
from __future__ import annotations

import numpy as np

from storyengine.document_frequencies import DELTA, as_base, fold, pack_delta
from storyengine.redis_scripts import DF_CHANGE

N = 64


def df_change(store, delta: bytes, docs: int, folded: bytes = b"", at_version: int | str = b""):
    k = store.keys
    return store.redis.register_script(DF_CHANGE)(keys=[k.df, k.df_deltas, k.df_docs, k.df_version],
                                                  args=[delta, docs, folded, at_version])


def stored(store) -> np.ndarray:
    k = store.keys
    return fold(store.redis.get(k.df), store.redis.lrange(k.df_deltas, 0, -1), N)


def test_deltas_and_folds_count_as_saturating_u32_counters(fresh_store):
    store = fresh_store("df")
    bitfield = f"{store.keys.prefix}:bitfield-control"
    rng = np.random.default_rng(5)
    expected = np.zeros(N, dtype=np.int64)
    expected[3] = 2 ** 32 - 3  # near the top: saturates
    store.redis.set(store.keys.df, as_base(expected))
    store.redis.set(bitfield, as_base(expected))
    for step in range(40):
        changes = np.zeros(N, dtype=np.int64)
        picked = rng.choice(N, size=12, replace=False)
        changes[picked] = rng.integers(-3, 4, size=12)
        changes[3] = 2
        delta = pack_delta(changes)
        assert len(delta) == DELTA.itemsize * np.count_nonzero(changes)
        ops = [x for f in np.flatnonzero(changes) for x in ("INCRBY", "u32", f"#{f}", int(changes[f]))]
        store.redis.execute_command("BITFIELD", bitfield, "OVERFLOW", "SAT", *ops)
        control = np.frombuffer(store.redis.get(bitfield), dtype=">u4").astype(np.int64)
        if step % 7 == 6:  # a fold: the counters after this change, computed from what is stored
            after = np.clip(stored(store) + changes, 0, 2 ** 32 - 1)
            df_change(store, delta, 1, as_base(after), store.redis.get(store.keys.df_version) or b"0")
            assert store.redis.llen(store.keys.df_deltas) == 0
        else:
            df_change(store, delta, 1)
        assert np.array_equal(stored(store), control), step
    assert stored(store)[3] == 2 ** 32 - 1
    assert int(store.redis.get(store.keys.df_docs)) == 40 == int(store.redis.get(store.keys.df_version))


def test_a_fold_made_at_an_old_version_is_appended_as_a_delta(fresh_store):
    store = fresh_store("df-stale")
    one = np.zeros(N, dtype=np.int64)
    one[[1, 2]] = 1
    df_change(store, pack_delta(one), 1)  # version 1
    # Folded by someone who read version 0: it would lose the change above.
    df_change(store, pack_delta(one), 1, as_base(one), 0)
    assert store.redis.llen(store.keys.df_deltas) == 2
    assert stored(store)[[0, 1, 2]].tolist() == [0, 2, 2]
    assert int(store.redis.get(store.keys.df_version)) == 2
