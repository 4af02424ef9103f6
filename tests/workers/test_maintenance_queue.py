"""Beat's passes have a queue of their own (storywire.maintenance), which every
worker consumes beside the articles' queue, so a pass never waits, or expires,
behind a backlog of article tasks.

A real worker process, started with the command `make run` uses, on a Redis
server of the test's own; the backlog and the passes are real task messages,
the passes sent with beat's own schedule entries (workers/app.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scripts.run import role_command
from embedded_redis.server import EmbeddedRedis
from storyengine.settings import Settings
from storyengine.store import connect
from tests.helpers import RunningProcess
from workers import names
from workers.app import create_celery
from workers.config import WorkerConfig

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "sw-maintenance"
BACKLOG = 1500   # article tasks waiting when the worker starts


def test_the_worker_consumes_both_queues():
    argv = role_command("worker", {})
    assert argv[argv.index("--queues") + 1].split(",") == [names.QUEUE, names.MAINTENANCE_QUEUE]
    schedule = create_celery(WorkerConfig(redis_url="redis://127.0.0.1:1/0")).conf.beat_schedule
    assert {entry["options"]["queue"] for entry in schedule.values()} == {names.MAINTENANCE_QUEUE}


def test_beats_passes_run_before_a_backlog_of_article_tasks_drains(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        env = dict(os.environ, REDIS_URL=server.url, CELERY_BROKER_URL=server.url, STORYWIRE_KEY_PREFIX=PREFIX,
                   PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
        app = create_celery(WorkerConfig(redis_url=server.url, settings=Settings(key_prefix=PREFIX)))
        # No worker runs: a backlog of article tasks piles up (articles nobody
        # stored, so each one is quick: "missing").
        with app.producer_or_acquire() as producer:
            for n in range(BACKLOG):
                app.send_task(names.PROCESS_ARTICLES, args=[[f"missing-{n:05d}"]], queue=names.QUEUE,
                              producer=producer)
        # Then beat's two passes, sent with beat's own entries (queue and expiry).
        for entry in app.conf.beat_schedule.values():
            app.send_task(entry["task"], **entry["options"])
        client = connect(server.url)
        assert client.llen(names.QUEUE) == BACKLOG and client.llen(names.MAINTENANCE_QUEUE) == 2

        worker = RunningProcess(role_command("worker", env), env, tmp_path / "worker.log", own_session=True)
        try:
            def passes_done():
                log = worker.log_text()
                done = [n for n in (names.REPAIR_STORIES, names.REQUEUE_STALE)
                        if re.search(rf"Task {re.escape(n)}\[[0-9a-f-]+\] succeeded", log)]
                return len(done) == 2 and client.llen(names.QUEUE)
            # Both passes succeeded (not expired) while article tasks still wait in the broker.
            waiting = worker.wait_for("both passes run", passes_done, timeout=60, interval=0.05)
            assert waiting > BACKLOG // 2, waiting
            log = worker.log_text()
        finally:
            worker.stop()
        # In the worker's own order: a pass is never more than one article task behind.
        succeeded = re.findall(r"Task (storywire\.[a-z_]+)\[[0-9a-f-]+\] succeeded", log)
        last_pass = max(succeeded.index(names.REPAIR_STORIES), succeeded.index(names.REQUEUE_STALE))
        assert succeeded[:last_pass].count(names.PROCESS_ARTICLES) <= 2, succeeded[:last_pass + 1]
        assert "expired" not in log.lower() and "revoked" not in log.lower()
