"""A deciding process's copy of the stream's document frequencies (the IDF
of its TF-IDF vectors), read again only when another process changed them."""
from __future__ import annotations

import numpy as np


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
