"""Story assignment: which recent story, if any, a new article belongs to.

Pure functions over vectors and times; :mod:`storyengine.pipeline` feeds them
what it read from Redis and writes back what they decide.

An article joins the story with the highest *average link*: the mean cosine
between the article and the story's members, each weighed by a Gaussian
kernel on the time between them (Miranda et al. 2018 use the same shape,
sigma 3 days; we default to 36 hours). Only members inside the window count,
in the sum and in the mean, so a story that keeps being covered for weeks
stays one story, while events months apart never merge.

Average link, not a centroid, is the guard against chaining: one article
that bridges two events resembles a few members of each, and the mean over
all of a story's members stays low. Offline, average-link clustering is the
classic method for this task; this is its online, one-pass form.

Members are not stored one by one: each story keeps, per time bucket
(``bucket_hours``), the sum of its members' unit vectors, how many there are
and the sum of their times. The mean cosine against a bucket is then one dot
product, and the kernel is applied at the bucket's mean time.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from .settings import Settings
from .vectors import SparseVector

HOUR = 3600.0
_BUCKET_HEADER = struct.Struct("<Id")  # member count, sum of member times


@dataclass
class Bucket:
    """The members of one story published in one time bucket."""
    vector: SparseVector  # sum of the members' unit TF-IDF vectors
    count: int
    time_sum: float

    @property
    def mean_time(self) -> float:
        return self.time_sum / self.count

    def add(self, vector: SparseVector, published: float, max_terms: int) -> "Bucket":
        return Bucket(self.vector.add(vector).top(max_terms), self.count + 1, self.time_sum + published)

    def merge(self, other: "Bucket", max_terms: int) -> "Bucket":
        return Bucket(self.vector.add(other.vector).top(max_terms), self.count + other.count,
                      self.time_sum + other.time_sum)

    def to_bytes(self) -> bytes:
        return _BUCKET_HEADER.pack(self.count, self.time_sum) + self.vector.to_bytes()

    def stored(self) -> "Bucket":
        """This bucket as :meth:`from_bytes` reads back what :meth:`to_bytes` wrote."""
        return Bucket(self.vector.stored(), self.count, self.time_sum)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Bucket":
        count, time_sum = _BUCKET_HEADER.unpack_from(raw)
        return cls(SparseVector.from_bytes(raw[_BUCKET_HEADER.size:]), count, time_sum)

    @classmethod
    def of(cls, vector: SparseVector, published: float) -> "Bucket":
        return cls(vector, 1, published)


def bucket_index(published: float, settings: Settings) -> int:
    return int(published // (settings.bucket_hours * HOUR))


def bucket_field(index: int) -> str:
    return f"b:{index}"


def buckets_near(published: float, settings: Settings) -> list[int]:
    """The buckets that can hold members inside the window around ``published``."""
    window = settings.story_window_hours * HOUR
    return list(range(bucket_index(published - window, settings), bucket_index(published + window, settings) + 1))


def kernel(gap_seconds: float, settings: Settings) -> float:
    """Gaussian time kernel; 0 outside the window."""
    if abs(gap_seconds) > settings.story_window_hours * HOUR:
        return 0.0
    hours = gap_seconds / HOUR
    return math.exp(-(hours * hours) / (2.0 * settings.time_sigma_hours ** 2))


@dataclass
class StoryState:
    """What assignment needs to know of a candidate story."""
    story_id: str
    first_seen: float
    last_updated: float
    originals: int
    buckets: dict[int, Bucket] = field(default_factory=dict)


@dataclass(frozen=True)
class StoryScore:
    story_id: str
    score: float     # time-weighted mean cosine against the members in the window
    members: int     # how many members that mean is over

    def as_dict(self) -> dict:
        return {"story": self.story_id, "score": round(self.score, 4), "members_compared": self.members}


def average_link(vector: SparseVector, published: float, buckets: dict[int, Bucket],
                 settings: Settings) -> tuple[float, int]:
    """(mean kernel-weighted cosine, members counted) between one unit vector
    and a story's buckets."""
    total = 0.0
    members = 0
    for bucket in buckets.values():
        weight = kernel(published - bucket.mean_time, settings)
        if weight == 0.0 or bucket.count == 0:
            continue
        total += weight * vector.dot(bucket.vector)
        members += bucket.count
    return (total / members if members else 0.0), members


def story_link(a: dict[int, Bucket], b: dict[int, Bucket], settings: Settings) -> float:
    """Average link between two stories: the mean kernel-weighted cosine over
    all pairs of their members (bucket by bucket). The repair pass merges
    stories whose link reaches ``merge_threshold``."""
    total = 0.0
    count_a = sum(x.count for x in a.values())
    count_b = sum(x.count for x in b.values())
    if not count_a or not count_b:
        return 0.0
    for x in a.values():
        for y in b.values():
            weight = kernel(x.mean_time - y.mean_time, settings)
            if weight:
                total += weight * x.vector.dot(y.vector)
    return total / (count_a * count_b)


def in_window(published: float, story: StoryState, window_hours: float) -> bool:
    window = window_hours * HOUR
    return story.last_updated >= published - window and story.first_seen <= published + window


def rank_stories(vector: SparseVector, published: float, candidates: list[StoryState],
                 settings: Settings) -> list[StoryScore]:
    """Candidate stories inside the window, best first: :func:`average_link`
    for each, with every bucket's dot product taken in one vectorised pass."""
    owners, weights, counts, indices, values = [], [], [], [], []
    ranked = []
    for position, story in enumerate(candidates):
        if not in_window(published, story, settings.story_window_hours):
            continue
        ranked.append(position)
        for bucket in story.buckets.values():
            weight = kernel(published - bucket.mean_time, settings)
            if weight == 0.0 or bucket.count == 0:
                continue
            owners.append(position)
            weights.append(weight)
            counts.append(bucket.count)
            indices.append(bucket.vector.indices)
            values.append(bucket.vector.values)
    totals = np.zeros(len(candidates))
    members = np.zeros(len(candidates), dtype=np.int64)
    if owners:
        lengths = np.fromiter((len(x) for x in indices), dtype=np.int64, count=len(indices))
        flat_indices = np.concatenate(indices)
        # The article's weight of each bucket term: look the term up among the
        # article's own (sorted) features; terms it lacks weigh 0.
        at = np.searchsorted(vector.indices, flat_indices)
        at[at == len(vector.indices)] = 0
        mine = np.where(vector.indices[at] == flat_indices, vector.values[at], 0.0) if len(vector.indices) else \
            np.zeros(len(flat_indices))
        products = mine * np.concatenate(values)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        dots = np.add.reduceat(products, starts) if len(products) else np.zeros(len(starts))
        dots[lengths == 0] = 0.0  # reduceat gives the next value for an empty segment
        np.add.at(totals, owners, np.asarray(weights) * dots)
        np.add.at(members, owners, counts)
    scores = [StoryScore(candidates[p].story_id, float(totals[p] / members[p]) if members[p] else 0.0, int(members[p]))
              for p in ranked]
    scores.sort(key=lambda s: (-s.score, s.story_id))
    return scores


def choose_story(scores: list[StoryScore], settings: Settings) -> StoryScore | None:
    """The best-scoring story if it clears the threshold, else None (open a new story)."""
    if scores and scores[0].score >= settings.story_threshold:
        return scores[0]
    return None


def updated_centroid(centroid: SparseVector, vector: SparseVector, settings: Settings) -> SparseVector:
    """Add an article's unit vector; keep the heaviest terms so a centroid stays small.
    The centroid names and indexes a story; assignment uses the buckets."""
    return centroid.add(vector).top(settings.centroid_terms)
