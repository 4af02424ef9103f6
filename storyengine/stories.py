"""Story assignment: which recent story, if any, a new article belongs to.

Pure functions over vectors and times; :mod:`storyengine.decider` feeds them
what it read from Redis and writes back what they decide.

An article joins the story with the highest *average link*: the mean cosine
between the article and the story's members, each weighed by a Gaussian
kernel on the time between them (Miranda et al. 2018 use the same shape,
sigma 3 days; we default to 36 hours). Only members inside the window count,
in the sum and in the mean, so a story that keeps being covered for weeks
stays one story, while events months apart never merge.

Average link, not a centroid, is the guard against chaining: one article
that bridges two events resembles a few members of each, and the mean over
all of a story's members stays low. Offline, average-link clustering is the
classic method for this task; this is its online, one-pass form.

Short texts (a headline, a snippet) are scored differently (see
:func:`rank_stories`): two headlines of one event share a word or two, so
their mean over hundreds of varied members sinks as a story grows, and big
stories of short items split. For them the score is the cosine with each
bucket's centroid instead, which does not sink, with a threshold calibrated
to the article's length and to how many members the story has (one short
member is a noisy measure; :func:`threshold_for`), and a join needs at least
``min_shared_words`` words in common (one word is a topic, not an event).

Members are not stored one by one: each story keeps, per time bucket
(``bucket_hours``), the sum of its members' unit vectors, how many there are
and the sum of their times. The mean cosine against a bucket is then one dot
product, and the kernel is applied at the bucket's mean time.
"""
from __future__ import annotations

import math
from operator import itemgetter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .buckets import HOUR, Bucket, bucket_dots
from .settings import Settings
from .vectors import SparseVector


def kernel(gap_seconds: float, settings: Settings) -> float:
    """Gaussian time kernel; 0 outside the window."""
    if abs(gap_seconds) > settings.story_window_hours * HOUR:
        return 0.0
    hours = gap_seconds / HOUR
    return math.exp(-(hours * hours) / (2.0 * settings.time_sigma_hours ** 2))


@dataclass
class CandidateStory:
    """What assignment needs to know of a candidate story."""
    story_id: str
    first_seen: float
    last_updated: float
    originals: int
    buckets: dict[int, Bucket] = field(default_factory=dict)


class StoryScore(NamedTuple):  # a tuple: one is made per candidate story of every article
    story_id: str
    score: float     # time-weighted similarity to the members in the window (see rank_stories)
    members: int     # how many members that score is over
    shared: int | None = None  # distinct words the article shares with those members (None: not counted)

    def as_dict(self) -> dict:
        out = {"story": self.story_id, "score": round(self.score, 4), "members_compared": self.members}
        if self.shared is not None:
            out["shared_words"] = self.shared
        return out


def average_link(vector: SparseVector, published: float, buckets: dict[int, Bucket],
                 settings: Settings) -> tuple[float, int]:
    """(mean kernel-weighted cosine, members counted) between one unit vector
    and a story's buckets."""
    total = 0.0
    members = 0
    for bucket in buckets.values():
        weight = kernel(published - bucket.mean_time, settings)
        if weight == 0.0 or bucket.count == 0:
            continue
        total += weight * vector.dot(bucket.vector)
        members += bucket.count
    return (total / members if members else 0.0), members


def story_link(a: dict[int, Bucket], b: dict[int, Bucket], settings: Settings, short: float = 0.0) -> float:
    """The link between two stories, bucket by bucket, kernel-weighted and
    averaged over all pairs of their members: the pairs' mean cosine (average
    link), or, for stories of short texts, the cosine of the buckets'
    centroids; ``short`` (0 to 1, see :func:`short_share`) blends the two.
    The repair pass merges stories whose link reaches ``merge_threshold``."""
    average = centroid = 0.0
    count_a = sum(x.count for x in a.values())
    count_b = sum(x.count for x in b.values())
    if not count_a or not count_b:
        return 0.0
    for x in a.values():
        for y in b.values():
            weight = kernel(x.mean_time - y.mean_time, settings)
            if weight:
                average += weight * x.vector.dot(y.vector)
                if short:
                    centroid += weight * x.count * y.count * x.vector.cosine(y.vector)
    # Over every pair of members, the far ones too, unlike a short article's score
    # (rank_stories): merging two whole stories is the bigger step, and a link
    # that old pairs dilute guards it against chaining.
    return (short * centroid + (1.0 - short) * average) / (count_a * count_b)


def short_share(words: float | None, settings: Settings) -> float:
    """How short a text of ``words`` distinct words is, from 1 (``short_text_words``
    or fewer: a headline, a snippet) to 0 (``full_text_words`` or more),
    linear in log(words) between; 0 when the story score is "average"."""
    if settings.story_score == "average" or words is None or words >= settings.full_text_words:
        return 0.0
    if words <= settings.short_text_words:
        return 1.0
    return 1.0 - math.log(words / settings.short_text_words) / math.log(
        settings.full_text_words / settings.short_text_words)


def story_words(buckets: dict[int, Bucket], settings: Settings) -> float:
    """About how many distinct terms a story's members have each (for the
    repair pass, which has no article): of each bucket, its distinct terms
    over the square root of its members (members of one event share many of
    their terms, so the union grows more slowly than the count; exact for one
    member), the fewest; a bucket cut to ``bucket_terms`` counts as full texts."""
    per_member = [len(b.vector.indices) / math.sqrt(b.count) for b in buckets.values()
                  if b.count and len(b.vector.indices) < settings.bucket_terms]
    return min(per_member) if per_member else float(settings.full_text_words)


def in_window(published: float, story: CandidateStory, window_hours: float) -> bool:
    window = window_hours * HOUR
    return story.last_updated >= published - window and story.first_seen <= published + window


def rank_stories(vector: SparseVector, published: float, candidates: list[CandidateStory],
                 settings: Settings, groups: np.ndarray | None = None,
                 words: int | None = None) -> list[StoryScore]:
    """Candidate stories inside the window, best first, with every bucket's
    dot product taken in one vectorised pass.

    A story's score is, for a full text, its *average link*: the mean
    kernel-weighted cosine over its members in the window (:func:`average_link`).
    For a short text (``words`` distinct words, see :func:`short_share`) it is
    the cosine with each bucket's centroid (the dot with the bucket's sum over
    that sum's norm), averaged with each member weighed by its bucket's time
    kernel, times the kernel of the story's nearest bucket: members of the last
    day count more than those of three days ago, and a story gone quiet fades,
    but a story covered for days does not sink below one covered for hours,
    as a mean over the members' count made it (docs/evaluation.md, step 6).
    Between the two lengths, a blend. An average over hundreds of short, varied
    members sinks as the story grows (two headlines of one event share a word
    or two); the cosine with their centroid does not, as the centroid holds
    the story's common words at their weight. Full texts share enough words
    pairwise, and their average link keeps two similar events (two
    earthquakes) apart better than a centroid does.

    ``groups`` (one id per feature of ``vector``, a word and its entity
    feature sharing one) lets each score count the distinct words the article
    shares with the story's members in the window."""
    short = short_share(words, settings)
    window = settings.story_window_hours * HOUR
    spread = 2.0 * settings.time_sigma_hours ** 2
    ranked: list[str] = []  # the ids of the stories in the window
    counted: list[tuple[int, float, Bucket]] = []  # (its story's place in ranked, kernel, bucket)
    # in_window and kernel inlined: this loop runs for every bucket of every candidate.
    for story in candidates:
        if not (story.last_updated >= published - window and story.first_seen <= published + window):
            continue
        owner = len(ranked)
        ranked.append(story.story_id)
        for bucket in story.buckets.values():
            gap = published - bucket.mean_time
            if abs(gap) > window:
                continue
            hours = gap / HOUR
            weight = math.exp(-(hours * hours) / spread)
            if weight != 0.0 and bucket.count != 0:
                counted.append((owner, weight, bucket))
    # Sums over each story's buckets, one at a time in order, in plain Python:
    # a candidate has a few buckets, too few for array operations to pay.
    stories = len(ranked)
    score, members, shared = [0.0] * stories, [0] * stories, [0] * stories
    if counted:
        owners, kernels, buckets = zip(*counted)
        dots, norms, found_words = bucket_dots(vector, [b.vector for b in buckets], np.array(owners, dtype=np.intp),
                                               stories, groups, short)
        # Full texts: the mean over the members' count (average link, diluted by
        # the far members: the guard against chaining). Short texts: the mean over
        # the members' kernel weights, times the nearest bucket's kernel, which does
        # not sink as a story goes on for days (see the docstring above). A story
        # with no member counted scores 0 (its sums are 0).
        counted_members, linked = [0.0] * stories, [0.0] * stories
        for owner, weight, bucket, dot in zip(owners, kernels, buckets, dots.tolist()):
            counted_members[owner] += bucket.count
            linked[owner] += (1.0 - short) * weight * dot
        score = [total / max(count, 1.0) for total, count in zip(linked, counted_members)]
        members = [int(count) for count in counted_members]
        if short:
            centroids, weighted = [0.0] * stories, [0.0] * stories  # weighted: members, each weighed by its kernel
            nearest = [0.0] * stories  # the kernel of the story's bucket nearest in time
            for owner, weight, bucket, dot, norm in zip(owners, kernels, buckets, dots.tolist(), norms.tolist()):
                weighted_members = weight * bucket.count
                centroids[owner] += weighted_members * (dot / norm if norm > 0 else 0.0)
                weighted[owner] += weighted_members
                nearest[owner] = max(nearest[owner], weight)
            score = [total + short * (centroid * near / members_weight if members_weight > 0 else 0.0)
                     for total, centroid, near, members_weight in zip(score, centroids, nearest, weighted)]
        if found_words is not None:
            shared = found_words
    scores = [StoryScore(story_id, s if m else 0.0, m, w if groups is not None else None)
              for story_id, s, m, w in zip(ranked, score, members, shared)]
    scores.sort(key=_STORY_ID)  # then by score, best first: ties stay in story id order
    scores.sort(key=_SCORE, reverse=True)
    return scores


_STORY_ID, _SCORE = itemgetter(0), itemgetter(1)


def base_threshold(settings: Settings, words: int | None = None) -> float:
    """The threshold an article of ``words`` distinct words must reach against
    a large story: ``story_threshold`` (average link) for a full text,
    ``short_text_threshold`` (centroid cosine) for a short one, blended
    between as the score is (:func:`short_share`)."""
    short = short_share(words, settings)
    return short * settings.short_text_threshold + (1.0 - short) * settings.story_threshold


def threshold_for(members: int, floor: float, settings: Settings, words: int | None = None) -> float:
    """The score a story of ``members`` (compared) must reach when the article
    has ``words`` distinct words: ``floor``, plus an excess for noise. Two
    short texts share a word or two by chance, so their cosine is a noisy
    measure: the excess is ``single_member_threshold - floor`` against one
    member, falls as 1/sqrt(members) (a centroid of many averages the noise
    away) and as short_text_words / words for a longer article (its cosine
    rests on more words)."""
    excess = max(settings.single_member_threshold - floor, 0.0) / math.sqrt(max(members, 1))
    if words is not None and words > settings.short_text_words:
        excess *= settings.short_text_words / words
    return floor + excess


def choose_story(scores: list[StoryScore], settings: Settings, words: int | None = None) -> StoryScore | None:
    """The best-scoring story that clears its threshold (:func:`threshold_for`)
    and shares at least ``min_shared_words`` distinct words with the article
    (when counted), else None (open a new story)."""
    floor = base_threshold(settings, words)
    for score in scores:
        if score.score < floor:
            return None
        if score.score < threshold_for(score.members, floor, settings, words):
            continue
        if score.shared is None or score.shared >= settings.min_shared_words:
            return score
    return None


def updated_centroid(centroid: SparseVector, vector: SparseVector, settings: Settings) -> SparseVector:
    """Add an article's unit vector; keep the heaviest terms so a centroid stays small.
    The centroid names and indexes a story; assignment uses the buckets."""
    return centroid.add(vector).top(settings.centroid_terms)
