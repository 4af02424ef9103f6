"""Accepting posted articles: every article of a post stored as queued in
one atomic step, or none; and undoing the accept of one whose task could not
be sent. Part of :class:`storyengine.store.RedisStore`."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import cached_property

from redis import Redis

from .clock import DAY
from .errors import QueueFull
from .keys import Keys
from .records import decode
from .settings import Settings

# Accepting a post is one atomic script for all its articles, so two clients
# posting the same article at once get the same id and exactly one of them
# stores it; a post past the waiting limit stores nothing; and the accepted
# counter moves in the same step as the articles it counts.
# KEYS: queued, metrics, clock, then (article, article-ref) per article.
# ARGV: now, max waiting, retention seconds, resend seconds, then per article:
# id, published ('' when undated), field count, fields...
# Per article: {1, id} stored; {0, id, status[, 'resend']} known (same id with
# the same source and URL, or the same source and URL under any id; 'resend':
# still waiting, its task sent more than resend seconds ago: send it again); {2, id, clock}
# older than the retention window on the stream clock; {3, id, source, url}
# the id names another article. Whole post: {{-1, waiting}} over the limit.
_ACCEPT = """
local now, limit, retention, resend = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = tonumber(redis.call('GET', KEYS[3]) or '')
local plan, pos, new = {}, 5, 0
local planned_ids, planned_refs = {}, {}  -- what this post stores, so a repeat inside it is known too
for i = 1, (#KEYS - 3) / 2 do
  local akey, rkey = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local id, published, nfields = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local row
  if planned_ids[id] then
    if planned_ids[id] == rkey then row = {0, id, ''} else row = {3, id, '', ''} end
  elseif planned_refs[rkey] then
    row = {0, planned_refs[rkey], ''}
  elseif redis.call('EXISTS', akey) == 1 then
    if redis.call('GET', rkey) == id then
      row = {0, id, redis.call('HGET', akey, 'status') or ''}
    else
      local stored = redis.call('HMGET', akey, 'source', 'url')
      row = {3, id, stored[1] or '', stored[2] or ''}
    end
  else
    local existing = redis.call('GET', rkey)
    if existing then
      -- the same source and URL under another id: that article (same hash tag, same slot)
      local key = string.sub(akey, 1, #akey - #id) .. existing
      row = {0, existing, redis.call('HGET', key, 'status') or ''}
    elseif published ~= '' and clock and tonumber(published) < clock - retention then
      row = {2, id, tostring(clock)}
    else
      row = {1, id}
      new = new + 1
      planned_ids[id] = rkey
      planned_refs[rkey] = id
    end
  end
  plan[i] = {row, pos + 3, nfields}
  pos = pos + 3 + nfields
end
local waiting = redis.call('ZCARD', KEYS[1])
if new > 0 and waiting + new > limit then return {{-1, waiting}} end
local out = {}
for i, item in ipairs(plan) do
  local row = item[1]
  if row[1] == 1 then
    local fields = {}
    for j = item[2], item[2] + item[3] - 1 do fields[#fields + 1] = ARGV[j] end
    redis.call('HSET', KEYS[2 + 2 * i], unpack(fields))
    redis.call('SET', KEYS[3 + 2 * i], row[2])
    redis.call('ZADD', KEYS[1], now, row[2])
  elseif row[1] == 0 and row[3] == 'queued' then
    -- a client's retry of an article still waiting, its task sent more than
    -- resend seconds ago: its task is sent again and its wait restarts (see
    -- claim_stale_queued); a retry sooner than that sends nothing more
    local sent = tonumber(redis.call('ZSCORE', KEYS[1], row[2]) or '')
    if sent and sent < tonumber(now) - resend then
      redis.call('ZADD', KEYS[1], 'XX', now, row[2])
      row[4] = 'resend'
    end
  end
  out[i] = row
end
-- counted in the same step (a metrics key broken by hand must not refuse articles)
local kind = redis.call('TYPE', KEYS[2]).ok
if new > 0 and (kind == 'hash' or kind == 'none') then redis.call('HINCRBY', KEYS[2], 'articles_accepted', new) end
return out
"""

# Undo an accept whose enqueue failed: only while the article is still queued,
# so a worker that already picked it up is never undercut; the accepted
# counter goes back with it.
_FORGET = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
-- another client's retry sent its task since (its wait restarted): it stays
if tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or '') ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('TYPE', KEYS[4]).ok == 'hash' then
  -- taken back; a hash left holding only that zero was made by this accept: nothing stays
  if redis.call('HINCRBY', KEYS[4], 'articles_accepted', -1) == 0 and redis.call('HLEN', KEYS[4]) == 1 then
    redis.call('DEL', KEYS[4])
  end
end
return 1
"""

# Fields of a new article record that the store derives instead of keeping.
_DERIVED_FIELDS = frozenset({"published_at", "received_at", "canonical_url", "accepted_at"})

# A retry of an article still waiting sends its task again only if the last
# one went out longer ago than this: a client retrying after a lost task gets
# it sent, one retrying in a loop (or eight posting at once) does not multiply tasks.
RESEND_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Admission:
    """What the store did with one posted article."""
    id: str
    outcome: str  # "created", "known", "too_old" or "conflict"
    status: str | None = None  # known: the article's status now ("queued", "processed", "failed")
    clock: float | None = None  # too_old: the stream clock it was measured against
    stored: tuple[str, str] | None = None  # conflict: (source, url) the id already names
    resend: bool = False  # known and still waiting, its task sent a while ago: send it again

    @property
    def created(self) -> bool:
        return self.outcome == "created"

    @classmethod
    def from_row(cls, row: list) -> "Admission":
        code, article_id = row[0], decode(row[1])
        if code == 1:
            return cls(article_id, "created")
        if code == 0:
            return cls(article_id, "known", status=decode(row[2]) or None, resend=len(row) > 3)
        if code == 2:
            return cls(article_id, "too_old", clock=float(row[2]))
        return cls(article_id, "conflict", stored=(decode(row[2]), decode(row[3])))


class ArticleAdmission:
    """Admitting posted articles; uses the store's ``redis``, ``keys`` and ``settings``."""
    redis: Redis
    keys: Keys
    settings: Settings

    @cached_property
    def _accept(self):
        return self.redis.register_script(_ACCEPT)

    @cached_property
    def _forget(self):
        return self.redis.register_script(_FORGET)

    def accept_articles(self, records: list[dict]) -> list[Admission]:
        """Store new articles as queued, all in one atomic step (one round trip):
        either every new article of the post is stored, or none is. Returns
        one :class:`Admission` per record, in order. Raises :class:`QueueFull`,
        having stored nothing, when the new ones would take the articles
        waiting past ``max_waiting``."""
        if not records:
            return []
        k, s = self.keys, self.settings
        now = time.time()
        keys = [k.queued, k.metrics, k.clock]
        args: list = [now, s.max_waiting, s.retention_days * DAY, RESEND_AFTER_SECONDS]
        for record in records:
            # Kept small: what can be derived (the ISO times, the canonical URL) is not stored.
            fields = {name: value for name, value in record.items()
                      if name not in _DERIVED_FIELDS and not (name in ("language", "client_id") and not value)}
            fields.update(status="queued", received_ts=round(now, 3))
            keys += [k.article(record["id"]), k.article_ref(record["source"], record["canonical_url"])]
            published = record.get("published_ts")
            args += [record["id"], "" if published is None else repr(float(published)), 2 * len(fields),
                     *[x for pair in fields.items() for x in pair]]
        rows = self._accept(keys=keys, args=args)
        if rows and rows[0][0] == -1:
            raise QueueFull(int(rows[0][1]), s.max_waiting)
        for record in records:
            record["accepted_at"] = now  # the wait it starts: forget_queued undoes only that one
        admissions = [Admission.from_row(row) for row in rows]
        first = {}
        for i, (record, admission) in enumerate(zip(records, admissions)):
            first.setdefault(record["id"], record)
            if admission.outcome == "conflict" and admission.stored == ("", ""):
                # the id names an article earlier in this same post
                admissions[i] = dataclasses.replace(admission, stored=(first[record["id"]]["source"],
                                                                       first[record["id"]]["url"]))
        return admissions

    def forget_queued(self, record: dict) -> bool:
        """Undo the accept of an article whose task could not be sent (and its count)."""
        k = self.keys
        return bool(self._forget(keys=[k.article(record["id"]), k.article_ref(record["source"], record["canonical_url"]),
                                       k.queued, k.metrics], args=[record["id"], record["accepted_at"]]))
