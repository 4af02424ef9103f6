"""Failures stay small, and a dead lock holder stops blocking the others, against a real Redis.

A poisoned article is made the way a damaged store would make one: the stored
shingles of a canonical article are cut to an odd length, so deciding an
exact copy of it (which reads them) raises. Nothing in the engine is patched.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from storyengine.errors import DecisionFailed
from storyengine.keys import Keys
from storyengine.locking import LEASE_SECONDS, AssignmentConflict, AssignmentLock
from storyengine.decider import Decider
from storyengine.settings import Settings
from storyengine.store import connect
from tests.articles import BANK, COURIER, FOOTBALL, VALLEY, article


def poisoned_copy(store) -> dict:
    """An exact copy of an article whose stored shingles are damaged."""
    original = article(**BANK)
    [admission] = store.accept_articles([original])
    Decider(store).process(admission.id)
    store.redis.hset(store.keys.article(admission.id), "shingle_set", b"\x01\x02\x03")
    return article(**dict(BANK, client_id="bank-copy", source="copy-desk"))


def test_a_poisoned_article_fails_alone_and_the_rest_of_its_batch_is_decided(store):
    poison = poisoned_copy(store)
    batch = [article(**COURIER), poison, article(**VALLEY), article(**FOOTBALL)]
    ids = [a.id for a in store.accept_articles(batch)]
    outcomes = Decider(store).process_many(ids)
    errors = {o.article_id: o.error for o in outcomes}
    assert isinstance(errors.pop("bank-copy"), DecisionFailed)
    assert errors == {"fire-courier": None, "fire-valley": None, "football": None}
    for article_id in ("fire-courier", "fire-valley", "football"):
        assert store.get_article(article_id)["status"] == "processed"
    assert store.get_article("bank-copy")["status"] == "queued"  # the task decides: try again or fail


def test_the_decision_error_names_what_raised(store):
    poison = poisoned_copy(store)
    [admission] = store.accept_articles([poison])
    [outcome] = Decider(store).process_many([admission.id])
    assert "internal error while deciding: ValueError" in str(outcome.error)


def test_tries_are_counted_on_the_article_until_it_is_failed(store):
    poison = poisoned_copy(store)
    [admission] = store.accept_articles([poison])
    assert [store.count_attempt(admission.id, "boom") for _ in range(3)] == [1, 2, 3]
    assert store.mark_failed(admission.id, "boom (after 3 tries)")
    assert store.count_attempt(admission.id, "boom") == -1  # not queued any more: nothing counted
    view = store.get_article(admission.id)
    assert (view["status"], view["error"]) == ("failed", "boom (after 3 tries)")


# ---------------------------------------------------------------- the lock's lease
def _hold_the_lock_forever(url: str, prefix: str, ready) -> None:
    lock = AssignmentLock(connect(url), Keys(prefix), Settings().change_log_entries)
    lock.__enter__()
    ready.set()
    time.sleep(600)


@pytest.mark.e2e
def test_a_killed_holders_lock_stops_blocking_within_about_a_second(redis_url, store):
    ready = multiprocessing.get_context("spawn").Event()
    holder = multiprocessing.get_context("spawn").Process(
        target=_hold_the_lock_forever, args=(redis_url, store.settings.key_prefix, ready))
    holder.start()
    try:
        assert ready.wait(30)
        time.sleep(3 * LEASE_SECONDS)  # alive, it renews its lease: the lock stays taken
        assert store.redis.exists(store.keys.assign_lock)
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries):
            waited = time.monotonic() - killed
    finally:
        holder.kill()
        holder.join()
    assert waited <= LEASE_SECONDS + 0.3


def test_a_long_hold_keeps_its_lease_and_commits(store):
    with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries) as lock:
        time.sleep(3 * LEASE_SECONDS)
        lock.commit(lambda pipe: pipe.set(store.keys.metrics + ":probe", "1"))
    assert store.redis.get(store.keys.metrics + ":probe") == b"1"
    store.redis.delete(store.keys.metrics + ":probe")


def test_a_lease_not_renewed_refuses_the_commit(store):
    lock = AssignmentLock(store.redis, store.keys, store.settings.change_log_entries, lease=0.05, renew_every=60)
    with lock:
        time.sleep(0.2)
        with pytest.raises(AssignmentConflict):
            lock.commit(lambda pipe: pipe.set(store.keys.metrics + ":probe", "1"))
    assert store.redis.get(store.keys.metrics + ":probe") is None
