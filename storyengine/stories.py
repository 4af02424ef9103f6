"""Story assignment: which recent story, if any, a new article belongs to.

Pure functions over vectors and times; :mod:`storyengine.pipeline` feeds them
what it read from Redis and writes back what they decide.

An article is compared with each candidate story's *centroid* (the sum of its
original articles' unit TF-IDF vectors), not with single articles, so one
article that bridges two events cannot chain them together: to join, it must
resemble what a story is about as a whole. The cosine is damped by a Gaussian
in the time between the article and the story's span (Miranda et al. 2018 use
the same shape), and stories whose newest article left the window are never
candidates, so events months apart never merge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import Settings
from .vectors import SparseVector

HOUR = 3600.0


@dataclass
class StoryState:
    """What assignment needs to know of a candidate story."""
    story_id: str
    centroid: SparseVector
    first_seen: float
    last_updated: float
    originals: int


@dataclass(frozen=True)
class StoryScore:
    story_id: str
    similarity: float
    time_factor: float
    score: float

    def as_dict(self) -> dict:
        return {"story": self.story_id, "similarity": round(self.similarity, 4),
                "time_factor": round(self.time_factor, 4), "score": round(self.score, 4)}


def time_factor(published: float, first_seen: float, last_updated: float, sigma_hours: float) -> float:
    """1 inside the story's span, falling off as a Gaussian outside it."""
    if first_seen <= published <= last_updated:
        return 1.0
    gap_hours = min(abs(published - first_seen), abs(published - last_updated)) / HOUR
    return math.exp(-(gap_hours ** 2) / (2.0 * sigma_hours ** 2))


def in_window(published: float, story: StoryState, window_hours: float) -> bool:
    window = window_hours * HOUR
    return story.last_updated >= published - window and story.first_seen <= published + window


def rank_stories(vector: SparseVector, published: float, candidates: list[StoryState],
                 settings: Settings) -> list[StoryScore]:
    """Candidate stories inside the window, best first."""
    scores = []
    for story in candidates:
        if not in_window(published, story, settings.story_window_hours):
            continue
        similarity = vector.cosine(story.centroid)
        factor = time_factor(published, story.first_seen, story.last_updated, settings.time_sigma_hours)
        scores.append(StoryScore(story.story_id, similarity, factor, similarity * factor))
    scores.sort(key=lambda s: (-s.score, s.story_id))
    return scores


def choose_story(scores: list[StoryScore], settings: Settings) -> StoryScore | None:
    """The best-scoring story if it clears the threshold, else None (open a new story)."""
    if scores and scores[0].score >= settings.story_threshold:
        return scores[0]
    return None


def updated_centroid(centroid: SparseVector, vector: SparseVector, settings: Settings) -> SparseVector:
    """Add an article's unit vector; keep the heaviest terms so a centroid stays small."""
    return centroid.add(vector).top(settings.centroid_terms)
