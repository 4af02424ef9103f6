"""Evaluation metrics on tiny examples computed by hand."""
from __future__ import annotations

import pytest

from evaluation.scores import bcubed, duplicate_groups, duplicate_scores, score, unpredicted


# ---------------------------------------------------------------- B-cubed
def test_bcubed_hand_computed_example():
    # gold:      {a b c d} {e}
    # predicted: {a b} {c d e}
    gold = {"a": "G1", "b": "G1", "c": "G1", "d": "G1", "e": "G2"}
    predicted = {"a": "P1", "b": "P1", "c": "P2", "d": "P2", "e": "P2"}
    # Precision per article = |own predicted cluster ∩ own gold cluster| / |own predicted cluster|
    #   a: 2/2  b: 2/2  c: 2/3  d: 2/3  e: 1/3          -> (1 + 1 + 2/3 + 2/3 + 1/3) / 5 = 11/15
    # Recall per article    = |same intersection| / |own gold cluster|
    #   a: 2/4  b: 2/4  c: 2/4  d: 2/4  e: 1/1          -> 3 / 5
    # F1 = 2 * 11/15 * 3/5 / (11/15 + 3/5) = (66/75) / (20/15) = 0.66
    p, r, f = bcubed(predicted, gold)
    assert p == pytest.approx(11 / 15)
    assert r == pytest.approx(3 / 5)
    assert f == pytest.approx(0.66)


def test_bcubed_perfect_and_degenerate_clusterings():
    gold = {"a": "x", "b": "x", "c": "y"}
    assert bcubed({"a": "1", "b": "1", "c": "2"}, gold) == pytest.approx((1.0, 1.0, 1.0))
    # Everything in one predicted cluster: recall 1, precision (2/3 + 2/3 + 1/3) / 3 = 5/9.
    p, r, _ = bcubed({"a": "1", "b": "1", "c": "1"}, gold)
    assert (p, r) == pytest.approx((5 / 9, 1.0))
    # All singletons: precision 1, recall (1/2 + 1/2 + 1) / 3 = 2/3.
    p, r, _ = bcubed({"a": "1", "b": "2", "c": "3"}, gold)
    assert (p, r) == pytest.approx((1.0, 2 / 3))


def test_bcubed_ignores_label_names():
    gold = {"a": "x", "b": "x", "c": "y"}
    assert bcubed({"a": "y", "b": "y", "c": "x"}, gold) == pytest.approx((1.0, 1.0, 1.0))


# ---------------------------------------------------------------- duplicate groups
def test_duplicate_groups_follow_chains_to_the_root_and_survive_cycles():
    assert duplicate_groups({"c": None, "b": "c", "a": "b", "d": None}) == {"c": "c", "b": "c", "a": "c", "d": "d"}
    groups = duplicate_groups({"x": "y", "y": "x"})  # a cycle must terminate
    assert set(groups) == {"x", "y"}


# gold duplicate groups {a b c} {d e}; predicted {a b} {c d e}
GOLD_DUPS = {"a": None, "b": "a", "c": "a", "d": None, "e": "d"}
PRED_DUPS = {"a": None, "b": "a", "c": "d", "d": None, "e": "d"}


def test_duplicate_scores_pairwise_hand_computed():
    # gold pairs ab ac bc de; predicted pairs ab cd ce de; shared ab de
    p, r, f = duplicate_scores(PRED_DUPS, GOLD_DUPS, gray_pairs=[])
    assert (p, r, f) == pytest.approx((2 / 4, 2 / 4, 0.5))


def test_duplicate_scores_leave_gray_pairs_out_of_predicted_pairs():
    # Without cd: predicted ab ce de (3), gold ab ac bc de (4), shared 2.
    p, r, f = duplicate_scores(PRED_DUPS, GOLD_DUPS, gray_pairs=[["d", "c"]])
    assert p == pytest.approx(2 / 3)
    assert r == pytest.approx(2 / 4)
    assert f == pytest.approx(4 / 7)  # 2 * (2/3) * (1/2) / (7/6)


def test_duplicate_scores_leave_gray_pairs_out_of_gold_pairs():
    # Without bc: predicted ab cd ce de (4), gold ab ac de (3), shared 2.
    p, r, _ = duplicate_scores(PRED_DUPS, GOLD_DUPS, gray_pairs=[["b", "c"]])
    assert (p, r) == pytest.approx((2 / 4, 2 / 3))


def test_duplicate_scores_with_no_pairs_anywhere_are_perfect_and_extra_predictions_ignored():
    gold = {"a": None, "b": None}
    assert duplicate_scores({"a": None, "b": None, "z": "a"}, gold, []) == (1.0, 1.0, 1.0)
    # A predicted link the gold does not have: precision 0, recall vacuously 1.
    assert duplicate_scores({"a": None, "b": "a"}, gold, []) == (0.0, 1.0, 0.0)


# ---------------------------------------------------------------- score()
def gold_row(article_id, story, duplicate_of=None):
    return {"id": article_id, "gold": {"story": story, "duplicate_of": duplicate_of}}


def test_score_counts_articles_without_prediction_as_stories_of_their_own():
    rows = [gold_row("a", "s1"), gold_row("b", "s1", "a"), gold_row("c", "s2")]
    # c has no prediction at all: alone, it is exactly right.
    result = score([{"id": "a", "story": "x"}, {"id": "b", "story": "x", "duplicate_of": "a"}], rows, [])
    assert result["unpredicted"] == 1
    assert result["bcubed_f1"] == pytest.approx(1.0) and result["duplicate_f1"] == pytest.approx(1.0)
    # b's story is null (it failed): alone, it costs recall (a 1/2, b 1/2, c 1) and the duplicate pair,
    # whatever duplicate_of says.
    result = score([{"id": "a", "story": "x"}, {"id": "b", "story": None, "duplicate_of": "a"},
                    {"id": "c", "story": "y"}], rows, [])
    assert result["unpredicted"] == 1
    assert result["bcubed_precision"] == pytest.approx(1.0)
    assert result["bcubed_recall"] == pytest.approx(2 / 3)
    assert result["duplicate_recall"] == 0.0


def test_score_never_puts_two_unpredicted_articles_together():
    # Two failures of different stories: together they would cost precision.
    rows = [gold_row("a", "s1"), gold_row("b", "s2")]
    result = score([{"id": "a", "story": None}, {"id": "b", "story": None}], rows, [])
    assert result["unpredicted"] == 2
    assert (result["bcubed_precision"], result["bcubed_recall"]) == pytest.approx((1.0, 1.0))
    assert unpredicted([{"id": "a", "story": ""}], rows) == ["a", "b"]


def test_score_combines_story_and_duplicate_metrics():
    rows = [gold_row("a", "s1"), gold_row("b", "s1", "a"), gold_row("c", "s1"), gold_row("d", "s2")]
    perfect = [{"id": "a", "story": "X"}, {"id": "b", "story": "X", "duplicate_of": "a"},
               {"id": "c", "story": "X", "duplicate_of": None}, {"id": "d", "story": "Y"}]
    result = score(perfect, rows, [])
    assert result["articles"] == 4
    for name in ("bcubed_precision", "bcubed_recall", "bcubed_f1", "ari", "ami", "nmi",
                 "duplicate_precision", "duplicate_recall", "duplicate_f1"):
        assert result[name] == pytest.approx(1.0), name

    # d wrongly put into X, the copy b missed.
    wrong = [dict(p) for p in perfect]
    wrong[3]["story"] = "X"
    wrong[1]["duplicate_of"] = None
    result = score(wrong, rows, [])
    # Precision: a b c each 3/4, d 1/4 -> 10/16; recall: everyone 1.
    assert result["bcubed_precision"] == pytest.approx(10 / 16)
    assert result["bcubed_recall"] == pytest.approx(1.0)
    assert result["duplicate_recall"] == 0.0
    assert result["duplicate_precision"] == 1.0  # no predicted pairs
    assert result["ari"] == pytest.approx(0.0)
