"""Sparse vectors, hashed term counts and stream TF-IDF."""
from __future__ import annotations

import math

import numpy as np
import pytest

from storyengine.vectors import SparseVector, Vectorizer, idf, tfidf


def sv(pairs: dict[int, float]) -> SparseVector:
    items = sorted(pairs.items())
    return SparseVector(np.array([i for i, _ in items], dtype=np.int64),
                        np.array([v for _, v in items], dtype=np.float64))


def as_dict(v: SparseVector) -> dict[int, float]:
    return {int(i): float(x) for i, x in zip(v.indices, v.values)}


# ---------------------------------------------------------------- SparseVector
def test_add_merges_overlapping_and_disjoint_features_sorted():
    a = sv({1: 1.0, 5: 2.0, 9: 0.5})
    b = sv({0: 4.0, 5: 3.0, 12: 1.0})
    total = a.add(b)
    assert total.indices.tolist() == [0, 1, 5, 9, 12]
    assert total.values.tolist() == [4.0, 1.0, 5.0, 0.5, 1.0]
    # Inputs untouched.
    assert as_dict(a) == {1: 1.0, 5: 2.0, 9: 0.5}


def test_add_with_empty_is_identity():
    a = sv({3: 1.5, 7: -2.0})
    assert as_dict(a.add(SparseVector.empty())) == as_dict(a)
    assert as_dict(SparseVector.empty().add(a)) == as_dict(a)


def test_dot_uses_only_shared_features():
    a = sv({1: 1.0, 5: 2.0, 9: 3.0})
    b = sv({5: 4.0, 9: -1.0, 20: 100.0})
    assert a.dot(b) == pytest.approx(2.0 * 4.0 + 3.0 * -1.0)
    assert a.dot(sv({2: 1.0})) == 0.0


def test_cosine_values():
    a = sv({0: 3.0, 1: 4.0})
    assert a.norm() == pytest.approx(5.0)
    assert a.cosine(sv({0: 6.0, 1: 8.0})) == pytest.approx(1.0)
    assert a.cosine(sv({0: 1.0})) == pytest.approx(0.6)
    assert a.cosine(sv({2: 1.0})) == 0.0
    assert a.cosine(SparseVector.empty()) == 0.0


def test_normalised_is_unit_and_keeps_direction():
    a = sv({0: 3.0, 1: 4.0}).normalised()
    assert a.values.tolist() == pytest.approx([0.6, 0.8])
    assert SparseVector.empty().normalised().norm() == 0.0


def test_top_keeps_the_k_heaviest_in_index_order():
    v = sv({2: 0.1, 4: 0.9, 6: 0.3, 8: 0.7, 10: 0.2})
    top = v.top(2)
    assert as_dict(top) == {4: 0.9, 8: 0.7}
    assert top.indices.tolist() == sorted(top.indices.tolist())
    assert as_dict(v.top(10)) == as_dict(v)


def test_heaviest_returns_indices_heaviest_first():
    v = sv({2: 0.1, 4: 0.9, 6: 0.3, 8: 0.7, 10: 0.2})
    assert v.heaviest(3).tolist() == [4, 8, 6]
    assert v.heaviest(99).tolist() == [4, 8, 6, 10, 2]


def test_heaviest_equals_a_stable_sort_of_all_weights_ties_in_index_order():
    """heaviest sorts only the weights at or above the k-th: the same as sorting all of them."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 600))
        values = rng.choice([0.1, 0.2, 0.3], n) if rng.random() < 0.3 else rng.random(n)  # ties, or none
        v = SparseVector(np.sort(rng.choice(1 << 18, n, replace=False)).astype(np.int64), values)
        for k in (1, 20, 30, n, n + 5):
            assert v.heaviest(k).tolist() == v.indices[np.argsort(-v.values, kind="stable")[:k]].tolist()


def test_bytes_round_trip_keeps_indices_exactly_and_values_at_half_precision():
    v = sv({0: 0.125, 17: -2.5, 262143: 1 / 3, (1 << 24) - 1: 7.0})
    raw = v.to_bytes()
    assert len(raw) == 4 * 5  # 3 bytes of index and 2 of weight a term
    back = SparseVector.from_bytes(raw)
    assert back.indices.tolist() == [0, 17, 262143, (1 << 24) - 1]
    assert back.values.tolist() == pytest.approx([0.125, -2.5, 1 / 3, 7.0], rel=1e-3)
    assert back.cosine(v) == pytest.approx(1.0, abs=1e-6)


def test_weights_beyond_half_precision_saturate_instead_of_becoming_infinite():
    back = SparseVector.from_bytes(sv({5: 1e6, 9: 1.0}).to_bytes())
    assert back.values.tolist() == [65504.0, 1.0]


@pytest.mark.parametrize("raw", [None, b""])
def test_from_bytes_of_nothing_is_empty(raw):
    v = SparseVector.from_bytes(raw)
    assert len(v.indices) == 0 and len(v.values) == 0


# ---------------------------------------------------------------- hashed counts
def test_term_counts_counts_repeats_under_the_feature_named_by_feature_of():
    vec = Vectorizer(1 << 18)
    indices, counts = vec.term_counts(["quake", "quake", "tsunami", "quake"])
    assert indices.tolist() == sorted(indices.tolist())
    got = {int(i): float(c) for i, c in zip(indices, counts)}
    assert got == {vec.feature_of("quake"): 3.0, vec.feature_of("tsunami"): 1.0}


def test_feature_of_is_in_range_and_stable():
    vec = Vectorizer(1024)
    f = vec.feature_of("parliament")
    assert 0 <= f < 1024
    assert f == Vectorizer(1024).feature_of("parliament")


# ---------------------------------------------------------------- IDF and TF-IDF
def test_idf_rarer_terms_weigh_more():
    weights = idf(np.array([0.0, 1.0, 10.0, 99.0]), docs=100)
    assert weights[0] > weights[1] > weights[2] > weights[3]


def test_idf_matches_smoothed_formula_counting_the_new_document():
    # 10 documents seen, term in 3 of them; the new document makes it 4 in 11.
    # sklearn's smooth idf: ln((1 + n) / (1 + df)) + 1 = ln(12 / 5) + 1
    assert idf(np.array([3.0]), docs=10)[0] == pytest.approx(math.log(12 / 5) + 1)
    # A term in every earlier document still weighs 1 + ln((n+1)/(n+1)) = 1.
    assert idf(np.array([10.0]), docs=10)[0] == pytest.approx(1.0)
    # The very first document: everything weighs 1.
    assert idf(np.array([0.0, 0.0]), docs=0).tolist() == pytest.approx([1.0, 1.0])


def test_tfidf_is_unit_norm_with_sublinear_tf_and_stream_idf():
    indices = np.array([3, 8, 40], dtype=np.int64)
    counts = np.array([1.0, 4.0, 2.0])
    df = np.array([0.0, 5.0, 9.0])
    v = tfidf(indices, counts, df, docs=9)
    assert v.norm() == pytest.approx(1.0)
    assert v.indices.tolist() == [3, 8, 40]
    raw = (1 + np.log(counts)) * (np.log((2 + 9) / (2 + df)) + 1)
    assert v.values.tolist() == pytest.approx((raw / np.linalg.norm(raw)).tolist())
    # Sublinear TF: a term counted 4 times does not weigh 4 times one counted once.
    assert v.values[1] / v.values[0] < 4


def test_tfidf_rare_term_outweighs_common_term_at_the_same_count():
    v = tfidf(np.array([1, 2], dtype=np.int64), np.array([2.0, 2.0]), np.array([0.0, 50.0]), docs=50)
    assert v.values[0] > 2 * v.values[1]


def test_tfidf_of_no_terms_is_empty():
    v = tfidf(np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), docs=5)
    assert len(v.indices) == 0 and v.norm() == 0.0


# ---------------------------------------------------------------- fast paths equal their references
def _random_vectors(seed: int, count: int) -> list[SparseVector]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(0, 60))
        indices = np.unique(rng.integers(0, 200, n)).astype(np.int64)  # a small space, so many are shared
        out.append(SparseVector(indices, rng.normal(size=len(indices)) * rng.choice([1e-3, 1.0, 1e5])))
    return out


def test_add_and_dot_equal_the_dense_sum_and_product():
    vectors = _random_vectors(1, 300)
    for a, b in zip(vectors, vectors[1:]):
        dense_a, dense_b = np.zeros(200), np.zeros(200)
        dense_a[a.indices], dense_b[b.indices] = a.values, b.values
        total = a.add(b)
        assert total.indices.tolist() == sorted(set(a.indices.tolist()) | set(b.indices.tolist()))
        assert total.values.tolist() == (dense_a + dense_b)[total.indices].tolist()  # a's weight first, exactly
        assert a.dot(b) == pytest.approx(float(dense_a @ dense_b), rel=1e-12, abs=1e-12)
        assert a.dot(b) == b.dot(a)


def test_stored_is_what_a_round_trip_through_bytes_gives():
    for v in _random_vectors(2, 200) + [sv({5: 1e6, 9: -1e6, 11: 1 / 3})]:
        back = SparseVector.from_bytes(v.to_bytes())
        assert v.stored().indices.tolist() == back.indices.tolist()
        assert v.stored().values.tolist() == back.values.tolist()


def test_counted_names_each_feature_and_adds_up_terms_that_share_one():
    vec = Vectorizer(8)  # eight features: the terms below must collide
    terms = ["quake", "tsunami", "quake", "flood", "storm", "ash", "lava", "evacuation", "ash", "rescue", "aid"]
    indices, counts, names = vec.counted(terms)
    reference = vec.reference_term_counts(terms)
    assert indices.tolist() == reference[0].tolist() and counts.tolist() == reference[1].tolist()
    assert len(set(map(vec.feature_of, terms))) < len(set(terms))  # the test needs a collision
    assert sorted(names) == indices.tolist()
    assert all(vec.feature_of(term) == feature for feature, term in names.items())
    assert vec.counted([])[2] == {}


def test_places_of_gives_one_plus_each_features_place_and_zero_for_those_it_lacks():
    v = sv({3: 0.5, 70_000: 0.25, 9: 1.0})
    assert v.places_of(np.array([9, 4, 70_000, 3, 3], dtype=np.int64)).tolist() == [2, 0, 3, 1, 1]
    # Beyond any feature seen so far (the table grows), and another vector's places after it.
    far = sv({(1 << 24) - 1: 1.0})
    assert far.places_of(np.array([(1 << 24) - 1, 9], dtype=np.int64)).tolist() == [1, 0]
    assert sv({4: 1.0}).places_of(np.array([3, 9, 4, 70_000], dtype=np.int64)).tolist() == [0, 0, 1, 0]
    assert SparseVector.empty().places_of(np.array([3], dtype=np.int64)).tolist() == [0]
    assert v.places_of(np.empty(0, dtype=np.int64)).tolist() == []


def test_stored_of_a_vector_at_stored_precision_is_itself():
    v = sv({1: 1 / 3, 5: 1e6, 8: 0.1})
    stored = v.stored()
    assert stored.stored() is stored
    assert SparseVector.from_bytes(v.to_bytes()).stored().values.tolist() == stored.values.tolist()
    assert stored.top(2).stored().values.tolist() == v.top(2).stored().values.tolist()
    assert stored.to_bytes() == v.to_bytes()
