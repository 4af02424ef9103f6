"""A story's members, kept by time bucket (``bucket_hours``): per bucket the
sum of the members' unit vectors, how many there are and the sum of their
times, so the mean cosine against a bucket is one dot product and the time
kernel is applied at the bucket's mean time (storyengine.stories)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import accumulate

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
        vector = self.vector.stored()
        return self if vector is self.vector else Bucket(vector, self.count, self.time_sum)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Bucket":
        count, time_sum = _BUCKET_HEADER.unpack_from(raw)
        return cls(SparseVector.from_bytes(raw[_BUCKET_HEADER.size:]), count, time_sum)

    @classmethod
    def of(cls, vector: SparseVector, published: float) -> "Bucket":
        return cls(vector, 1, published)


def bucket_index(published: float, settings: Settings) -> int:
    return int(published // (settings.bucket_hours * HOUR))


def buckets_near(published: float, settings: Settings) -> list[int]:
    """The buckets that can hold members inside the window around ``published``."""
    window = settings.story_window_hours * HOUR
    return list(range(bucket_index(published - window, settings), bucket_index(published + window, settings) + 1))


def bucket_dots(vector: SparseVector, buckets: list[SparseVector], owners: np.ndarray, stories: int,
                groups: np.ndarray | None, norms: bool) -> tuple[np.ndarray, np.ndarray | None, list[int] | None]:
    """Of each of ``buckets`` (their summed vectors): its dot with ``vector``
    and (with ``norms``) its norm; and with ``groups`` (a word id per feature
    of ``vector``), of each of the ``stories`` (``owners``: each bucket's, in
    order) how many distinct words it shares with ``vector``. One vectorised
    pass over all of them; each dot is summed over the bucket's terms in their
    order (``np.add.reduceat``), as every decision so far was."""
    # A few buckets a call: their lengths and where each begins as Python numbers.
    lengths = [len(b.indices) for b in buckets]
    flat_indices = np.concatenate([b.indices for b in buckets])
    flat_values = np.concatenate([b.values for b in buckets])
    starts = np.fromiter(accumulate(lengths[:-1], initial=0), dtype=np.intp, count=len(lengths))
    empty = np.array(lengths) == 0 if 0 in lengths else None  # reduceat gives the next value for an empty segment
    bucket_norms = None
    if norms:
        bucket_norms = np.zeros(len(buckets))
        if len(flat_values):
            bucket_norms = np.sqrt(np.add.reduceat(flat_values * flat_values, starts))
            if empty is not None:
                bucket_norms[empty] = 0.0
    if not len(vector.indices) or not len(flat_indices):
        return np.zeros(len(buckets)), bucket_norms, ([0] * stories if groups is not None else None)
    # The article's weight of each bucket term (0 for the terms it lacks).
    places = vector.places_of(flat_indices)
    dots = np.add.reduceat(np.concatenate(([0.0], vector.values)).take(places) * flat_values, starts)
    if empty is not None:
        dots[empty] = 0.0
    if groups is None:
        return dots, bucket_norms, None
    shared = [0] * stories
    found = np.flatnonzero(places > 0)
    if len(found):
        # Distinct (story, word) pairs among the bucket terms the article has, counted per story.
        size = int(groups.max()) + 1
        pairs = np.sort(np.repeat(owners, lengths).take(found) * size + groups.take(places.take(found) - 1))
        first = np.empty(len(pairs), dtype=bool)
        first[0] = True
        np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
        shared = np.bincount(pairs[first] // size, minlength=stories).tolist()
    return dots, bucket_norms, shared
