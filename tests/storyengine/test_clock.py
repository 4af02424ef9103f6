"""The stream clock (storyengine.clock) and what it drives, against a real Redis.

The clock is a watermark of the decided articles' published times: the
clock_support-th newest of the times held, each outlet holding at most its
clock_per_source newest. No single article and no single outlet can move it;
an undated article never reaches it and takes the stream's time instead.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from storyengine.articles import new_article_record
from storyengine.clock import StreamClock, newest_per_source, stream_time
from storyengine.errors import Gone
from storyengine.decider import Decider
from tests.articles import BANK, COURIER, FOOTBALL, REPRINT, VALLEY
from tests.helpers import article_answer

DAY = 86400.0
ARCHIVE = datetime(2021, 6, 17, 6, 0, tzinfo=timezone.utc)


def ts(when: datetime) -> float:
    return when.timestamp()


@pytest.fixture
def clock(store):
    return StreamClock(store.redis, store.keys, store.settings)


# ---------------------------------------------------------------- the watermark itself
def test_no_clock_until_a_dated_article(clock):
    assert clock.advance([]) is None and clock.read() is None


def test_one_article_far_ahead_does_not_move_it(clock):
    t = ts(ARCHIVE)
    clock.advance([("bbc", t), ("cnn", t + 60), ("wsj", t + 120), ("aljazeera", t + 180)])
    before = clock.read()
    assert before == pytest.approx(t + 60)  # the third newest of four outlets' times
    clock.advance([("latimes", ts(datetime(2026, 12, 1, tzinfo=timezone.utc)))])
    assert clock.read() == pytest.approx(t + 120)  # it counts as one time among many: the third newest moved a step
    assert clock.read() < t + DAY


def test_one_outlet_with_a_broken_clock_cannot_move_it(clock):
    t = ts(ARCHIVE)
    clock.advance([("bbc", t), ("cnn", t + 60), ("wsj", t + 120)])
    future = ts(datetime(2030, 1, 1, tzinfo=timezone.utc))
    clock.advance([("broken.example", future + i) for i in range(50)])
    # It holds only its two newest times: the third newest of all is still the archive's.
    assert clock.read() < t + DAY


def test_several_outlets_agreeing_move_it(clock):
    t = ts(ARCHIVE)
    clock.advance([("bbc", t), ("cnn", t), ("wsj", t)])
    clock.advance([("bbc", t + DAY), ("cnn", t + DAY), ("wsj", t + DAY)])
    assert clock.read() == pytest.approx(t + DAY)


def test_a_stream_of_one_outlet_advances_when_two_of_its_articles_agree(clock):
    t = ts(ARCHIVE)
    clock.advance([("only.example", t)])
    assert clock.read() is None  # one article alone never sets it
    clock.advance([("only.example", t + 5 * DAY)])  # one outlier: the clock stays at the older time
    assert clock.read() == pytest.approx(t)
    clock.advance([("only.example", t + 5 * DAY + 60)])
    assert clock.read() == pytest.approx(t + 5 * DAY)


def test_the_first_article_alone_cannot_set_it(clock):
    """A fresh deployment whose first article is dated today, in a replay of
    2021: no clock yet, so the archive that follows is not refused."""
    clock.advance([("broken.example", ts(datetime(2026, 12, 1, tzinfo=timezone.utc)))])
    assert clock.read() is None
    clock.advance([("bbc", ts(ARCHIVE)), ("cnn", ts(ARCHIVE) + 60)])
    assert clock.read() == pytest.approx(ts(ARCHIVE))


def test_a_retried_article_is_not_counted_twice(clock):
    t = ts(ARCHIVE)
    clock.advance([("bbc", t), ("cnn", t), ("wsj", t)])
    for _ in range(3):  # the same far-ahead article decided again and again (retries, a resent task)
        clock.advance([("bbc", t + 400 * DAY)])
    clock.advance([("cnn", t + 400 * DAY)])  # a second outlier: still one short
    assert clock.read() == pytest.approx(t)


def test_an_outlet_that_stopped_does_not_hold_the_clock_back(store):
    """Two outlets, then one goes silent: after clock_idle_hours of wall clock
    it leaves the clock, which follows the outlet still publishing."""
    from storyengine.clock import StreamClock
    settings = store.settings.replace(clock_idle_hours=1 / 3600)  # one second, for the test
    clock = StreamClock(store.redis, store.keys, settings)
    t = ts(ARCHIVE)
    clock.advance([("bbc", t), ("bbc", t + 60), ("cnn", t), ("cnn", t + 60)])
    assert clock.read() == pytest.approx(t)
    time.sleep(1.2)
    clock.advance([("bbc", t + 3 * DAY), ("bbc", t + 3 * DAY + 60)])
    assert clock.read() == pytest.approx(t + 3 * DAY)  # cnn, silent, no longer holds it at day 0
    clock.advance([("cnn", t + 3 * DAY - 600)])  # back: it counts again
    assert store.redis.zscore(store.keys.clock_times, "1\0cnn") == pytest.approx(t + 3 * DAY - 600)


def test_it_never_goes_back(clock):
    t = ts(ARCHIVE)
    clock.advance([("a", t), ("b", t), ("c", t)])
    clock.advance([("d", t - 300 * DAY), ("e", t - 300 * DAY)])
    assert clock.read() == pytest.approx(t)


def test_the_times_held_stay_bounded(clock, store):
    t = ts(ARCHIVE)
    clock.advance([(f"outlet-{i}", t + i) for i in range(500)])
    clock.advance([(f"outlet-{i}", t + 90 * DAY + i) for i in range(3)])
    # Times more than the retention window below the clock can never matter again: dropped.
    assert store.redis.zcard(store.keys.clock_times) == 3


def test_a_batch_sends_each_outlets_newest_only():
    events = [("a", 1.0), ("a", 5.0), ("a", 3.0), ("b", 2.0)]
    assert sorted(newest_per_source(events, 2)) == [("a", 3.0), ("a", 5.0), ("b", 2.0)]


def test_an_undated_article_takes_now_live_and_the_clock_in_a_replay():
    now = ts(datetime(2026, 12, 5, tzinfo=timezone.utc))
    assert stream_time(None, now, 24) == now
    assert stream_time(now - 3600, now, 24) == now  # live: the clock is an hour behind
    assert stream_time(ts(ARCHIVE), now, 24) == ts(ARCHIVE)  # a replay of 2021


# ---------------------------------------------------------------- what it drives
def record(spec: dict, outlet: str, when: datetime | None, n: int) -> dict:
    return new_article_record(source=outlet, url=f"https://{outlet}/{n}", title=spec["title"], body=spec["body"],
                              published_at=when, article_id=f"{outlet}-{n}")


def decide(store, records):
    ids = [a.id for a in store.accept_articles(records)]
    return Decider(store).process_many(ids)


def test_an_archive_replay_with_undated_items_and_one_far_ahead_loses_nothing(store):
    """Six outlets' items of one day in 2021, three of them undated and one
    dated today: every article stays readable, the undated ones take the
    archive's time and say so, and the clock stays in 2021."""
    outlets = ["bbc.co.uk", "cnn.com", "dailymail.co.uk", "aljazeera.com", "wsj.com", "latimes.com"]
    specs = [BANK, COURIER, REPRINT, VALLEY, FOOTBALL]
    records = [record(spec, outlet, ARCHIVE + timedelta(minutes=37 * i + 5 * j), i * 10 + j)
               for i, spec in enumerate(specs) for j, outlet in enumerate(outlets)]
    records += [record(BANK, "bbc.co.uk", None, 100), record(COURIER, "cnn.com", None, 101),
                record(VALLEY, "wsj.com", None, 102)]
    records.append(record(FOOTBALL, "latimes.com", datetime.now(timezone.utc) - timedelta(hours=1), 103))
    outcomes = decide(store, records)
    assert [o.error for o in outcomes] == [None] * len(records)
    clock = StreamClock(store.redis, store.keys, store.settings).read()
    assert ARCHIVE.timestamp() <= clock < ARCHIVE.timestamp() + DAY
    # A later batch of the same archive: still nothing deleted.
    decide(store, [record(BANK, outlet, ARCHIVE + timedelta(hours=5), 200 + j) for j, outlet in enumerate(outlets)])
    for rec in records:
        view = article_answer(store, rec["id"])
        assert view["status"] == "processed"
    undated = article_answer(store, "bbc.co.uk-100")
    assert undated["published_assigned"] is True
    assert undated["published_at"].startswith("2021-06-17")
    assert article_answer(store, "bbc.co.uk-0")["published_assigned"] is False


def test_an_undated_article_never_moves_the_clock(store):
    outlets = ["a.example", "b.example", "c.example"]
    decide(store, [record(BANK, o, ARCHIVE, j) for j, o in enumerate(outlets)])
    before = StreamClock(store.redis, store.keys, store.settings).read()
    decide(store, [record(COURIER, o, None, 10 + j) for j, o in enumerate(outlets)])
    assert StreamClock(store.redis, store.keys, store.settings).read() == before


def test_an_article_older_than_the_window_is_refused_and_nothing_stored(store, redis_client):
    outlets = ["a.example", "b.example", "c.example"]
    decide(store, [record(BANK, o, ARCHIVE, j) for j, o in enumerate(outlets)])
    old = record(COURIER, "a.example", ARCHIVE - timedelta(days=31), 50)
    fresh = record(COURIER, "b.example", ARCHIVE - timedelta(days=29), 51)
    keys_before = set(redis_client.scan_iter(match=f"{store.keys.prefix}:article:*"))
    refused, accepted = store.accept_articles([old, fresh])
    assert refused.outcome == "too_old" and refused.clock == pytest.approx(ts(ARCHIVE))
    assert accepted.created
    keys_after = set(redis_client.scan_iter(match=f"{store.keys.prefix}:article:*"))
    assert keys_after - keys_before == {store.keys.article(fresh["id"]).encode()}


def test_what_was_accepted_stays_until_the_clock_passes_it(store):
    """An article four months before the newest one, posted when the clock is
    still near it, is decided and stays; it goes (410 Gone, saying why) only
    once the clock has moved the whole window past it."""
    outlets = ["a.example", "b.example", "c.example"]
    decide(store, [record(BANK, o, ARCHIVE, j) for j, o in enumerate(outlets)])
    late = record(VALLEY, "d.example", ARCHIVE - timedelta(days=20), 60)
    decide(store, [late, record(FOOTBALL, "e.example", ARCHIVE + timedelta(days=120), 61)])
    assert article_answer(store, late["id"])["status"] == "processed"  # one far-ahead article moved nothing
    decide(store, [record(COURIER, o, ARCHIVE + timedelta(days=11), 70 + j) for j, o in enumerate(outlets)])
    with pytest.raises(Gone, match="retention policy") as gone:
        article_answer(store, late["id"])
    assert gone.value.tombstone.kind == "article"


def test_a_batch_spanning_years_decides_as_its_articles_would_one_at_a_time(store):
    """A post that continues a story and then jumps years ahead (three
    outlets, so the clock follows): the clock the later articles move to must
    not age out the earlier story before the post's first article joins it."""
    early = [record(BANK, "a.example", ARCHIVE, 1), record(BANK, "b.example", ARCHIVE + timedelta(hours=20), 2)]
    late = [record(COURIER, outlet, ARCHIVE + timedelta(days=900, hours=n), 3 + n)
            for n, outlet in enumerate(("a.example", "b.example", "c.example"))]
    first = decide(store, early[:1])  # the earlier story exists before the post
    outcomes = first + decide(store, early[1:] + late)
    assert outcomes[0].story_id == outcomes[1].story_id  # (a copy, or the same story: together either way)
    assert outcomes[2].story_id == outcomes[3].story_id != outcomes[0].story_id
