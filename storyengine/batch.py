"""What one batch of decisions reads and writes, so a batch costs a few round trips.

A worker decides articles in batches under one hold of the assignment lock
(:mod:`storyengine.locking`). Everything a batch will read is fetched up front
in two pipelined round trips (statuses, exact fingerprints, LSH bands and the
term index, then the candidate stories and candidate articles), and
everything it decides is written back in one MULTI/EXEC at the end.

Between the two, the batch is its own view of the store: an article decided
early in the batch is seen by the ones after it exactly as if it had been
written to Redis already (its bands, fingerprint, story and terms), so a
batch decides the same way as one article at a time in the same order.
The view is only valid under the lock it was read under: no one else writes
decisions meanwhile, and the commit WATCHes the lock.
"""
from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import boilerplate
from .keys import Keys
from .metrics import queue_decided
from .settings import Settings
from .stories import Bucket, StoryState, bucket_field
from .vectors import SparseVector

# One call each for the LSH band slots and the term index of a whole batch:
# a pipeline of hundreds of small commands costs more in the client than
# the server spends answering them.
BAND_LOOKUP = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[i]) or '' end
return out
"""
BAND_WRITE = """
for i = 1, #KEYS do
  local value = ARGV[2 * i]
  if value == '' then redis.call('HDEL', KEYS[i], ARGV[2 * i - 1])
  else redis.call('HSET', KEYS[i], ARGV[2 * i - 1], value) end
end
return #KEYS
"""
# The newest ARGV[2] stories of each term inside the window: a term found in
# hundreds of stories says little about which one an article belongs to, and
# the candidates that share the most weight with it are what get scored.
TERM_LOOKUP = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('ZREVRANGEBYSCORE', KEYS[i], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
end
return out
"""
# Document-frequency changes for a whole batch in one argument: (feature
# u32, change i32) pairs, big-endian, applied as saturating BITFIELD counters.
DF_CHANGE = """
local packed = ARGV[1]
local ops = {}
for pos = 1, #packed, 8 do
  local feature, change = struct.unpack('>I4i4', packed, pos)
  ops[#ops + 1] = 'INCRBY'; ops[#ops + 1] = 'u32'; ops[#ops + 1] = '#' .. feature; ops[#ops + 1] = change
  if #ops >= 4000 then redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'SAT', unpack(ops)); ops = {} end
end
if #ops > 0 then redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'SAT', unpack(ops)) end
redis.call('INCRBY', KEYS[2], ARGV[2])
return redis.call('INCR', KEYS[3])
"""
# A story's place in the term index: the story ARGV[2] gets score ARGV[1] in
# every term key of KEYS but the last ARGV[3], and leaves those last ones.
INDEX_STORY = """
local leaving = tonumber(ARGV[3])
for i = 1, #KEYS - leaving do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2]) end
for i = #KEYS - leaving + 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return #KEYS
"""
# How many canonical articles one band slot remembers (the newest): texts
# that share a band are near-copies of each other, and verification compares
# against any of them.
BAND_SLOT_IDS = 3

STORY_FIELDS = ("centroid", "first_seen", "last_updated", "originals", "article_count", "rep_vec",
                "term_names", "headline", "representative", "canonicals", "indexed")


@dataclass
class Candidate:
    """A canonical article a newcomer may be a copy of."""
    article_id: str
    story: str
    published: float
    shingle_set: np.ndarray


@dataclass
class Story:
    """A story as the batch sees it: read once, then updated in place."""
    story_id: str
    first_seen: float
    last_updated: float
    article_count: int
    originals: int
    buckets: dict[int, Bucket]
    raw: dict = field(default_factory=dict)  # stored fields, parsed when first needed
    indexed: list[int] = field(default_factory=list)
    indexed_at_start: list[int] = field(default_factory=list)
    canonicals: list[str] = field(default_factory=list)
    dirty_buckets: set[int] = field(default_factory=set)
    details_changed: bool = False  # an article joined: centroid, representative and names to write
    details: dict | None = None  # centroid, representative, names: parsed when an article joins

    def load_details(self) -> dict:
        if self.details is None:
            r = self.raw
            self.details = {
                "centroid": SparseVector.from_bytes(r["centroid"]), "rep_vec": SparseVector.from_bytes(r["rep_vec"]),
                "names": {int(a): b for a, b in json.loads(r["term_names"] or "{}").items()},
                "headline": decode(r["headline"]), "representative": decode(r["representative"])}
        return self.details

    def state(self) -> StoryState:
        return StoryState(self.story_id, self.first_seen, self.last_updated, self.originals, self.buckets)

    @classmethod
    def from_row(cls, story_id: str, row: list, bucket_ids: list[int]) -> "Story | None":
        if row[0] is None:
            return None
        raw = dict(zip(STORY_FIELDS, row))
        buckets = {i: parsed_bucket(b) for i, b in zip(bucket_ids, row[len(STORY_FIELDS):]) if b}
        indexed = json.loads(raw["indexed"] or "[]")
        return cls(story_id, float(raw["first_seen"]), float(raw["last_updated"]), int(raw["article_count"]),
                   int(raw["originals"]), buckets, raw, indexed, list(indexed),
                   json.loads(raw["canonicals"] or "[]"))


_PARSED_BUCKETS: dict[bytes, Bucket] = {}


def parsed_bucket(raw: bytes) -> Bucket:
    """A stored bucket, parsed once per process: most candidate stories did
    not change since the last batch read them, and the same bytes give the
    same bucket (treated as read-only: updates make new ones)."""
    bucket = _PARSED_BUCKETS.get(raw)
    if bucket is None:
        if len(_PARSED_BUCKETS) >= 50_000:
            for key in list(_PARSED_BUCKETS)[:25_000]:  # the oldest half
                del _PARSED_BUCKETS[key]
        bucket = _PARSED_BUCKETS[raw] = Bucket.from_bytes(raw)
    return bucket


class ShingleCache:
    """Shingle sets and publication times of canonical articles by id. Both
    never change once written, so a process can keep them across batches;
    whether an article is still canonical is always read afresh."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._items: dict[str, tuple[np.ndarray, float]] = {}

    def get(self, article_id: str) -> tuple[np.ndarray, float] | None:
        return self._items.get(article_id)

    def put(self, article_id: str, shingles: np.ndarray, published: float) -> None:
        if len(self._items) >= self.capacity:
            # Drop the oldest half (dicts keep insertion order): recent canonicals are the likely matches.
            for key in list(self._items)[: self.capacity // 2]:
                del self._items[key]
        self._items[article_id] = (shingles, published)


class DocumentFrequencies:
    """A local copy of the stream's document frequencies ({p}:df, u32
    counters as BITFIELD stores them, big-endian). Every commit that changes
    them bumps {p}:df:version; a batch compares that first and re-reads the
    whole string (4 bytes a feature: 1 MB by default) only if another
    process changed it."""

    def __init__(self, n_features: int) -> None:
        self.counts = np.zeros(n_features, dtype=np.int64)
        self.docs = 0
        self.version: int | None = None

    def load(self, raw: bytes | None, docs, version) -> None:
        counts = np.zeros(len(self.counts), dtype=np.int64)
        if raw:
            values = np.frombuffer(raw[: 4 * len(counts)], dtype=">u4", count=min(len(raw), 4 * len(counts)) // 4)
            counts[: len(values)] = values
        self.counts = counts
        self.docs = int(docs or 0)
        self.version = int(version or 0)


def decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class Batch:
    """The reads, the in-batch view and the writes of one batch of decisions."""

    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys, self.settings = keys, settings
        self.status: dict[str, bytes | None] = {}
        self.fingerprints: dict[str, str | None] = {}     # fingerprint -> owner, read or written
        self.band_values: dict[tuple[str, bytes], str] = {}  # (key, field) -> space-separated ids
        self.term_hits: dict[int, list[tuple[str, float]]] = {}
        self.stories: dict[str, Story | None] = {}
        self.touched: dict[str, Story] = {}  # the stories this batch changed (see touch)
        self.articles: dict[str, dict] = {}  # candidate articles read: story, duplicate_of, published, shingles
        self.bucket_ids: list[int] = []
        self.df_changes: np.ndarray | None = None  # change per feature, when this batch counts any
        self.docs_change = 0
        self.article_writes: list = []  # (article_id, fields, story_id, source, published)
        self.decided: list[tuple[float | None, bool, bool]] = []  # (received_ts, duplicate, opened) to count
        self.new_canonicals: list[tuple[str, np.ndarray, float]] = []  # (id, shingles, published) once committed
        self.sentences_seen: dict[str, Counter] = {}  # outlet -> edge-sentence digest -> decided items using it
        self._written_fps: set[str] = set()  # fingerprints and band slots this batch writes
        self._written_slots: set[tuple[str, bytes]] = set()

    # ------------------------------------------------------------------ band slots
    def band_members(self, slots: list[tuple[str, bytes]]) -> set[str]:
        found: set[str] = set()
        for slot in slots:
            value = self.band_values.get(slot)
            if value:
                found.update(value.split(" "))
        return found

    def count_sentences(self, source: str, digests: list[bytes]) -> None:
        """A decided item's edge sentences, counted at the commit (storyengine.boilerplate)."""
        if digests:
            self.sentences_seen.setdefault(source, Counter()).update(digests)

    # ------------------------------------------------------------------ stories
    def touch(self, story: Story) -> None:
        """Mark a story as changed by this batch: it is written at the commit,
        and found by what it is indexed under now, not by what was read."""
        self.touched[story.story_id] = story

    def stories_for_terms(self, features: list[int], since: float, weights: list[float] | None = None,
                          limit: int | None = None) -> set[str]:
        """Stories indexed by any of ``features`` whose newest article is at or
        after ``since``, as the index stands after this batch's decisions so far.
        With ``weights`` (the article's weight of each feature) and ``limit``,
        only the ``limit`` stories sharing the most weight with the article."""
        weight_of = dict(zip(features, weights)) if weights is not None else {}
        found: dict[str, float] = {}
        for feature in features:
            w = weight_of.get(feature, 1.0)
            for sid, score in self.term_hits.get(feature, ()):
                if sid in self.touched:
                    continue  # judged below, by what it is indexed under now
                if score >= since:
                    found[sid] = found.get(sid, 0.0) + w
        wanted = set(features)
        for sid, story in self.touched.items():
            if story.last_updated >= since:
                shared = wanted.intersection(story.indexed)
                if shared:
                    found[sid] = sum(weight_of.get(x, 1.0) for x in shared)
        if limit is not None and len(found) > limit:
            return set(sorted(found, key=lambda sid: (-found[sid], sid))[:limit])
        return set(found)

    # ------------------------------------------------------------------ the commit
    def writes(self, pipe, scripts: dict, now: float) -> None:
        """Queue every write of the batch on ``pipe`` (a MULTI/EXEC)."""
        k = self.keys
        kept: dict[str, float] = {}
        for article_id, fields, story_id, source, published in self.article_writes:
            kept[story_id] = max(kept.get(story_id, published), published)
            fields["processed_ts"] = round(now, 3)
            pipe.hset(k.article(article_id), mapping=fields)
            pipe.hdel(k.article(article_id), "body")  # decided: the text is not needed any more
            pipe.zadd(k.story_articles(story_id), {article_id: published})
            pipe.hincrby(k.story_sources(story_id), source, 1)
        if self.article_writes:
            pipe.zrem(k.queued, *[a for a, *_ in self.article_writes])
            queue_decided(pipe, k.metrics, self.decided, round(now, 3))  # counted in the same step: exact
        recent, size = {}, {}
        for story in self.touched.values():
            sid = story.story_id
            mapping = {}
            if story.details_changed:
                d = story.details
                mapping.update({"id": sid, "headline": d["headline"], "representative": d["representative"],
                                "centroid": d["centroid"].to_bytes(), "rep_vec": d["rep_vec"].to_bytes(),
                                "term_names": json.dumps(d["names"]), "top_terms": json.dumps(d["top_terms"])})
            mapping.update({"first_seen": story.first_seen, "last_updated": story.last_updated,
                            "article_count": story.article_count, "originals": story.originals,
                            "indexed": json.dumps(story.indexed), "canonicals": json.dumps(story.canonicals)})
            for index in story.dirty_buckets:
                mapping[bucket_field(index)] = story.buckets[index].to_bytes()
            pipe.hset(k.story(sid), mapping=mapping)
            # The term index is rewritten only when what indexes the story, or the
            # 6-hour step its last update falls in, changed: the index finds
            # stories updated since a time, so a score at or after the true last
            # update is enough, and the story's own times decide the rest.
            score = index_score(story.last_updated)
            started = story.raw.get("last_updated")
            if (story.indexed != story.indexed_at_start or started is None
                    or score != index_score(float(started))):
                leaving = sorted(set(story.indexed_at_start) - set(story.indexed))
                scripts["index_story"](keys=[k.term(x) for x in story.indexed + leaving],
                                       args=[score, sid, len(leaving)], client=pipe)
            recent[sid] = story.last_updated
            # Size first, recency as the tie-break: last_updated (< 1e10 s) fits under the count.
            size[sid] = story.article_count * 1e10 + story.last_updated
        if recent:
            pipe.zadd(k.stories_recent, recent)
            pipe.zadd(k.stories_size, size)
        if kept:
            # A story is kept while any of its articles is inside retention (GT: only ever later).
            pipe.zadd(k.stories_kept, kept, gt=True)
        boilerplate.queue_counts(pipe, scripts["boilerplate_count"], k, self.settings, self.sentences_seen)
        for fp in self._written_fps:
            pipe.set(k.fingerprint(fp), self.fingerprints[fp])
        slots = [(slot, self.band_values[slot]) for slot in self._written_slots]
        if slots:
            scripts["band_write"](keys=[key for (key, _), _ in slots],
                                  args=[x for (_, f), value in slots for x in (f, value)], client=pipe)
        if self.docs_change or (self.df_changes is not None and self.df_changes.any()):
            changed = np.flatnonzero(self.df_changes) if self.df_changes is not None else np.empty(0, np.int64)
            packed = np.zeros(len(changed), dtype=[("feature", ">u4"), ("change", ">i4")])
            packed["feature"] = changed
            packed["change"] = self.df_changes[changed] if len(changed) else 0
            scripts["df_change"](keys=[k.df, k.df_docs, k.df_version], args=[packed.tobytes(), self.docs_change],
                                 client=pipe)

    def index_canonical(self, article_id: str, fingerprint: str, slots: list[tuple[str, bytes]]) -> None:
        """Make a new canonical article findable, in this batch and once committed."""
        self.fingerprints[fingerprint] = article_id
        self._written_fps.add(fingerprint)
        for slot in slots:
            ids = [i for i in (self.band_values.get(slot) or "").split(" ") if i and i != article_id]
            self.band_values[slot] = " ".join((ids + [article_id])[-BAND_SLOT_IDS:])
            self._written_slots.add(slot)

    def count_terms(self, features: np.ndarray, change: int) -> None:
        if self.df_changes is None:
            self.df_changes = np.zeros(self.settings.hash_features, dtype=np.int64)
        self.df_changes[features] += change  # a document's features are distinct
        self.docs_change += change


INDEX_STEP = 6 * 3600.0


def index_score(last_updated: float) -> float:
    """A story's score in the term index: its last update, rounded up to the next 6-hour step."""
    return math.ceil(last_updated / INDEX_STEP) * INDEX_STEP


def compress_features(features: np.ndarray) -> bytes:
    """A canonical article's distinct term features (sorted), as stored: the
    gaps between them, compressed (about 2 bytes a term)."""
    gaps = np.diff(np.asarray(features, dtype=np.int64), prepend=0).astype("<u4")
    return zlib.compress(gaps.tobytes(), 6)


def decompress_features(raw: bytes | None) -> np.ndarray:
    if not raw:
        return np.empty(0, dtype=np.int64)
    return np.cumsum(np.frombuffer(zlib.decompress(raw), dtype="<u4").astype(np.int64))


def scored_members(flat: list) -> list[tuple[str, float]]:
    """(member, score) pairs from a WITHSCORES reply as a script returns it (flat)."""
    return [(decode(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
