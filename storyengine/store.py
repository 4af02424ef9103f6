"""The Redis store: articles, duplicates, stories and term statistics.

Every key comes from :class:`storyengine.keys.Keys`. Reads are pipelined so a
request or a processing step costs one round trip per stage. How each write
stays correct when several processes race is said where the write is made.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from typing import Iterable

import redis

from .errors import NotFound, StoreUnavailable, StoryMoved
from .keys import Keys
from .settings import Settings

# Accepting an article is one atomic script, so two clients posting the same
# article at once get the same id and exactly one of them stores and enqueues it.
_ACCEPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
local existing = redis.call('GET', KEYS[2])
if existing then return {0, existing} end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {1, ARGV[1]}
"""

# Undo an accept whose enqueue failed: only while the article is still queued,
# so a worker that already picked it up is never undercut.
_FORGET = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# Marking an article failed never overwrites a success: a redelivered task can
# fail after another delivery of it already processed the article.
_MARK_FAILED = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'processed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(redis.call('HGET', KEYS[1], 'published_ts') or '0') or 0, ARGV[1])
return 1
"""

# Claim articles that have waited in the queue too long (their task was lost:
# a broker that lost data, retries given up while Redis was away) so they
# can be sent again; their wait starts afresh, so one claim sends each once.
_CLAIM_STALE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return ids
"""

ARTICLE_PUBLIC_FIELDS = (
    "id", "source", "url", "title", "language", "published_ts", "received_ts", "status",
    "story", "duplicate_of", "similarity", "decision", "error", "processed_ts",
)
ARTICLE_VIEW_ORDER = ("id", "source", "url", "title", "language", "published_at", "received_at", "status", "story",
                      "duplicate_of", "similarity", "decision", "error", "processed_at")
# Fields of a new article record that the store derives instead of keeping.
_DERIVED_FIELDS = frozenset({"published_at", "received_at", "canonical_url"})
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


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_after: tuple[float, str] | None


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

    # ------------------------------------------------------------------ health
    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ accept
    def accept_articles(self, records: list[dict]) -> list[tuple[str, bool]]:
        """Store new articles as queued, in one round trip. Returns (id, created)
        per record; created is False when the article (same id, or same source
        and canonical URL) was already accepted, and then nothing was written."""
        k = self.keys
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                # Kept small: what can be derived (the ISO times, the canonical URL) is not stored.
                fields = {name: value for name, value in record.items()
                          if name not in _DERIVED_FIELDS and not (name == "language" and not value)}
                fields.update(status="queued", received_ts=round(now, 3))
                flat = [x for pair in fields.items() for x in pair]
                self._accept(keys=[k.article(record["id"]), k.article_ref(record["source"], record["canonical_url"]),
                                   k.queued], args=[record["id"], now, *flat], client=pipe)
            results = pipe.execute()
        return [(_s(article_id), bool(created)) for created, article_id in results]

    def forget_queued(self, record: dict) -> bool:
        k = self.keys
        return bool(self._forget(keys=[k.article(record["id"]), k.article_ref(record["source"], record["canonical_url"]),
                                       k.queued], args=[record["id"]]))

    # ------------------------------------------------------------------ articles
    def get_article(self, article_id: str) -> dict:
        raw = self.redis.hmget(self.keys.article(article_id), ARTICLE_PUBLIC_FIELDS)
        if raw[0] is None:
            raise NotFound(f"no article with id {article_id!r}")
        view = self._article_view(dict(zip(ARTICLE_PUBLIC_FIELDS, raw)))
        for name in ("published", "received", "processed"):
            ts = view.pop(f"{name}_ts")
            view[f"{name}_at"] = iso(float(ts)) if ts else None
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
                story["threshold"] = s.story_threshold
                story["method"] = (f"mean cosine to the story's members, each weighed by a Gaussian time kernel "
                                   f"(sigma {s.time_sigma_hours:g} h, window {s.story_window_hours:g} h)")
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
        """Record why an article could not be processed. Does nothing (and says
        so) if it was processed meanwhile or does not exist."""
        k = self.keys
        return bool(self._mark_failed(keys=[k.article(article_id), k.queued, k.failed],
                                      args=[article_id, reason[:500]]))

    def claim_stale_queued(self, older_than_seconds: float, limit: int = 1000) -> list[str]:
        """Ids queued for longer than ``older_than_seconds``; each is claimed
        (its wait restarts now), so it is handed out once per period."""
        now = time.time()
        ids = self._claim_stale(keys=[self.keys.queued], args=[now - older_than_seconds, now, limit])
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
            raise NotFound(f"no story with id {story_id!r}")
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

    def resolve_story(self, story_id: str, max_hops: int = 32) -> str:
        """Where a story's articles are now: itself, or the end of its chain of merges."""
        for _ in range(max_hops):
            target = self.redis.hget(self.keys.story(story_id), "merged_into")
            if target is None:
                return story_id
            story_id = _s(target)
        return story_id

    def list_stories(self, sort: str, limit: int, since: float | None = None, until: float | None = None,
                     min_sources: int = 1, after: tuple[float, str] | None = None) -> Page:
        """Stories newest first (``recent``) or largest first (``size``), keyset-paginated
        by (score, id). Filters that the index cannot answer are applied to
        fetched chunks, which are read in one pipelined round trip each."""
        k = self.keys
        index = k.stories_recent if sort == "recent" else k.stories_size
        high = "+inf"
        low = "-inf"
        if sort == "recent":
            if until is not None:
                high = until
            if since is not None:
                low = since
        if after is not None:
            high = after[0] if high == "+inf" else min(float(high), after[0])
        items: list[dict] = []
        # Read exactly a page when the index alone decides what is on it; more
        # when rows may still be filtered out (by outlets, or by time when sorted by size).
        filtered = min_sources > 1 or (sort != "recent" and (since is not None or until is not None))
        chunk = max(limit * 2, 20) if filtered else limit
        if after is not None:
            chunk += 1  # the bound is inclusive (ties on score): the cursor's own row comes back once
        offset = 0
        last: tuple[float, str] | None = None
        while len(items) < limit:
            page = self.redis.zrevrangebyscore(index, high, low, start=offset, num=chunk, withscores=True)
            if not page:
                last = None
                break
            offset += len(page)
            exhausted = len(page) < chunk  # judged before the cursor filter drops rows
            page = [(_s(m), s) for m, s in page]
            if after is not None:
                page = [(m, s) for m, s in page if s < after[0] or (s == after[0] and m < after[1])]
            keys = [k.story(m) for m, _ in page] + [k.story_sources(m) for m, _ in page]
            fetched = self.redis.eval(STORY_ROWS, len(keys), *keys, *STORY_FIELDS) if page else []
            for i, (member, score) in enumerate(page):
                story_raw, flat = fetched[2 * i], fetched[2 * i + 1]
                sources = dict(zip(flat[::2], flat[1::2]))
                if story_raw[0] is None:
                    continue  # removed between the two reads
                story = self._story_view(dict(zip(STORY_FIELDS, story_raw)), sources)
                last = (score, member)
                if story["source_count"] < min_sources:
                    continue
                if since is not None and story["last_updated_ts"] < since:
                    continue
                if until is not None and story["last_updated_ts"] > until:
                    continue
                items.append(story)
                if len(items) == limit:
                    break
            if exhausted and len(items) < limit:
                last = None
                break
        for story in items:
            story.pop("last_updated_ts")
        return Page(items=items, next_after=last if len(items) == limit else None)

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


def _chunks(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
