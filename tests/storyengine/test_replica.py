"""The deciders' in-memory replicas (storyengine.replica) against a real Redis.

A replica holds what decisions read and follows the change log
(storyengine.change_log): several deciders on one store, each deciding from
memory, must decide exactly as one decider deciding everything in order, and
each replica must hold exactly what Redis holds whenever it decides. Also: a
decider started mid-stream, one that fell behind the log's cap, one whose
store was cleared under it, and one killed mid-batch change nothing.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest
import redis

from evaluation.replay import record_of
from evaluation.streams import read_stream
from storyengine import change_log
from storyengine.decider import Decider
from storyengine.keys import Keys
from storyengine.locking import AssignmentLock
from storyengine.records import BUCKET_PREFIX, CANDIDATE_FIELDS
from storyengine.repair import Repairer
from storyengine.replica import Replica
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from tests.helpers import accept
from tests.shared_data import DEV_STREAM, require_shared
from tests.storyengine.store_state import state

RUN = 40


def dev(limit: int, shuffled: bool = False) -> list[dict]:
    """Dev articles in published order or shuffled (earlier copies arrive late and take over)."""
    rows = [row for row in read_stream(require_shared(DEV_STREAM)) if row.get("published_at")][:limit]
    if shuffled:
        random.Random(7).shuffle(rows)
    return [record_of(row) for row in rows]


def decided(outcomes) -> list[tuple]:
    return [(o.article_id, o.story_id, o.duplicate_of, o.opened_story, type(o.error).__name__ if o.error else None)
            for o in outcomes]


def serially(store: RedisStore, records: list[dict]) -> list[tuple]:
    """The control: one decider, every run in order."""
    ids, decider = accept(store, records), Decider(store)
    return decided([o for start in range(0, len(ids), RUN) for o in decider.process_many(ids[start:start + RUN])])


def assert_replica_holds_what_redis_holds(decider: Decider) -> None:
    replica, store = decider.state.replica, decider.store
    r, k = store.redis, store.keys
    with r.pipeline(transaction=False) as pipe:
        pipe.xrevrange(k.changes, count=1)
        pipe.get(k.df)
        pipe.lrange(k.df_deltas, 0, -1)
        pipe.get(k.df_docs)
        pipe.get(k.df_version)
        newest, *df = pipe.execute()
    assert replica.seq == int(newest[0][0].split(b"-")[0]), "the replica is behind the log"
    for sid, held in replica.stories.items():
        assert (held or {}) == {f.decode(): v for f, v in r.hgetall(k.story(sid)).items()}, sid
    for aid, held in replica.articles.items():
        row = r.hmget(k.article(aid), CANDIDATE_FIELDS)
        assert held == {f.encode(): v for f, v in zip(CANDIDATE_FIELDS, row) if v is not None}, aid
    for feature, held in replica.terms.items():
        assert held == {m.decode(): s for m, s in r.zrange(k.term(feature), 0, -1, withscores=True)}, feature
    for (key, field), value in replica.bands.items():
        assert value == (r.hget(key, field) or b"").decode(), (key, field)
    for fp, owner in replica.fingerprints.items():
        stored = r.get(k.fingerprint(fp))
        assert owner == (stored.decode() if stored else None), fp
    if replica.df_counts is not None:
        control = Replica(k, store.settings)
        control.fill_df(*df)
        assert np.array_equal(replica.df_counts, control.df_counts)
        assert (replica.df_docs, replica.df_version, replica.df_delta_bytes) == \
            (control.df_docs, control.df_version, control.df_delta_bytes)


# ---------------------------------------------------------------- several deciders, one stream
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_deciders_taking_turns_decide_as_one_and_hold_what_redis_holds(fresh_store, shuffled):
    """Three deciders (three workers) take runs in turn, in no fixed order:
    every decision equals one decider's, and each replica, when it has
    decided, holds exactly what Redis holds. Their document frequencies are
    folded every few runs (the control's never are): folded or not, the same."""
    records = dev(480, shuffled)
    expected = serially(fresh_store("serial"), records)
    # A log long enough that no decider falls behind it.
    store = fresh_store("turns", change_log_entries=256, df_fold_bytes=16_000)
    ids = accept(store, records)
    deciders = [Decider(store) for _ in range(3)]
    turns = random.Random(3)
    outcomes = []
    for start in range(0, len(ids), RUN):
        decider = turns.choice(deciders)
        outcomes += decider.process_many(ids[start:start + RUN])
        assert_replica_holds_what_redis_holds(decider)
    assert decided(outcomes) == expected
    # They followed the log: none had to forget what it held.
    assert all(d.state.replica.forgot == 0 for d in deciders)
    # Folded, and the deltas since stay under the bound.
    assert store.redis.get(store.keys.df) and sum(map(len, store.redis.lrange(store.keys.df_deltas, 0, -1))) < 16_000
    assert sum(d.state.replica.seq > 0 for d in deciders) == 3
    if shuffled:
        assert any(o.duplicate_of for o in outcomes)


def test_deciders_taking_turns_with_repair_store_what_one_decider_stores(fresh_store):
    """Repair passes between runs, on both sides: the same merges, the same bytes."""
    records = dev(360)
    control, store = fresh_store("serial"), fresh_store("turns")
    ids_control, ids = accept(control, records), accept(store, records)
    one, several = Decider(control), [Decider(store), Decider(store)]
    for n, start in enumerate(range(0, len(ids), RUN)):
        assert decided(several[n % 2].process_many(ids[start:start + RUN])) == \
            decided(one.process_many(ids_control[start:start + RUN]))
        assert_replica_holds_what_redis_holds(several[n % 2])
        if n % 3 == 2:
            assert Repairer(store).run().as_dict() == Repairer(control).run().as_dict()
    a, b = state(store), state(control)
    assert a.keys() == b.keys()
    assert [key for key in a if a[key] != b[key] and not key.startswith("metrics")] == []


def test_a_decider_started_mid_stream_decides_as_one(fresh_store):
    records = dev(320)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("late")
    ids = accept(store, records)
    half = len(ids) // 2
    first = Decider(store)
    outcomes = [o for s in range(0, half, RUN) for o in first.process_many(ids[s:min(s + RUN, half)])]
    late = Decider(store)  # a new worker: its replica starts empty, at the newest entry
    outcomes += [o for s in range(half, len(ids), RUN) for o in late.process_many(ids[s:s + RUN])]
    assert decided(outcomes) == expected
    assert_replica_holds_what_redis_holds(late)


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_a_commit_between_the_read_ahead_and_the_lock_is_seen(fresh_store, shuffled):
    """A decider reads a run ahead of the lock; before it takes the lock,
    another decides the run before (the order of the stream is kept). The
    read ahead is then out of date: deciding must see the other's commit.
    Runs with nothing logged in between are answered by the read ahead."""
    records = dev(400, shuffled)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("ahead")
    ids = accept(store, records)
    runs = [ids[s:s + RUN] for s in range(0, len(ids), RUN)]
    early, other = Decider(store), Decider(store)
    answered_ahead, first_read, read_ahead = [], early.state.first_read, early._prefetch

    def noting_first_read(*args):
        read = first_read(*args)
        answered_ahead.append(read.ahead)
        return read
    early.state.first_read = noting_first_read
    outcomes, n = [], 0
    while n < len(runs):
        if n + 1 < len(runs):
            before = [runs[n]]

            def the_other_decides_the_run_before(chunk):
                read_ahead(chunk)
                if before:
                    outcomes.extend(other.process_many(before.pop()))
            early._prefetch = the_other_decides_the_run_before
            outcomes += early.process_many(runs[n + 1])
            early._prefetch = read_ahead
            n += 2
        if n < len(runs):
            outcomes += early.process_many(runs[n])  # nothing logged since its read ahead
            n += 1
    assert decided(outcomes) == expected
    assert answered_ahead.count(True) >= 4 and answered_ahead.count(False) >= 3


def test_a_decider_waiting_for_the_lock_takes_in_what_the_holder_commits(fresh_store):
    """While another process holds the lock and commits, a waiting decider
    follows the log and reads ahead again, so under the lock its read ahead
    still stands; it decides exactly as one decider does."""
    records = dev(240, shuffled=True)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("waiting")
    ids = accept(store, records)
    runs = [ids[s:s + RUN] for s in range(0, len(ids), RUN)]
    waiter, holder = Decider(store), Decider(store)
    lock_key, catch_up, first_read = store.keys.assign_lock, waiter._catch_up, waiter.state.first_read
    answered_ahead, outcomes, before = [], [], []

    def noting_first_read(*args):
        read = first_read(*args)
        answered_ahead.append(read.ahead)
        return read

    def someone_else_holds_the_lock():
        store.redis.set(lock_key, "another-process", px=5000)

    def waiting(chunk):
        if before:  # the holder commits the run before while this one waits
            store.redis.delete(lock_key)
            outcomes.extend(holder.process_many(before.pop()))
            someone_else_holds_the_lock()
        catch_up(chunk)
        store.redis.delete(lock_key)  # let go: the waiter takes it at its next try
    waiter.state.first_read, waiter._catch_up = noting_first_read, waiting
    first_of_each_run = []
    for n in range(0, len(runs), 2):
        before.append(runs[n])
        someone_else_holds_the_lock()
        answered_ahead.clear()
        outcomes += waiter.process_many(runs[n + 1])
        first_of_each_run.append(answered_ahead[0])  # (a promotion mid-run reads afresh after it)
    assert decided(outcomes) == expected
    assert first_of_each_run == [True] * (len(runs) // 2)


def test_a_decider_further_behind_than_the_log_forgets_and_still_decides_as_one(fresh_store):
    records = dev(320)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("behind", change_log_entries=2)
    ids = accept(store, records)
    busy, idle = Decider(store), Decider(store)
    runs = [ids[s:s + RUN] for s in range(0, len(ids), RUN)]
    outcomes = idle.process_many(runs[0])
    for run in runs[1:-1]:  # the log keeps about 2 entries: the idle decider's own is trimmed
        outcomes += busy.process_many(run)
    outcomes += idle.process_many(runs[-1])
    assert decided(outcomes) == expected
    assert idle.state.replica.forgot == 1
    assert_replica_holds_what_redis_holds(idle)


def test_a_replica_far_smaller_than_the_stream_forgets_for_room_and_decides_as_one(fresh_store):
    """Capacities of a few records: every batch forgets most of what it held."""
    records = dev(240, shuffled=True)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("small", replica_records=60, replica_stories=4)
    ids = accept(store, records)
    deciders = [Decider(store), Decider(store)]
    outcomes = []
    for n, start in enumerate(range(0, len(ids), RUN)):
        outcomes += deciders[n % 2].process_many(ids[start:start + RUN])
        assert_replica_holds_what_redis_holds(deciders[n % 2])
    assert decided(outcomes) == expected
    assert len(deciders[0].state.replica.stories) <= 2 * RUN  # bounded between batches


def test_a_store_cleared_under_a_decider_is_read_afresh(fresh_store):
    """Cleared and refilled past the replica's own entry number: its entry holds
    another token, so it forgets what it held and decides as one decider."""
    records = dev(200)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("cleared")
    stale = Decider(store)
    stale.process_many(accept(store, records[:RUN]))
    held = stale.state.replica.seq
    store.clear()
    ids = accept(store, records)
    other = Decider(store)
    outcomes = [o for s in range(0, len(ids) - RUN, RUN) for o in other.process_many(ids[s:s + RUN])]
    assert other.state.replica.seq >= held
    outcomes += stale.process_many(ids[-RUN:])
    assert stale.state.replica.forgot == 1
    assert decided(outcomes) == expected
    assert_replica_holds_what_redis_holds(stale)


def test_a_replica_that_found_the_log_empty_applies_every_entry_after(fresh_store):
    """It read records while the log was empty; another decider then wrote
    entries 1, 2, ...: it applies them all, not just starts from the newest."""
    records = dev(200)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("empty")
    ids = accept(store, records)
    early, other = Decider(store), Decider(store)
    early.state.prefetch_candidates([], ids[:RUN])  # the first run's articles, read before anything is decided
    assert early.state.replica.token == change_log.EMPTY_LOG
    outcomes = [o for s in range(0, len(ids) - RUN, RUN) for o in other.process_many(ids[s:s + RUN])]
    outcomes += early.process_many(ids[-RUN:])
    assert early.state.replica.forgot == 0
    assert decided(outcomes) == expected
    assert_replica_holds_what_redis_holds(early)


def test_a_commit_that_fails_midway_makes_every_replica_forget(fresh_store):
    """Redis does not roll a script back: what ran before the failing command
    stays written, so the log tells every replica to forget what it holds."""
    records = dev(80)
    store = fresh_store("midway")
    ids = accept(store, records)
    decider, other = Decider(store), Decider(store)
    outcomes = decider.process_many(ids[:RUN])
    story = outcomes[0].story_id
    other.state.prefetch_candidates([story], [])  # holds the story as it is
    k = store.keys
    with AssignmentLock(store.redis, k, store.settings.change_log_entries) as lock:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            lock.commit(lambda pipe: (pipe.hset(k.story(story), "headline", "written before the failure"),
                                      pipe.lpush(k.story(story), "not a list")))
    assert store.redis.hget(k.story(story), "headline") == b"written before the failure"
    other.process_many(ids[RUN:])
    assert other.state.replica.forgot == 1
    assert_replica_holds_what_redis_holds(other)


# ---------------------------------------------------------------- killed mid-batch
def _decide_then_get_killed(url: str, prefix: str, ids: list[str]) -> None:
    store = RedisStore(connect(url), Settings(key_prefix=prefix))
    Decider(store).process_many(ids)


@pytest.mark.e2e
def test_a_decider_killed_mid_batch_changes_nothing(fresh_store, redis_url):
    """Killed while it holds the lock: what it committed is whole runs, and
    another decider then decides the rest exactly as one decider alone."""
    records = dev(400)
    expected = serially(fresh_store("serial"), records)
    store = fresh_store("killed")
    ids = accept(store, records)
    context = multiprocessing.get_context("spawn")
    doomed = context.Process(target=_decide_then_get_killed, args=(redis_url, store.settings.key_prefix, ids))
    doomed.start()
    try:
        deadline = time.monotonic() + 60
        while not store.redis.exists(store.keys.assign_lock) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(random.Random().uniform(0, 0.05))
        os.kill(doomed.pid, signal.SIGKILL)
    finally:
        doomed.join()
    statuses = [s for s in (store.redis.hget(store.keys.article(i), "status") for i in ids)]
    done = statuses.count(b"processed")
    assert statuses[:done] == [b"processed"] * done and statuses[done:] == [b"queued"] * (len(ids) - done)
    assert done % 200 == 0  # whole runs of BATCH_LIMIT, or nothing
    survivor = Decider(store)
    outcomes = [o for s in range(0, len(ids), RUN) for o in survivor.process_many(ids[s:s + RUN])]
    assert [(a, s, d) for a, s, d, _, _ in decided(outcomes)] == [(a, s, d) for a, s, d, _, _ in expected]
    assert_replica_holds_what_redis_holds(survivor)


# ---------------------------------------------------------------- the log, in a plain process
def test_what_the_log_cannot_apply_exactly_is_forgotten():
    keys, settings = Keys("sw"), Settings()
    recorder = change_log.Recorder(keys)
    stack = [(("HINCRBY", keys.story("st_a"), "article_count", 1), {}),
             (("EVALSHA", "0" * 40, 1, keys.term(7), "x"), {}),
             (("HSET", keys.article("a"), "story", "st_a", "title", "not kept"), {}),
             (("SET", keys.fingerprint("f"), "a", "XX"), {}),
             (("HSET", keys.metrics, "x", 1), {})]
    commands = recorder.record(change_log.wire(stack))
    assert commands == [[b"FORGET", b"{sw}:story:st_a"], [b"FORGET", b"{sw}:term:7"],
                        [b"HSET", b"{sw}:article:a", b"story", b"st_a"], [b"SET", b"{sw}:fingerprint:f", b"a", b"XX"]]
    replica = Replica(keys, settings)
    replica.fill_story("st_a", {b"article_count": b"1"})
    replica.fill_term(7, [b"st_a", 1.0])
    replica.fill_fingerprint("g", None)
    replica.apply(commands + [[b"SET", keys.fingerprint("g").encode(), b"b", b"XX"]])
    assert "st_a" not in replica.stories and 7 not in replica.terms
    assert "f" not in replica.fingerprints  # unknown before, SET XX: still unknown
    assert replica.fingerprints["g"] is None  # known to have no owner, SET XX: still none


def test_a_story_parsed_ahead_and_changed_meanwhile_is_read_as_it_is_now(fresh_store):
    """The read ahead parses the candidate stories (kept while the replica holds them unchanged, and
    by their stored bytes); another decider's commit changes one (a field set, then one removed):
    it is read as Redis holds it now."""
    records = dev(80)
    store = fresh_store("parsed_ahead")
    ids = accept(store, records)
    decider, other = Decider(store), Decider(store)
    story = decider.process_many(ids[:RUN])[0].story_id
    buckets = sorted(int(name[len(BUCKET_PREFIX):]) for name in map(bytes.decode, store.redis.hkeys(
        store.keys.story(story))) if name.startswith(BUCKET_PREFIX))
    other.state.prefetch_candidates([story], [], buckets)
    ahead = other.state.fetch([story], [], buckets)[0][0]
    with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries) as lock:
        lock.commit(lambda pipe: pipe.hset(store.keys.story(story), mapping={
            "article_count": 999, "canonicals": '["a_new"]'}))
    other.state.catch_up()
    now = other.state.fetch([story], [], buckets)[0][0]
    assert (now.article_count, now.canonicals) == (999, ["a_new"]) != (ahead.article_count, ahead.canonicals)
    assert (now.first_seen, now.last_updated, now.originals, now.indexed, now.buckets) == \
        (ahead.first_seen, ahead.last_updated, ahead.originals, ahead.indexed, ahead.buckets)
    again = other.state.fetch([story], [], buckets)[0][0]  # unchanged since: the same, a copy of its own
    assert again is not now and (again.article_count, again.canonicals, again.buckets) == \
        (now.article_count, now.canonicals, now.buckets)
    with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries) as lock:
        lock.commit(lambda pipe: pipe.hdel(store.keys.story(story), "canonicals"))
    other.state.catch_up()
    assert other.state.fetch([story], [], buckets)[0][0].canonicals == []
    assert_replica_holds_what_redis_holds(other)
