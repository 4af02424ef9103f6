"""The engine's two records in Redis, the article hash and the story hash:
their field names, how their values are stored and read back, and the only
code that writes a story and its scores.

A story lives in its hash ({p}:story:<id>) and in four indexes that must
agree with it: recent (score: last update), size (article count, then last
update), kept (the newest member's time, for retention) and the term index
(one sorted set per heavy term, scored by the last update rounded up to the
next ``INDEX_STEP``). Every writer of a story (a batch's commit, promotion
of an earlier copy, a repair merge, retention's deletes) goes through
:func:`write_story` and :func:`drop_story_scores`, so those scores are
computed in one place.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import signatures
from .keys import Keys
from .stories import Bucket, StoryState
from .vectors import SparseVector


def decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# ---------------------------------------------------------------------- articles
# What a newcomer is compared against, read from a candidate article's hash.
CANDIDATE_FIELDS = ("story", "duplicate_of", "published_ts", "shingle_set")
# What a reader of an article is given (store.get_article); the service makes the API's answer of it.
ARTICLE_PUBLIC_FIELDS = (
    "id", "source", "url", "title", "language", "published_ts", "received_ts", "status",
    "story", "duplicate_of", "similarity", "decision", "error", "processed_ts", "client_id", "published_assigned",
    "title_derived",
)
# Of each member of a story, as store.get_story gives it.
MEMBER_PUBLIC_FIELDS = ("id", "source", "url", "title", "published_ts", "duplicate_of", "similarity")


def parse_candidate(row: list) -> dict:
    """A candidate article's ``CANDIDATE_FIELDS`` row: story, duplicate_of, published, shingles."""
    story, duplicate_of, published, shingles = row
    return {"story": decode(story) if story else None, "duplicate_of": decode(duplicate_of or b"") or None,
            "published": float(published) if published else None,
            "shingles": signatures.shingle_set_from_bytes(shingles) if shingles else None}


# What only a canonical article keeps (it is compared with newcomers and counts
# in the term statistics); a canonical article that becomes a copy drops them.
CANONICAL_ONLY_FIELDS = ("shingle_set", "bands", "terms")


def compact_decision(decision: dict) -> bytes:
    """A decision as stored: the parts that differ per article (the rule and
    method texts are the settings', added back when it is read), compressed."""
    return zlib.compress(json.dumps(decision, separators=(",", ":")).encode("utf-8"), 6)


def decided_article_fields(features, story_id: str, duplicate_of: str | None, similarity: float | None,
                           decision: dict) -> dict:
    """The fields a decision writes into an article's hash (``features``: the
    article's storyengine Features)."""
    fields = {"status": "processed", "story": story_id, "duplicate_of": duplicate_of or "",
              # None when nothing was compared (it opened its story, or took over as the canonical article)
              "similarity": "" if similarity is None else round(float(similarity), 4),
              "decision": compact_decision(decision),
              "fingerprint": features.fingerprint}
    if not features.dated:
        fields["published_ts"] = features.published  # the stream's time, given under the lock
    if not duplicate_of:  # only canonical articles are ever compared with newcomers
        # The body itself is not kept once decided: what is needed later is
        # what the text counted for (its terms, if an earlier copy takes over)
        # and its shingles and band slots (to compare and to age out).
        fields.update(shingle_set=signatures.shingle_set_to_bytes(features.shingle_set),
                      bands=signatures.BandLayout.slots_to_bytes(features.bands),
                      terms=compress_features(features.term_indices))
    return fields


def compress_features(features: np.ndarray) -> bytes:
    """A canonical article's distinct term features (sorted), as stored: the
    gaps between them, compressed (about 2 bytes a term)."""
    gaps = np.diff(np.asarray(features, dtype=np.int64), prepend=0).astype("<u4")
    return zlib.compress(gaps.tobytes(), 6)


def decompress_features(raw: bytes | None) -> np.ndarray:
    if not raw:
        return np.empty(0, dtype=np.int64)
    return np.cumsum(np.frombuffer(zlib.decompress(raw), dtype="<u4").astype(np.int64))


# ---------------------------------------------------------------------- stories
BUCKET_PREFIX = "b:"


def bucket_field(index: int) -> str:
    """The story hash field of its day bucket ``index`` (storyengine.stories.bucket_index)."""
    return f"{BUCKET_PREFIX}{index}"


def stored_buckets(fields: dict) -> dict[int, Bucket]:
    """Every day bucket in a story hash read whole (HGETALL)."""
    prefix = BUCKET_PREFIX.encode()
    return {int(name[len(prefix):]): Bucket.from_bytes(value) for name, value in fields.items()
            if isinstance(name, bytes) and name.startswith(prefix)}


def json_field(raw, default):
    """A story field stored as JSON (indexed, canonicals, merged_from, term_names)."""
    return json.loads(raw) if raw else default


STORY_FIELDS = ("centroid", "first_seen", "last_updated", "originals", "article_count", "rep_vec",
                "term_names", "headline", "representative", "canonicals", "indexed")
# What a reader of a story is given (store.get_story, store.list_stories), with its outlets' counts.
STORY_PUBLIC_FIELDS = ("id", "headline", "representative", "first_seen", "last_updated", "article_count",
                       "originals", "top_terms", "merged_from")


@dataclass
class Story:
    """A story as the decider sees it: read once, then updated in place."""
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
                "names": {int(a): b for a, b in json_field(r["term_names"], {}).items()},
                "headline": decode(r["headline"]), "representative": decode(r["representative"])}
        return self.details

    def state(self) -> StoryState:
        return StoryState(self.story_id, self.first_seen, self.last_updated, self.originals, self.buckets)

    @property
    def last_updated_at_start(self) -> float | None:
        started = self.raw.get("last_updated")
        return None if started is None else float(started)

    @classmethod
    def from_hash(cls, story_id: str, raw: dict) -> "Story":
        """From the whole hash (HGETALL): every day bucket, parsed afresh."""
        fields = {key.decode(): value for key, value in raw.items()}
        indexed = json_field(fields.get("indexed"), [])
        return cls(story_id, float(fields["first_seen"]), float(fields["last_updated"]), int(fields["article_count"]),
                   int(fields["originals"]), stored_buckets(raw), fields, indexed, list(indexed),
                   json_field(fields.get("canonicals"), []))

    @classmethod
    def from_row(cls, story_id: str, row: list, bucket_ids: list[int]) -> "Story | None":
        """From a row of ``STORY_FIELDS`` then the ``bucket_ids``' fields, as read by HMGET."""
        if row[0] is None:
            return None
        raw = dict(zip(STORY_FIELDS, row))
        buckets = {i: parsed_bucket(b) for i, b in zip(bucket_ids, row[len(STORY_FIELDS):]) if b}
        indexed = json_field(raw["indexed"], [])
        return cls(story_id, float(raw["first_seen"]), float(raw["last_updated"]), int(raw["article_count"]),
                   int(raw["originals"]), buckets, raw, indexed, list(indexed), json_field(raw["canonicals"], []))


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


def encode_story_fields(*, first_seen: float | None = None, last_updated: float | None = None,
                        article_count: int | None = None, originals: int | None = None,
                        indexed: list[int] | None = None, canonicals: list[str] | None = None,
                        headline: str | None = None, representative: str | None = None,
                        centroid: SparseVector | None = None, rep_vec: SparseVector | bytes | None = None,
                        term_names: dict | None = None, top_terms: list[str] | None = None,
                        merged_from: list[str] | None = None, buckets: dict[int, Bucket] | None = None,
                        **plain) -> dict:
    """The given fields of a story hash as stored (only those given)."""
    out: dict = dict(plain)
    for name, value in (("first_seen", first_seen), ("last_updated", last_updated),
                        ("article_count", article_count), ("originals", originals),
                        ("headline", headline), ("representative", representative)):
        if value is not None:
            out[name] = value
    for name, value in (("indexed", indexed), ("canonicals", canonicals), ("term_names", term_names),
                        ("top_terms", top_terms), ("merged_from", merged_from)):
        if value is not None:
            out[name] = json.dumps(value)
    if centroid is not None:
        out["centroid"] = centroid.to_bytes()
    if rep_vec is not None:
        out["rep_vec"] = rep_vec if isinstance(rep_vec, bytes) else rep_vec.to_bytes()
    for index, bucket in (buckets or {}).items():
        out[bucket_field(index)] = bucket.to_bytes()
    return out


# A story's place in the term index: the story ARGV[2] gets score ARGV[1] in
# every term key of KEYS but the last ARGV[3], and leaves those last ones.
INDEX_STORY = """
local leaving = tonumber(ARGV[3])
for i = 1, #KEYS - leaving do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2]) end
for i = #KEYS - leaving + 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return #KEYS
"""

INDEX_STEP = 6 * 3600.0


def index_score(last_updated: float) -> float:
    """A story's score in the term index: its last update, rounded up to the
    next 6-hour step. The index finds stories updated since a time, so a score
    at or after the true last update is enough (the story's own times decide
    the rest), and the index is rewritten only when the step changes."""
    return math.ceil(last_updated / INDEX_STEP) * INDEX_STEP


def size_score(article_count: int, last_updated: float) -> float:
    # Size first, recency as the tie-break: last_updated (< 1e10 s) fits under the count.
    return article_count * 1e10 + last_updated


@dataclass
class StoryUpdate:
    """One story's writes: ``fields`` (encode_story_fields) and what its scores
    derive from; the ``*_before`` values are what the store held (None: unknown
    or new), so the term index is rewritten only when it must be."""
    story_id: str
    fields: dict
    last_updated: float
    article_count: int
    indexed: list[int]
    indexed_before: list[int] | None = None
    last_updated_before: float | None = None
    kept: float | None = None  # its newest member's time, when one joined


class StoryWriter:
    """Queues stories' writes on a pipeline: their hash fields and every score
    that derives from them. One per process (it registers its script)."""

    def __init__(self, redis_client, keys: Keys) -> None:
        self.keys = keys
        self._index_story = redis_client.register_script(INDEX_STORY)

    def write(self, pipe, updates: list[StoryUpdate]) -> None:
        if not updates:
            return
        k = self.keys
        for u in updates:
            if u.fields:
                pipe.hset(k.story(u.story_id), mapping=u.fields)
            score = index_score(u.last_updated)
            # Rewritten when what indexes the story changed, or the step its last update falls in.
            if (u.indexed_before is None or u.last_updated_before is None or u.indexed != u.indexed_before
                    or score != index_score(u.last_updated_before)):
                leaving = sorted(set(u.indexed_before or ()) - set(u.indexed))
                self._index_story(keys=[k.term(x) for x in u.indexed + leaving],
                                  args=[score, u.story_id, len(leaving)], client=pipe)
        pipe.zadd(k.stories_recent, {u.story_id: u.last_updated for u in updates})
        pipe.zadd(k.stories_size, {u.story_id: size_score(u.article_count, u.last_updated) for u in updates})
        kept = {u.story_id: u.kept for u in updates if u.kept is not None}
        if kept:
            # A story is kept while any of its articles is inside retention (GT: only ever later).
            pipe.zadd(k.stories_kept, kept, gt=True)

    def add_members(self, pipe, story_id: str, members: dict[str, float], sources: dict[str, int]) -> None:
        """Articles (id: published time) join a story's member list, and its outlets' counts grow."""
        k = self.keys
        if members:
            pipe.zadd(k.story_articles(story_id), members)
        for source, count in sources.items():
            pipe.hincrby(k.story_sources(story_id), source, int(count))

    def delete(self, pipe, stories: dict[str, tuple[list[int], list[str]]]) -> None:
        """Delete stories (id: the terms indexing it, and the ids that redirect
        to it) with their member and source lists and their place in every index."""
        k = self.keys
        for story_id, (indexed, redirects) in stories.items():
            for feature in indexed:
                pipe.zrem(k.term(feature), story_id)
            pipe.delete(k.story(story_id), k.story_articles(story_id), k.story_sources(story_id),
                        *[k.story(m) for m in redirects])
        self._drop_scores(pipe, list(stories))

    def redirect(self, pipe, story_id: str, indexed: list[int], into: str, merged_at: str, link: float) -> None:
        """Turn a story merged into another into a redirect to it: its hash keeps only where it went."""
        k = self.keys
        for feature in indexed:
            pipe.zrem(k.term(feature), story_id)
        pipe.delete(k.story(story_id), k.story_articles(story_id), k.story_sources(story_id))
        pipe.hset(k.story(story_id), mapping={"id": story_id, "merged_into": into, "merged_at": merged_at,
                                              "merge_link": round(link, 4)})
        self._drop_scores(pipe, [story_id])

    def _drop_scores(self, pipe, story_ids: list[str]) -> None:
        k = self.keys
        if story_ids:
            pipe.zrem(k.stories_recent, *story_ids)
            pipe.zrem(k.stories_size, *story_ids)
            pipe.zrem(k.stories_kept, *story_ids)
