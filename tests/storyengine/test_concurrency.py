"""Races between deciders on a real Redis: out-of-order copies, simultaneous
copies of one event, a decision whose lock expired before its commit, and a
commit whose reply was lost."""
from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storyengine.articles import new_article_record
from storyengine.change_log import sha
from storyengine.commit_script import COMMIT
from storyengine.decider import Decider
from storyengine.locking import AssignmentConflict, AssignmentLock
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


class CuttingProxy:
    """A TCP proxy to Redis that, once armed, passes on the next request
    containing ``marker`` and then cuts the connection before the reply."""

    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream, self.marker, self.armed, self.cutting = upstream, marker, False, False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                cut = requests and self.armed and self.marker in data
                if cut:
                    self.armed, self.cutting = False, True
                if not (self.cutting and not requests):  # the reply to it is never passed on
                    target.sendall(data)
                if cut:
                    time.sleep(0.2)  # Redis has run it: now the connection breaks
                    for s in (source, target):
                        s.shutdown(socket.SHUT_RDWR)
                    self.cutting = False
                    return
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


def test_a_commit_whose_reply_was_lost_is_not_sent_again(redis_url, settings):
    """The connection breaks after Redis got the commit: the caller hears of
    it, and the commit ran once (sent again, it would count twice)."""
    direct = connect(redis_url)
    host, port = direct.connection_pool.connection_kwargs["host"], direct.connection_pool.connection_kwargs["port"]
    direct.script_load(COMMIT)  # so the commit is run on its first sending
    proxy = CuttingProxy((host, port), sha(COMMIT))
    # A client that retries what failed on a broken connection (redis-py's own default for a client made
    # without a URL): a commit must still not be sent twice.
    retrying = connect(f"redis://127.0.0.1:{proxy.port}/{direct.connection_pool.connection_kwargs['db']}",
                       retry=Retry(NoBackoff(), 3), retry_on_error=[redis.ConnectionError])
    store = RedisStore(retrying, settings)
    try:
        with AssignmentLock(store.redis, store.keys, settings.change_log_entries) as lock:
            proxy.armed = True
            with pytest.raises(redis.ConnectionError):
                lock.commit(lambda pipe: pipe.hincrby(store.keys.story("st_once"), "article_count", 1))
        assert direct.hget(store.keys.story("st_once"), "article_count") == b"1"
        assert len(direct.xrange(store.keys.changes)) == 1
    finally:
        proxy.close()
        store.clear()
