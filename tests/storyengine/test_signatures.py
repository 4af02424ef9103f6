"""Exact fingerprints, shingles, MinHash estimates, shingle sets (containment) and LSH bands."""
from __future__ import annotations

import random

import numpy as np
import pytest

from storyengine import signatures as S
from storyengine.duplicates import is_copy
from storyengine.settings import Settings
from storyengine.text import words

NUM_PERM = 128

STORY = (
    "Rescue teams in the mountain town of Velmora pulled three hikers from a collapsed ice cave on Saturday "
    "after a search that lasted almost two days, regional police said. The hikers, two brothers from Arlen "
    "and a guide from the town, were trapped when part of the cave roof gave way during unusually warm "
    "weather. Helicopters could not reach the site because of low cloud, so volunteers carried equipment up "
    "the valley on foot. Doctors at Velmora District Hospital said all three were suffering from "
    "hypothermia but were expected to recover. The regional government has closed the glacier trail until "
    "engineers can inspect the remaining caves, and mountain guides have been asked to keep visitors away "
    "from the ice fields for the rest of the month."
)


def vocabulary_text(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    return [rng.choice(vocab) for _ in range(n)]


def true_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return len(np.intersect1d(a, b)) / len(np.union1d(a, b))


# ---------------------------------------------------------------- exact fingerprint
def test_exact_fingerprint_equal_for_case_punctuation_whitespace_and_typography_variants():
    original = "The minister\u2019s plan \u2014 \u201cbold\u201d, critics say\u2026 It passed 52-48."
    variant = "THE MINISTER'S PLAN - \"Bold\" critics say...   it passed 52 48"
    assert words(original) == words(variant)
    assert S.exact_fingerprint(words(original)) == S.exact_fingerprint(words(variant))


def test_exact_fingerprint_differs_when_a_word_changes_or_moves():
    base = S.exact_fingerprint(words(STORY))
    assert S.exact_fingerprint(words(STORY.replace("three hikers", "four hikers"))) != base
    assert S.exact_fingerprint(["a", "b", "c"]) != S.exact_fingerprint(["a", "c", "b"])
    # Joining with spaces is the separator: token boundaries matter.
    assert S.exact_fingerprint(["ab", "c"]) != S.exact_fingerprint(["a", "bc"])


def test_exact_fingerprint_is_a_24_char_hex_digest():
    fp = S.exact_fingerprint(words(STORY))
    assert len(fp) == 24
    int(fp, 16)


# ---------------------------------------------------------------- shingles
def test_shingle_hashes_are_distinct_sorted_uint32_one_per_distinct_shingle():
    tokens = words(STORY)
    hashes = S.shingle_hashes(tokens, 5)
    assert hashes.dtype == np.uint32
    assert len(np.unique(hashes)) == len(hashes)
    assert np.all(np.diff(hashes.astype(np.int64)) > 0)
    distinct_shingles = {tuple(tokens[i:i + 5]) for i in range(len(tokens) - 4)}
    assert len(hashes) == len(distinct_shingles)


def test_repeated_shingles_hash_once():
    tokens = ["the", "vote", "was", "held", "again"] * 4  # 16 windows, 5 distinct shingles
    assert len(S.shingle_hashes(tokens, 5)) == 5


def test_shingle_hashes_depend_on_word_order():
    assert not np.array_equal(S.shingle_hashes(["a", "b", "c"], 3), S.shingle_hashes(["c", "b", "a"], 3))


def test_short_text_is_one_shingle_of_all_words_and_empty_text_is_empty():
    short = S.shingle_hashes(["storm", "hits", "coast"], 5)
    assert len(short) == 1
    assert np.array_equal(short, S.shingle_hashes(["storm", "hits", "coast"], 3))
    empty = S.shingle_hashes([], 5)
    assert empty.dtype == np.uint32 and len(empty) == 0


def test_shingle_size_above_the_mixers_is_rejected():
    with pytest.raises(ValueError, match="at most 8"):
        S.shingle_hashes(["w"] * 20, 9)


# ---------------------------------------------------------------- MinHash
def test_minhash_signature_shape_dtype_and_determinism():
    hashes = S.shingle_hashes(words(STORY), 5)
    sig = S.minhash(hashes, NUM_PERM)
    assert sig.shape == (NUM_PERM,) and sig.dtype == np.uint32
    assert np.array_equal(sig, S.minhash(hashes.copy(), NUM_PERM))
    assert S.jaccard(sig, S.minhash(hashes[::-1].copy(), NUM_PERM)) == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_minhash_jaccard_estimate_is_close_to_true_jaccard(seed):
    rng = random.Random(1000 + seed)
    a = vocabulary_text(seed, 300)
    # b shares a prefix of a and adds its own words: true Jaccard spread over (0, 1).
    b = a[: rng.randint(60, 290)] + vocabulary_text(500 + seed, rng.randint(0, 120))
    ha, hb = S.shingle_hashes(a, 5), S.shingle_hashes(b, 5)
    expected = true_jaccard(ha, hb)
    estimate = S.jaccard(S.minhash(ha, NUM_PERM), S.minhash(hb, NUM_PERM))
    assert estimate == pytest.approx(expected, abs=0.1)


def test_minhash_estimates_are_unbiased_on_average():
    errors = []
    for seed in range(40):
        a = vocabulary_text(seed, 250)
        b = a[50:200] + vocabulary_text(9000 + seed, 60)
        ha, hb = S.shingle_hashes(a, 5), S.shingle_hashes(b, 5)
        errors.append(S.jaccard(S.minhash(ha, NUM_PERM), S.minhash(hb, NUM_PERM)) - true_jaccard(ha, hb))
    assert abs(float(np.mean(errors))) < 0.02
    # The standard error of one estimate is sqrt(J(1-J)/128) <= 0.045.
    assert float(np.std(errors)) < 0.06


def test_minhash_of_unrelated_texts_is_near_zero():
    ha = S.shingle_hashes(vocabulary_text(1, 300), 5)
    hb = S.shingle_hashes(vocabulary_text(2, 300), 5)
    assert S.jaccard(S.minhash(ha, NUM_PERM), S.minhash(hb, NUM_PERM)) < 0.05


# ---------------------------------------------------------------- shingle sets and overlap
def sset(tokens: list[str]) -> np.ndarray:
    return S.shingle_set(S.shingle_hashes(tokens, 5))


def test_shingle_set_is_sorted_distinct_uint16_of_the_low_bits():
    hashes = S.shingle_hashes(words(STORY), 5)
    shingles = S.shingle_set(hashes)
    assert shingles.dtype == np.uint16
    assert np.all(np.diff(shingles.astype(np.int64)) > 0)
    assert set(shingles.tolist()) == {int(h) & 0xFFFF for h in hashes}
    # A few hundred shingles folded to 16 bits: (almost) no collisions.
    assert len(shingles) >= len(hashes) - 2
    assert len(S.shingle_set(np.empty(0, dtype=np.uint32))) == 0


def test_overlap_of_a_truncated_copy_has_containment_one_while_jaccard_is_near_half():
    tokens = vocabulary_text(7, 400)
    whole, half = sset(tokens), sset(tokens[:200])
    containment, jaccard, chance = S.overlap(whole, half)
    assert containment == pytest.approx(1.0, abs=0.01)
    assert jaccard == pytest.approx(0.5, abs=0.02)
    assert chance < 1e-100
    # Argument order does not matter: it is the smaller set's share.
    assert S.overlap(half, whole) == (containment, jaccard, chance)


def test_overlap_of_a_real_article_and_its_first_paragraph():
    tokens = words(STORY)
    lead = tokens[:40]
    containment, jaccard, _ = S.overlap(sset(tokens), sset(lead))
    assert containment == 1.0
    assert jaccard == pytest.approx(len(sset(lead)) / len(sset(tokens)))
    assert jaccard < 0.4  # below the LSH threshold: LSH alone would not find this copy


def test_overlap_exact_values_on_small_sets():
    a = np.array([1, 2, 3, 4], dtype=np.uint16)
    b = np.array([3, 4, 5, 6, 7, 8], dtype=np.uint16)
    # Two in common: 2/4 of the smaller set (less the 6/65536 a value would
    # match by chance), 2/8 of the union.
    rate = 6 / 65536
    containment, jaccard, chance = S.overlap(a, b)
    assert containment == pytest.approx((0.5 - rate) / (1 - rate)) and jaccard == 0.25
    assert chance == pytest.approx(6 * rate ** 2, rel=0.01)  # at least 2 of 4 values by accident
    assert S.overlap(a, a)[:2] == pytest.approx((1.0, 1.0), abs=1e-4)
    assert S.overlap(a, np.array([9], dtype=np.uint16)) == (0.0, 0.0, 1.0)


def test_overlap_of_unrelated_texts_is_low():
    containment, jaccard, _ = S.overlap(sset(vocabulary_text(3, 300)), sset(vocabulary_text(4, 150)))
    assert containment < 0.05 and jaccard < 0.02


def test_overlap_with_an_empty_set_is_zero():
    empty = np.empty(0, dtype=np.uint16)
    full = sset(words(STORY))
    assert S.overlap(empty, full) == (0.0, 0.0, 1.0)
    assert S.overlap(full, empty) == (0.0, 0.0, 1.0)
    assert S.overlap(empty, empty) == (0.0, 0.0, 1.0)


def test_shingle_set_bytes_round_trip_two_bytes_little_endian():
    shingles = sset(words(STORY))
    raw = S.shingle_set_to_bytes(shingles)
    assert len(raw) == 2 * len(shingles)
    assert raw[:2] == int(shingles[0]).to_bytes(2, "little")
    back = S.shingle_set_from_bytes(raw)
    assert back.dtype == np.uint16
    assert np.array_equal(back, shingles)
    assert S.overlap(back, shingles)[:2] == pytest.approx((1.0, 1.0), abs=0.01)
    assert len(S.shingle_set_from_bytes(S.shingle_set_to_bytes(np.empty(0, dtype=np.uint16)))) == 0


def test_short_unrelated_items_are_not_copies_of_a_very_long_article():
    settings = Settings()
    rng = random.Random(5)
    vocab = [f"w{i}x" for i in range(20000)]
    huge = sset([rng.choice(vocab) for _ in range(200_000 // 7)])
    false_copies = 0
    for _ in range(300):
        item = sset([rng.choice(vocab) for _ in range(8)])  # four shingles
        containment, _, chance = S.overlap(huge, item)
        if is_copy(containment, chance, min(len(huge), len(item)), False, settings):
            false_copies += 1
    assert false_copies == 0


def test_a_real_short_copy_of_a_very_long_article_is_still_a_copy():
    rng = random.Random(6)
    vocab = [f"w{i}x" for i in range(20000)]
    text = [rng.choice(vocab) for _ in range(200_000 // 7)]
    huge = sset(text)
    copy = sset(text[5000:5040])  # forty words from the middle
    containment, _, chance = S.overlap(huge, copy)
    assert containment == pytest.approx(1.0) and chance < Settings().duplicate_chance_limit


# ---------------------------------------------------------------- LSH bands
@pytest.mark.parametrize("threshold", [0.3, 0.4, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_band_layout_fits_the_signature(threshold, num_perm):
    layout = S.BandLayout.for_threshold(threshold, num_perm)
    assert layout.bands >= 1 and layout.rows >= 1
    assert layout.bands * layout.rows <= num_perm


def test_band_layout_uses_more_rows_for_a_higher_threshold():
    low, high = S.BandLayout.for_threshold(0.4, NUM_PERM), S.BandLayout.for_threshold(0.9, NUM_PERM)
    assert high.rows > low.rows
    assert high.bands < low.bands


def test_band_hashes_equal_for_equal_signatures_and_differ_per_changed_band():
    layout = S.BandLayout(bands=32, rows=4)
    sig = S.minhash(S.shingle_hashes(words(STORY), 5), NUM_PERM)
    bands = layout.band_hashes(sig)
    assert len(bands) == 32
    assert bands == layout.band_hashes(sig.copy())
    changed = sig.copy()
    changed[5] ^= 1  # row 5 lies in band 1 (rows 4..7)
    other = layout.band_hashes(changed)
    assert [i for i in range(32) if other[i] != bands[i]] == [1]


def test_band_hashes_of_near_duplicates_share_a_band_and_of_unrelated_texts_do_not():
    layout = S.BandLayout.for_threshold(0.4, NUM_PERM)
    tokens = words(STORY)
    edited = ["advertisement"] + tokens[: int(len(tokens) * 0.8)]
    a = layout.band_hashes(S.minhash(S.shingle_hashes(tokens, 5), NUM_PERM))
    b = layout.band_hashes(S.minhash(S.shingle_hashes(edited, 5), NUM_PERM))
    c = layout.band_hashes(S.minhash(S.shingle_hashes(vocabulary_text(11, 120), 5), NUM_PERM))
    assert any(x == y for x, y in zip(a, b))
    assert not any(x == y for x, y in zip(a, c))


# ---------------------------------------------------------------- storage
def test_signature_bytes_round_trip_little_endian():
    sig = S.minhash(S.shingle_hashes(words(STORY), 5), NUM_PERM)
    raw = S.signature_to_bytes(sig)
    assert len(raw) == 4 * NUM_PERM
    assert raw[:4] == int(sig[0]).to_bytes(4, "little")
    back = S.signature_from_bytes(raw)
    assert np.array_equal(back, sig)
    assert S.jaccard(back, sig) == 1.0


def test_token_hashes_depend_on_the_token_only():
    tokens = ["storm", "hits", "coast", "storm", "z\u00fcrich", "a", "hits"]
    hashes = S.token_hashes(tokens).tolist()
    assert len(hashes) == len(tokens)
    assert hashes[0] == hashes[3] and hashes[1] == hashes[6]
    assert len(set(hashes)) == 5
    assert S.token_hashes(["coast"]).tolist() == [hashes[2]]
    assert S.token_hashes(tokens, " ".join(tokens).encode("utf-8")).tolist() == hashes


def _overlap_one_by_one(a: np.ndarray, b: np.ndarray, min_containment: float) -> tuple[float, float, float]:
    """The figures of :func:`S.overlap` worked out for one pair with Python
    numbers and a set intersection: what the array version must equal."""
    from scipy.stats import binom

    if len(a) == 0 or len(b) == 0:
        return (0.0, 0.0, 1.0)
    common = len(np.intersect1d(a, b, assume_unique=True))
    small, large = min(len(a), len(b)), max(len(a), len(b))
    rate = large / 65536.0
    containment = max(0.0, (common / small - rate) / (1.0 - rate))
    chance = float(binom.sf(common - 1, small, rate)) if common and containment >= min_containment else 1.0
    return (containment, common / (len(a) + len(b) - common), chance)


def test_overlaps_of_many_equal_overlap_with_each():
    rng = np.random.default_rng(9)
    for _ in range(200):
        mine = np.unique(rng.integers(0, 65536, int(rng.integers(0, 400))).astype(np.uint16))
        others = [np.empty(0, dtype=np.uint16)]
        for _ in range(10):
            picked = rng.choice(mine, int(rng.integers(1, len(mine) + 1))) if len(mine) else []
            noise = rng.integers(0, 65536, int(rng.integers(0, 3000)))
            others.append(np.unique(np.concatenate((picked, noise)).astype(np.uint16)))
        mask = S.ShingleMask(mine)
        for min_containment in (0.0, 0.8):
            assert mask.overlaps(others, min_containment) == [_overlap_one_by_one(mine, o, min_containment)
                                                               for o in others]


def test_the_powers_behind_token_hashes_are_exact_modulo_two_to_the_64():
    up, down = S._POWERS.upto(5000)
    for j in (0, 1, 2, 4095, 4096, 4097, 5000):
        assert int(up[j]) == pow(S._P, j, 1 << 64)
        assert int(down[j]) == pow(S._P_INVERSE, j, 1 << 64)
        assert int(up[j]) * int(down[j]) % (1 << 64) == 1
