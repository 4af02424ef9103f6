"""The stream's document frequencies (the IDF of its TF-IDF vectors): how
they are stored, changed and read back, and a deciding process's copy.

Stored as {p}:df, u32 counters (big-endian, 4 bytes a feature: 1 MB by
default), plus {p}:df:deltas, a list of changes not yet folded into it. A
batch changes a few thousand counters; changing them one by one in Redis
(BITFIELD INCRBY) cost more server time than the rest of the commit, so a
commit appends its changes as one packed delta, and once the deltas add up
to ``Settings.df_fold_bytes`` the commit writes the folded counters instead
(storyengine.state). The counts are ``fold(base, deltas)`` either way:
saturating at 0 and 2^32-1, as BITFIELD OVERFLOW SAT kept them. Every change
bumps {p}:df:version, which is how a process knows its copy is current."""
from __future__ import annotations

import numpy as np

DELTA = np.dtype([("feature", ">u4"), ("change", ">i4")])
U32_MAX = 2 ** 32 - 1


def pack_delta(changes: np.ndarray) -> bytes:
    """A dense per-feature change as the stored delta: (feature, change) pairs of the features it changes."""
    changed = np.flatnonzero(changes)
    packed = np.zeros(len(changed), dtype=DELTA)
    packed["feature"] = changed
    packed["change"] = changes[changed]
    return packed.tobytes()


def apply_delta(counts: np.ndarray, packed: bytes) -> None:
    """Apply one stored delta to ``counts`` in place (a delta names each feature once)."""
    if not packed:
        return
    pairs = np.frombuffer(packed, dtype=DELTA)
    features = pairs["feature"].astype(np.int64)
    counts[features] = np.clip(counts[features] + pairs["change"], 0, U32_MAX)


def fold(base: bytes | None, deltas: list[bytes], n_features: int) -> np.ndarray:
    """The counts that {p}:df (``base``) and {p}:df:deltas hold, as int64."""
    counts = np.zeros(n_features, dtype=np.int64)
    if base:
        values = np.frombuffer(base[: 4 * n_features], dtype=">u4", count=min(len(base), 4 * n_features) // 4)
        counts[: len(values)] = values
    for packed in deltas:
        apply_delta(counts, packed)
    return counts


def as_base(counts: np.ndarray) -> bytes:
    """Counts as {p}:df stores them."""
    return counts.astype(">u4").tobytes()


class DocumentFrequencies:
    """A deciding process's copy: the counts, the number of documents, and the version it was read at."""

    def __init__(self, n_features: int) -> None:
        self.counts = np.zeros(n_features, dtype=np.int64)
        self.docs = 0
        self.version: int | None = None

    def load(self, base: bytes | None, deltas: list[bytes], docs, version) -> None:
        self.counts = fold(base, deltas, len(self.counts))
        self.docs = int(docs or 0)
        self.version = int(version or 0)
