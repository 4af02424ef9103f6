"""Work stranded by a killed worker is decided again within a minute, with the
shipped settings (workers/app.py, workers/config.py): a visibility timeout of
40 s, and kombu's sweep for unacknowledged messages every 5 s on every call
(its defaults, 10 s and every 10th call, looked only every ~100 s, after a
one-hour timeout).

A real worker process, started with the command `make run` uses, takes a
batch of 500 articles posted through the API and is killed with SIGKILL (the
main process and its pool child at once) before acknowledging it, as if in
the middle of a sweep (the sweep's mutex left held); a worker started again
gets the same task back from kombu and decides every article.
Nothing is overridden: no STORYWIRE_VISIBILITY_TIMEOUT, no requeue pass (no
beat runs), so only the broker's redelivery can bring the work back.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from scripts.run import role_command
from embedded_redis.server import EmbeddedRedis
from storyengine.errors import ConfigError
from storyengine.settings import Settings
from tests.helpers import RunningProcess, build_app, log_says
from tests.workers.process_stack import realistic_articles, statuses
from workers.app import UNACKED_RESTORE_INTERVAL, create_celery
from workers.config import VISIBILITY_TIMEOUT_RANGE, WorkerConfig

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "sw-killed"
WITHIN = 60.0   # seconds from the kill until every stranded article is decided


def test_the_shipped_settings_redeliver_within_a_minute():
    config = WorkerConfig.from_env({})
    assert config.visibility_timeout == 40
    conf = create_celery(config).conf
    options = conf.broker_transport_options
    assert options == {"visibility_timeout": 40, "unacked_restore_interval": 5, "unacked_restore_throttle": 1,
                       "unacked_mutex_expire": 10}
    assert conf.worker_prefetch_multiplier == 1 and conf.task_acks_late and conf.task_reject_on_worker_lost
    # The longest a killed worker's message waits: the timeout, then up to one sweep.
    assert options["visibility_timeout"] + UNACKED_RESTORE_INTERVAL * options["unacked_restore_throttle"] < WITHIN
    # A sweep's mutex left held (its holder killed mid-sweep) is gone before any task is due back.
    assert options["unacked_mutex_expire"] < options["visibility_timeout"]


@pytest.mark.parametrize("value", ["9", "0", "-40", "86401", "forty"])
def test_the_visibility_timeout_is_checked(value):
    with pytest.raises(ConfigError, match="STORYWIRE_VISIBILITY_TIMEOUT"):
        WorkerConfig.from_env({"STORYWIRE_VISIBILITY_TIMEOUT": value})


@pytest.mark.parametrize("value", [str(VISIBILITY_TIMEOUT_RANGE[0]), "40", "600", str(VISIBILITY_TIMEOUT_RANGE[1])])
def test_the_visibility_timeout_can_be_set_within_its_range(value):
    config = WorkerConfig.from_env({"STORYWIRE_VISIBILITY_TIMEOUT": value})
    assert create_celery(config).conf.broker_transport_options["visibility_timeout"] == int(value)


def received_task_ids(log: str) -> list[str]:
    return re.findall(r"Task storywire\.process_articles\[([0-9a-f-]+)\] received", log)


@pytest.mark.e2e
def test_a_killed_workers_batch_is_decided_again_within_a_minute(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORYWIRE_")}
        env.update(REDIS_URL=server.url, CELERY_BROKER_URL=server.url, STORYWIRE_KEY_PREFIX=PREFIX,
                   PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
        api = build_app(server.url, Settings(key_prefix=PREFIX))
        store = api.extensions["storywire"].store
        rows = realistic_articles(500, "killed")
        resp = api.test_client().post("/v1/articles/batch", json={"articles": rows})
        assert resp.status_code == 202, resp.get_data(as_text=True)[:2000]
        ids = [result["id"] for result in resp.get_json()["results"]]
        assert set(statuses(store, ids).values()) == {"queued"}

        first = RunningProcess(role_command("worker", env), env, tmp_path / "first.log", own_session=True)
        second = None
        try:
            # Killed as soon as it holds the batch's task unacknowledged (acks_late).
            first.wait_for("the worker takes the task", lambda: store.redis.hlen("unacked") >= 1, interval=0.005)
            family = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
            os.killpg(first.pid, signal.SIGKILL)  # the main process and its pool child at once
            killed_at = time.monotonic()
            _, alive = psutil.wait_procs(family, timeout=5)
            assert not alive, alive
            left = [i for i, s in statuses(store, ids).items() if s != "processed"]
            assert left, "the batch was decided before the kill landed; post a longer one"
            assert store.redis.hlen("unacked") == 1 and store.redis.llen("storywire") == 0
            [taken] = received_task_ids(first.log_text()) or [None]
            # As if the kill had also landed mid-sweep: kombu's sweep mutex left
            # held, with the expiry the shipped settings give it.
            expire = create_celery(WorkerConfig.from_env({})).conf.broker_transport_options.get(
                "unacked_mutex_expire", 300)  # kombu's own default
            store.redis.set("unacked_mutex", "a killed sweep", px=int(expire * 1000))

            # A worker started again (as a container's restart policy does).
            second = RunningProcess(role_command("worker", env), env, tmp_path / "second.log", own_session=True)
            second.wait_for("the second worker starts", lambda: log_says(" ready.")(second))

            def all_decided():
                return all(s == "processed" for s in statuses(store, left).values())
            second.wait_for("the stranded articles decided", all_decided, timeout=WITHIN + 30, interval=0.2)
            took = time.monotonic() - killed_at
            assert took <= WITHIN, f"decided {took:.0f} s after the kill"
            # The broker brought the very task back (not before the visibility timeout).
            assert took >= 40 - 5, f"decided {took:.0f} s after the kill: sooner than the visibility timeout"
            if taken:
                assert taken in received_task_ids(second.log_text())
            assert set(statuses(store, ids).values()) == {"processed"}
            assert store.redis.zcard(store.keys.queued) == 0
            second.wait_for("the task acknowledged", lambda: store.redis.hlen("unacked") == 0, timeout=10)
            print(f"stranded articles decided {took:.1f} s after the kill")
        finally:
            first.stop()
            if second is not None:
                second.stop()
