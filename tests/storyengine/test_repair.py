"""The repair pass (storyengine.repair), against a real Redis: stories of one
event that opened apart are merged into the older one, which keeps their
articles, counts and outlets; the other becomes a redirect. Stories of other
events, and stories outside the window of the stream's own clock, are left
alone; a second pass finds nothing; the pass never writes without the lock.

Stories that should merge are made deterministically: the articles of one
event are processed with ``story_threshold=0.9`` (nothing joins, every
original opens its own story), while the store keeps the default
``merge_threshold`` (0.2). The dam texts (tests/newsroom.py) link at 0.3-0.5;
the flood elsewhere shares words with them (it is compared) but links below 0.1.
"""
from __future__ import annotations

import functools
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from storyengine import repair as repair_module
from storyengine.errors import NotFound, StoreUnavailable, StorywireError, StoryMoved
from storyengine.locking import AssignmentConflict, AssignmentLock
from storyengine.repair import Merge, Repairer
from storyengine.store import RedisStore
from storyengine.timestamps import iso
from tests.helpers import article_answer, listed_stories, snapshot, story_answer
from tests.newsroom import BANK, DAM, FLOOD, T0, Newsroom, reprint


def story_hash(store: RedisStore, story_id: str) -> dict:
    return {k.decode(): v for k, v in store.redis.hgetall(store.keys.story(story_id)).items()}


def term_index(store: RedisStore) -> dict[str, set[str]]:
    """Every {p}:term:* key -> the stories it indexes."""
    out = {}
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}:term:*", count=1000):
        out[key.decode()] = {m.decode() for m in store.redis.zrange(key, 0, -1)}
    return out


@pytest.fixture
def newsroom(store) -> Newsroom:
    return Newsroom(store)


@pytest.fixture
def two_dam_stories(newsroom):
    """Two stories of the dam (opened apart) and one of the flood elsewhere and one of the bank."""
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    d2 = newsroom.post(DAM[1], 1, "beta.example")
    flood = newsroom.post(FLOOD, 2, "gamma.example")
    bank = newsroom.post(BANK, 3, "delta.example")
    outcomes = [d1, d2, flood, bank]
    assert all(o.opened_story for o in outcomes)
    assert len({o.story_id for o in outcomes}) == 4, "every article must open its own story"
    return d1, d2, flood, bank


# ============================================================ what merges
def test_nothing_to_repair_in_an_empty_store(store):
    report = Repairer(store).run()
    assert (report.stories_checked, report.pairs_compared, report.merges) == (0, 0, [])


def test_stories_of_one_event_merge_and_another_event_is_untouched(store, two_dam_stories):
    d1, d2, flood, bank = two_dam_stories
    others_before = {o.story_id: (story_hash(store, o.story_id),
                                  store.redis.zrange(store.keys.story_articles(o.story_id), 0, -1))
                     for o in (flood, bank)}

    report = Repairer(store).run()

    assert report.stories_checked == 4
    # The flood shares words with the dam (so it was compared) but is another event.
    assert report.pairs_compared >= 2
    assert len(report.merges) == 1
    merge = report.merges[0]
    assert isinstance(merge, Merge)
    assert (merge.kept, merge.merged) == (d1.story_id, d2.story_id)
    assert merge.link >= store.settings.merge_threshold
    assert report.as_dict()["merges"] == [{"kept": d1.story_id, "merged": d2.story_id,
                                           "link": round(merge.link, 4)}]
    for o in (flood, bank):
        assert (story_hash(store, o.story_id),
                store.redis.zrange(store.keys.story_articles(o.story_id), 0, -1)) == others_before[o.story_id]
        assert article_answer(store, o.article_id)["story"] == o.story_id
        assert story_answer(store, o.story_id)["merged_from"] == []


@pytest.mark.parametrize("first_processed", ["earlier", "later"])
def test_the_story_seen_first_is_kept(store, newsroom, first_processed):
    """The kept story is the one whose first article was published first,
    whatever order the articles were processed in."""
    if first_processed == "later":
        late = newsroom.post(DAM[1], 5, "beta.example")
        early = newsroom.post(DAM[0], 2, "alpha.example")
    else:
        early = newsroom.post(DAM[0], 2, "alpha.example")
        late = newsroom.post(DAM[1], 5, "beta.example")
    assert early.story_id != late.story_id

    [merge] = Repairer(store).run().merges

    assert (merge.kept, merge.merged) == (early.story_id, late.story_id)
    kept = story_answer(store, early.story_id)
    assert kept["first_seen"] == iso((T0 + timedelta(hours=2)).timestamp())
    assert kept["last_updated"] == iso((T0 + timedelta(hours=5)).timestamp())


def test_merged_story_becomes_a_redirect(store, two_dam_stories):
    d1, d2, *_ = two_dam_stories
    before = time.time()
    [merge] = Repairer(store).run().merges

    redirect = story_hash(store, d2.story_id)
    assert set(redirect) == {"id", "merged_into", "merged_at", "merge_link"}
    assert redirect["id"].decode() == d2.story_id
    assert redirect["merged_into"].decode() == d1.story_id
    assert float(redirect["merge_link"]) == pytest.approx(round(merge.link, 4))
    merged_at = datetime.strptime(redirect["merged_at"].decode(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before - 2 <= merged_at.timestamp() <= time.time() + 1
    # Its members and outlets now live in the kept story only.
    assert not store.redis.exists(store.keys.story_articles(d2.story_id))
    assert not store.redis.exists(store.keys.story_sources(d2.story_id))


def test_articles_counts_and_outlets_move_to_the_kept_story(store, newsroom):
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    d2 = newsroom.post(DAM[1], 1, "beta.example")
    copy = newsroom.post(reprint(DAM[1]), 1.5, "gamma.example")
    assert copy.duplicate_of == d2.article_id and copy.story_id == d2.story_id
    kept_before, merged_before = story_answer(store, d1.story_id), story_answer(store, d2.story_id)
    assert (merged_before["article_count"], merged_before["original_count"]) == (2, 1)

    [merge] = Repairer(store).run().merges
    assert (merge.kept, merge.merged) == (d1.story_id, d2.story_id)

    for outcome in (d1, d2, copy):
        assert article_answer(store, outcome.article_id)["story"] == d1.story_id
        assert store.load_article(outcome.article_id)["story"] == d1.story_id
    kept = story_answer(store, d1.story_id)
    assert kept["article_count"] == kept_before["article_count"] + merged_before["article_count"] == 3
    assert kept["original_count"] == kept_before["original_count"] + merged_before["original_count"] == 2
    assert kept["sources"] == ["alpha.example", "beta.example", "gamma.example"]
    assert kept["source_count"] == 3
    assert kept["merged_from"] == [d2.story_id]
    assert kept["first_seen"] == iso(T0.timestamp())
    assert kept["last_updated"] == iso((T0 + timedelta(hours=1.5)).timestamp())
    # Both originals, the copy folded under its canonical article.
    assert [a["id"] for a in kept["articles"]] == [d1.article_id, d2.article_id]
    assert [c["id"] for c in kept["articles"][1]["duplicates"]] == [copy.article_id]
    members = store.redis.zrange(store.keys.story_articles(d1.story_id), 0, -1)
    assert {m.decode() for m in members} == {d1.article_id, d2.article_id, copy.article_id}
    sources = store.redis.hgetall(store.keys.story_sources(d1.story_id))
    assert {k.decode(): int(v) for k, v in sources.items()} == {"alpha.example": 1, "beta.example": 1,
                                                                "gamma.example": 1}
    size_score = store.redis.zscore(store.keys.stories_size, d1.story_id)
    assert size_score == pytest.approx(3 * 1e10 + (T0 + timedelta(hours=1.5)).timestamp())


def test_merged_story_leaves_the_listings_and_the_term_index(store, two_dam_stories):
    d1, d2, flood, bank = two_dam_stories
    Repairer(store).run()

    for sort in ("recent", "size"):
        listed = [s["id"] for s in listed_stories(store, sort, 10)]
        assert d2.story_id not in listed
        assert sorted(listed) == sorted([d1.story_id, flood.story_id, bank.story_id])
    assert store.redis.zscore(store.keys.stories_recent, d2.story_id) is None
    assert store.redis.zscore(store.keys.stories_size, d2.story_id) is None

    index = term_index(store)
    assert not [key for key, stories in index.items() if d2.story_id in stories]
    indexed = json.loads(story_hash(store, d1.story_id)["indexed"])
    assert indexed
    for feature in indexed:
        assert d1.story_id in index[store.keys.term(feature)]


def test_a_merged_story_that_grew_leaves_the_whole_term_index(store, newsroom):
    # The later story grows (its second article joins it and moves its centroid's
    # heaviest terms), then a story whose first article is earlier opens beside it.
    d2 = newsroom.post(DAM[1], 1, "beta.example", join=True)
    d4 = newsroom.post(DAM[3], 3, "delta.example", join=True)
    assert d4.story_id == d2.story_id and not d4.opened_story
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    assert d1.opened_story

    [merge] = Repairer(store).run().merges
    assert (merge.kept, merge.merged) == (d1.story_id, d2.story_id)

    stale = sorted(key for key, stories in term_index(store).items() if d2.story_id in stories)
    assert stale == []


def indexed_by(store: RedisStore, story_id: str) -> set[str]:
    return {key for key, stories in term_index(store).items() if story_id in stories}


def test_the_kept_story_is_indexed_by_exactly_its_new_terms(store, newsroom):
    """As the pipeline keeps it (terms that leave a story's index stop pointing
    at it), the kept story's term entries after a merge are its merged 'indexed'
    terms: none left over from before the merge."""
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    d2 = newsroom.post(DAM[1], 1, "beta.example")
    d3 = newsroom.post(DAM[2], 2, "gamma.example")
    d4 = newsroom.post(DAM[3], 3, "delta.example")
    for o in (d1, d2, d3, d4):
        assert indexed_by(store, o.story_id) == {store.keys.term(f) for f in
                                                 json.loads(story_hash(store, o.story_id)["indexed"])}
    kept_terms_before = json.loads(story_hash(store, d1.story_id)["indexed"])

    merges = Repairer(store).run().merges
    assert merges and any(m.kept == d1.story_id for m in merges)

    # The merge moved the kept story's index (so some of its old terms fell out).
    assert set(json.loads(story_hash(store, d1.story_id)["indexed"])) - set(kept_terms_before)
    for m in merges:
        indexed = json.loads(story_hash(store, m.kept)["indexed"])
        assert indexed_by(store, m.kept) == {store.keys.term(f) for f in indexed}
        assert indexed_by(store, m.merged) == set()


# ============================================================ reading a merged story
def test_get_story_of_a_merged_story_says_where_it_moved(store, two_dam_stories):
    d1, d2, *_ = two_dam_stories
    Repairer(store).run()

    with pytest.raises(StoryMoved) as moved:
        story_answer(store, d2.story_id)
    assert isinstance(moved.value, StorywireError) and not isinstance(moved.value, NotFound)
    assert (moved.value.old_id, moved.value.story_id) == (d2.story_id, d1.story_id)
    assert d1.story_id in str(moved.value)
    assert store.resolve_story(d2.story_id) == d1.story_id
    assert store.resolve_story(d1.story_id) == d1.story_id
    assert story_answer(store, d1.story_id)["id"] == d1.story_id
    with pytest.raises(NotFound):
        story_answer(store, "st_0000000000000000")


@pytest.fixture
def chain(store, newsroom):
    """Three stories of the dam merged in two passes: the third into the
    second, then the second into a first whose article was published earlier
    but arrived last. Returns (first, second, third) outcomes."""
    second = newsroom.post(DAM[1], 2, "beta.example")
    third = newsroom.post(DAM[2], 3, "gamma.example")
    [m1] = Repairer(store).run().merges
    assert (m1.kept, m1.merged) == (second.story_id, third.story_id)
    first = newsroom.post(DAM[0], 1, "alpha.example")  # published first, arrived last
    assert first.opened_story
    [m2] = Repairer(store).run().merges
    assert (m2.kept, m2.merged) == (first.story_id, second.story_id)
    return first, second, third


def test_a_chain_of_merges_resolves_to_the_final_story(store, chain):
    first, second, third = chain
    assert store.resolve_story(third.story_id) == first.story_id
    assert store.resolve_story(second.story_id) == first.story_id
    for old in (second, third):
        with pytest.raises(StoryMoved) as moved:
            story_answer(store, old.story_id)
        assert (moved.value.old_id, moved.value.story_id) == (old.story_id, first.story_id)
    # The redirect of the first merge still names its direct target; the chain is followed on read.
    assert story_hash(store, third.story_id)["merged_into"].decode() == second.story_id
    for outcome in chain:
        assert article_answer(store, outcome.article_id)["story"] == first.story_id
    final = story_answer(store, first.story_id)
    assert final["article_count"] == 3
    assert second.story_id in final["merged_from"]
    assert [s["id"] for s in listed_stories(store, "recent", 10)] == [first.story_id]


def test_merged_from_lists_every_story_redirected_to_it(store, chain):
    first, second, third = chain
    assert sorted(story_answer(store, first.story_id)["merged_from"]) == sorted([second.story_id, third.story_id])


# ============================================================ when it runs
def test_a_second_pass_merges_nothing_and_writes_nothing(store, two_dam_stories, redis_client, settings):
    first = Repairer(store).run()
    assert len(first.merges) == 1
    before = snapshot(redis_client, settings.key_prefix)

    second = Repairer(store).run()

    assert second.merges == []
    assert second.stories_checked == first.stories_checked - 1
    assert snapshot(redis_client, settings.key_prefix) == before


@pytest.mark.parametrize("gap_hours, merges", [(40, 1), (200, 0)])
def test_only_stories_inside_the_window_of_the_stream_clock_are_compared(store, newsroom, gap_hours, merges):
    """The window ends at the newest story's time (the stream's clock, here in
    2024, not the wall clock); stories whose last article is older than
    story_window_hours (96) before it are not compared at all."""
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    d2 = newsroom.post(DAM[1], 1, "beta.example")
    bank = newsroom.post(BANK, 1 + gap_hours, "delta.example")
    old = {sid: story_hash(store, sid) for sid in (d1.story_id, d2.story_id)}

    report = Repairer(store).run()

    assert len(report.merges) == merges
    if merges:
        assert report.stories_checked == 3
        assert (report.merges[0].kept, report.merges[0].merged) == (d1.story_id, d2.story_id)
    else:
        assert report.stories_checked == 1 and report.pairs_compared == 0
        assert {sid: story_hash(store, sid) for sid in old} == old
        assert article_answer(store, d2.article_id)["story"] == d2.story_id
    assert story_answer(store, bank.story_id)["article_count"] == 1


def test_articles_arriving_after_a_merge_join_the_kept_story(store, newsroom):
    d1 = newsroom.post(DAM[0], 0, "alpha.example")
    d2 = newsroom.post(DAM[1], 1, "beta.example")
    [merge] = Repairer(store).run().merges
    assert merge.kept == d1.story_id

    # A new write-up of the event, assigned with the store's own settings.
    d3 = newsroom.post(DAM[2], 26, "gamma.example", join=True)
    assert (d3.story_id, d3.opened_story, d3.duplicate_of) == (d1.story_id, False, None)
    decision = article_answer(store, d3.article_id)["decision"]["story"]
    assert decision["action"] == "joined" and decision["story"] == d1.story_id
    assert d2.story_id not in [c["story"] for c in decision["candidates"]]
    # A copy of an article of the merged story follows its canonical into the kept story.
    copy = newsroom.post(reprint(DAM[1]), 27, "epsilon.example", join=True)
    assert (copy.duplicate_of, copy.story_id) == (d2.article_id, d1.story_id)

    kept = story_answer(store, d1.story_id)
    assert kept["article_count"] == 4
    assert kept["merged_from"] == [d2.story_id]
    assert {m.decode() for m in store.redis.zrange(store.keys.story_articles(d2.story_id), 0, -1)} == set()
    assert Repairer(store).run().merges == []


# ============================================================ the lock
@pytest.fixture
def short_wait(monkeypatch):
    """The repair pass waits 0.3 s for the lock instead of a minute. (Patching
    locking.LOCK_WAIT_SECONDS would not do: it is bound as a default argument.)"""
    monkeypatch.setattr(repair_module, "AssignmentLock", functools.partial(AssignmentLock, wait=0.3))


def test_the_pass_refuses_to_write_while_someone_else_holds_the_lock(store, two_dam_stories, short_wait,
                                                                      redis_client, settings):
    redis_client.set(store.keys.assign_lock, b"another-worker-token", px=30_000)
    before = snapshot(redis_client, settings.key_prefix)

    started = time.monotonic()
    with pytest.raises(AssignmentConflict) as refused:
        Repairer(store).run()
    assert isinstance(refused.value, StoreUnavailable)  # the task skips this run and beat starts the next
    assert time.monotonic() - started < 5

    assert snapshot(redis_client, settings.key_prefix) == before
    assert redis_client.get(store.keys.assign_lock) == b"another-worker-token"

    redis_client.delete(store.keys.assign_lock)
    assert len(Repairer(store).run().merges) == 1
    assert not redis_client.exists(store.keys.assign_lock)  # released after the pass


def test_a_pass_that_lost_the_lock_before_writing_writes_nothing(store, two_dam_stories, monkeypatch,
                                                                  redis_client, settings):
    """The lock expires while the pass reads, and another process takes it:
    the merge transaction sees the foreign token and aborts."""
    read = Repairer._recent_stories

    def read_then_lose_the_lock(self):
        stories = read(self)
        redis_client.set(store.keys.assign_lock, b"took-over-after-expiry", px=30_000)
        return stories

    monkeypatch.setattr(Repairer, "_recent_stories", read_then_lose_the_lock)
    redis_client.delete(store.keys.assign_lock)
    before = {k: v for k, v in snapshot(redis_client, settings.key_prefix).items()}

    with pytest.raises(AssignmentConflict):
        Repairer(store).run()

    after = snapshot(redis_client, settings.key_prefix)
    lock_key = store.keys.assign_lock.encode()
    assert after.pop(lock_key) == b"took-over-after-expiry"  # not released by the loser either
    assert after == before
