"""The Redis store: articles, duplicates, stories and term statistics.

Every key comes from :class:`storyengine.keys.Keys`. Reads are pipelined so a
request or a processing step costs one round trip per stage. How each write
stays correct when several processes race is said where the write is made.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import dataclass
from typing import Iterable

import redis

from . import tombstones
from .errors import Gone, NotFound, QueueFull, StoreUnavailable, StoryMoved
from .keys import Keys
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

# Marking an article failed never overwrites a success: a redelivered task can
# fail after another delivery of it already processed the article. A failure
# is filed by the stream's time when it failed (the clock; before any clock,
# its own date, never ahead of now), so retention keeps its reason as long as
# it would keep an article decided then, however far ahead it was dated.
_MARK_FAILED = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2], 'failed_ts', ARGV[3])
redis.call('HDEL', KEYS[1], 'body')  -- never decided now: the text is not needed
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

ARTICLE_PUBLIC_FIELDS = (
    "id", "source", "url", "title", "language", "published_ts", "received_ts", "status",
    "story", "duplicate_of", "similarity", "decision", "error", "processed_ts", "client_id", "published_assigned",
    "title_derived",
)
ARTICLE_VIEW_ORDER = ("id", "client_id", "source", "url", "title", "title_derived", "language", "published_at", "published_assigned",
                      "received_at", "status", "story", "duplicate_of", "similarity", "decision", "error",
                      "processed_at")
# Fields of a new article record that the store derives instead of keeping.
_DERIVED_FIELDS = frozenset({"published_at", "received_at", "canonical_url", "accepted_at"})
STORY_FIELDS = ("id", "headline", "representative", "first_seen", "last_updated", "article_count",
                "originals", "top_terms", "merged_from")


# A page of stories in one command: each story's fields and its outlet counts
# (KEYS: the story hashes, then their sources hashes; ARGV: the fields). One
# command instead of two per story: what a list costs is mostly the client
# packing and parsing commands. EVAL, not EVALSHA: Redis caches the compiled
# script by its hash either way, and a read never needs a second round trip to load it.
STORY_ROWS = """
local n = #KEYS / 2
local out = {}
for i = 1, n do
  out[2 * i - 1] = redis.call('HMGET', KEYS[i], unpack(ARGV))
  out[2 * i] = redis.call('HGETALL', KEYS[n + i])
end
return out
"""

# The next rows of a story index in its order (score descending, ties by id
# descending, as Redis orders them), in one command: the rows strictly after
# the position (score, id), or from the first row at or below the score when
# the id is '', down to the lowest score. KEYS: the index. ARGV: the score
# ('+inf' for the top), the id or '', the lowest score ('-inf' for none), how
# many rows. Returns {1 if no row in the range follows these, flat [id, score, ...]}.
# The position is found by rank (ZCOUNT, then a binary search among the ties
# at that score), never by an offset, so a read deep in the index or after
# thousands of equal scores costs O(log n), and going on from a cursor never
# rescans. The cursor's own story need not be there any more (updated or removed).
STORY_INDEX_AFTER = """
local index, high, after, low, count = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Lua's < follows the server's locale; Redis orders members by their bytes
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local start = 0
if high ~= '+inf' then start = redis.call('ZCOUNT', index, '(' .. high, '+inf') end
if after ~= '' then
  -- the ties at the cursor's score hold ranks [start, stop), ids descending: skip those not below it
  local stop = start + redis.call('ZCOUNT', index, high, high)
  while start < stop do
    local mid = math.floor((start + stop) / 2)
    if before(redis.call('ZREVRANGE', index, mid, mid)[1], after) then stop = mid else start = mid + 1 end
  end
end
local last = redis.call('ZCOUNT', index, low, '+inf') - 1  -- the last rank at or above the lowest score
local rows = {}
if start <= last then  -- (a stop below 0 would count from the end)
  rows = redis.call('ZREVRANGE', index, start, math.min(start + count - 1, last), 'WITHSCORES')
end
return {start + count > last and 1 or 0, rows}
"""

# The most index rows one listing reads. A filter the index cannot answer
# (min_sources, or since/until with sort=size) is applied to the rows read, so
# a filter few stories match would otherwise read the whole index for one
# public, unauthenticated request. 1,000 rows is ten of the largest pages and
# about a dozen round trips (chunks double from twice the page); a page that
# stops here is short but carries a cursor at the last row read, to go on from.
LIST_SCAN_ROWS = 1000


def _s(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


_BINARY_FIELDS = frozenset({"bands", "shingle_set", "centroid", "rep_vec", "terms", "decision"})


def decode_hash(raw: dict) -> dict:
    """Field names and text values as str; binary fields (signatures, vectors) left as bytes."""
    out = {}
    for k, v in raw.items():
        name = _s(k)
        out[name] = v if name in _BINARY_FIELDS else _s(v)
    return out


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


DAY = 86400.0
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
        code, article_id = row[0], _s(row[1])
        if code == 1:
            return cls(article_id, "created")
        if code == 0:
            return cls(article_id, "known", status=_s(row[2]) or None, resend=len(row) > 3)
        if code == 2:
            return cls(article_id, "too_old", clock=float(row[2]))
        return cls(article_id, "conflict", stored=(_s(row[2]), _s(row[3])))


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_after: tuple[float, str] | None


def out_of_memory(exc: BaseException) -> bool:
    """Redis at maxmemory (noeviction) refusing a write: a plain command's
    OutOfMemoryError (whose text has lost the OOM code), or a script's error quoting it."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and "OOM command not allowed" in str(exc))


def connect(url: str, **kwargs) -> redis.Redis:
    """A client with timeouts, so a dead Redis is an error rather than a hang."""
    options = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, "health_check_interval": 30}
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


class RedisStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._accept = client.register_script(_ACCEPT)
        self._forget = client.register_script(_FORGET)
        self._mark_failed = client.register_script(_MARK_FAILED)
        self._claim_stale = client.register_script(_CLAIM_STALE)
        self._count_attempt = client.register_script(_COUNT_ATTEMPT)

    # ------------------------------------------------------------------ health
    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ accept
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

    # ------------------------------------------------------------------ articles
    def get_article(self, article_id: str) -> dict:
        raw = self.redis.hmget(self.keys.article(article_id), ARTICLE_PUBLIC_FIELDS)
        if raw[0] is None:
            self._raise_gone_or_not_found("article", article_id)
        view = self._article_view(dict(zip(ARTICLE_PUBLIC_FIELDS, raw)))
        for name in ("published", "received", "processed"):
            ts = view.pop(f"{name}_ts")
            view[f"{name}_at"] = iso(float(ts)) if ts else None
        # True when the article came without a date and took the stream's time (storyengine.clock).
        view["published_assigned"] = view["published_assigned"] == "1"
        # True when the article came without a title and its headline was made from its body.
        view["title_derived"] = view["title_derived"] == "1"
        view = {name: view[name] for name in ARTICLE_VIEW_ORDER}
        decision = view.get("decision")
        if decision:
            # The rule and the method are the settings', the same for every article: not stored with each.
            s = self.settings
            if "duplicate" in decision:
                decision["duplicate"]["rule"] = (
                    f"a copy when the texts are identical, or when at least {s.duplicate_containment:.0%} of "
                    f"the smaller text's {s.shingle_size}-word shingles are in the other "
                    f"(and it has at least {s.containment_min_shingles}); the canonical article is the "
                    "earliest published copy")
            story = decision.get("story", {})
            if story.get("action") in ("opened", "joined"):
                # Older records kept no threshold of their own: the setting's.
                story.setdefault("threshold", s.story_threshold)
                kernel = f"Gaussian time kernel (sigma {s.time_sigma_hours:g} h, window {s.story_window_hours:g} h)"
                if s.story_score == "by_length":
                    story["method"] = (
                        f"for a full text ({s.full_text_words} words or more) the mean cosine to the story's "
                        f"members, each weighed by a {kernel}; for a short one ({s.short_text_words} or fewer) "
                        f"the cosine to the centroid of each {s.bucket_hours:g}-hour bucket of them, averaged over "
                        f"the members weighed by that kernel, times the kernel of the nearest bucket (a blend "
                        f"between); joins the best story that reaches its threshold "
                        f"({s.story_threshold:g} for a full text, {s.short_text_threshold:g} for a short one; up to "
                        f"{s.single_member_threshold:g} against a single short member, less as the story grows) "
                        f"and shares at least {s.min_shared_words} words with it")
                else:
                    story["method"] = f"mean cosine to the story's members, each weighed by a {kernel}"
        return view

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
        return [_s(i) for i in ids]

    @staticmethod
    def _article_view(raw: dict) -> dict:
        """Every requested field present; empty or missing ones are null."""
        view = {name: (_s(value) or None) for name, value in raw.items() if name != "decision"}
        if "decision" in raw:  # stored compressed (storyengine.pipeline.compact_decision)
            view["decision"] = json.loads(zlib.decompress(raw["decision"])) if raw["decision"] else None
        if view.get("similarity") is not None:
            view["similarity"] = float(view["similarity"])
        return view

    # ------------------------------------------------------------------ stories (reads)
    def get_story(self, story_id: str, max_articles: int = 500) -> dict:
        """A story with its articles, duplicates folded. A story that the
        repair pass merged away raises :class:`StoryMoved` naming where its
        articles live now (following any chain of merges)."""
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.story(story_id), STORY_FIELDS + ("merged_into",))
            pipe.hgetall(k.story_sources(story_id))
            pipe.zrange(k.story_articles(story_id), 0, max_articles - 1)
            story_raw, sources, member_ids = pipe.execute()
        if story_raw[0] is None:
            self._raise_gone_or_not_found("story", story_id)
        if story_raw[-1] is not None:
            raise StoryMoved(story_id, self.resolve_story(_s(story_raw[-1])))
        story_raw = story_raw[:-1]
        story = self._story_view(dict(zip(STORY_FIELDS, story_raw)), sources)
        story.pop("last_updated_ts")  # the list's filter and sort key, not part of the answer
        fields = ("id", "source", "url", "title", "published_ts", "duplicate_of", "similarity")
        with self.redis.pipeline(transaction=False) as pipe:
            for member in member_ids:
                pipe.hmget(k.article(_s(member)), fields)
            rows = [self._article_view(dict(zip(fields, r))) for r in pipe.execute()]
        for row in rows:
            ts = row.pop("published_ts")
            row["published_at"] = iso(float(ts)) if ts else None
        story["articles"] = fold_duplicates(rows)
        return story

    def _raise_gone_or_not_found(self, kind: str, item_id: str):
        """404 for an id never held; 410, with when and why, for one retention removed."""
        s = self.settings
        stone = tombstones.find(self.redis, self.keys, item_id, time.time(), s.tombstone_days)
        if stone is None:
            raise NotFound(f"no {kind} with id {item_id!r}")
        policy = (f"the retention policy (STORYWIRE_RETENTION_DAYS={s.retention_days:g}: a story is removed, with its "
                  f"articles, once its newest article is {s.retention_days:g} days older than the stream clock)")
        if stone.kind == "story":
            why = f"its newest article ({iso(float(stone.detail))}) had aged out"
        elif stone.kind == "failed":
            why = "it had failed and its reason had aged out"
        else:
            why = f"its story {stone.detail} had aged out"
        raise Gone(f"{kind} {item_id!r} was removed on {iso(stone.deleted_at)} by {policy}: {why} on the stream "
                   f"clock {iso(stone.clock)}", stone)

    def resolve_story(self, story_id: str, max_hops: int = 32) -> str:
        """Where a story's articles are now: itself, or the end of its chain of merges."""
        for _ in range(max_hops):
            target = self.redis.hget(self.keys.story(story_id), "merged_into")
            if target is None:
                return story_id
            story_id = _s(target)
        return story_id

    def list_stories(self, sort: str, limit: int, since: float | None = None, until: float | None = None,
                     min_sources: int = 1, after: tuple[float, str] | None = None,
                     scan_rows: int = LIST_SCAN_ROWS) -> Page:
        """Stories newest first (``recent``) or largest first (``size``), keyset-paginated
        by (score, id): ``after`` is the position to go on from. Filters that the
        index cannot answer are applied to the rows read, in chunks that cost
        one round trip for the index rows and one for their stories.

        At most ``scan_rows`` index rows are read: a page that stops there holds
        fewer than ``limit`` stories (maybe none) and its ``next_after`` is the
        last row read, so the caller goes on from there. ``next_after`` is None
        only once the index has no more rows in range."""
        k = self.keys
        index = k.stories_recent if sort == "recent" else k.stories_size
        high: float | str = "+inf"
        low: float | str = "-inf"
        if sort == "recent":
            if until is not None:
                high = until
            if since is not None:
                low = since
        # Where to start: after the cursor's row, or from the top of the range
        # (a cursor above ``until`` starts at ``until``).
        position: tuple[float | str, str] = (high, "")
        if after is not None and (high == "+inf" or after[0] <= high):
            position = after
        # Read exactly a page when the index alone decides what is on it; more
        # when rows may still be filtered out (by outlets, or by time when
        # sorted by size), doubling while the page stays short.
        filtered = min_sources > 1 or (sort != "recent" and (since is not None or until is not None))
        chunk = max(limit * 2, 20) if filtered else limit
        items: list[dict] = []
        scanned = 0
        more = True  # whether the range holds rows past ``position``
        while len(items) < limit and scanned < scan_rows and more:
            score, member = position
            ended, flat = self.redis.eval(STORY_INDEX_AFTER, 1, index, _score_arg(score), member, _score_arg(low),
                                          min(chunk, scan_rows - scanned))
            page = [(_s(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
            more = not ended
            keys = [k.story(m) for m, _ in page] + [k.story_sources(m) for m, _ in page]
            fetched = self.redis.eval(STORY_ROWS, len(keys), *keys, *STORY_FIELDS) if page else []
            for i, (member, score) in enumerate(page):
                scanned += 1
                position = (score, member)
                story_raw, flat_sources = fetched[2 * i], fetched[2 * i + 1]
                if story_raw[0] is None:
                    continue  # removed between the two reads
                story = self._story_view(dict(zip(STORY_FIELDS, story_raw)),
                                         dict(zip(flat_sources[::2], flat_sources[1::2])))
                if story["source_count"] < min_sources:
                    continue
                if since is not None and story["last_updated_ts"] < since:
                    continue
                if until is not None and story["last_updated_ts"] > until:
                    continue
                items.append(story)
                if len(items) == limit:
                    more = more or i < len(page) - 1  # rows of this chunk are left for the next page
                    break
            chunk *= 2
        for story in items:
            story.pop("last_updated_ts")
        return Page(items=items, next_after=position if more else None)

    @staticmethod
    def _story_view(raw: dict, sources: dict) -> dict:
        s = {name: _s(value) for name, value in raw.items()}
        counts = {name.decode("utf-8"): int(count) for name, count in sources.items()}
        # Most articles first, ties by name: by name, then (stably) by count; both keys run in C.
        names = sorted(sorted(counts), key=counts.__getitem__, reverse=True)
        last_ts = float(s["last_updated"])
        return {
            "id": s["id"],
            "headline": s["headline"],
            "representative_article": s["representative"],
            "article_count": int(s["article_count"]),
            "original_count": int(s["originals"]),
            "source_count": len(names),
            "sources": names,
            "first_seen": iso(float(s["first_seen"])),
            "last_updated": iso(last_ts),
            "last_updated_ts": last_ts,
            "top_terms": json.loads(s["top_terms"] or "[]"),
            "merged_from": json.loads(s["merged_from"] or "[]"),
        }

    # ------------------------------------------------------------------ maintenance
    def clear(self) -> int:
        """Delete every key under this store's prefix (tests and evaluation runs)."""
        deleted = 0
        for batch in _chunks(self.redis.scan_iter(match=self.keys.all_pattern(), count=1000), 500):
            deleted += self.redis.delete(*batch)
        return deleted


def fold_duplicates(rows: list[dict]) -> list[dict]:
    """Originals in published order, each with its copies under ``duplicates``."""
    originals = [dict(r, duplicates=[]) for r in rows if not r.get("duplicate_of")]
    by_id = {r["id"]: r for r in originals}
    for row in rows:
        parent = by_id.get(row.get("duplicate_of") or "")
        if parent is not None:
            parent["duplicates"].append(row)
        elif row.get("duplicate_of"):
            originals.append(dict(row, duplicates=[]))  # canonical outside this page
    originals.sort(key=lambda r: (r.get("published_at") or "", r["id"]))
    return originals


def _score_arg(score: float | str) -> str:
    """A score as Redis reads it back exactly: repr keeps every digit of a float."""
    return score if isinstance(score, str) else repr(float(score))


def _chunks(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
