"""The Redis store callers hold: one client with its keys and settings, and
the store's jobs, each in a module of its own and mixed in here. Each part
uses only ``redis``, ``keys`` and ``settings``:

    admission.ArticleAdmission  accepting a post's articles; forgetting one whose task was not sent
    article_reads.ArticleReads  an article as a reader is given it, whole ones for deciding, their times
    failures.Failures           tries counted, failures filed, lost tasks claimed again
    story_reads.StoryReads      a story with its members, where a merged one went, the listings

Every key comes from :class:`storyengine.keys.Keys`. Reads are pipelined so a
request or a processing step costs one round trip per stage. How each write
stays correct when several processes race is said where the write is made.
"""
from __future__ import annotations

from typing import Iterable

import redis

from .admission import ArticleAdmission
from .article_reads import ArticleReads
from .errors import StoreUnavailable
from .failures import Failures
from .keys import Keys
from .settings import Settings
from .story_reads import StoryReads


def out_of_memory(exc: BaseException) -> bool:
    """Redis at maxmemory (noeviction) refusing a write: a plain command's
    OutOfMemoryError (whose text has lost the OOM code), or a script's error quoting it."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and "OOM command not allowed" in str(exc))


# Redis Cluster's answers, as redis-py raises them: the node does not serve
# this deployment's slot (MOVED is an AskError: REDIS_URL names another shard,
# or the slot moved), or the Cluster cannot serve it now (CLUSTERDOWN and
# MASTERDOWN are ClusterDownErrors; TRYAGAIN). Outages, not errors of ours.
SLOT_ELSEWHERE = (redis.exceptions.AskError,)
CLUSTER_BUSY = (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)


def connect(url: str, **kwargs) -> redis.Redis:
    """A client with timeouts, so a dead Redis is an error rather than a hang."""
    options = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, "health_check_interval": 30}
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


class RedisStore(ArticleAdmission, ArticleReads, Failures, StoryReads):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def clear(self) -> int:
        """Delete every key under this store's prefix (tests and evaluation runs)."""
        deleted = 0
        for batch in _chunks(self.redis.scan_iter(match=self.keys.all_pattern(), count=1000), 500):
            deleted += self.redis.delete(*batch)
        return deleted


def _chunks(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
