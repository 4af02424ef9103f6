"""The Redis store against a real Redis server: accepting, forgetting, reading
articles, and listing stories with keyset pagination and filters."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from storyengine.articles import new_article_record
from storyengine.errors import NotFound
from storyengine.pipeline import Processor
from storyengine.store import RedisStore
from tests.conftest import keys_under, snapshot
from tests.helpers import pairs

WHEN = datetime(2024, 3, 5, 8, 30, tzinfo=timezone.utc)
T0 = WHEN.timestamp()
BODY = (
    "The harbour authority in Saltmere said on Monday that a cargo ship had run aground near the northern "
    "breakwater during a storm, blocking the main channel for several hours. Tugboats freed the vessel at "
    "high tide and divers found no damage to the hull, the authority said in a statement."
)


def record(client_id: str | None = "art-1", source: str = "harbour-news",
           url: str = "https://harbour.example/news/ship-aground", title: str = "Cargo ship runs aground in Saltmere",
           body: str = BODY, when: datetime = WHEN) -> dict:
    return new_article_record(source=source, url=url, title=title, body=body, published_at=when,
                              article_id=client_id)


def put_story(store: RedisStore, story_id: str, last_updated: float, article_count: int = 1,
              sources: dict[str, int] | None = None) -> None:
    """A story as the pipeline writes it (see keys.py for the layout)."""
    k = store.keys
    sources = sources or {"outlet-a": article_count}
    store.redis.hset(k.story(story_id), mapping={
        "id": story_id, "headline": f"Headline of {story_id}", "representative": f"{story_id}-rep",
        "first_seen": last_updated - 3600, "last_updated": last_updated, "article_count": article_count,
        "originals": article_count, "top_terms": json.dumps(["term"])})
    store.redis.hset(k.story_sources(story_id), mapping=sources)
    store.redis.zadd(k.stories_recent, {story_id: last_updated})
    store.redis.zadd(k.stories_size, {story_id: article_count * 1e10 + last_updated})


def all_pages(store: RedisStore, limit: int, **filters) -> list[list[str]]:
    pages, after = [], None
    for _ in range(100):
        page = store.list_stories(limit=limit, after=after, **filters)
        pages.append([s["id"] for s in page.items])
        if page.next_after is None:
            return pages
        after = page.next_after
    raise AssertionError("pagination did not end")


# ---------------------------------------------------------------- accept
def test_accept_stores_a_queued_article_once(store):
    r = record()
    assert pairs(store.accept_articles([r])) == [("art-1", True)]
    article = store.get_article("art-1")
    assert article["status"] == "queued"
    assert article["title"] == "Cargo ship runs aground in Saltmere"
    assert article["published_at"] == "2024-03-05T08:30:00Z"
    assert store.redis.zrange(store.keys.queued, 0, -1) == [b"art-1"]


def test_accept_same_id_again_is_not_created_and_writes_nothing(store, redis_client, settings):
    assert pairs(store.accept_articles([record()])) == [("art-1", True)]
    before = snapshot(redis_client, settings.key_prefix)
    again = record(title="A changed headline", url="https://harbour.example/other-url")
    assert pairs(store.accept_articles([again])) == [("art-1", False)]
    assert snapshot(redis_client, settings.key_prefix) == before
    assert store.get_article("art-1")["title"] == "Cargo ship runs aground in Saltmere"
    assert store.redis.zcard(store.keys.queued) == 1


def test_accept_same_source_and_canonical_url_with_another_id_returns_the_first_id(store, redis_client, settings):
    assert pairs(store.accept_articles([record("first-id")])) == [("first-id", True)]
    before = snapshot(redis_client, settings.key_prefix)
    # Same outlet, same page once tracking parameters, case and trailing slash are folded.
    copy = record("second-id", url="https://HARBOUR.example/news/ship-aground/?utm_source=rss#top",
                  title="Posted again by a second crawler")
    [again] = store.accept_articles([copy])
    assert (again.id, again.outcome, again.status) == ("first-id", "known", "queued")
    # Nothing stored again; only its wait restarts, as its task is sent again (a retry after a lost task).
    after = snapshot(redis_client, settings.key_prefix)
    assert {k: v for k, v in after.items() if not k.endswith(b":queued")} == \
        {k: v for k, v in before.items() if not k.endswith(b":queued")}
    with pytest.raises(NotFound):
        store.get_article("second-id")
    assert store.redis.zrange(store.keys.queued, 0, -1) == [b"first-id"]


def test_accept_without_client_ids_derives_one_id_per_source_and_canonical_url(store):
    a = record(None)
    b = record(None, url="https://harbour.example/news/ship-aground/?utm_medium=social")
    assert a["id"] == b["id"] and a["id"].startswith("a_")
    assert pairs(store.accept_articles([a])) == [(a["id"], True)]
    assert pairs(store.accept_articles([b])) == [(a["id"], False)]


def test_accept_same_url_from_another_source_is_a_new_article(store):
    other = record("other-outlet-copy", source="coast-radio")
    assert pairs(store.accept_articles([record(), other])) == [("art-1", True), ("other-outlet-copy", True)]
    assert store.redis.zcard(store.keys.queued) == 2


def test_accept_batch_dedupes_within_the_batch(store):
    batch = [record("one"), record("two"), record("one", url="https://harbour.example/different")]
    first, same_page, same_id = store.accept_articles(batch)
    assert (first.id, first.outcome) == ("one", "created")
    assert (same_page.id, same_page.outcome) == ("one", "known")
    # The same id for another page names another article: a conflict, naming what it already is.
    assert (same_id.id, same_id.outcome) == ("one", "conflict")
    assert same_id.stored == ("harbour-news", "https://harbour.example/news/ship-aground")
    assert store.redis.zrange(store.keys.queued, 0, -1) == [b"one"]


# ---------------------------------------------------------------- forget
def test_forget_queued_removes_the_article_its_ref_and_its_queue_entry(store, redis_client, settings):
    r = record()
    store.accept_articles([r])
    assert store.forget_queued(r) is True
    with pytest.raises(NotFound):
        store.get_article("art-1")
    # Counted when stored, taken back with it: the counter it made is gone too.
    assert keys_under(redis_client, settings.key_prefix) == []
    # The ref is gone too: the same page can be accepted again, under a new id.
    assert pairs(store.accept_articles([record("art-2")])) == [("art-2", True)]


def test_forget_queued_of_a_record_that_lost_the_race_keeps_the_winner(store):
    winner, loser = record("winner"), record("loser")
    assert pairs(store.accept_articles([winner, loser])) == [("winner", True), ("winner", False)]
    assert store.forget_queued(loser) is False
    assert store.get_article("winner")["status"] == "queued"
    assert pairs(store.accept_articles([record("third")])) == [("winner", False)]


def test_forget_queued_leaves_a_processed_article_alone(store):
    r = record()
    store.accept_articles([r])
    Processor(store).process("art-1")
    assert store.forget_queued(r) is False
    article = store.get_article("art-1")
    assert article["status"] == "processed"
    assert article["story"]
    assert pairs(store.accept_articles([record("art-2")])) == [("art-1", False)]


# ---------------------------------------------------------------- articles
def test_get_article_of_unknown_id_raises_not_found(store):
    with pytest.raises(NotFound, match="no-such-article"):
        store.get_article("no-such-article")


def test_get_story_of_unknown_id_raises_not_found(store):
    with pytest.raises(NotFound, match="st_missing"):
        store.get_story("st_missing")


def test_mark_failed_records_the_reason_and_dequeues(store):
    store.accept_articles([record()])
    store.mark_failed("art-1", "x" * 600)
    article = store.get_article("art-1")
    assert article["status"] == "failed"
    assert article["error"] == "x" * 500
    assert store.redis.zcard(store.keys.queued) == 0


def test_mark_failed_never_overwrites_a_processed_article(store):
    """A redelivered task that fails after another delivery succeeded."""
    store.accept_articles([record()])
    Processor(store).process("art-1")
    before = store.get_article("art-1")
    assert store.mark_failed("art-1", "late failure") is False
    assert store.get_article("art-1") == before


def test_mark_failed_of_an_unknown_article_writes_nothing(store, redis_client, settings):
    assert store.mark_failed("nobody", "reason") is False
    assert keys_under(redis_client, settings.key_prefix) == []


def test_claim_stale_queued_hands_out_old_articles_once(store):
    assert pairs(store.accept_articles([record("old"), record("fresh", url="https://harbour.example/news/other")])) == \
        [("old", True), ("fresh", True)]
    store.redis.zadd(store.keys.queued, {"old": time.time() - 1000})
    assert store.claim_stale_queued(300) == ["old"]
    assert store.claim_stale_queued(300) == []  # its wait restarted
    assert store.redis.zscore(store.keys.queued, "old") > time.time() - 5


def test_claim_stale_queued_ignores_processed_articles(store):
    store.accept_articles([record()])
    Processor(store).process("art-1")
    assert store.claim_stale_queued(0) == []


def test_clear_deletes_only_this_prefix(store, redis_client, settings):
    store.accept_articles([record()])
    # A prefix that merely starts with ours is someone else's.
    neighbour = f"{settings.key_prefix}-other:queued"
    redis_client.set(neighbour, "keep me")
    try:
        assert store.clear() == 4  # article, ref, queue, metrics
        assert keys_under(redis_client, settings.key_prefix) == []
        assert redis_client.get(neighbour) == b"keep me"
    finally:
        redis_client.delete(neighbour)


# ---------------------------------------------------------------- list stories
def test_list_stories_pages_return_every_story_once_newest_first(store):
    for i in range(11):
        put_story(store, f"st_{i:02d}", T0 + i * 60)
    pages = all_pages(store, limit=4, sort="recent")
    assert [len(p) for p in pages] == [4, 4, 3]
    assert sum(pages, []) == [f"st_{i:02d}" for i in range(10, -1, -1)]


def test_list_stories_pagination_is_stable_across_equal_timestamps(store):
    # Five stories updated in the same second: ties are broken by id, descending.
    for sid in ("st_c", "st_a", "st_e", "st_b", "st_d"):
        put_story(store, sid, T0)
    put_story(store, "st_newer", T0 + 1)
    put_story(store, "st_older", T0 - 1)
    pages = all_pages(store, limit=2, sort="recent")
    assert sum(pages, []) == ["st_newer", "st_e", "st_d", "st_c", "st_b", "st_a", "st_older"]
    assert all(len(p) == 2 for p in pages[:-1])


def test_list_stories_page_shape(store):
    put_story(store, "st_x", T0, article_count=3, sources={"outlet-b": 1, "outlet-a": 2})
    page = store.list_stories(sort="recent", limit=10)
    assert page.next_after is None
    assert page.items == [{
        "id": "st_x", "headline": "Headline of st_x", "representative_article": "st_x-rep",
        "article_count": 3, "original_count": 3, "source_count": 2, "sources": ["outlet-a", "outlet-b"],
        "first_seen": "2024-03-05T07:30:00Z", "last_updated": "2024-03-05T08:30:00Z", "top_terms": ["term"], "merged_from": [],
    }]


def test_list_stories_sort_by_size_orders_by_article_count_then_recency(store):
    put_story(store, "st_small_new", T0 + 500, article_count=1)
    put_story(store, "st_big", T0, article_count=9)
    put_story(store, "st_mid_old", T0 - 100, article_count=4)
    put_story(store, "st_mid_new", T0 + 100, article_count=4)
    put_story(store, "st_huge_old", T0 - 10 * 86400, article_count=20)
    pages = all_pages(store, limit=2, sort="size")
    assert sum(pages, []) == ["st_huge_old", "st_big", "st_mid_new", "st_mid_old", "st_small_new"]
    counts = [s["article_count"] for s in store.list_stories(sort="size", limit=10).items]
    assert counts == [20, 9, 4, 4, 1]


def test_list_stories_min_sources_filter(store):
    put_story(store, "st_one", T0 + 3, sources={"a": 2})
    put_story(store, "st_two", T0 + 2, sources={"a": 1, "b": 1})
    put_story(store, "st_three", T0 + 1, sources={"a": 1, "b": 1, "c": 5})
    ids = [s["id"] for s in store.list_stories(sort="recent", limit=10, min_sources=2).items]
    assert ids == ["st_two", "st_three"]
    ids = [s["id"] for s in store.list_stories(sort="size", limit=10, min_sources=3).items]
    assert ids == ["st_three"]


def test_list_stories_since_and_until_filters(store):
    for h in range(6):
        put_story(store, f"st_h{h}", T0 + h * 3600)
    ids = [s["id"] for s in store.list_stories(sort="recent", limit=10, since=T0 + 2 * 3600).items]
    assert ids == ["st_h5", "st_h4", "st_h3", "st_h2"]  # since is inclusive
    ids = [s["id"] for s in store.list_stories(sort="recent", limit=10, until=T0 + 2 * 3600).items]
    assert ids == ["st_h2", "st_h1", "st_h0"]  # until is inclusive
    ids = [s["id"] for s in store.list_stories(sort="recent", limit=10, since=T0 + 3600, until=T0 + 3 * 3600).items]
    assert ids == ["st_h3", "st_h2", "st_h1"]
    # The size index cannot range on time: the same filter is applied to what it returns.
    ids = [s["id"] for s in store.list_stories(sort="size", limit=10, since=T0 + 3600, until=T0 + 3 * 3600).items]
    assert ids == ["st_h3", "st_h2", "st_h1"]


def test_list_stories_filters_and_pagination_together(store):
    for i in range(12):
        put_story(store, f"st_{i:02d}", T0 + i, sources={"a": 1, "b": 1} if i % 3 == 0 else {"a": 1})
    pages = all_pages(store, limit=2, sort="recent", min_sources=2, since=T0 + 1)
    assert sum(pages, []) == ["st_09", "st_06", "st_03"]


def test_list_stories_empty(store):
    page = store.list_stories(sort="recent", limit=5)
    assert page.items == [] and page.next_after is None


# Regression: the end of the index was once judged after the cursor filter had dropped rows, so a
# later page whose first chunk held no match ended the listing early.
def test_list_stories_with_filter_finds_matches_beyond_the_first_chunk_on_later_pages(store):
    # 30 stories, newest first; only the 1st and the 25th have two outlets.
    for i in range(30):
        sources = {"a": 1, "b": 1} if i in (0, 24) else {"a": 1}
        put_story(store, f"st_{i:02d}", T0 - i * 60, sources=sources)
    pages = all_pages(store, limit=1, sort="recent", min_sources=2)
    assert sum(pages, []) == ["st_00", "st_24"]


# Regression: more than one chunk (20) of stories sharing the cursor's score.
def test_list_stories_paginates_through_many_equal_timestamps(store):
    ids = [f"st_{i:02d}" for i in range(25)]
    for sid in ids:
        put_story(store, sid, T0)  # e.g. a feed that stamps everything to the minute
    pages = all_pages(store, limit=5, sort="recent")
    assert sum(pages, []) == sorted(ids, reverse=True)


def test_an_undone_accept_leaves_an_article_another_post_sent_again(store):
    """A's accept stores it; B's retry, a while later, finds it waiting and its
    task is sent again; then A's send fails and A undoes its accept: the
    article stays, since B was told it is known and its task went out."""
    r = record()
    [mine] = store.accept_articles([r])
    store.redis.zadd(store.keys.queued, {mine.id: time.time() - 60})  # A's task went out a minute ago
    [theirs] = store.accept_articles([record()])
    assert (theirs.outcome, theirs.resend) == ("known", True)
    assert store.forget_queued(r) is False
    assert store.get_article(mine.id)["status"] == "queued"


def test_a_failed_article_is_final(store):
    r = record()
    store.accept_articles([r])
    assert store.mark_failed(r["id"], "boom")
    [outcome] = Processor(store).process_many([r["id"]])
    assert "already failed: boom" in str(outcome.error)
    assert store.get_article(r["id"])["status"] == "failed"
    assert store.redis.hget(store.keys.article(r["id"]), "body") is None  # its text dropped
