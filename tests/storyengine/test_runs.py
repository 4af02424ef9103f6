"""Cutting a call's articles into runs (storyengine.runs), and the decision
kinds as callers see them (storyengine.decisions): pure, no Redis."""
from __future__ import annotations

from types import SimpleNamespace

from storyengine.decisions import Decision, Outcome
from storyengine.runs import BATCH_LIMIT, runs
from storyengine.settings import Settings

DAY = 86400.0


def items(times: list[float | None]) -> list:
    return [(f"a{i}", {}, SimpleNamespace(published=t or 0.0, dated=t is not None)) for i, t in enumerate(times)]


def test_runs_hold_at_most_the_batch_limit_in_order():
    pending = items([float(i) for i in range(BATCH_LIMIT * 2 + 1)])
    cut = list(runs(pending, Settings()))
    assert [len(r) for r in cut] == [BATCH_LIMIT, BATCH_LIMIT, 1]
    assert [item for r in cut for item in r] == pending


def test_a_run_ends_before_its_times_span_more_than_retention_less_the_story_window():
    s = Settings(retention_days=30, story_window_hours=96)
    span = 30 * DAY - 96 * 3600.0
    pending = items([0.0, span, None, span + 1.0, 5.0])  # an undated one never cuts a run
    assert [[a for a, _, _ in r] for r in runs(pending, s)] == [["a0", "a1", "a2"], ["a3", "a4"]]


def test_each_kind_of_decision_is_one_outcome():
    assert Decision("opened", "a", "st_1").outcome() == Outcome("a", "st_1", None, opened_story=True)
    assert Decision("joined", "a", "st_1").outcome() == Outcome("a", "st_1", None, opened_story=False)
    assert Decision("copy", "a", "st_1", duplicate_of="b").outcome() == Outcome("a", "st_1", "b", opened_story=False)
    promoted = Decision("promoted", "a", "st_1", takes_over=[{"article": "b"}], duplicate_report={})
    assert promoted.outcome() == Outcome("a", "st_1", None, opened_story=False)
