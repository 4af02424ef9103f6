"""A replay's answers, followed through the merges and read-backs made after them."""
from __future__ import annotations

from evaluation.decisions import Decisions


def test_decisions_follow_chains_of_merges_made_after_the_answer():
    d = Decisions()
    d.decided("a", "S1", None)
    d.decided("b", "S1", "a")
    d.decided("c", "S4", None)
    d.merged(kept="S2", merged="S1")   # a later repair pass
    d.merged(kept="S3", merged="S2")   # and another
    assert d.prediction("a") == {"id": "a", "story": "S3", "duplicate_of": None}
    assert d.prediction("b") == {"id": "b", "story": "S3", "duplicate_of": "a"}
    assert d.prediction("c")["story"] == "S4"
    d.merged(kept="S1", merged="S3")   # a cycle (never made) still ends
    assert d.story("S1") in {"S1", "S2", "S3"}


def test_decisions_take_the_later_answer_and_say_why_others_have_none():
    d = Decisions()
    d.decided("old", "S1", None)
    d.decided("old", "S1", "early")  # read back: an earlier copy took over as the canonical article
    assert d.prediction("old")["duplicate_of"] == "early"
    d.refused("x", "failed: no words")
    d.refused("y", "failed: no words")
    d.refused("z", "not accepted: too old")
    d.refused("old", "failed: late")  # an answer is never taken back
    assert d.prediction("x") == {"id": "x", "story": None, "duplicate_of": None}
    assert d.why_unpredicted(["old", "x", "y", "z", "w"]) == {"failed: no words": 2, "no decision": 1,
                                                              "not accepted: too old": 1}
