"""What one batch of decisions reads and writes, so a batch costs a few round trips.

A worker decides articles in batches under one hold of the assignment lock
(:mod:`storyengine.locking`). Everything a batch will read is fetched up front
in two pipelined round trips (statuses, exact fingerprints, LSH bands and the
term index, then the candidate stories and candidate articles), and
everything it decides is written back in one atomic commit at the end
(storyengine.commit_script).

Between the two, the batch is its own view of the store: an article decided
early in the batch is seen by the ones after it exactly as if it had been
written to Redis already (its bands, fingerprint, story and terms), so a
batch decides the same way as one article at a time in the same order.
The view is only valid under the lock it was read under: no one else writes
decisions meanwhile, and the commit checks the lock's token. Reads and the commit go
through the decision state (storyengine.state); the batch itself holds no
connection.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from . import records
from .buckets import Bucket
from .records import STORY_FIELDS, decode, json_field, stored_buckets
from .settings import Settings
from .stories import CandidateStory
from .story_writer import StoryUpdate
from .vectors import SparseVector

# How many canonical articles one band slot remembers (the newest): texts
# that share a band are near-copies of each other, and verification compares
# against any of them.
BAND_SLOT_IDS = 3

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

    def as_candidate(self) -> CandidateStory:
        return CandidateStory(self.story_id, self.first_seen, self.last_updated, self.originals, self.buckets)

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

    def copy(self) -> "Story":
        """A story of its own as read (a batch updates it in place): its containers
        copied; buckets and the stored fields are only replaced, never changed."""
        return Story(self.story_id, self.first_seen, self.last_updated, self.article_count, self.originals,
                     dict(self.buckets), self.raw, list(self.indexed), list(self.indexed), list(self.canonicals))


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



@dataclass
class Candidate:
    """A canonical article a newcomer may be a copy of."""
    article_id: str
    story: str
    published: float
    shingle_set: np.ndarray


class Batch:
    """The reads, the in-batch view and the writes of one batch of decisions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.status: dict[str, bytes | None] = {}
        self.fingerprints: dict[str, str | None] = {}     # fingerprint -> owner, read or written
        self.band_values: dict[tuple[str, bytes], str] = {}  # (key, field) -> space-separated ids
        self.term_hits: dict[int, list[tuple[str, float]]] = {}
        self.stories: dict[str, Story | None] = {}
        self.touched: dict[str, Story] = {}  # the stories this batch changed (see touch)
        self._touched_by_term: dict[int, set[str]] = {}  # feature -> the touched stories it indexes now
        self._touched_terms: dict[str, list[int]] = {}  # touched story -> what it was indexed under when touched
        self.articles: dict[str, dict] = {}  # candidate articles read: story, duplicate_of, published, shingles
        # (article, story it was found by or None) -> what BatchReads.candidate made of it: within a
        # batch a canonical article stays one (only a promotion changes that, and it ends the batch).
        self.candidates: dict[tuple[str, str | None], Candidate | None] = {}
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
        joined = " ".join(filter(None, map(self.band_values.get, slots)))  # each slot's ids, space-separated
        return set(joined.split(" ")) if joined else set()

    def count_sentences(self, source: str, digests: list[bytes]) -> None:
        """A decided item's edge sentences, counted at the commit (storyengine.boilerplate)."""
        if digests:
            self.sentences_seen.setdefault(source, Counter()).update(digests)

    # ------------------------------------------------------------------ stories
    def touch(self, story: Story) -> None:
        """Mark a story as changed by this batch: it is written at the commit,
        and found by what it is indexed under now, not by what was read."""
        sid = story.story_id
        self.touched[sid] = story
        before = self._touched_terms.get(sid)
        if before is story.indexed:
            return
        by_term = self._touched_by_term
        for feature in before or ():
            by_term[feature].discard(sid)
        for feature in story.indexed:
            by_term.setdefault(feature, set()).add(sid)
        self._touched_terms[sid] = story.indexed

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
        by_term = self._touched_by_term
        touched = [sid for sid in set().union(*(by_term.get(x, ()) for x in wanted))
                   if self.touched[sid].last_updated >= since]
        if limit is None or len(found) + len(touched) <= limit:
            return set(found).union(touched)  # all of them: what each shares does not matter
        for sid in touched:
            # Summed over the same set in its own order, so the sum is the same to the last bit.
            found[sid] = sum(map(weight_of.get, wanted.intersection(self.touched[sid].indexed), repeat(1.0)))
        return set(sorted(found, key=lambda sid: (-found[sid], sid))[:limit])

    # ------------------------------------------------------------------ what the commit writes
    def story_updates(self) -> list[StoryUpdate]:
        """What the commit writes of each story this batch changed."""
        updates = []
        kept: dict[str, float] = {}
        for _, _, story_id, _, published in self.article_writes:
            kept[story_id] = max(kept.get(story_id, published), published)
        for story in self.touched.values():
            fields = {}
            if story.details_changed:
                d = story.details
                fields = records.encode_story_fields(
                    id=story.story_id, headline=d["headline"], representative=d["representative"],
                    centroid=d["centroid"], rep_vec=d["rep_vec"], term_names=d["names"], top_terms=d["top_terms"])
            fields.update(records.encode_story_fields(
                first_seen=story.first_seen, last_updated=story.last_updated, article_count=story.article_count,
                originals=story.originals, indexed=story.indexed, canonicals=story.canonicals,
                buckets={index: story.buckets[index] for index in story.dirty_buckets}))
            updates.append(StoryUpdate(
                story.story_id, fields, story.last_updated, story.article_count, story.indexed,
                story.indexed_at_start, story.last_updated_at_start, kept.get(story.story_id)))
        return updates

    def written_fingerprints(self) -> dict[str, str]:
        return {fp: self.fingerprints[fp] for fp in self._written_fps}

    def written_band_values(self) -> dict[tuple[str, bytes], str]:
        return {slot: self.band_values[slot] for slot in self._written_slots}

    def index_canonical(self, article_id: str, fingerprint: str, slots: list[tuple[str, bytes]]) -> None:
        """Make a new canonical article findable, in this batch and once committed."""
        self.fingerprints[fingerprint] = article_id
        self._written_fps.add(fingerprint)
        values = self.band_values
        for slot in slots:
            value = values.get(slot)
            if value:
                ids = [i for i in value.split(" ") if i and i != article_id]
                values[slot] = " ".join((ids + [article_id])[-BAND_SLOT_IDS:])
            else:  # most slots: no other text has this band
                values[slot] = article_id
        self._written_slots.update(slots)

    def count_terms(self, features: np.ndarray, change: int) -> None:
        if self.df_changes is None:
            self.df_changes = np.zeros(self.settings.hash_features, dtype=np.int64)
        self.df_changes[features] += change  # a document's features are distinct
        self.docs_change += change


def scored_members(flat: list) -> list[tuple[str, float]]:
    """(member, score) pairs from a WITHSCORES reply as a script returns it (flat)."""
    return [(decode(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
