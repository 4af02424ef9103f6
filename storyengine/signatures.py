"""Exact fingerprints, word-shingle MinHash signatures and their LSH bands.

datasketch does what it is good at here: the MinHash permutations and the
choice of bands and rows for a Jaccard threshold. The bands are stored by
the decision state (:mod:`storyengine.state`) in a pipelined layout (one round trip per batch)
instead of datasketch's own Redis storage (about 30 per insert-and-query).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from datasketch import MinHash, MinHashLSH
from scipy.stats import binom

_SCHEME = "affine32"
# Odd 64-bit multipliers that mix the k token hashes of a shingle, position-aware.
_MIXERS = np.array([  # one per word of a shingle: settings.MAX_SHINGLE_SIZE of them
    0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
    0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9,
], dtype=np.uint64)


def exact_fingerprint(tokens: list[str], joined: bytes | None = None) -> str:
    """A hash of the normalised text: equal for copies that differ only in
    case, whitespace, punctuation or typography. ``joined`` is
    ``" ".join(tokens).encode()`` if the caller has it."""
    return hashlib.blake2b(joined if joined is not None else " ".join(tokens).encode("utf-8"),
                           digest_size=12).hexdigest()


# Each word's 64-bit hash, for all words of a text at once: a polynomial
# hash over the UTF-8 bytes of the words joined by spaces, as differences of
# one running sum (position-free: each byte weighs P^-offset in its word),
# then a mixing finaliser. A few array operations per text instead of a
# hash call or a dictionary look-up per word.
_P = 0x100000001B3  # odd, so invertible modulo 2**64
_P_INVERSE = pow(_P, -1, 1 << 64)


class _Powers:
    """P**j and P**-j modulo 2**64 for j = 0 .. n, grown by doubling as texts
    need (the longest body the API takes needs about 16 MB of them)."""

    def __init__(self) -> None:
        self.up = self.down = np.ones(1, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        up, down = self.up, self.down
        while len(up) <= n:  # the next len(up) powers are these times P**len(up): wrapping uint64 products
            m = len(up)
            up = np.concatenate((up, up * np.uint64(pow(_P, m, 1 << 64))))
            down = np.concatenate((down, down * np.uint64(pow(_P_INVERSE, m, 1 << 64))))
        self.up, self.down = up, down
        return up, down


_POWERS = _Powers()


def token_hashes(tokens: list[str], joined: bytes | None = None) -> np.ndarray:
    """A 64-bit hash per token (equal tokens, equal hashes). Tokens hold no
    spaces; ``joined`` is ``" ".join(tokens).encode()`` if the caller has it."""
    data = np.frombuffer(joined if joined is not None else " ".join(tokens).encode("utf-8"), dtype=np.uint8)
    n = len(data)
    up, down = _POWERS.upto(n)
    running = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(data * down[:n], out=running[1:])  # wrapping uint64 arithmetic is the point here
    spaces = np.flatnonzero(data == 32)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [n]))
    h = (running[ends] - running[starts]) * up[starts] + (ends - starts).astype(np.uint64)
    h ^= h >> np.uint64(33)  # murmur3's fmix64, so every bit depends on every byte
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def shingle_hashes(tokens: list[str], k: int, joined: bytes | None = None) -> np.ndarray:
    """The distinct 32-bit hashes of the text's k-word shingles (one shingle
    of all words when the text is shorter than k)."""
    if not tokens:
        return np.empty(0, dtype=np.uint32)
    if k > len(_MIXERS):
        raise ValueError(f"shingle size at most {len(_MIXERS)}")
    hashes = token_hashes(tokens, joined)
    k = min(k, len(tokens))
    n = len(tokens) - k + 1
    mixed = np.zeros(n, dtype=np.uint64)
    for j in range(k):  # wrapping uint64 arithmetic is the point here
        mixed += hashes[j:j + n] * _MIXERS[j]
    folded = (mixed >> np.uint64(32)) ^ (mixed & np.uint64(0xFFFFFFFF))
    return np.unique(folded.astype(np.uint32))


# Shingle hashes go into MinHash as they are (they are hashes already).
_identity = int


@lru_cache(maxsize=4)
def _template(num_perm: int) -> MinHash:
    # Generating permutations costs more than hashing an article; share them.
    return MinHash(num_perm=num_perm, scheme=_SCHEME, hashfunc=_identity)


def minhash(hashes: np.ndarray, num_perm: int) -> np.ndarray:
    """The MinHash signature (uint32[num_perm]) of a set of shingle hashes."""
    template = _template(num_perm)
    m = MinHash(num_perm=num_perm, scheme=_SCHEME, hashfunc=_identity, permutations=template.permutations)
    m.update_batch(hashes.tolist())  # Python ints: datasketch calls hashfunc on each
    return m.hashvalues.astype(np.uint32)


def signature_to_bytes(signature: np.ndarray) -> bytes:
    return signature.astype("<u4").tobytes()


def signature_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u4")


@dataclass(frozen=True)
class BandLayout:
    bands: int
    rows: int

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int) -> "BandLayout":
        """datasketch's choice of (bands, rows) minimising false positives
        and negatives around ``threshold``."""
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        return cls(bands=lsh.b, rows=lsh.r)

    # Band slots live in 2048 small hashes per band: each stays short (a slot
    # is found by a scan of its compact encoding) and compact up to about a
    # million canonical articles.
    SLOT_BUCKETS = 2048

    def band_slots(self, signature: np.ndarray) -> list[tuple[int, bytes]]:
        """(bucket, field) per band: which small hash, and which 4-byte field in it."""
        raw = signature.astype("<u4")
        out = []
        for i in range(self.bands):
            digest = hashlib.blake2b(raw[i * self.rows:(i + 1) * self.rows].tobytes(), digest_size=6).digest()
            out.append((int.from_bytes(digest[:2], "little") % self.SLOT_BUCKETS, digest[2:]))
        return out

    @staticmethod
    def slots_to_bytes(slots: list[tuple[int, bytes]]) -> bytes:
        return b"".join(bucket.to_bytes(2, "little") + f for bucket, f in slots)

    @staticmethod
    def slots_from_bytes(raw: bytes) -> list[tuple[int, bytes]]:
        return [(int.from_bytes(raw[i:i + 2], "little"), raw[i + 2:i + 6]) for i in range(0, len(raw), 6)]

    def band_hashes(self, signature: np.ndarray) -> list[str]:
        """One short hex digest per band; two signatures sharing any band are candidates."""
        raw = signature.astype("<u4")
        return [
            hashlib.blake2b(raw[i * self.rows:(i + 1) * self.rows].tobytes(), digest_size=8).hexdigest()
            for i in range(self.bands)
        ]


def shingle_set(hashes: np.ndarray) -> np.ndarray:
    """The text's shingles folded to 16 bits, sorted and distinct: what is
    stored to measure containment exactly. Two bytes a shingle; a chance
    collision adds at most |B| / 65536 to a containment, well under 1 %
    for an article of a few hundred shingles."""
    return np.unique((hashes & np.uint32(0xFFFF)).astype(np.uint16))


def shingle_set_to_bytes(shingles: np.ndarray) -> bytes:
    return shingles.astype("<u2").tobytes()


def shingle_set_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u2")


class Overlap(NamedTuple):
    containment: float  # share of the smaller set in the larger one, corrected for chance
    jaccard: float
    chance: float       # probability of at least this many common values by accident


class ShingleMask:
    """One text's shingle set as a 65,536-entry mask, to measure its overlap
    with many candidates quickly (one gather each instead of a set intersection)."""

    def __init__(self, shingles: np.ndarray) -> None:
        self.shingles = shingles
        self.mask = np.zeros(65536, dtype=bool)
        self.mask[shingles] = True

    def overlap(self, other: np.ndarray, min_containment: float = 0.0) -> Overlap:
        """Same as :func:`overlap`; the chance is only worked out for a
        containment of at least ``min_containment`` (1.0 below it)."""
        return self.overlaps([other], min_containment)[0]

    def overlaps(self, others: list[np.ndarray], min_containment: float = 0.0) -> list[Overlap]:
        """:meth:`overlap` with each of ``others``: one gather for all of
        them, the figures worked out as arrays."""
        if not others:
            return []
        size = len(self.shingles)
        lengths = np.fromiter(map(len, others), dtype=np.int64, count=len(others))
        hits = np.concatenate(([0], np.cumsum(self.mask[np.concatenate(others)], dtype=np.int64)))
        ends = np.cumsum(lengths)
        common = hits[ends] - hits[ends - lengths]
        small, large = np.minimum(lengths, size), np.maximum(lengths, size)
        rate = large / 65536.0
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty set: 0 below
            containment = np.maximum(0.0, (common / small - rate) / (1.0 - rate))
            jaccard = common / (size + lengths - common)
        empty = small == 0
        containment[empty] = jaccard[empty] = 0.0
        chance = np.ones(len(others))
        needed = (common > 0) & (containment >= min_containment)
        if needed.any():
            chance[needed] = binom.sf(common[needed] - 1, small[needed], rate[needed])
        return list(map(Overlap, containment.tolist(), jaccard.tolist(), chance.tolist()))


def overlap(a: np.ndarray, b: np.ndarray) -> Overlap:
    """How much two shingle sets from :func:`shingle_set` share.

    A 16-bit value lands in a set of n values by accident with probability
    n / 65536: noise for an article (a few hundred shingles), not for a
    28,000-word one, where a third of any short text's values would match.
    So the containment is corrected for that rate, and ``chance`` says how
    likely the overlap is by accident (binomial tail): a copy needs both a
    high containment and a negligible chance."""
    return ShingleMask(a).overlap(b)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)
