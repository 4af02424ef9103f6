"""Retention (storyengine.retention), against a real Redis.

Stories age out on the STREAM's clock (storyengine.clock; here set to be the
newest article seen): a story whose newest article is more than
``retention_days`` older than the clock is deleted by the decider after a batch commits, with
everything that points at it: its hash, member and outlet keys, its articles
(canonical and copies), their URL references, fingerprint keys and LSH band
slot entries, its term-index entries, its place in the listings, and the
redirects of stories merged into it. Failed articles go on the same clock.

Most tests use ``retention_days=1`` so a few hours of stream time cross it.
A store that processes the same articles with the default retention (30 days)
is the control: after aging out, the store must equal the control minus
exactly what belonged to the stories that went.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from evaluation.streams import read_stream, without_gold
from evaluation.variants import replicate
from storyengine.articles import new_article_record
from storyengine.errors import Gone, InvalidArticle, NotFound
from storyengine.locking import AssignmentLock
from storyengine.decider import Decider
from storyengine.repair import Repairer
from storyengine.retention import Retention
from storyengine.settings import Settings
from storyengine.store import RedisStore
from tests.articles import BANK, COURIER, FOOTBALL, REPRINT, VALLEY, article
from tests.helpers import accept, pairs
from tests.newsroom import DAM, Newsroom
from tests.shared_data import DEV_STREAM, require_shared
from tests.newsroom import T0 as NEWSROOM_T0
from tests.storyengine.store_state import state

HOUR = 3600.0


@pytest.fixture
def settings():
    """A fresh prefix, a retention of one day of stream time, and a clock that
    is the newest time seen (clock_support=1): these tests are about what goes
    and what stays once the clock has moved; how one article can or cannot
    move it is tests/storyengine/test_clock.py's."""
    return Settings(key_prefix=f"sw-test-{uuid.uuid4().hex[:10]}", retention_days=1.0, clock_support=1,
                    clock_per_source=1)


@pytest.fixture
def control(redis_client, settings):
    """A store on another fresh prefix with the default retention (30 days)."""
    store = RedisStore(redis_client, Settings(key_prefix=settings.key_prefix + "-control"))
    yield store
    store.clear()


def at(spec: dict, hours: float) -> dict:
    return article(**dict(spec, hours=hours))


def feed(store: RedisStore, records: list[dict], decider: Decider | None = None) -> list:
    """Accept and process each record on its own (as single posts are)."""
    decider = decider or Decider(store)
    return [decider.process(article_id) for article_id in accept(store, records)]


# ---------------------------------------------------------------- what goes, and what points at it
def pointers(store: RedisStore, story_ids: set[str], records: list[dict]) -> dict[str, list]:
    """Everything in the store that belongs to or names these stories and articles."""
    r, k = store.redis, store.keys
    ids = {rec["id"] for rec in records}
    found: dict[str, list] = {"keys": [], "band": [], "term": [], "listings": []}
    for sid in story_ids:
        found["keys"] += [key for key in (k.story(sid), k.story_articles(sid), k.story_sources(sid)) if r.exists(key)]
        for index in (k.stories_recent, k.stories_size):
            if r.zscore(index, sid) is not None:
                found["listings"].append((index, sid))
    for rec in records:
        found["keys"] += [key for key in (k.article(rec["id"]), k.article_ref(rec["source"], rec["canonical_url"]))
                          if r.exists(key)]
    for key in r.scan_iter(match=f"{k.prefix}:fingerprint:*", count=1000):
        if r.get(key).decode() in ids:
            found["keys"].append(key.decode())
    for key in r.scan_iter(match=f"{k.prefix}:band:*", count=1000):
        for slot, value in r.hgetall(key).items():
            if ids & set(value.decode().split(" ")):
                found["band"].append((key.decode(), slot))
    for key in r.scan_iter(match=f"{k.prefix}:term:*", count=1000):
        if any(r.zscore(key, sid) is not None for sid in story_ids):
            found["term"].append(key.decode())
    return found


def without(snapshot: dict, store: RedisStore, story_ids: set[str], records: list[dict]) -> dict:
    """``snapshot`` (tests.storyengine.test_batches.state) as it should be once
    these stories and articles are deleted and nothing else changed."""
    k = store.keys
    ids = {rec["id"] for rec in records}

    def name(key: str) -> str:
        return key[len(k.prefix) + 1:]

    gone = {name(k.article(a)) for a in ids}
    gone |= {name(k.article_ref(rec["source"], rec["canonical_url"])) for rec in records}
    gone |= {name(key) for sid in story_ids for key in (k.story(sid), k.story_articles(sid), k.story_sources(sid))}
    out = {}
    for key, value in snapshot.items():
        if key in gone or (key.startswith("fingerprint:") and value.decode() in ids):
            continue
        if key.startswith("band:"):
            value = {slot: " ".join(i for i in v.decode().split(" ") if i not in ids).encode()
                     for slot, v in value.items()}
            value = {slot: v for slot, v in value.items() if v}
        elif key.startswith("term:") or key.startswith("stories:"):
            value = [(m, score) for m, score in value if m.decode() not in story_ids]
        if value == {} or value == []:
            continue  # Redis deletes an emptied hash or zset
        out[key] = value
    return out


def test_a_story_past_retention_goes_with_everything_that_points_at_it(store, control):
    """The fire story (newest article 3 h) is deleted once an article 28 h
    arrives (cutoff 4 h): story, members, outlets, its three articles (one a
    copy), their URL refs, fingerprint keys, band slot entries, term-index
    entries and listings. Everything else is exactly as in a store without
    retention (the bank story, 20 h, is inside the window and untouched)."""
    fire = [at(COURIER, 0), at(REPRINT, 2), at(VALLEY, 3)]
    rest = [at(BANK, 20), at(FOOTBALL, 28)]
    courier, reprint, valley = feed(store, fire)
    assert reprint.duplicate_of == "fire-courier" and valley.story_id == courier.story_id
    fire_story = {courier.story_id}
    bank = feed(store, rest[:1])[0]
    before = pointers(store, fire_story, fire)
    # Before: the story has all of these.
    assert len(before["keys"]) >= 3 + 6 + 1 and before["band"] and before["term"] and len(before["listings"]) == 2

    feed(store, rest[1:])

    assert pointers(store, fire_story, fire) == {"keys": [], "band": [], "term": [], "listings": []}
    with pytest.raises(NotFound):
        store.get_story(courier.story_id)
    for rec in fire:
        with pytest.raises(NotFound):
            store.get_article(rec["id"])
    assert store.get_story(bank.story_id)["article_count"] == 1
    # Nothing else changed: the control processed the same articles and deleted nothing.
    feed(control, fire + rest)
    assert beside_the_clock(state(store)) == without(beside_the_clock(state(control)), control, fire_story, fire)
    # What went answers 410 Gone with when and why (storyengine.tombstones), not 404.
    with pytest.raises(Gone, match="retention policy"):
        store.get_story(courier.story_id)
    with pytest.raises(Gone, match=f"its story {courier.story_id}"):
        store.get_article("fire-reprint")


def beside_the_clock(snapshot: dict) -> dict:
    """A snapshot without the clock's own keys and the tombstones (which differ
    between a store that aged out and its control by design)."""
    return {key: value for key, value in snapshot.items()
            if key not in ("clock", "clock:times", "clock:seen") and not key.startswith("gone:")}


def test_whole_stories_go_not_old_articles_of_a_current_story(store):
    """A story whose first article is past the cutoff but whose newest is not
    stays whole, its old article included."""
    courier, valley = feed(store, [at(COURIER, 0), at(VALLEY, 20)])
    assert valley.story_id == courier.story_id
    feed(store, [at(FOOTBALL, 28)])  # cutoff 4 h: the courier piece (0 h) is older, its story (20 h) is not
    story = store.get_story(courier.story_id)
    assert story["article_count"] == 2
    assert store.get_article("fire-courier")["status"] == "processed"


def test_the_cutoff_is_exclusive(store):
    """A story exactly ``retention_days`` older than the newest article stays;
    one second older goes."""
    bank = feed(store, [at(BANK, 0)])[0]
    feed(store, [at(COURIER, 24)])
    assert store.get_story(bank.story_id)["article_count"] == 1
    feed(store, [article("later", "Port Halden council meets", "The council of Port Halden met on the budget.",
                         hours=24 + 1 / HOUR)])
    with pytest.raises(NotFound):
        store.get_story(bank.story_id)


# ---------------------------------------------------------------- the stream's clock
def test_no_new_article_no_deletion_whatever_the_wall_clock(store, redis_client):
    """Articles from 2019, all within one day of each other, with a one-day
    retention: years of wall time have passed, yet nothing is deleted by
    processing them, by processing them again, by the repair pass, or by
    calling retention directly."""
    archive = [new_article_record(source="archive.example", url=f"https://archive.example/{spec['client_id']}",
                                  title=spec["title"], body=spec["body"], article_id=spec["client_id"],
                                  published_at=datetime(2019, 5, 1, tzinfo=timezone.utc) + timedelta(hours=h))
               for spec, h in ((BANK, 0), (COURIER, 10), (VALLEY, 13), (FOOTBALL, 23))]
    decider = Decider(store)
    feed(store, archive, decider)
    assert store.redis.zcard(store.keys.stories_recent) == 3
    before = state(store)

    decider.process_many([rec["id"] for rec in archive])  # already processed: no batch, no aging
    Repairer(store).run()
    retention = Retention(store, decider.state.writer.band_lookup, decider.state.writer.band_write)
    with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries) as lock:
        # The clock stays the archive's own: nothing new moves it, and nothing goes.
        assert retention.advance_and_age_out(lock, []) == archive[-1]["published_ts"]
    assert state(store) == before


def test_an_archive_replay_ages_out_relative_to_its_own_newest_article(store):
    """Replaying 2019: the story of 1 June goes when an article of 3 June 06:00
    arrives (cutoff 2 June 06:00); the story of 2 June 12:00 stays. (On the wall
    clock every one of them would be years past retention.)"""
    def on(spec, day, hour):
        return new_article_record(source=spec["source"], url=f"https://archive.example/{spec['client_id']}",
                                  title=spec["title"], body=spec["body"], article_id=spec["client_id"],
                                  published_at=datetime(2019, 6, day, hour, tzinfo=timezone.utc))
    old, kept, newest = feed(store, [on(BANK, 1, 12), on(COURIER, 2, 12), on(FOOTBALL, 3, 6)])
    with pytest.raises(NotFound):
        store.get_story(old.story_id)
    assert store.get_story(kept.story_id)["article_count"] == 1
    assert store.get_story(newest.story_id)["article_count"] == 1
    assert [m.decode() for m in store.redis.zrange(store.keys.stories_recent, 0, -1)] == \
        [kept.story_id, newest.story_id]


# ---------------------------------------------------------------- failed articles, redirects, posting again
def failed_article(store: RedisStore, hours: float) -> dict:
    """An article without words, accepted, processed and marked failed as the worker does."""
    rec = article("wordless", title="!!! ???", body="<p>\u2014</p>", hours=hours)
    accept(store, [rec])
    with pytest.raises(InvalidArticle) as err:
        Decider(store).process(rec["id"])
    assert store.mark_failed(rec["id"], str(err.value))
    assert store.redis.zscore(store.keys.failed, rec["id"]) == pytest.approx(rec["published_ts"])
    return rec


def test_failed_articles_age_out_on_the_same_clock(store):
    """A failed article is filed by the stream's time when it failed: one that
    failed at 1 h goes, with its URL reference, when stories of its time do
    (cutoff 4 h); one dated 2 h that failed when the clock was at 20 h stays,
    its reason readable, however old its own date."""
    old = failed_article(store, 1)
    feed(store, [at(BANK, 20)])
    young = article("wordless-2", title="??", body="", hours=2)
    accept(store, [young])
    assert store.mark_failed("wordless-2", "the article has no words in its title or body")
    assert store.redis.zscore(store.keys.failed, "wordless-2") == pytest.approx(young["published_ts"] + 18 * HOUR)

    feed(store, [at(FOOTBALL, 28)])

    assert not store.redis.exists(store.keys.article(old["id"]))
    assert not store.redis.exists(store.keys.article_ref(old["source"], old["canonical_url"]))
    assert store.redis.zscore(store.keys.failed, old["id"]) is None
    assert store.get_article("wordless-2")["status"] == "failed"
    assert store.redis.zscore(store.keys.failed, "wordless-2") is not None


def test_a_failed_article_past_the_cutoff_goes_even_when_no_story_does(store):
    """Failed articles are on the stream's clock too, whether or not a story is
    old enough to go at the same time."""
    old = failed_article(store, 1)
    feed(store, [at(BANK, 20), at(FOOTBALL, 28)])  # no story older than the cutoff (4 h)
    assert store.redis.zscore(store.keys.failed, old["id"]) is None
    assert not store.redis.exists(store.keys.article(old["id"]))


def test_a_merged_storys_redirect_goes_with_the_kept_story(store):
    """Two stories of one event merged by the repair pass: when the kept story
    ages out, the merged story's redirect ({id, merged_into}) goes too, so its
    id answers "not found" rather than pointing at a deleted story."""
    newsroom = Newsroom(store)
    first = newsroom.post(DAM[0], 0, "alpha.example")
    second = newsroom.post(DAM[1], 2, "beta.example")
    [merge] = Repairer(store).run().merges
    assert (merge.kept, merge.merged) == (first.story_id, second.story_id)
    assert store.redis.hget(store.keys.story(second.story_id), "merged_into").decode() == first.story_id
    assert json.loads(store.redis.hget(store.keys.story(first.story_id), "merged_from")) == [second.story_id]

    late = new_article_record(source="delta.example", url="https://delta.example/bank", title=BANK["title"],
                              body=BANK["body"], published_at=NEWSROOM_T0 + timedelta(hours=30))
    accept(store, [late])
    Decider(store).process(late["id"])

    for sid in (first.story_id, second.story_id):
        assert not store.redis.exists(store.keys.story(sid))
        with pytest.raises(NotFound):
            store.get_story(sid)
    for outcome in (first, second):
        assert not store.redis.exists(store.keys.article(outcome.article_id))


def test_an_article_posted_again_after_aging_out_is_new(store):
    """Once its story aged out, the same article (same source and URL) is
    accepted as new, and decided afresh: its copy, posted again too, is not
    linked to anything deleted."""
    fire = [at(COURIER, 0), at(REPRINT, 2)]
    feed(store, fire)
    feed(store, [at(BANK, 30)])
    assert not store.redis.exists(store.keys.article("fire-courier"))

    again = [at(COURIER, 31), at(REPRINT, 32)]
    assert pairs(store.accept_articles(again)) == [("fire-courier", True), ("fire-reprint", True)]
    courier, reprint = [Decider(store).process(rec["id"]) for rec in again]
    assert courier.opened_story and courier.duplicate_of is None
    assert reprint.duplicate_of == "fire-courier" and reprint.story_id == courier.story_id
    assert store.get_story(courier.story_id)["article_count"] == 2
    # Posting them a third time finds them.
    assert pairs(store.accept_articles(again)) == [("fire-courier", False), ("fire-reprint", False)]


def test_a_late_reprint_keeps_its_story_for_the_retention_period(redis_client, settings):
    """A reprint 5 days after its original (a copy, which does not make the
    story current for clustering) is the story's newest article: the story,
    and the reprint, stay until the reprint is retention_days old, though the
    story's last update (the original's time) is older than that."""
    store = RedisStore(redis_client, settings.replace(retention_days=6.0))
    try:
        feed(store, [at(COURIER, 0), at(REPRINT, 120)])
        assert store.get_article("fire-reprint")["duplicate_of"] == "fire-courier"
        feed(store, [at(BANK, 150)])  # cutoff 6 h: the story's last update (0 h) is older, the reprint is not
        assert store.get_article("fire-reprint")["status"] == "processed"
        assert store.get_article("fire-courier")["status"] == "processed"
    finally:
        store.clear()


def test_a_batch_that_moves_the_clock_decides_as_one_at_a_time(store, redis_client):
    """[an article 100 h after the fire story, an exact reprint of the fire
    article at 100 h]: one at a time, the first ages the fire story out and the
    reprint opens a story of its own; a batch must decide the same."""
    one = RedisStore(redis_client, store.settings.replace(key_prefix=store.settings.key_prefix + "-one"))
    try:
        history = [at(COURIER, 0)]
        later = [at(BANK, 100), article("fire-again", COURIER["title"], COURIER["body"], hours=100,
                                         source="late-wire")]
        for target in (store, one):
            feed(target, history)
            accept(target, later)
        batched = Decider(store).process_many([rec["id"] for rec in later])
        single = [Decider(one).process(rec["id"]) for rec in later]
        assert single[1].duplicate_of is None and single[1].opened_story
        assert [(o.story_id, o.duplicate_of) for o in batched] == [(o.story_id, o.duplicate_of) for o in single]
        assert store.get_article("fire-again")["status"] == "processed"
    finally:
        one.clear()


# ---------------------------------------------------------------- bounded over a long run
PER_DAY = 500


def long_stream(n: int) -> list[dict]:
    """``n`` articles: copies of the dev stream (evaluation.variants.replicate,
    each copy its own vocabulary and events), retimed evenly at PER_DAY a day."""
    rows = read_stream(require_shared(DEV_STREAM))
    copies = -(-n // len(rows))
    rows, _ = replicate(rows, [], copies=copies)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    records = []
    for i, row in enumerate(rows[:n]):
        a = without_gold(row)
        records.append(new_article_record(source=a["source"], url=a["url"], title=a["title"], body=a.get("body", ""),
                                          published_at=start + timedelta(seconds=i * 86400.0 / PER_DAY),
                                          article_id=a.get("id"), language=a.get("language")))
    return records


def census(store: RedisStore) -> dict[str, int]:
    r, k = store.redis, store.keys
    keys = list(r.scan_iter(match=f"{k.prefix}:*", count=5000))
    return {"keys": len(keys), "stories": r.zcard(k.stories_recent),
            "articles": sum(1 for key in keys if key.startswith(f"{k.prefix}:article:".encode()))}


def test_a_long_run_keeps_stories_and_keys_bounded(store):
    """Five retention windows of stream (2,500 articles at 500 a day, retention
    one day), decided in batches of 100 as a worker does: the store holds about
    as much after five windows as after two, and everything left is consistent
    (no key names a deleted article or story; nothing older than the cutoff).

    Measured on this stream: after 2 windows 18,936 keys, 85 stories, 778
    articles held; after 5 windows 21,741 keys (+15 %), 86 stories, 985
    articles (Redis used_memory 7.2 MB -> 8.3 MB on a server of its own). The
    same run with the default 30-day retention: 22,757 -> 39,386 keys (+73 %),
    104 -> 203 stories, all 2,500 articles (8.1 MB -> 14.5 MB). Most keys are
    LSH band hashes (1,024 per band, still filling up after two windows), so
    the count creeps up a little even when bounded: 30 % separates the two.
    Articles are bounded at 2.5 days' worth (measured: just under 2).
    """
    records = long_stream(5 * PER_DAY)
    decider = Decider(store)
    seen = {}
    for start in range(0, len(records), 100):
        decider.process_many(accept(store, records[start:start + 100]))
        done = start + 100
        if done % PER_DAY == 0:
            seen[done // PER_DAY] = census(store)

    two, five = seen[2], seen[5]
    assert five["keys"] <= 1.3 * two["keys"], seen
    assert five["stories"] <= 1.3 * two["stories"], seen
    # Articles held: those of stories updated within about a day, far from the 2,500 posted.
    assert five["articles"] <= 2.5 * PER_DAY, seen

    r, k = store.redis, store.keys
    newest = r.zrevrange(k.stories_recent, 0, 0, withscores=True)[0][1]
    oldest = r.zrange(k.stories_recent, 0, 0, withscores=True)[0][1]
    assert newest - oldest <= store.settings.retention_days * 86400.0
    stories = {m.decode() for m in r.zrange(k.stories_recent, 0, -1)}
    members = {m.decode() for sid in stories for m in r.zrange(k.story_articles(sid), 0, -1)}
    articles = {key.decode().split(":", 2)[2] for key in r.scan_iter(match=f"{k.prefix}:article:*", count=5000)}
    assert articles == members  # no article outlives its story, none is missing
    assert {key.decode().split(":")[2] for key in r.scan_iter(match=f"{k.prefix}:story:*", count=5000)} == stories
    for pattern in ("fingerprint", "article-ref"):
        for key in r.scan_iter(match=f"{k.prefix}:{pattern}:*", count=5000):
            assert r.get(key).decode() in articles, key
    for key in r.scan_iter(match=f"{k.prefix}:band:*", count=5000):
        for value in r.hvals(key):
            assert set(value.decode().split(" ")) <= articles, key
    for key in r.scan_iter(match=f"{k.prefix}:term:*", count=5000):
        assert {m.decode() for m in r.zrange(key, 0, -1)} <= stories, key
