"""Reading stories: one with its members (get_story), where a merged one
went (resolve_story), and the listings by recency or size (list_stories), each
page read by a bounded Lua scan of a story index. Part of
:class:`storyengine.store.RedisStore`."""
from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from .errors import StoryMoved
from .keys import Keys
from .missing import missing
from .records import MEMBER_PUBLIC_FIELDS, STORY_PUBLIC_FIELDS, article_record, decode, story_record
from .settings import Settings

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


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_after: tuple[float, str] | None


class StoryReads:
    """Reads of the story hashes and indexes; uses the store's ``redis``, ``keys`` and ``settings``."""
    redis: Redis
    keys: Keys
    settings: Settings

    def get_story(self, story_id: str, max_articles: int = 500) -> dict:
        """A story's record (records.story_record) with its first ``max_articles``
        members' records under ``articles`` (MEMBER_PUBLIC_FIELDS), in the
        story's order. A story that the repair pass merged away raises
        :class:`StoryMoved` naming where its articles live now (following any
        chain of merges)."""
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.story(story_id), STORY_PUBLIC_FIELDS + ("merged_into",))
            pipe.hgetall(k.story_sources(story_id))
            pipe.zrange(k.story_articles(story_id), 0, max_articles - 1)
            story_raw, sources, member_ids = pipe.execute()
        if story_raw[0] is None:
            raise missing(self.redis, self.keys, self.settings, "story", story_id)
        if story_raw[-1] is not None:
            raise StoryMoved(story_id, self.resolve_story(decode(story_raw[-1])))
        story = story_record(dict(zip(STORY_PUBLIC_FIELDS, story_raw[:-1])), sources)
        with self.redis.pipeline(transaction=False) as pipe:
            for member in member_ids:
                pipe.hmget(k.article(decode(member)), MEMBER_PUBLIC_FIELDS)
            story["articles"] = [article_record(dict(zip(MEMBER_PUBLIC_FIELDS, r))) for r in pipe.execute()]
        return story

    def resolve_story(self, story_id: str, max_hops: int = 32) -> str:
        """Where a story's articles are now: itself, or the end of its chain of merges."""
        for _ in range(max_hops):
            target = self.redis.hget(self.keys.story(story_id), "merged_into")
            if target is None:
                return story_id
            story_id = decode(target)
        return story_id

    def list_stories(self, sort: str, limit: int, since: float | None = None, until: float | None = None,
                     min_sources: int = 1, after: tuple[float, str] | None = None,
                     scan_rows: int = LIST_SCAN_ROWS) -> Page:
        """Story records (records.story_record) newest first (``recent``) or largest
        first (``size``), keyset-paginated
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
            page = [(decode(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
            more = not ended
            keys = [k.story(m) for m, _ in page] + [k.story_sources(m) for m, _ in page]
            fetched = self.redis.eval(STORY_ROWS, len(keys), *keys, *STORY_PUBLIC_FIELDS) if page else []
            for i, (member, score) in enumerate(page):
                scanned += 1
                position = (score, member)
                story_raw, flat_sources = fetched[2 * i], fetched[2 * i + 1]
                if story_raw[0] is None:
                    continue  # removed between the two reads
                story = story_record(dict(zip(STORY_PUBLIC_FIELDS, story_raw)),
                                      dict(zip(flat_sources[::2], flat_sources[1::2])))
                if len(story["sources"]) < min_sources:
                    continue
                if since is not None and story["last_updated"] < since:
                    continue
                if until is not None and story["last_updated"] > until:
                    continue
                items.append(story)
                if len(items) == limit:
                    more = more or i < len(page) - 1  # rows of this chunk are left for the next page
                    break
            chunk *= 2
        return Page(items=items, next_after=position if more else None)


def _score_arg(score: float | str) -> str:
    """A score as Redis reads it back exactly: repr keeps every digit of a float."""
    return score if isinstance(score, str) else repr(float(score))

