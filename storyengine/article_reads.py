"""Reading articles: one as a reader is given it (get_article), whole ones
for deciding (load_articles), and the two times metrics need
(processing_times). Part of :class:`storyengine.store.RedisStore`."""
from __future__ import annotations

import json
import zlib

from redis import Redis

from .keys import Keys
from .missing import missing
from .records import ARTICLE_PUBLIC_FIELDS, decode
from .settings import Settings

_BINARY_FIELDS = frozenset({"bands", "shingle_set", "centroid", "rep_vec", "terms", "decision"})


def decode_hash(raw: dict) -> dict:
    """Field names and text values as str; binary fields (signatures, vectors) left as bytes."""
    out = {}
    for k, v in raw.items():
        name = decode(k)
        out[name] = v if name in _BINARY_FIELDS else decode(v)
    return out


class ArticleReads:
    """Reads of the article hash; uses the store's ``redis``, ``keys`` and ``settings``."""
    redis: Redis
    keys: Keys
    settings: Settings

    def get_article(self, article_id: str) -> dict:
        """The article's stored fields (ARTICLE_PUBLIC_FIELDS), parsed (see article_record)."""
        raw = self.redis.hmget(self.keys.article(article_id), ARTICLE_PUBLIC_FIELDS)
        if raw[0] is None:
            raise missing(self.redis, self.keys, self.settings, "article", article_id)
        return article_record(dict(zip(ARTICLE_PUBLIC_FIELDS, raw)))

    def load_article(self, article_id: str) -> dict | None:
        """Everything stored for an article, for processing."""
        return self.load_articles([article_id])[0]

    def load_articles(self, article_ids: list[str]) -> list[dict | None]:
        """Everything stored for each article (None if there is none), in one round trip.
        (A decided article's body is not kept: only queued ones have it.)"""
        with self.redis.pipeline(transaction=False) as pipe:
            for article_id in article_ids:
                pipe.hgetall(self.keys.article(article_id))
            rows = pipe.execute()
        return [decode_hash(raw) if raw else None for raw in rows]

    def processing_times(self, article_ids: list[str]) -> list[tuple[float | None, float | None]]:
        """(received, processed) epoch seconds per article, None where not (yet) known."""
        with self.redis.pipeline(transaction=False) as pipe:
            for article_id in article_ids:
                pipe.hmget(self.keys.article(article_id), ("received_ts", "processed_ts"))
            rows = pipe.execute()
        return [(float(r) if r else None, float(p) if p else None) for r, p in rows]


def article_record(raw: dict) -> dict:
    """An article's fields as read, parsed: text as str, empty or missing ones
    None, times (``*_ts``) and the similarity as floats, the decision
    decompressed, the two flags as bools."""
    record = {name: (decode(value) or None) for name, value in raw.items() if name != "decision"}
    if "decision" in raw:  # stored compressed (storyengine.records.compact_decision)
        record["decision"] = json.loads(zlib.decompress(raw["decision"])) if raw["decision"] else None
    for name in ("similarity", "published_ts", "received_ts", "processed_ts"):
        if record.get(name) is not None:
            record[name] = float(record[name])
    # The article came without a date and took the stream's time (storyengine.clock).
    if "published_assigned" in record:
        record["published_assigned"] = record["published_assigned"] == "1"
    # The article came without a title and its headline was made from its body.
    if "title_derived" in record:
        record["title_derived"] = record["title_derived"] == "1"
    return record
