"""/readyz and /metrics on the workers' heartbeats (workers/heartbeat.py), against a real Redis.

/readyz is the readiness probe: 503 not_ready, saying why, when no worker has
been heard from within STORYWIRE_WORKER_STALE_SECONDS (30), with the backlog
in ``checks``. /metrics carries ``storywire_workers_seen`` and
``storywire_oldest_queued_age_seconds``, read in its one round trip.

The first tests write heartbeats into Redis with the function a worker uses;
the end-to-end ones at the bottom start a real worker process, the way `make
run` does, on a Redis server of their own.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.run import role_command
from embedded_redis.server import EmbeddedRedis
from storyengine.errors import ConfigError
from storyengine.settings import Settings
from tests.helpers import RunningProcess, build_app, log_says
from tests.service.envelope import assert_error
from workers import heartbeat

ROOT = Path(__file__).resolve().parent.parent.parent
NODE = "storywire-0a1b2c@test-host"
TRIPS = re.compile(r'redis;desc="(?P<trips>[0-9]+) round trips?"')

pytestmark = pytest.mark.usefixtures("no_auth_in_environment")


def article(**changes) -> dict:
    slug = uuid.uuid4().hex[:12]
    return {"source": "ready.example", "url": f"https://ready.example/{slug}",
            "title": f"Harbour authority reopens the north quay {slug}",
            "body": "The harbour authority reopened the north quay on Monday after repairs.", **changes}


def gauges(client) -> dict[str, float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {s.name: s.value for f in text_string_to_metric_families(resp.get_data(as_text=True))
            for s in f.samples if not s.labels}


def round_trips(resp) -> int:
    return int(TRIPS.search(resp.headers["Server-Timing"])["trips"])


# ====================================================================== /readyz
def test_no_worker_heard_from_is_503_saying_why(client, store):
    for _ in range(2):
        assert client.post("/v1/articles", json=article()).status_code == 202
    resp = client.get("/readyz")
    err = assert_error(resp, 503, "not_ready")
    assert int(resp.headers["Retry-After"]) > 0
    assert "No worker has been heard from within 30 s" in err["message"]
    assert "2 are waiting" in err["message"]
    assert "unreachable" not in err["message"]  # Redis and the broker answered


def test_a_worker_heard_from_makes_it_ready_with_the_backlog_in_the_checks(client, store):
    for _ in range(3):
        assert client.post("/v1/articles", json=article()).status_code == 202
    heartbeat.record(store.redis, store.keys, NODE)
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"status": "ready", "checks": {"redis": "ok", "broker": "ok", "workers": "ok",
                                                             "workers_seen": 1, "queued": 3, "memory": "ok"}}


def test_a_heartbeat_older_than_the_stale_limit_does_not_count(client, store):
    heartbeat.record(store.redis, store.keys, NODE, now=time.time() - 31)
    err = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "within 30 s" in err["message"]
    heartbeat.record(store.redis, store.keys, "storywire-d4e5f6@test-host")  # a second worker, alive
    assert client.get("/readyz").get_json()["checks"]["workers_seen"] == 1


def test_the_stale_limit_is_a_setting(redis_url, settings, store):
    heartbeat.record(store.redis, store.keys, NODE, now=time.time() - 45)
    lenient = build_app(redis_url, settings, STORYWIRE_WORKER_STALE_SECONDS="60").test_client()
    assert lenient.get("/readyz").status_code == 200
    strict = build_app(redis_url, settings, STORYWIRE_WORKER_STALE_SECONDS="40").test_client()
    assert "within 40 s" in assert_error(strict.get("/readyz"), 503, "not_ready")["message"]


def test_the_stale_limit_is_read_from_the_environment(redis_url, settings, store, monkeypatch):
    monkeypatch.setenv("STORYWIRE_WORKER_STALE_SECONDS", "15")
    heartbeat.record(store.redis, store.keys, NODE, now=time.time() - 20)
    assert "within 15 s" in assert_error(build_app(redis_url, settings).test_client().get("/readyz"), 503,
                                         "not_ready")["message"]


@pytest.mark.parametrize("value", ["0", "9", "-30", "soon", "1.5"])
def test_a_bad_stale_limit_stops_the_app(redis_url, settings, value):
    with pytest.raises(ConfigError, match="STORYWIRE_WORKER_STALE_SECONDS"):
        build_app(redis_url, settings, STORYWIRE_WORKER_STALE_SECONDS=value)


def test_readyz_with_dead_redis_says_redis_and_not_workers(dead_app):
    err = assert_error(dead_app.test_client().get("/readyz"), 503, "not_ready")
    assert "redis unreachable" in err["message"] and "worker" not in err["message"]


@pytest.fixture
def dead_app(closed_port, settings):
    return build_app(f"redis://127.0.0.1:{closed_port}/0", settings)


def test_no_worker_and_no_broker_names_both(closed_port, redis_url, settings):
    client = build_app(redis_url, settings, CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port}/0").test_client()
    err = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "broker unreachable" in err["message"] and "No worker" in err["message"]


# ====================================================================== heartbeats
def test_a_heartbeat_prunes_workers_silent_for_five_minutes(store):
    now = time.time()
    heartbeat.record(store.redis, store.keys, "storywire-000001@gone", now=now - heartbeat.FORGET_AFTER - 1)
    heartbeat.record(store.redis, store.keys, "storywire-000002@quiet", now=now - 100)
    heartbeat.record(store.redis, store.keys, NODE, now=now)
    assert set(heartbeat.seen(store.redis, store.keys, within=1000, now=now)) == {"storywire-000002@quiet", NODE}
    assert set(heartbeat.seen(store.redis, store.keys, within=30, now=now)) == {NODE}
    heartbeat.forget(store.redis, store.keys, NODE)
    assert heartbeat.seen(store.redis, store.keys, within=30, now=now) == {}


# ====================================================================== /metrics
def test_metrics_count_the_workers_seen_and_age_the_oldest_waiting_article(client, store):
    before = gauges(client)
    assert before["storywire_workers_seen"] == 0
    assert before["storywire_oldest_queued_age_seconds"] == 0  # nothing waits
    heartbeat.record(store.redis, store.keys, NODE)
    heartbeat.record(store.redis, store.keys, "storywire-d4e5f6@other-host", now=time.time() - 60)  # stale
    first = client.post("/v1/articles", json=article()).get_json()["id"]
    second = client.post("/v1/articles", json=article()).get_json()["id"]
    # The first arrived two minutes ago (as far as its record says).
    store.redis.hset(store.keys.article(first), "received_ts", round(time.time() - 120, 3))
    after = gauges(client)
    assert after["storywire_workers_seen"] == 1
    assert 119 <= after["storywire_oldest_queued_age_seconds"] < 130
    # Its receipt time, not its queued score: a requeued article keeps its age.
    store.redis.zadd(store.keys.queued, {first: time.time() - 5, second: time.time() - 10})
    store.redis.hset(store.keys.article(second), "received_ts", round(time.time() - 300, 3))
    assert 299 <= gauges(client)["storywire_oldest_queued_age_seconds"] < 310
    # A record without a receipt time: the queued score.
    store.redis.hdel(store.keys.article(second), "received_ts")
    assert 9 <= gauges(client)["storywire_oldest_queued_age_seconds"] < 20


def test_metrics_stay_one_round_trip(client, store):
    heartbeat.record(store.redis, store.keys, NODE)
    assert client.post("/v1/articles", json=article()).status_code == 202
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert round_trips(resp) == 1
    assert "storywire_workers_seen 1.0" in resp.get_data(as_text=True)


def test_the_workers_gauge_follows_the_stale_setting(redis_url, settings, store):
    heartbeat.record(store.redis, store.keys, NODE, now=time.time() - 45)
    client = build_app(redis_url, settings, STORYWIRE_WORKER_STALE_SECONDS="60").test_client()
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    assert families["storywire_workers_seen"].samples[0].value == 1
    assert "60 s" in families["storywire_workers_seen"].documentation


# ====================================================================== a real worker
@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own: no other worker of the session writes heartbeats here."""
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        yield server


def start_worker(url: str, prefix: str, log: Path) -> RunningProcess:
    env = dict(os.environ, REDIS_URL=url, CELERY_BROKER_URL=url, STORYWIRE_KEY_PREFIX=prefix,
               PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
    worker = RunningProcess(role_command("worker", env), env, log, own_session=True)
    worker.wait_for("the worker did not start", lambda: log_says(" ready.")(worker))
    return worker


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(interval)
    return value


@pytest.mark.e2e
def test_readyz_follows_a_real_worker_process(own_redis, tmp_path):
    settings = Settings(key_prefix="sw-ready")
    client = build_app(own_redis.url, settings, STORYWIRE_WORKER_STALE_SECONDS="10").test_client()
    assert "No worker" in assert_error(client.get("/readyz"), 503, "not_ready")["message"]

    worker = start_worker(own_redis.url, settings.key_prefix, tmp_path / "worker.log")
    try:
        # Its first heartbeat comes as it starts consuming.
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, 10, "/readyz ready")
        assert ready.get_json()["checks"]["workers_seen"] == 1
        store = client.application.extensions["storywire"].store
        [node] = heartbeat.seen(store.redis, store.keys, within=10)
        assert re.fullmatch(rf"storywire-[0-9a-f]{{6}}@{re.escape(socket.gethostname())}", node), node
        assert f"{node} ready." in worker.log_text()  # the name Celery (and Flower) knows it by
        assert gauges(client)["storywire_workers_seen"] == 1
        # It keeps beating: still ready after more than the stale limit.
        time.sleep(12)
        assert client.get("/readyz").status_code == 200
    finally:
        worker.stop()  # a warm shutdown: the worker removes its own entry
    assert "No worker" in assert_error(client.get("/readyz"), 503, "not_ready")["message"]
    assert gauges(client)["storywire_workers_seen"] == 0


@pytest.mark.e2e
def test_a_killed_worker_stops_counting_after_the_stale_limit(own_redis, tmp_path):
    settings = Settings(key_prefix="sw-ready-kill")
    client = build_app(own_redis.url, settings, STORYWIRE_WORKER_STALE_SECONDS="10").test_client()
    worker = start_worker(own_redis.url, settings.key_prefix, tmp_path / "worker.log")
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 10, "/readyz ready")
        os.killpg(worker.pid, signal.SIGKILL)  # no clean shutdown: its entry stays, and ages
        worker.proc.wait(timeout=5)
        killed_at = time.monotonic()
        assert client.get("/readyz").status_code == 200  # heard from within the last 10 s
        wait_for(lambda: client.get("/readyz").status_code == 503, 15, "/readyz not ready")
        assert 4 <= time.monotonic() - killed_at <= 12
        assert gauges(client)["storywire_workers_seen"] == 0
    finally:
        worker.stop()
