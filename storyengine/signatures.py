"""Exact fingerprints, word-shingle MinHash signatures and their LSH bands.

datasketch does what it is good at here: the MinHash permutations and the
choice of bands and rows for a Jaccard threshold. Its MinHash arithmetic is
done here as arrays over a whole batch of texts (equal to its
``MinHash.update_batch``, tests/storyengine/test_featurise_batch.py). The bands are stored by
the decision state (:mod:`storyengine.state`) in a pipelined layout (one round trip per batch)
instead of datasketch's own Redis storage (about 30 per insert-and-query).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache, partial
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
    return _token_hashes(joined if joined is not None else " ".join(tokens).encode("utf-8"))


def _token_hashes(joined: bytes) -> np.ndarray:
    data = np.frombuffer(joined, dtype=np.uint8)
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


# Texts are hashed together in runs of about this many bytes (a word's hash
# is the same wherever it stands), so the powers stay as short as one long text needs.
_JOINED_RUN = 1 << 18


class Shingles(NamedTuple):
    """The distinct shingle hashes of several texts, each text's sorted:
    text i's are ``hashes[bounds[i]:bounds[i + 1]]``."""
    hashes: np.ndarray  # uint32
    bounds: np.ndarray  # int64, one more than there are texts

    @classmethod
    def of_one(cls, hashes: np.ndarray) -> "Shingles":
        return cls(hashes, np.array([0, len(hashes)], dtype=np.int64))


def shingle_hashes(tokens: list[str], k: int, joined: bytes | None = None) -> np.ndarray:
    """The distinct 32-bit hashes of the text's k-word shingles (one shingle
    of all words when the text is shorter than k), sorted."""
    if k > len(_MIXERS):
        raise ValueError(f"shingle size at most {len(_MIXERS)}")
    if not tokens:
        return np.empty(0, dtype=np.uint32)
    return texts_shingles([joined if joined is not None else " ".join(tokens).encode("utf-8")], [len(tokens)], k).hashes


def texts_shingles(joined: list[bytes], counts: list[int], k: int) -> Shingles:
    """:func:`shingle_hashes` of several texts at once: ``joined[i]`` is text
    i's words joined by spaces (UTF-8), ``counts[i]`` how many words it has (at least one)."""
    if k > len(_MIXERS):
        raise ValueError(f"shingle size at most {len(_MIXERS)}")
    counts = np.asarray(counts, dtype=np.int64)
    runs, run, size = [], [], 0
    for text in joined:
        if run and size + len(text) > _JOINED_RUN:
            runs.append(b" ".join(run))
            run, size = [], 0
        run.append(text)
        size += len(text) + 1
    runs.append(b" ".join(run))
    hashes = np.concatenate([_token_hashes(r) for r in runs]) if len(runs) > 1 else _token_hashes(runs[0])
    if len(hashes) != counts.sum():
        raise ValueError("a text's word count does not match its joined words")
    # Each text's windows: k words from every word with k - 1 after it in
    # the text; a text shorter than k is one window of all its words.
    width = np.minimum(counts, k)
    windows = counts - width + 1
    text_of = np.repeat(np.arange(len(counts), dtype=np.uint64), windows)
    first = np.arange(int(windows.sum()), dtype=np.int64) + \
        np.repeat(np.cumsum(counts) - counts - np.cumsum(windows) + windows, windows)  # each window's first word
    # The k words from every word on, mixed (wrapping uint64 arithmetic is the point here); then each text's windows.
    running = hashes * _MIXERS[0]
    for j in range(1, min(k, len(hashes))):
        running[:len(hashes) - j] += hashes[j:] * _MIXERS[j]
    mixed = running[first]
    short = np.flatnonzero(width < k)
    if len(short):  # a text shorter than k: its one window stops at its last word
        at = (np.cumsum(windows) - windows)[short]
        mixed[at] = 0
        for j in range(k - 1):
            words = width[short] > j
            mixed[at[words]] += hashes[first[at[words]] + j] * _MIXERS[j]
    folded = (mixed >> np.uint64(32)) ^ (mixed & np.uint64(0xFFFFFFFF))
    keys = _distinct((text_of << np.uint64(32)) | folded)  # sorted by text, then hash
    return Shingles((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                    _bounds(keys >> np.uint64(32), len(counts)))


def _distinct(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array (a sort is many times faster than numpy 2's hashing unique here)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _bounds(text_of: np.ndarray, texts: int) -> np.ndarray:
    """Where each text's values begin (and the last ends) in values grouped by text."""
    return np.searchsorted(text_of, np.arange(texts + 1, dtype=text_of.dtype))


@lru_cache(maxsize=4)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    # datasketch's own permutations for the scheme: generating them costs
    # more than hashing an article, so they are made once.
    a, b = MinHash(num_perm=num_perm, scheme=_SCHEME).permutations
    return a.astype(np.uint32)[:, None], b.astype(np.uint32)[:, None]


def _fmix32(h: np.ndarray) -> np.ndarray:
    # datasketch's pre-mix for the affine32 scheme (murmur3's 32-bit finaliser).
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


# Shingles permuted at once, at most this many (128 x 8192 x 4 bytes = 4 MB).
_MINHASH_RUN = 8192


def minhash(hashes: np.ndarray, num_perm: int) -> np.ndarray:
    """The MinHash signature (uint32[num_perm]) of a set of shingle hashes,
    as datasketch's MinHash (scheme affine32, the hashes as they are) gives it."""
    return minhashes(Shingles.of_one(hashes), num_perm)[0]


def minhashes(shingles: Shingles, num_perm: int) -> np.ndarray:
    """:func:`minhash` of each text of ``shingles``: uint32[texts, num_perm].
    Every permutation of every shingle of a batch in a few array operations
    (permutations by shingles, so each minimum runs along memory)."""
    a, b = _permutations(num_perm)
    bounds = shingles.bounds
    out = np.full((num_perm, len(bounds) - 1), 0xFFFFFFFF, dtype=np.uint32)  # an empty set's, as datasketch's
    hashes = _fmix32(shingles.hashes.astype(np.uint32))
    texts = np.flatnonzero(bounds[1:] > bounds[:-1])  # those with shingles, and where each one's begin
    starts = bounds[texts]
    work = np.empty((num_perm, min(_MINHASH_RUN, len(hashes))), dtype=np.uint32)
    for lo in range(0, len(hashes), _MINHASH_RUN):
        hi = min(lo + _MINHASH_RUN, len(hashes))
        first, end = np.searchsorted(starts, lo, side="right") - 1, np.searchsorted(starts, hi)
        permuted = work[:, :hi - lo]
        np.multiply(a, hashes[lo:hi], out=permuted)  # wrapping uint32 arithmetic, as datasketch's
        permuted += b
        lows = np.minimum.reduceat(permuted, np.maximum(starts[first:end], lo) - lo, axis=1)
        at = texts[first:end]  # a text's shingles may run on from the run before
        out[:, at] = np.minimum(out[:, at], lows)
    return np.ascontiguousarray(out.T)


def signature_to_bytes(signature: np.ndarray) -> bytes:
    return signature.astype("<u4").tobytes()


def signature_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u4")


_SLOT_HASH = partial(hashlib.blake2b, digest_size=6)  # a band's slot: bucket and field (BandLayout.band_slots)


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
        return self.texts_band_slots(signature.reshape(1, -1))[0]

    def texts_band_slots(self, signatures: np.ndarray) -> list[list[tuple[int, bytes]]]:
        """:meth:`band_slots` of each row of ``signatures`` (texts x num_perm)."""
        width = 4 * self.rows
        raw = np.ascontiguousarray(signatures[:, :self.bands * self.rows], dtype="<u4").tobytes()
        digests = [h.digest() for h in map(_SLOT_HASH, [raw[at:at + width] for at in range(0, len(raw), width)])]
        # The bucket is a digest's first two bytes (little-endian) modulo SLOT_BUCKETS, a power of two.
        heads = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 6)[:, :2].astype(np.int64)
        buckets = ((heads[:, 0] | (heads[:, 1] << 8)) % self.SLOT_BUCKETS).tolist()
        slots = list(zip(buckets, [digest[2:] for digest in digests]))
        return [slots[at:at + self.bands] for at in range(0, len(slots), self.bands)]

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
    return shingle_sets(Shingles.of_one(hashes))[0]


def shingle_sets(shingles: Shingles) -> list[np.ndarray]:
    """:func:`shingle_set` of each text of ``shingles``."""
    texts = len(shingles.bounds) - 1
    text_of = np.repeat(np.arange(texts, dtype=np.uint64), np.diff(shingles.bounds))
    keys = _distinct((text_of << np.uint64(16)) | (shingles.hashes & np.uint32(0xFFFF)).astype(np.uint64))
    values = (keys & np.uint64(0xFFFF)).astype(np.uint16)
    bounds = _bounds(keys >> np.uint64(16), texts).tolist()
    return [values[lo:hi].copy() for lo, hi in zip(bounds, bounds[1:])]  # each its own: a view keeps the batch


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
        figures = self.overlap_arrays(others, min_containment)
        return list(map(Overlap, figures.containment.tolist(), figures.jaccard.tolist(), figures.chance.tolist()))

    def overlap_arrays(self, others: list[np.ndarray], min_containment: float = 0.0) -> "Overlaps":
        """:meth:`overlaps` as arrays, one entry per one of ``others`` (at least one)."""
        size = len(self.shingles)
        lengths = np.fromiter(map(len, others), dtype=np.int64, count=len(others))
        # Each one's values in this set, summed segment by segment (reduceat over
        # the non-empty ones: an empty one has none); take() gathers faster than
        # [], and faster still given the indices as intp than converting them itself.
        hits = self.mask.take(np.concatenate(others, dtype=np.intp)).view(np.uint8)
        common = np.zeros(len(others), dtype=np.int64)
        nonempty = lengths > 0
        if len(hits):
            common[nonempty] = np.add.reduceat(hits, (np.cumsum(lengths) - lengths)[nonempty], dtype=np.int64)
        small, large = np.minimum(lengths, size), np.maximum(lengths, size)
        rate = large / 65536.0
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty set: 0 below
            containment = np.maximum(0.0, (common / small - rate) / (1.0 - rate))
            jaccard = common / (size + lengths - common)
        if not size or not nonempty.all():
            empty = small == 0
            containment[empty] = jaccard[empty] = 0.0
        chance = np.ones(len(others))
        needed = (common > 0) & (containment >= min_containment)
        if needed.any():
            # What binom.sf gives, without its argument checks (about 30 us a call): the counts are in its
            # support. _sf is scipy's own (private) method: scipy is pinned, and tests/storyengine compare
            # it with binom.sf (test_duplicates.py), so an upgrade that changes it fails there.
            chance[needed] = np.clip(binom._sf(common[needed] - 1, small[needed], rate[needed]), 0.0, 1.0)
        return Overlaps(containment, jaccard, chance, small)


class Overlaps(NamedTuple):
    """:class:`Overlap` figures of several sets as arrays, and each pair's smaller set size."""
    containment: np.ndarray
    jaccard: np.ndarray
    chance: np.ndarray
    smaller: np.ndarray


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
