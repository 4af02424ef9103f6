"""A story's members, kept by time bucket (``bucket_hours``): per bucket the
sum of the members' unit vectors, how many there are and the sum of their
times, so the mean cosine against a bucket is one dot product and the time
kernel is applied at the bucket's mean time (storyengine.stories)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

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


def buckets_near(published: float, settings: Settings) -> list[int]:
    """The buckets that can hold members inside the window around ``published``."""
    window = settings.story_window_hours * HOUR
    return list(range(bucket_index(published - window, settings), bucket_index(published + window, settings) + 1))
