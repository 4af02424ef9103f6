"""Story assignment: time factor, the window, ranking and the threshold."""
from __future__ import annotations

import math

import numpy as np
import pytest

from storyengine.settings import Settings
from storyengine.stories import (HOUR, StoryScore, StoryState, choose_story, in_window, rank_stories, time_factor,
                                 updated_centroid)
from storyengine.vectors import SparseVector

DAY = 24 * HOUR
T0 = 1_700_000_000.0


def sv(pairs: dict[int, float]) -> SparseVector:
    items = sorted(pairs.items())
    return SparseVector(np.array([i for i, _ in items], dtype=np.int64),
                        np.array([v for _, v in items], dtype=np.float64)).normalised()


def story(story_id: str, centroid: SparseVector, first: float, last: float) -> StoryState:
    return StoryState(story_id, centroid, first_seen=first, last_updated=last, originals=1)


# ---------------------------------------------------------------- time factor
@pytest.mark.parametrize("published", [T0, T0 + 5 * HOUR, T0 + 10 * HOUR])
def test_time_factor_is_one_inside_the_span(published):
    assert time_factor(published, T0, T0 + 10 * HOUR, sigma_hours=72) == 1.0


def test_time_factor_is_gaussian_in_the_gap_to_the_nearest_end():
    sigma = 72.0
    # One sigma after the newest article: exp(-1/2).
    assert time_factor(T0 + 10 * HOUR + 72 * HOUR, T0, T0 + 10 * HOUR, sigma) == pytest.approx(math.exp(-0.5))
    # Two sigmas before the first article: exp(-2).
    assert time_factor(T0 - 144 * HOUR, T0, T0 + 10 * HOUR, sigma) == pytest.approx(math.exp(-2))
    # Six hours out with sigma 3 hours is also two sigmas.
    assert time_factor(T0 + 6 * HOUR, T0, T0, 3.0) == pytest.approx(math.exp(-2))


def test_time_factor_decays_monotonically_and_faster_for_smaller_sigma():
    gaps = [1, 12, 24, 72, 240]
    factors = [time_factor(T0 + g * HOUR, T0, T0, 72.0) for g in gaps]
    assert factors == sorted(factors, reverse=True)
    assert all(0 < f < 1 for f in factors)
    assert time_factor(T0 + 24 * HOUR, T0, T0, 12.0) < time_factor(T0 + 24 * HOUR, T0, T0, 72.0)


# ---------------------------------------------------------------- window
def test_in_window_edges():
    s = story("s", sv({1: 1.0}), T0, T0 + DAY)
    window = 72.0
    assert in_window(T0 + DAY + 72 * HOUR, s, window)            # exactly at the edge
    assert not in_window(T0 + DAY + 72 * HOUR + 1, s, window)     # one second past it
    assert in_window(T0 - 72 * HOUR, s, window)                   # before the story, at the edge
    assert not in_window(T0 - 72 * HOUR - 1, s, window)


def test_rank_stories_excludes_stories_outside_the_window_however_similar():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    recent = story("recent", sv({1: 1.0, 2: 0.2}), T0 - DAY, T0 - DAY)
    old = story("old", sv({1: 1.0, 2: 1.0}), T0 - 30 * DAY, T0 - 20 * DAY)  # identical centroid
    future = story("future", sv({1: 1.0, 2: 1.0}), T0 + 10 * DAY, T0 + 11 * DAY)
    scores = rank_stories(vector, T0, [old, recent, future], settings)
    assert [s.story_id for s in scores] == ["recent"]


def test_rank_stories_orders_by_similarity_times_time_factor():
    settings = Settings(time_sigma_hours=24.0, story_window_hours=200.0)
    vector = sv({1: 1.0, 2: 1.0})
    # Same centroid, one inside its span, one 48 hours (two sigmas) past its end.
    close = story("b-close", sv({1: 1.0, 2: 1.0}), T0 - HOUR, T0 + HOUR)
    stale = story("a-stale", sv({1: 1.0, 2: 1.0}), T0 - 60 * HOUR, T0 - 48 * HOUR)
    weaker = story("c-weaker", sv({1: 1.0, 3: 1.0}), T0, T0)
    scores = rank_stories(vector, T0, [stale, weaker, close], settings)
    assert [s.story_id for s in scores] == ["b-close", "c-weaker", "a-stale"]
    by_id = {s.story_id: s for s in scores}
    assert by_id["b-close"].score == pytest.approx(1.0)
    assert by_id["c-weaker"].similarity == pytest.approx(0.5)
    assert by_id["a-stale"].time_factor == pytest.approx(math.exp(-2))
    assert by_id["a-stale"].score == pytest.approx(math.exp(-2))


def test_rank_stories_breaks_score_ties_by_story_id():
    settings = Settings()
    vector = sv({1: 1.0})
    scores = rank_stories(vector, T0, [story("zeta", sv({1: 1.0}), T0, T0), story("alpha", sv({1: 1.0}), T0, T0)],
                          settings)
    assert [s.story_id for s in scores] == ["alpha", "zeta"]


# ---------------------------------------------------------------- threshold
def test_choose_story_applies_the_threshold_to_the_best_score():
    settings = Settings(story_threshold=0.3)
    best = StoryScore("s1", similarity=0.5, time_factor=0.6, score=0.3)
    assert choose_story([best, StoryScore("s2", 0.2, 1.0, 0.2)], settings) is best  # >= threshold joins
    below = StoryScore("s1", similarity=0.5, time_factor=0.5, score=0.29)
    assert choose_story([below], settings) is None
    assert choose_story([], settings) is None
    assert choose_story([below], settings.replace(story_threshold=0.25)) is below


def test_story_score_as_dict_rounds_for_the_decision():
    s = StoryScore("st_1", similarity=0.123456, time_factor=0.99999, score=0.1234549)
    assert s.as_dict() == {"story": "st_1", "similarity": 0.1235, "time_factor": 1.0, "score": 0.1235}


# ---------------------------------------------------------------- centroid
def test_updated_centroid_adds_and_keeps_the_heaviest_terms():
    settings = Settings(centroid_terms=2)
    centroid = SparseVector(np.array([1, 2, 3]), np.array([0.9, 0.1, 0.5]))
    added = updated_centroid(centroid, SparseVector(np.array([2, 4]), np.array([0.3, 0.2])), settings)
    assert added.indices.tolist() == [1, 3]
    assert added.values.tolist() == pytest.approx([0.9, 0.5])
