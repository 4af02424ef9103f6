"""The requeue pass: an article whose task was lost is sent again and processed.

The article waits in the queued set until it is processed, so losing its
task (a broker that lost data, retries given up while Redis was away) loses
nothing: the requeue pass finds it and sends it again. (Which articles it
sends, and how many per pass: tests/workers/test_requeue_backlog.py.)"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from storyengine.articles import new_article_record
from workers import names


def record(article_id: str) -> dict:
    return new_article_record(
        source="wire", url=f"https://wire.example/{article_id}", title="Ferry runs aground off Crete",
        body="A passenger ferry ran aground off the Greek island of Crete on Tuesday, the coast guard said. "
             "All 312 passengers were taken off safely and the ship was towed to port.",
        published_at=datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc), article_id=article_id)


@pytest.mark.e2e
def test_an_article_whose_task_was_lost_is_processed_by_the_requeue_pass(e2e_app):
    runtime = e2e_app.extensions["storywire"]
    store = runtime.store
    # Stored and queued, but no task was ever sent: as if the broker lost it.
    store.accept_articles([record("lost-task")])
    store.redis.zadd(store.keys.queued, {"lost-task": time.time() - 1000})
    time.sleep(1.0)
    assert store.get_article("lost-task")["status"] == "queued"
    runtime.celery.send_task(names.REQUEUE_STALE, queue=names.MAINTENANCE_QUEUE)  # as beat sends it
    deadline = time.monotonic() + 20
    while store.get_article("lost-task")["status"] != "processed":
        assert time.monotonic() < deadline, "the requeue pass did not get the article processed"
        time.sleep(0.1)
    assert store.redis.zcard(store.keys.queued) == 0


def test_the_beat_schedule_runs_the_requeue_pass(worker_env):
    from workers.app import create_celery
    from workers.config import WorkerConfig
    config = WorkerConfig.from_env(dict(worker_env, STORYWIRE_REQUEUE_INTERVAL="30", STORYWIRE_REQUEUE_AFTER="120"))
    assert config.requeue_after == 120 and config.requeue_interval == 30
    entry = create_celery(config).conf.beat_schedule["requeue-stale"]
    assert entry["task"] == names.REQUEUE_STALE and entry["schedule"] == 30.0
    assert entry["options"]["queue"] == names.MAINTENANCE_QUEUE


def test_requeue_after_must_be_positive(worker_env):
    import pytest

    from storyengine.errors import ConfigError
    from workers.config import WorkerConfig
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="STORYWIRE_REQUEUE_AFTER"):
            WorkerConfig.from_env(dict(worker_env, STORYWIRE_REQUEUE_AFTER=bad))
