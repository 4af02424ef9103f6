"""The Redis store against a real Redis server: accepting, forgetting, reading
articles, and listing stories with keyset pagination and filters."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pytest

from service.timing import CountingConnection, round_trips
from storyengine.articles import new_article_record
from storyengine.errors import NotFound
from storyengine.decider import Decider
from storyengine.store import RedisStore, connect
from storyengine.story_reads import LIST_SCAN_ROWS
from tests.helpers import keys_under, pairs, snapshot
from tests.storyengine.raw_stories import MOST_TRIPS_OF_A_CAPPED_LISTING, T0, WHEN, put_many_stories, put_story

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


def all_pages(store: RedisStore, limit: int, **filters) -> list[list[str]]:
    pages, after = [], None
    for _ in range(100):
        page = store.list_stories(limit=limit, after=after, **filters)
        pages.append([s["id"] for s in page.items])
        if page.next_after is None:
            return pages
        after = page.next_after
    raise AssertionError("pagination did not end")


@pytest.fixture
def counted_store(redis_url, settings, store):
    """The ``store``'s stories, read through a connection that counts its round
    trips (service.timing, as Server-Timing counts them)."""
    client = connect(redis_url, connection_class=CountingConnection)
    yield RedisStore(client, settings)
    client.close()


def trips_of(call: Callable[[], object]):
    """call()'s answer and the Redis round trips it took (on a counting connection)."""
    before = round_trips()
    answer = call()
    return answer, round_trips() - before


# ---------------------------------------------------------------- accept
def test_accept_stores_a_queued_article_once(store):
    r = record()
    assert pairs(store.accept_articles([r])) == [("art-1", True)]
    article = store.get_article("art-1")
    assert article["status"] == "queued"
    assert article["title"] == "Cargo ship runs aground in Saltmere"
    assert article["published_ts"] == WHEN.timestamp()
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
    Decider(store).process("art-1")
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
    Decider(store).process("art-1")
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
    Decider(store).process("art-1")
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


def test_list_stories_page_holds_story_records(store):
    """Stored values, parsed; the API's shape of them is service.views' (tests/service/test_views.py)."""
    put_story(store, "st_x", T0, article_count=3, sources={"outlet-b": 1, "outlet-a": 2})
    page = store.list_stories(sort="recent", limit=10)
    assert page.next_after is None
    assert page.items == [{
        "id": "st_x", "headline": "Headline of st_x", "representative": "st_x-rep",
        "first_seen": T0 - 3600, "last_updated": T0, "article_count": 3, "originals": 3,
        "top_terms": ["term"], "merged_from": [], "sources": {"outlet-b": 1, "outlet-a": 2},
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


# ---------------------------------------------------------------- list stories: bounded work per request
# A filter the index cannot answer (min_sources, or a time window with sort=size) once read on by
# offset until the page filled or the index ended: one request for a story no one matches walked
# every story, two round trips per 20. Now a request reads at most LIST_SCAN_ROWS index rows, in
# chunks that double from twice the page (20, 40, ... 320, then the rest: six), and says where to
# go on; at 3,000 stories the old read took 300 round trips.
MANY = 3 * LIST_SCAN_ROWS


@pytest.mark.parametrize("sort,filters", [
    ("size", {"min_sources": 10_000}), ("recent", {"min_sources": 10_000}),
    ("size", {"since": T0 + 1}), ("size", {"until": T0 - 10 * MANY}),
])
def test_a_filter_nothing_matches_reads_a_bounded_part_of_the_index(store, counted_store, sort, filters):
    put_many_stories(store, MANY)
    page, trips = trips_of(lambda: counted_store.list_stories(sort, 1, **filters))
    assert page.items == []
    assert 2 <= trips <= MOST_TRIPS_OF_A_CAPPED_LISTING
    # Short, but not the end: the cursor is the last row read, LIST_SCAN_ROWS into the index.
    index = store.keys.stories_size if sort == "size" else store.keys.stories_recent
    last_read = store.redis.zrevrange(index, LIST_SCAN_ROWS - 1, LIST_SCAN_ROWS - 1, withscores=True)[0]
    assert page.next_after == (last_read[1], last_read[0].decode())


def test_following_the_cursors_of_capped_pages_visits_every_match_once(store, counted_store):
    ids = put_many_stories(store, MANY, two_outlets=(5, 6, 1234, MANY - 1))
    pages, after = [], None
    while True:
        page, trips = trips_of(lambda: counted_store.list_stories("recent", 2, min_sources=2, after=after))
        assert trips <= MOST_TRIPS_OF_A_CAPPED_LISTING
        pages.append([s["id"] for s in page.items])
        if page.next_after is None:
            break
        after = page.next_after
    # 5 and 6 fill the first page; each next request reads LIST_SCAN_ROWS on from its cursor: rows
    # 7-1006 hold no match (an empty page, with a cursor), 1007-2006 hold 1234, and the last reads
    # to the end of the index, where the last story is: nothing after it, so no cursor.
    assert pages == [[ids[5], ids[6]], [], [ids[1234]], [ids[MANY - 1]]]


@pytest.mark.parametrize("sort", ["recent", "size"])
def test_capped_pages_go_on_through_more_equal_scores_than_one_request_reads(store, sort):
    """Stories sharing one score, more of them than the cap: the position among them
    is found by rank, so each request goes on from its cursor, never from the first tie."""
    ids = put_many_stories(store, 2 * LIST_SCAN_ROWS + 500, two_outlets=(10, 1500, 2100), same_time=True)
    matches = sorted((f"st_{i:05d}" for i in (10, 1500, 2100)), reverse=True)
    assert sum(all_pages(store, limit=5, sort=sort, min_sources=2), []) == matches
    assert sum(all_pages(store, limit=100, sort=sort), []) == ids


def test_paging_goes_on_when_the_cursors_story_was_updated_or_removed(store):
    for i in range(10):
        put_story(store, f"st_{i}", T0 - i)  # newest first: st_0 ... st_9
    first = store.list_stories("recent", 3)
    assert [s["id"] for s in first.items] == ["st_0", "st_1", "st_2"]
    put_story(store, "st_2", T0 + 60)  # the cursor's story moves to the top
    second = store.list_stories("recent", 3, after=first.next_after)
    assert [s["id"] for s in second.items] == ["st_3", "st_4", "st_5"]
    store.redis.zrem(store.keys.stories_recent, "st_5")  # the cursor's story leaves the index
    third = store.list_stories("recent", 3, after=second.next_after)
    assert [s["id"] for s in third.items] == ["st_6", "st_7", "st_8"]


def test_a_cursor_above_until_starts_at_until(store):
    for i in range(6):
        put_story(store, f"st_{i}", T0 - i)
    ids = [s["id"] for s in store.list_stories("recent", 10, until=T0 - 2, after=(T0 + 100, "st_zzz")).items]
    assert ids == ["st_2", "st_3", "st_4", "st_5"]


def test_a_last_page_that_ends_the_index_carries_no_cursor(store):
    for i in range(4):
        put_story(store, f"st_{i}", T0 - i)
    assert all_pages(store, limit=2, sort="recent") == [["st_0", "st_1"], ["st_2", "st_3"]]


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
    [outcome] = Decider(store).process_many([r["id"]])
    assert "already failed: boom" in str(outcome.error)
    assert store.get_article(r["id"])["status"] == "failed"
    assert store.redis.hget(store.keys.article(r["id"]), "body") is None  # its text dropped
