"""Races between deciders on a real Redis: out-of-order copies, simultaneous
copies of one event, and a decision whose lock expired before its commit."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from storyengine.articles import new_article_record
from storyengine.decider import Decider
from storyengine.locking import AssignmentConflict
from storyengine.store import RedisStore, connect
from tests.helpers import article_answer, story_answer

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
BODY = (
    "Firefighters in the coastal town of Marrowby battled a blaze at the old harbour warehouse through the "
    "night, officials said on Tuesday. The fire started shortly after midnight in a storage hall holding "
    "fishing nets and diesel, and spread to two neighbouring sheds before crews from three counties brought "
    "it under control. Nobody was injured, according to the Marrowby fire service, but the harbour master "
    "closed the eastern quay while engineers inspect the damaged sea wall. Investigators have not yet said "
    "what caused the fire. The warehouse, built in 1887, was due to be turned into a maritime museum."
)


def record(article_id: str, minutes: int, title: str = "Fire destroys Marrowby harbour warehouse",
           body: str = BODY, source: str | None = None) -> dict:
    return new_article_record(source=source or f"outlet-{article_id}", url=f"https://news.example/{article_id}",
                              title=title, body=body, published_at=T0 + timedelta(minutes=minutes),
                              article_id=article_id)


def accept_and_process(store: RedisStore, decider: Decider, rec: dict):
    store.accept_articles([rec])
    return decider.process(rec["id"])


def test_an_earlier_copy_arriving_later_becomes_the_canonical(store):
    decider = Decider(store)
    accept_and_process(store, decider, record("late-copy", 90, title="REPRINT: Fire destroys harbour warehouse",
                                                 body="Advertisement\n" + BODY))
    accept_and_process(store, decider, record("original", 0))
    accept_and_process(store, decider, record("third-copy", 120, body=BODY + "\nShare this article"))

    original = article_answer(store, "original")
    late = article_answer(store, "late-copy")
    third = article_answer(store, "third-copy")
    assert original["duplicate_of"] is None
    assert late["duplicate_of"] == "original"
    assert third["duplicate_of"] == "original"
    assert original["story"] == late["story"] == third["story"]
    story = story_answer(store, original["story"])
    assert story["article_count"] == 3
    assert [a["id"] for a in story["articles"]] == ["original"]
    assert {d["id"] for d in story["articles"][0]["duplicates"]} == {"late-copy", "third-copy"}
    assert story["representative_article"] == "original"


def test_simultaneous_copies_of_one_event_open_one_story(redis_url, settings):
    """Eight deciders (own connections, like worker processes) decide eight
    copies at once; the assignment lock serialises the decisions."""
    stores = [RedisStore(connect(redis_url), settings) for _ in range(8)]
    deciders = [Decider(s) for s in stores]
    records = [record(f"copy-{i}", i, body=BODY + f"\nFiled by desk {i}.") for i in range(8)]
    stores[0].accept_articles(records)
    barrier = threading.Barrier(len(records))
    errors = []

    def run(i):
        barrier.wait()
        try:
            deciders[i].process(records[i]["id"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        articles = [stores[0].get_article(r["id"]) for r in records]
        assert len({a["story"] for a in articles}) == 1
        canonicals = [a for a in articles if a["duplicate_of"] is None]
        assert [a["id"] for a in canonicals] == ["copy-0"]  # the earliest, whatever the order of decisions
        assert store_story_count(stores[0]) == 1
        assert stores[0].get_story(articles[0]["story"])["article_count"] == 8
    finally:
        stores[0].clear()


def store_story_count(store: RedisStore) -> int:
    return store.redis.zcard(store.keys.stories_recent)


def test_a_decision_whose_lock_expired_is_not_written(store, monkeypatch):
    decider = Decider(store)
    rec = record("slow", 0)
    store.accept_articles([rec])
    original_decide = decider.run_decider._decide

    def decide_then_lose_lock(*args, **kwargs):
        # Another worker takes the lock after ours expired, mid-decision.
        store.redis.set(store.keys.assign_lock, b"someone-else")
        return original_decide(*args, **kwargs)

    monkeypatch.setattr(decider.run_decider, "_decide", decide_then_lose_lock)
    with pytest.raises(AssignmentConflict):
        decider.process("slow")
    assert article_answer(store, "slow")["status"] == "queued"
    assert store_story_count(store) == 0
    store.redis.delete(store.keys.assign_lock)
    monkeypatch.undo()
    assert decider.process("slow").opened_story  # the retry goes through
