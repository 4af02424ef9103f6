"""Story assignment: time buckets, the time kernel, average link, the window,
ranking and the threshold."""
from __future__ import annotations

import math

import numpy as np
import pytest

from storyengine.records import bucket_field
from storyengine.settings import Settings
from storyengine.buckets import HOUR, Bucket, bucket_dots, bucket_index, buckets_near
from storyengine.stories import (CandidateStory, StoryScore, average_link, base_threshold, choose_story, in_window,
                                 kernel, rank_stories, short_share, story_link, threshold_for, updated_centroid)
from storyengine.vectors import SparseVector

DAY = 24 * HOUR
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def sv(pairs: dict[int, float]) -> SparseVector:
    items = sorted(pairs.items())
    return SparseVector(np.array([i for i, _ in items], dtype=np.int64),
                        np.array([v for _, v in items], dtype=np.float64)).normalised()


def members(*items: tuple[SparseVector, float], settings: Settings | None = None) -> dict[int, Bucket]:
    """Story buckets built the way the pipeline builds them: each member added
    to the bucket of its published time."""
    settings = settings or Settings()
    buckets: dict[int, Bucket] = {}
    for vector, published in items:
        day = bucket_index(published, settings)
        current = buckets.get(day)
        buckets[day] = (current.add(vector, published, settings.bucket_terms) if current
                        else Bucket.of(vector, published))
    return buckets


def story(story_id: str, first: float, last: float, buckets: dict[int, Bucket] | None = None) -> CandidateStory:
    return CandidateStory(story_id, first_seen=first, last_updated=last, originals=1, buckets=buckets or {})


# ---------------------------------------------------------------- buckets
def test_bucket_bytes_round_trip():
    bucket = Bucket.of(sv({3: 1.0, 70_000: 2.0}), T0).add(sv({3: 1.0, 9: 1.0}), T0 + 2 * HOUR, max_terms=500)
    raw = bucket.to_bytes()
    back = Bucket.from_bytes(raw)
    assert back.count == 2
    assert back.time_sum == 2 * T0 + 2 * HOUR  # a double: seconds survive exactly
    assert back.mean_time == T0 + HOUR
    assert back.vector.indices.tolist() == [3, 9, 70_000]
    assert back.vector.values == pytest.approx(bucket.vector.values, rel=1e-3)  # stored at half precision
    assert Bucket.from_bytes(back.to_bytes()).to_bytes() == back.to_bytes()


def test_bucket_add_sums_unit_vectors_counts_and_times_and_keeps_the_heaviest_terms():
    a, b = sv({1: 1.0, 2: 1.0}), sv({2: 1.0, 3: 1.0})
    bucket = Bucket.of(a, T0).add(b, T0 + 4 * HOUR, max_terms=500)
    assert bucket.count == 2 and bucket.mean_time == T0 + 2 * HOUR
    assert dict(zip(bucket.vector.indices.tolist(), bucket.vector.values)) == pytest.approx(
        {1: math.sqrt(0.5), 2: 2 * math.sqrt(0.5), 3: math.sqrt(0.5)})
    trimmed = Bucket.of(a, T0).add(b, T0, max_terms=1)
    assert trimmed.vector.indices.tolist() == [2]
    assert trimmed.count == 2


def test_bucket_merge_adds_both_buckets():
    x = Bucket.of(sv({1: 1.0}), T0).add(sv({2: 1.0}), T0 + HOUR, 500)
    y = Bucket.of(sv({1: 1.0}), T0 + 5 * HOUR)
    merged = x.merge(y, 500)
    assert merged.count == 3
    assert merged.time_sum == 3 * T0 + 6 * HOUR
    assert dict(zip(merged.vector.indices.tolist(), merged.vector.values)) == pytest.approx({1: 2.0, 2: 1.0})


def test_bucket_index_field_and_the_buckets_the_window_reaches():
    settings = Settings(bucket_hours=24.0, story_window_hours=96.0)
    day = bucket_index(T0, settings)
    assert day == int(T0 // DAY)
    assert bucket_index(T0 + DAY, settings) == day + 1
    assert bucket_field(day) == f"b:{day}"
    near = buckets_near(T0, settings)
    assert near == list(range(day - 4, day + 5))  # four days either side, and the day itself
    assert bucket_index(T0 - 96 * HOUR, settings) == near[0]
    assert bucket_index(T0 + 96 * HOUR, settings) == near[-1]


# ---------------------------------------------------------------- kernel
def test_kernel_is_one_at_no_gap_and_symmetric():
    settings = Settings()
    assert kernel(0.0, settings) == 1.0
    assert kernel(-30 * HOUR, settings) == kernel(30 * HOUR, settings)


def test_kernel_is_gaussian_in_the_gap_and_decreasing():
    settings = Settings(time_sigma_hours=36.0, story_window_hours=96.0)
    # One sigma: exp(-1/2); two sigmas: exp(-2).
    assert kernel(36 * HOUR, settings) == pytest.approx(math.exp(-0.5))
    assert kernel(72 * HOUR, settings) == pytest.approx(math.exp(-2))
    gaps = [0, 1, 6, 12, 24, 48, 72, 96]
    weights = [kernel(g * HOUR, settings) for g in gaps]
    assert all(a > b for a, b in zip(weights, weights[1:]))
    assert all(w > 0 for w in weights)
    # A narrower sigma falls off faster.
    assert kernel(24 * HOUR, settings.replace(time_sigma_hours=12.0)) < kernel(24 * HOUR, settings)


def test_kernel_is_zero_beyond_the_window():
    settings = Settings(time_sigma_hours=36.0, story_window_hours=96.0)
    assert kernel(96 * HOUR, settings) == pytest.approx(math.exp(-(96 ** 2) / (2 * 36 ** 2)))  # the edge counts
    assert kernel(96 * HOUR + 1, settings) == 0.0
    assert kernel(-(96 * HOUR + 1), settings) == 0.0
    assert kernel(30 * DAY, settings) == 0.0


# ---------------------------------------------------------------- average link
def test_average_link_is_the_mean_member_cosine_when_all_members_are_at_the_same_time():
    settings = Settings()
    vector = sv({1: 1.0, 2: 2.0, 3: 0.5})
    story_members = [sv({1: 1.0, 2: 1.0}), sv({2: 1.0, 4: 3.0}), sv({5: 1.0}), sv({1: 2.0, 3: 1.0, 6: 1.0})]
    buckets = members(*((m, T0) for m in story_members))
    score, counted = average_link(vector, T0, buckets, settings)
    assert counted == 4
    assert score == pytest.approx(np.mean([vector.cosine(m) for m in story_members]))


def test_average_link_weighs_each_bucket_by_the_kernel_at_its_mean_time():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    same, near = sv({1: 1.0, 2: 1.0}), sv({1: 1.0})
    buckets = members((same, T0), (near, T0 - DAY), (near, T0 - DAY))
    score, counted = average_link(vector, T0, buckets, settings)
    assert counted == 3
    expected = (1.0 + 2 * kernel(DAY, settings) * vector.cosine(near)) / 3
    assert score == pytest.approx(expected)


def test_average_link_of_a_story_whose_members_are_all_far_in_time_is_zero():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    old = members((vector, T0 - 10 * DAY), (vector, T0 - 9 * DAY))
    assert average_link(vector, T0, old, settings) == (0.0, 0)
    assert average_link(vector, T0, {}, settings) == (0.0, 0)


def test_average_link_counts_only_members_inside_the_window_in_the_mean():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    # One identical member now, five unrelated ones long before: the old ones
    # neither add to the sum nor dilute the mean.
    buckets = members((vector, T0), *((sv({9: 1.0}), T0 - 20 * DAY) for _ in range(5)))
    score, counted = average_link(vector, T0, buckets, settings)
    assert counted == 1
    assert score == pytest.approx(1.0)


def test_average_link_resists_chaining_where_a_centroid_would_not():
    settings = Settings()
    fire, bank = sv({1: 1.0, 2: 1.0, 3: 1.0}), sv({7: 1.0, 8: 1.0, 9: 1.0})
    bridge = sv({1: 1.0, 2: 1.0, 3: 1.0, 7: 1.0, 8: 1.0, 9: 1.0})
    # A fire story of four articles with one bridging article among them.
    buckets = members(*((fire, T0) for _ in range(4)), (bridge, T0))
    score, _ = average_link(bank, T0, buckets, settings)
    assert score == pytest.approx(bank.cosine(bridge) / 5)
    assert score < settings.story_threshold < bank.cosine(bridge)


# ---------------------------------------------------------------- story link
def test_story_link_is_symmetric_and_zero_for_disjoint_vocabularies():
    settings = Settings()
    a = members((sv({1: 1.0, 2: 1.0}), T0), (sv({1: 1.0, 3: 1.0}), T0 + DAY))
    b = members((sv({1: 1.0, 4: 1.0}), T0 + 2 * HOUR), (sv({2: 1.0}), T0 - DAY), (sv({5: 1.0}), T0))
    link = story_link(a, b, settings)
    assert 0 < link < 1
    assert story_link(b, a, settings) == pytest.approx(link)
    disjoint = members((sv({100: 1.0, 101: 1.0}), T0), (sv({102: 1.0}), T0 + HOUR))
    assert story_link(a, disjoint, settings) == 0.0
    assert story_link(disjoint, a, settings) == 0.0
    assert story_link(a, {}, settings) == 0.0


def test_story_link_is_the_mean_pairwise_kernel_weighted_cosine():
    settings = Settings()
    x1, x2, y1 = sv({1: 1.0, 2: 1.0}), sv({1: 1.0}), sv({1: 1.0, 3: 1.0})
    a = members((x1, T0), (x2, T0))
    b = members((y1, T0 + 12 * HOUR))
    expected = kernel(12 * HOUR, settings) * (x1.cosine(y1) + x2.cosine(y1)) / 2
    assert story_link(a, b, settings) == pytest.approx(expected)
    # The same stories a month apart do not link.
    far = members((y1, T0 + 30 * DAY))
    assert story_link(a, far, settings) == 0.0


# ---------------------------------------------------------------- window
def test_in_window_edges():
    s = story("s", T0, T0 + DAY)
    window = 96.0
    assert in_window(T0 + DAY + 96 * HOUR, s, window)            # exactly at the edge
    assert not in_window(T0 + DAY + 96 * HOUR + 1, s, window)     # one second past it
    assert in_window(T0 - 96 * HOUR, s, window)                   # before the story, at the edge
    assert not in_window(T0 - 96 * HOUR - 1, s, window)


def test_rank_stories_excludes_stories_outside_the_window_however_similar():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    recent = story("recent", T0 - DAY, T0 - DAY, members((sv({1: 1.0, 2: 0.2}), T0 - DAY)))
    # Identical members, but the story's span is far from the article. (The buckets
    # are put where the kernel would still count them: the window alone excludes.)
    old = story("old", T0 - 30 * DAY, T0 - 20 * DAY, members((vector, T0)))
    future = story("future", T0 + 10 * DAY, T0 + 11 * DAY, members((vector, T0)))
    scores = rank_stories(vector, T0, [old, recent, future], settings)
    assert [s.story_id for s in scores] == ["recent"]


def test_rank_stories_orders_by_average_link():
    settings = Settings()
    vector = sv({1: 1.0, 2: 1.0})
    close = story("b-close", T0 - HOUR, T0 + HOUR, members((vector, T0 - HOUR), (vector, T0 + HOUR)))
    # The same text two sigmas (72 hours) before the article.
    stale = story("a-stale", T0 - 72 * HOUR, T0 - 72 * HOUR, members((vector, T0 - 72 * HOUR)))
    weaker = story("c-weaker", T0, T0, members((sv({1: 1.0, 3: 1.0}), T0)))
    mixed = story("d-mixed", T0, T0, members((vector, T0), (sv({9: 1.0}), T0), (sv({8: 1.0}), T0)))
    scores = rank_stories(vector, T0, [stale, weaker, mixed, close], settings)
    assert [s.story_id for s in scores] == ["b-close", "c-weaker", "d-mixed", "a-stale"]
    by_id = {s.story_id: s for s in scores}
    # Both members fall in one bucket (T0 is 22:13 UTC) whose mean time is T0: kernel 1.
    assert by_id["b-close"].score == pytest.approx(1.0)
    assert by_id["b-close"].members == 2
    assert by_id["c-weaker"].score == pytest.approx(0.5)
    assert by_id["d-mixed"].score == pytest.approx(1 / 3) and by_id["d-mixed"].members == 3
    assert by_id["a-stale"].score == pytest.approx(math.exp(-2))


def test_rank_stories_breaks_score_ties_by_story_id():
    settings = Settings()
    vector = sv({1: 1.0})
    same = members((vector, T0))
    scores = rank_stories(vector, T0, [story("zeta", T0, T0, same), story("alpha", T0, T0, same)], settings)
    assert [s.story_id for s in scores] == ["alpha", "zeta"]


# ---------------------------------------------------------------- threshold
def test_choose_story_applies_the_threshold_to_the_best_score():
    settings = Settings(story_threshold=0.3)
    best = StoryScore("s1", score=0.3, members=4)
    assert choose_story([best, StoryScore("s2", 0.2, 1)], settings) is best  # >= threshold joins
    below = StoryScore("s1", score=0.29, members=4)
    assert choose_story([below], settings) is None
    assert choose_story([], settings) is None
    assert choose_story([below], settings.replace(story_threshold=0.25)) is below


def test_story_score_as_dict_rounds_for_the_decision():
    s = StoryScore("st_1", score=0.1234549, members=7)
    assert s.as_dict() == {"story": "st_1", "score": 0.1235, "members_compared": 7}


# ---------------------------------------------------------------- centroid
def test_updated_centroid_adds_and_keeps_the_heaviest_terms():
    settings = Settings(centroid_terms=2)
    centroid = SparseVector(np.array([1, 2, 3]), np.array([0.9, 0.1, 0.5]))
    added = updated_centroid(centroid, SparseVector(np.array([2, 4]), np.array([0.3, 0.2])), settings)
    assert added.indices.tolist() == [1, 3]
    assert added.values.tolist() == pytest.approx([0.9, 0.5])


# ---------------------------------------------------------------- short texts
def test_a_short_texts_score_is_its_centroid_cosine_and_does_not_sink_as_the_story_grows():
    settings = Settings()
    # Varied short members: each shares the story's two common words (1, 2) and
    # has two words of its own, so any two members share half their words.
    def varied(n):
        return members(*[(sv({1: 1.0, 2: 1.0, 100 + 2 * i: 1.0, 101 + 2 * i: 1.0}), T0) for i in range(n)])
    article = sv({1: 1.0, 2: 1.0, 7: 1.0, 8: 1.0})
    short, full = settings.short_text_words, settings.full_text_words
    small = rank_stories(article, T0, [story("s", T0, T0, varied(3))], settings, words=short)[0].score
    large = rank_stories(article, T0, [story("s", T0, T0, varied(300))], settings, words=short)[0].score
    assert large >= small > 0.5  # the cosine with the centroid of the common words
    # A full text is scored by average link: the mean cosine with the members, 0.5 each.
    mean = rank_stories(article, T0, [story("s", T0, T0, varied(300))], settings, words=full)[0].score
    assert mean == pytest.approx(0.5, abs=1e-3)


def test_a_short_texts_score_does_not_sink_as_a_story_goes_on_for_days():
    settings = Settings()
    member = sv({1: 1.0, 2: 1.0, 3: 1.0})
    article = sv({1: 1.0, 2: 1.0, 9: 1.0})
    now = T0 + 3 * DAY
    # The same coverage today only, or over the last four days (today too).
    today = story("today", now - HOUR, now - HOUR, members(*[(member, now - HOUR)] * 8))
    for_days = story("days", T0, now - HOUR, members(*[(member, T0 + d * DAY - HOUR) for d in range(4)] * 2))
    short = settings.short_text_words
    scores = {s.story_id: s.score for s in rank_stories(article, now, [today, for_days], settings, words=short)}
    # Weighed by their kernels, the older members do not drag the mean down
    # (averaged over their count, as before, "days" scored 0.58 of "today").
    assert scores["days"] == pytest.approx(scores["today"], rel=0.01)
    # A story gone quiet fades: its nearest member two days back.
    quiet = story("quiet", T0, now - 2 * DAY, members(*[(member, now - 2 * DAY)] * 8))
    [faded] = rank_stories(article, now, [quiet], settings, words=short)
    assert faded.score == pytest.approx(scores["today"] / kernel(HOUR, settings) * kernel(2 * DAY, settings), rel=0.01)


def test_short_share_and_base_threshold_run_from_short_to_full_texts():
    s = Settings()
    assert short_share(s.short_text_words, s) == 1.0 and short_share(s.full_text_words, s) == 0.0
    assert 0.0 < short_share((s.short_text_words + s.full_text_words) // 2, s) < 1.0
    assert base_threshold(s, 3) == pytest.approx(s.short_text_threshold)
    assert base_threshold(s, 500) == pytest.approx(s.story_threshold)
    assert short_share(3, s.replace(story_score="average")) == 0.0


def test_a_single_short_member_needs_more_than_a_large_story_or_a_long_text():
    s = Settings()
    floor = base_threshold(s, 8)
    one, many = threshold_for(1, floor, s, 8), threshold_for(100, floor, s, 8)
    assert one == pytest.approx(s.single_member_threshold)
    assert floor < many < one
    assert threshold_for(1, s.story_threshold, s, 400) < s.story_threshold + 0.01


def test_choose_story_skips_a_story_sharing_too_few_words_or_below_its_own_threshold():
    s = Settings()
    one_word = StoryScore("a", score=0.5, members=5, shared=1)
    lone = StoryScore("b", score=0.2, members=1, shared=3)  # below a single short member's threshold
    good = StoryScore("c", score=0.19, members=9, shared=3)
    assert choose_story([one_word, lone, good], s, words=8) is good
    assert choose_story([one_word, lone], s, words=8) is None
    assert choose_story([StoryScore("d", 0.5, 5)], s, words=8).story_id == "d"  # shared words not counted


def test_rank_stories_counts_the_distinct_words_shared_a_word_and_its_entity_once():
    s = Settings()
    article = sv({1: 1.0, 2: 1.0, 3: 1.0})
    groups = np.array([0, 0, 1])  # features 1 and 2 are one word (the word and its entity feature)
    st = story("s", T0, T0, members((sv({1: 1.0, 2: 1.0, 3: 1.0, 9: 1.0}), T0)))
    assert rank_stories(article, T0, [st], s, groups, words=3)[0].shared == 2


def test_bucket_dots_equal_each_buckets_own_sum_and_count_each_storys_shared_words():
    rng = np.random.default_rng(7)
    for _ in range(200):
        def vector(n: int) -> SparseVector:
            indices = np.unique(rng.integers(0, 300, n)).astype(np.int64)  # a small space: many terms shared
            return SparseVector(indices, rng.random(len(indices)))
        article = vector(int(rng.integers(0, 80)))
        groups = rng.integers(0, 40, len(article.indices))  # words: some features share one
        buckets = [vector(int(rng.integers(1, 60))) for _ in range(int(rng.integers(1, 12)))]
        if len(buckets) > 1 and rng.random() < 0.3:
            buckets[0] = SparseVector.empty()  # no terms (never the last: reduceat cannot start a segment at the end)
        owners = np.sort(rng.integers(0, 5, len(buckets)))
        dots, norms, shared = bucket_dots(article, buckets, owners, 6, groups, True)
        weight = dict(zip(article.indices.tolist(), article.values.tolist()))
        group = dict(zip(article.indices.tolist(), groups.tolist()))
        for b, dot, norm in zip(buckets, dots.tolist(), norms.tolist()):
            mine = np.array([weight.get(i, 0.0) for i in b.indices.tolist()])
            # Summed over the bucket's terms in order, as a bucket alone sums them.
            assert dot == (float(np.add.reduceat(mine * b.values, [0])[0]) if len(b.indices) else 0.0)
            assert norm == (float(np.sqrt(np.add.reduceat(b.values * b.values, [0])[0])) if len(b.indices) else 0.0)
        words = [set() for _ in range(6)]
        for b, owner in zip(buckets, owners.tolist()):
            words[owner] |= {group[i] for i in b.indices.tolist() if i in group}
        assert shared == [len(w) for w in words]
        assert bucket_dots(article, buckets, owners, 6, None, False)[1:] == (None, None)


def _scores_summed_as_arrays(vector, published, candidates, settings, groups, words):
    """rank_stories' scores with each story's sums taken by np.bincount (one at a time, in order):
    what its sums in plain Python must equal to the last bit."""
    short = short_share(words, settings)
    ranked, counted = [], []
    for st in candidates:
        if not in_window(published, st, settings.story_window_hours):
            continue
        ranked.append(st.story_id)
        counted += [(len(ranked) - 1, kernel(published - b.mean_time, settings), b) for b in st.buckets.values()
                    if kernel(published - b.mean_time, settings) != 0.0 and b.count]
    if not counted:
        return {sid: (0.0, 0) for sid in ranked}
    owners = np.array([o for o, _, _ in counted], dtype=np.intp)
    kernels = np.array([k for _, k, _ in counted])
    counts = np.array([b.count for _, _, b in counted], dtype=np.float64)
    dots, norms, _ = bucket_dots(vector, [b.vector for _, _, b in counted], owners, len(ranked), groups, short)
    counted_members = np.bincount(owners, counts, len(ranked))
    score = np.bincount(owners, (1.0 - short) * kernels * dots, len(ranked)) / np.maximum(counted_members, 1.0)
    if short:
        cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        centroids = np.bincount(owners, kernels * counts * cosines, len(ranked))
        weighted = np.bincount(owners, kernels * counts, len(ranked))
        nearest = np.zeros(len(ranked))
        np.maximum.at(nearest, owners, kernels)
        score += short * np.divide(centroids * nearest, weighted, out=np.zeros(len(ranked)), where=weighted > 0)
    return {sid: (s, int(m)) for sid, s, m in zip(ranked, score.tolist(), counted_members.tolist())}


def test_rank_stories_sums_as_the_array_sums_did_to_the_last_bit():
    rng = np.random.default_rng(11)
    settings = Settings()
    for _ in range(150):
        def vector(n: int) -> SparseVector:
            indices = np.unique(rng.integers(0, 300, n)).astype(np.int64)
            return SparseVector(indices, rng.random(len(indices))).normalised()
        article = vector(int(rng.integers(1, 80)))
        groups = rng.integers(0, 40, len(article.indices))
        candidates = []
        for s in range(int(rng.integers(1, 6))):
            items = [(vector(int(rng.integers(1, 60))), T0 + float(rng.uniform(-5, 2)) * DAY)
                     for _ in range(int(rng.integers(1, 8)))]
            times = [t for _, t in items]
            candidates.append(story(f"s{s}", min(times), max(times), members(*items, settings=settings)))
        for words in (3, 30, 300):
            expected = _scores_summed_as_arrays(article, T0, candidates, settings, groups, words)
            got = rank_stories(article, T0, candidates, settings, groups, words)
            assert {sc.story_id: (sc.score, sc.members) for sc in got} == \
                {sid: (s if m else 0.0, m) for sid, (s, m) in expected.items()}
