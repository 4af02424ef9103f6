"""Reading articles: one as a reader is given it (get_article), whole ones
for deciding (load_articles), and the two times metrics need
(processing_times). Part of :class:`storyengine.store.RedisStore`."""
from __future__ import annotations

from redis import Redis

from .keys import Keys
from .missing import missing
from .records import ARTICLE_PUBLIC_FIELDS, article_record, decode_hash
from .settings import Settings

class ArticleReads:
    """Reads of the article hash; uses the store's ``redis``, ``keys`` and ``settings``."""
    redis: Redis
    keys: Keys
    settings: Settings

    def get_article(self, article_id: str) -> dict:
        """The article's stored fields (ARTICLE_PUBLIC_FIELDS), parsed (records.article_record)."""
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
