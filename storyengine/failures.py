"""Queued articles whose decision did not happen: the tries that ended in an
error of ours counted, a failure filed with its reason, and articles whose
task was lost claimed to be sent again. Each is one Lua step that checks the
article is still queued, so it never undoes a decision made meanwhile. Part
of :class:`storyengine.store.RedisStore`."""
from __future__ import annotations

import time
from functools import cached_property
from typing import Iterable

from redis import Redis

from .keys import Keys
from .records import decode
from .redis_scripts import DROP_TEXT_FUNCTION

# Marking an article failed never overwrites a success: a redelivered task can
# fail after another delivery of it already processed the article. A failure
# is filed by the stream's time when it failed (the clock; before any clock,
# its own date, never ahead of now), so retention keeps its reason as long as
# it would keep an article decided then, however far ahead it was dated.
_MARK_FAILED = DROP_TEXT_FUNCTION + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2], 'failed_ts', ARGV[3])
drop_text(KEYS[1])  -- never decided now: the text is not needed
redis.call('ZREM', KEYS[2], ARGV[1])
local at = tonumber(redis.call('GET', KEYS[4]) or '')
if not at then  -- no clock yet: its own time (never ahead of now), else now
  at = math.min(tonumber(redis.call('HGET', KEYS[1], 'published_ts') or '') or tonumber(ARGV[3]), tonumber(ARGV[3]))
end
redis.call('ZADD', KEYS[3], at, ARGV[1])
local kind = redis.call('TYPE', KEYS[5]).ok
if kind == 'hash' or kind == 'none' then redis.call('HINCRBY', KEYS[5], 'articles_failed', 1) end
return 1
"""

# One more try at deciding an article that ended in an error of ours; the
# number of tries so far. Only while it is still queued.
_COUNT_ATTEMPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1])
return n
"""

# Claim articles that have waited in the queue too long (their task was lost:
# a broker that lost data, retries given up while Redis was away) so they
# can be sent again; their wait starts afresh, so one claim sends each once.
# KEYS: queued. ARGV: the highest score claimed (a number, or '(' and a
# number: below it), now, how many at most, then ids to leave alone (their
# task is being worked on). The ids skipped are read past, so they never use
# up the limit and a loop of claims ends.
_CLAIM_STALE = """
local limit, skip = tonumber(ARGV[3]), {}
for i = 4, #ARGV do skip[ARGV[i]] = true end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit + #ARGV - 3)
local out = {}
for _, id in ipairs(ids) do
  if #out >= limit then break end
  if not skip[id] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    out[#out + 1] = id
  end
end
return out
"""


class Failures:
    """Failure bookkeeping of queued articles; uses the store's ``redis`` and ``keys``."""
    redis: Redis
    keys: Keys

    @cached_property
    def _mark_failed(self):
        return self.redis.register_script(_MARK_FAILED)

    @cached_property
    def _count_attempt(self):
        return self.redis.register_script(_COUNT_ATTEMPT)

    @cached_property
    def _claim_stale(self):
        return self.redis.register_script(_CLAIM_STALE)

    def mark_failed(self, article_id: str, reason: str) -> bool:
        """Record why an article could not be processed, and count it failed,
        in one step. Does nothing (and says so) if it was processed or failed
        meanwhile, or does not exist."""
        k = self.keys
        return bool(self._mark_failed(keys=[k.article(article_id), k.queued, k.failed, k.clock, k.metrics],
                                      args=[article_id, reason[:500], round(time.time(), 3)]))

    def count_attempt(self, article_id: str, reason: str) -> int:
        """Count one more try at deciding a still-queued article that ended in
        an error of ours; the tries so far (-1 if it is not queued any more)."""
        return int(self._count_attempt(keys=[self.keys.article(article_id)], args=[reason[:500]]))

    def claim_stale_queued(self, older_than_seconds: float, limit: int = 1000, *, sent_before: float | None = None,
                           skip: Iterable[str] = ()) -> list[str]:
        """Ids queued for longer than ``older_than_seconds`` and, when
        ``sent_before`` is given, queued (their last task sent) strictly before
        that time; ids in ``skip`` are left alone. Oldest first, at most
        ``limit``. Each is claimed (its wait restarts now), so it is handed out
        once per period and a loop of claims ends (workers.tasks.requeue_stale)."""
        now = time.time()
        highest: float | str = now - older_than_seconds
        if sent_before is not None and sent_before <= highest:
            highest = f"({sent_before!r}"
        ids = self._claim_stale(keys=[self.keys.queued], args=[highest, now, limit, *skip])
        return [decode(i) for i in ids]
