"""The counters in Redis (storyengine/metrics.py), fed by the real engine in this process.

Articles are accepted and decided by a real Decider against the test
Redis: accepted, decided and failed articles are counted in the very step
that stores, decides or fails them, so the counts are exact; the latency
histogram is checked against prometheus_client's own Histogram given the
same observations.
"""
from __future__ import annotations

import logging
import math
import random
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from embedded_redis.server import free_port
from storyengine.metrics import LATENCY_BUCKETS, Metrics, MetricsSnapshot, latency_field, latency_bucket
from storyengine.phases import PHASES
from storyengine.decider import Decider
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from tests.articles import BANK, COURIER, REPRINT, article
from tests.helpers import pairs


@pytest.fixture
def decider(store):
    return Decider(store)


def accept(store: RedisStore, *specs: dict) -> list[str]:
    records = [article(**spec) for spec in specs]
    assert [created for _, created in pairs(store.accept_articles(records))] == [True] * len(records)
    return [r["id"] for r in records]


def snapshot(store: RedisStore) -> MetricsSnapshot:
    return MetricsSnapshot.from_hash(store.redis.hgetall(store.keys.metrics))


WORDLESS = dict(client_id="wordless", title="!!! ???", body="\u2014 ... \u2014", hours=1, source="shouty.example")


def test_outcomes_are_counted_once_and_a_redelivery_counts_nothing(store, decider):
    ids = accept(store, COURIER, REPRINT, BANK)
    outcomes = decider.process_many(ids)
    counts = snapshot(store).counters
    assert counts["articles_decided"] == 3
    assert counts["duplicates"] == sum(1 for o in outcomes if o.duplicate_of) == 1
    assert counts["stories_opened"] == sum(1 for o in outcomes if o.opened_story) == 2
    assert counts["articles_failed"] == 0
    before = store.redis.hgetall(store.keys.metrics)

    # A redelivered task: every article already processed, nothing counted.
    again = decider.process_many(ids + ids[:1])
    assert all(o.already_processed for o in again)
    assert store.redis.hgetall(store.keys.metrics) == before


def test_an_id_twice_in_one_task_is_one_article(store, decider):
    [bank] = accept(store, BANK)
    decider.process_many([bank, bank])
    assert snapshot(store).counters["articles_decided"] == 1 == snapshot(store).latency_count


def test_each_latency_lands_in_its_bucket_and_the_sum(store, decider):
    """received_ts moved back 7 s (waited in the queue), one in the future (an
    API host whose clock runs ahead: counted as 0 s, not negative), one as posted."""
    waited, ahead, fresh = accept(store, COURIER, BANK, dict(BANK, client_id="bank-2", source="other.example"))
    now = time.time()
    store.redis.hset(store.keys.article(waited), "received_ts", round(now - 7.0, 3))
    store.redis.hset(store.keys.article(ahead), "received_ts", round(now + 100.0, 3))
    decider.process_many([waited, ahead, fresh])

    times = dict(zip([waited, ahead, fresh], store.processing_times([waited, ahead, fresh])))
    latencies = {a: max(0.0, p - r) for a, (r, p) in times.items()}
    assert 7.0 <= latencies[waited] < 10.0 and latencies[ahead] == 0.0 and latencies[fresh] < 5.0
    snap = snapshot(store)
    cumulative = dict(snap.latency_buckets)
    assert cumulative[5.0] == 2 and cumulative[10.0] == 3 == snap.latency_count
    assert cumulative[LATENCY_BUCKETS[0]] >= 1  # the one "ahead" at 0 s
    assert snap.latency_sum == pytest.approx(sum(latencies.values()), abs=1e-6)


def test_buckets_match_prometheus_clients_own_histogram():
    """The same observations, bounds included exactly, in our hash layout and in
    prometheus_client's Histogram: the same cumulative counts."""
    rng = random.Random(6)
    observations = [0.0, *LATENCY_BUCKETS, 1e9] + [rng.expovariate(0.05) for _ in range(500)]
    registry = CollectorRegistry()
    reference = Histogram("latency", "reference", buckets=LATENCY_BUCKETS, registry=registry)
    raw: dict[str, float] = {}
    for seconds in observations:
        reference.observe(seconds)
        field = latency_field(latency_bucket(seconds))
        raw[field] = raw.get(field, 0) + 1
        raw["latency_sum"] = raw.get("latency_sum", 0.0) + seconds
    ours = MetricsSnapshot.from_hash({k.encode(): str(v).encode() for k, v in raw.items()})
    [family] = registry.collect()
    theirs = [(float(s.labels["le"]), s.value) for s in family.samples if s.name == "latency_bucket"]
    assert [(b, float(c)) for b, c in ours.latency_buckets] == theirs
    assert ours.latency_count == len(observations)
    assert ours.latency_sum == pytest.approx(sum(observations))
    assert [c for _, c in ours.latency_buckets] == sorted(c for _, c in ours.latency_buckets)


def test_an_invalid_article_counts_as_failed_once_however_often_it_is_sent(store, decider):
    """As the task does: mark it failed; the same task again finds it failed
    already (its status is no longer queued) and counts nothing."""
    [wordless] = accept(store, WORDLESS)
    for attempt in range(3):
        [outcome] = decider.process_many([wordless])
        assert outcome.error is not None
        assert store.mark_failed(wordless, str(outcome.error)) is (attempt == 0)
    counts = snapshot(store).counters
    assert counts["articles_failed"] == 1
    assert counts["articles_decided"] == 0 and snapshot(store).latency_count == 0


def test_missing_articles_count_nothing(store, decider):
    outcomes = decider.process_many(["never-posted", "nor-this"])
    assert all(o.error is not None for o in outcomes)
    assert store.redis.exists(store.keys.metrics) == 0


def test_only_articles_still_queued_are_failed_and_counted(store, decider):
    queued, done = accept(store, COURIER, BANK)
    decider.process(done)
    assert [store.mark_failed(a, "boom") for a in (queued, done, "never-posted", queued)] == [True, False, False,
                                                                                               False]
    assert snapshot(store).counters["articles_failed"] == 1


def test_accepts_count_what_was_stored_and_merges_add_up(store):
    records = [article(**spec) for spec in (COURIER, BANK)]
    store.accept_articles(records)
    store.accept_articles(records + [article(**REPRINT)])  # two known, one new
    metrics = Metrics(store)
    assert metrics.count_merges(1) and metrics.count_merges(0)
    counts = snapshot(store).counters
    assert counts["articles_accepted"] == 3 and counts["stories_merged"] == 1


def test_redis_away_is_logged_and_never_raised(settings, caplog):
    """Counting after the work is best effort: the work it counts must not fail because of it."""
    client = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = RedisStore(client, settings)
    metrics = Metrics(store)
    with caplog.at_level(logging.WARNING, logger="storywire.metrics"):
        assert metrics.count_merges(2) is False
        assert metrics.count_engine_seconds({"load": 1.0}) is False
    assert len([r for r in caplog.records if r.name == "storywire.metrics"]) == 2


def test_the_engine_seconds_of_each_call_add_up_by_phase(store, decider):
    """What the worker passes: the change in Decider.phase_seconds over a
    call. It adds up per phase, a call that decided nothing still counts its
    time, and a phase the engine does not have is not stored."""
    ids = accept(store, COURIER, BANK)
    before = dict(decider.phase_seconds)
    outcomes = decider.process_many(ids)
    first = {phase: s - before.get(phase, 0.0) for phase, s in decider.phase_seconds.items()}
    assert Metrics(store).count_engine_seconds(first)
    assert snapshot(store).engine_seconds == pytest.approx({phase: first.get(phase, 0.0) for phase in PHASES})
    assert snapshot(store).engine_seconds["featurise"] > 0

    again = {"load": 0.25, "lock": 0.5, "not-a-phase": 9.0}
    decider.process_many(ids)  # already processed: nothing decided
    assert Metrics(store).count_engine_seconds(again)
    spent = snapshot(store).engine_seconds
    assert spent["load"] == pytest.approx(first["load"] + 0.25) and spent["lock"] == pytest.approx(first["lock"] + 0.5)
    assert spent["featurise"] == pytest.approx(first["featurise"])
    assert not [f for f in store.redis.hkeys(store.keys.metrics) if b"not-a-phase" in f]
    assert snapshot(store).counters["articles_decided"] == 2


def test_an_empty_or_foreign_hash_reads_as_zeros():
    empty = MetricsSnapshot.from_hash({})
    assert set(empty.counters.values()) == {0} and empty.latency_count == 0 and empty.latency_sum == 0.0
    assert empty.engine_seconds == {phase: 0.0 for phase in PHASES}
    assert empty.latency_buckets[-1][0] == math.inf and len(empty.latency_buckets) == len(LATENCY_BUCKETS) + 1


def test_settings_prefix_keeps_deployments_apart(redis_client):
    one = RedisStore(redis_client, Settings(key_prefix="sw-test-metrics-one"))
    two = RedisStore(redis_client, Settings(key_prefix="sw-test-metrics-two"))
    try:
        one.accept_articles([article(**spec) for spec in (COURIER, BANK)])
        assert snapshot(two).counters["articles_accepted"] == 0
        assert snapshot(one).counters["articles_accepted"] == 2
    finally:
        one.clear()
        two.clear()
