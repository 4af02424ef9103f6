"""TF-IDF vectors with IDF taken from the stream itself.

scikit-learn's ``HashingVectorizer`` turns terms into counts over a fixed
hashed feature space, so no vocabulary has to be fitted in advance and every
worker maps a term to the same feature. Document frequencies live in Redis as
u32 counters (storyengine.document_frequencies); a worker reads the counters
of the article's own terms, under the assignment lock, so an article is only
ever weighed against the articles that were processed before it (and itself).
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32


def _pre_tokenised(doc):
    return doc


class Vectorizer:
    """Terms to hashed features exactly as ``HashingVectorizer`` maps them
    (murmurhash3, absolute value, modulo the feature count). A term's feature
    never changes, so a process remembers the ones it has hashed: news
    vocabulary repeats, and one dictionary look-up is cheaper than a call
    into scikit-learn per document."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self._hashing = HashingVectorizer(
            n_features=n_features, analyzer=_pre_tokenised, alternate_sign=False, norm=None)
        self._features = _Features(n_features)

    def reference_term_counts(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's own answer, which :meth:`term_counts` must equal."""
        row = self._hashing.transform([terms])
        row.sort_indices()
        return row.indices.astype(np.int64), row.data.astype(np.float64)

    def term_counts(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(feature indices sorted, raw counts) for one document's terms."""
        indices, counts, _ = self.counted(terms)
        return indices, counts

    def counted(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """:meth:`term_counts`, and a term for each feature (to name it to
        people). Each distinct term is hashed once: terms are tallied first."""
        if not terms:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64), {}
        tally = Counter(terms)
        hashed = np.fromiter(map(self._features.__getitem__, tally), dtype=np.int64, count=len(tally))
        names = dict(zip(hashed.tolist(), tally))
        counts = np.fromiter(tally.values(), dtype=np.float64, count=len(tally))
        order = np.argsort(hashed)
        indices, counts = hashed[order], counts[order]
        if len(names) < len(tally):  # two terms share a feature: their counts add up, as in scikit-learn
            indices, starts = np.unique(indices, return_index=True)
            counts = np.add.reduceat(counts, starts)
        return indices, counts, names

    def feature_of(self, term: str) -> int:
        # The same hash HashingVectorizer applies, so names can be put back on features.
        return self._features[term]


class _Features(dict):
    """term -> feature, remembered (looked up with ``map``, the loop stays in C)."""

    LIMIT = 500_000

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features

    def __missing__(self, term: str) -> int:
        if len(self) > self.LIMIT:
            self.clear()
        value = self[term] = abs(murmurhash3_32(term, seed=0)) % self.n_features
        return value


def idf(df: np.ndarray, docs: int) -> np.ndarray:
    """Smoothed IDF as scikit-learn's TfidfTransformer computes it, from the
    stream's counts so far; the document being weighed counts as seen (it has
    arrived), so its own terms are never "unseen"."""
    return np.log((2.0 + docs) / (2.0 + df)) + 1.0


# An index's three stored bytes, little-endian, weighed into one int64.
_BYTE_WEIGHTS = np.array([1, 1 << 8, 1 << 16], dtype=np.int64)


@dataclass
class SparseVector:
    """A sparse vector: sorted feature indices and their weights. Treated as
    read-only: every operation makes a new one."""
    indices: np.ndarray
    values: np.ndarray
    # Its weights are already what storage keeps (half precision, see to_bytes),
    # so stored() is itself: a vector read back, or made by stored().
    at_stored_precision: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def empty(cls) -> "SparseVector":
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))

    def norm(self) -> float:
        return float(np.sqrt(np.dot(self.values, self.values)))

    def normalised(self) -> "SparseVector":
        n = self.norm()
        return SparseVector(self.indices, self.values / n) if n > 0 else self

    def dot(self, other: "SparseVector") -> float:
        a, b = (self, other) if len(self.indices) <= len(other.indices) else (other, self)
        if len(a.indices) == 0:
            return 0.0
        # Both are sorted: find each of the shorter one's features in the longer.
        at = np.searchsorted(b.indices, a.indices)
        at[at == len(b.indices)] = 0
        shared = b.indices[at] == a.indices
        return float(np.dot(a.values[shared], b.values[at[shared]]))

    def cosine(self, other: "SparseVector") -> float:
        denominator = self.norm() * other.norm()
        return self.dot(other) / denominator if denominator > 0 else 0.0

    def add(self, other: "SparseVector") -> "SparseVector":
        # Both sorted: a stable sort of the two runs side by side merges them,
        # and a feature in both is summed (this one's weight first).
        indices = np.concatenate((self.indices, other.indices))
        values = np.concatenate((self.values, other.values))
        if len(indices) == 0:
            return SparseVector.empty()
        order = np.argsort(indices, kind="stable")
        indices, values = indices[order], values[order]
        first = np.empty(len(indices), dtype=bool)
        first[0] = True
        np.not_equal(indices[1:], indices[:-1], out=first[1:])
        if first.all():
            return SparseVector(indices, values)
        starts = np.flatnonzero(first)
        return SparseVector(indices[starts], np.add.reduceat(values, starts))

    def top(self, k: int) -> "SparseVector":
        if len(self.indices) <= k:
            return self
        keep = np.sort(np.argpartition(-self.values, k - 1)[:k])
        return SparseVector(self.indices[keep], self.values[keep], self.at_stored_precision)

    def places_of(self, features: np.ndarray) -> np.ndarray:
        """For each of ``features``: 1 + its place among this vector's features,
        0 for a feature this vector lacks."""
        if not len(self.indices) or not len(features):
            return np.zeros(len(features), dtype=np.int32)
        table = _PLACES.table
        size = max(int(self.indices[-1]), int(features.max())) + 1
        if len(table) < size:
            table = _PLACES.table = np.zeros(max(size, 1 << 18), dtype=np.int32)
        table[self.indices] = np.arange(1, len(self.indices) + 1, dtype=np.int32)
        try:
            return table.take(features)
        finally:
            table[self.indices] = 0

    def weights_of(self, features: list[int]) -> list[float]:
        """The weight of each of ``features`` (which must be among this vector's)."""
        return self.values[np.searchsorted(self.indices, features)].tolist() if features else []

    def heaviest(self, k: int) -> np.ndarray:
        """Indices of the k heaviest features, heaviest first (equal weights in index order)."""
        negated = -self.values
        if len(negated) > k > 0:
            # Only the weights at or above the k-th heaviest are sorted: in index
            # order, so a stable sort of them breaks ties as one of all would.
            near = np.flatnonzero(negated <= np.partition(negated, k - 1)[k - 1])
            return self.indices[near[np.argsort(negated[near], kind="stable")[:k]]]
        return self.indices[np.argsort(negated, kind="stable")[:k]]

    # Stored as 3-byte feature indices (hash_features is at most 2**24) and
    # half-precision weights: 5 bytes a term. Weights are sums of unit-vector
    # components; three significant digits are plenty to rank stories by.
    def to_bytes(self) -> bytes:
        n = len(self.indices)
        # The low three bytes of each index as a little-endian u32 holds them.
        low = self.indices.astype("<u4").view(np.uint8).reshape(n, 4)[:, :3]
        return low.tobytes() + self._half_values().tobytes()

    def stored(self) -> "SparseVector":
        """This vector as :meth:`from_bytes` reads back what :meth:`to_bytes` wrote."""
        if self.at_stored_precision:
            return self
        return SparseVector(self.indices, self._half_values().astype(np.float64), True)

    def _half_values(self) -> np.ndarray:
        # Clipped to what half precision holds (a term weighing 65,504 is already
        # far beyond any other: a sum over that many articles).
        return np.minimum(np.maximum(self.values, -65504.0), 65504.0).astype("<f2")  # a clip, without its wrapper

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "SparseVector":
        if not raw:
            return cls.empty()
        n = len(raw) // 5
        indices = np.frombuffer(raw, dtype=np.uint8, count=3 * n).reshape(n, 3) @ _BYTE_WEIGHTS
        values = np.frombuffer(raw, dtype="<f2", count=n, offset=3 * n).astype(np.float64)
        return cls(indices, values, True)


class _PlaceTable(threading.local):
    """For SparseVector.places_of: feature -> 1 + its place in the vector at
    hand, 0 elsewhere, as long as the feature space, one per thread and all 0
    between uses. One gather from it places thousands of features at once,
    where a binary search per feature (np.searchsorted) takes several times as long."""

    def __init__(self) -> None:
        self.table = np.zeros(0, dtype=np.int32)


_PLACES = _PlaceTable()


def tfidf(indices: np.ndarray, counts: np.ndarray, df: np.ndarray, docs: int) -> SparseVector:
    """Sublinear TF times stream IDF, L2-normalised. ``df`` holds the document
    frequency of each of ``indices``."""
    if len(indices) == 0:
        return SparseVector.empty()
    weights = (1.0 + np.log(counts)) * idf(df, docs)
    return SparseVector(indices, weights).normalised()
