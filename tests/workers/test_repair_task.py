"""The repair task and its schedule: "storywire.repair_stories" run by the real
Celery worker (and sent by a real `celery beat`), its configuration, and the
beat role's command.

Two stories of one event are made in the worker's store by processing its
articles here with ``story_threshold=0.9`` (so they open apart); the worker,
with the default ``merge_threshold``, must merge them. The task ignores
results, so its effect is read from Redis and over the API.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from storyengine.errors import ConfigError
from tests.helpers import snapshot, start_role
from tests.newsroom import BANK, DAM, Newsroom
from tests.workers.posts_and_waits import wait_merged
from workers import names
from workers.app import create_celery
from workers.config import WorkerConfig


@pytest.fixture
def split_stories(e2e_app):
    """(kept, merged, unrelated) outcomes: two stories of the dam and one of the bank."""
    store = e2e_app.extensions["storywire"].store
    newsroom = Newsroom(store)
    kept = newsroom.post(DAM[0], 0, "alpha.example")
    gone = newsroom.post(DAM[1], 1, "beta.example")
    other = newsroom.post(BANK, 2, "delta.example")
    assert len({kept.story_id, gone.story_id, other.story_id}) == 3
    return kept, gone, other


def worker_log(celery_worker) -> Path:
    """The file the session's worker (tests/conftest.py) writes its log to: its stdout."""
    return Path(os.readlink(f"/proc/{celery_worker.pid}/fd/1"))


# ============================================================ the task, through the worker
@pytest.mark.e2e
def test_the_worker_runs_the_repair_task_and_the_merge_shows_over_the_api(e2e_app, split_stories,
                                                                         celery_worker):
    kept, gone, other = split_stories
    store = e2e_app.extensions["storywire"].store
    client = e2e_app.test_client()
    log = worker_log(celery_worker)
    log_start = log.stat().st_size

    e2e_app.extensions["storywire"].celery.send_task(names.REPAIR_STORIES, queue=names.QUEUE, retry=False)

    assert wait_merged(store, gone.story_id) == kept.story_id
    moved = client.get(f"/v1/stories/{gone.story_id}")
    assert moved.status_code == 301
    assert moved.headers["Location"] == f"/v1/stories/{kept.story_id}"
    story = client.get(f"/v1/stories/{gone.story_id}", follow_redirects=True).get_json()
    assert story["id"] == kept.story_id
    assert story["merged_from"] == [gone.story_id]
    assert story["article_count"] == 2
    assert client.get(f"/v1/articles/{gone.article_id}").get_json()["story"] == kept.story_id
    assert client.get(f"/v1/stories/{other.story_id}").get_json()["merged_from"] == []
    listed = {s["id"] for s in client.get("/v1/stories").get_json()["stories"]}
    assert listed == {kept.story_id, other.story_id}

    # The task's report (results are not stored; Celery logs what a task returned).
    deadline = time.monotonic() + 10
    while True:
        text = log.read_bytes()[log_start:].decode("utf-8", "replace")
        done = [line for line in text.splitlines() if f"{names.REPAIR_STORIES}[" in line and "succeeded" in line]
        if done:
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.1)
    assert "'status': 'done'" in done[0]
    assert f"'merged': '{gone.story_id}'" in done[0] and f"'kept': '{kept.story_id}'" in done[0]


@pytest.mark.e2e
def test_a_second_repair_task_changes_nothing(e2e_app, split_stories):
    kept, gone, _ = split_stories
    store = e2e_app.extensions["storywire"].store
    celery = e2e_app.extensions["storywire"].celery
    celery.send_task(names.REPAIR_STORIES, queue=names.QUEUE, retry=False)
    wait_merged(store, gone.story_id)
    before = snapshot(store.redis, store.keys.prefix)

    celery.send_task(names.REPAIR_STORIES, queue=names.QUEUE, retry=False)
    # A marker task after it: the single worker runs tasks in order, so once this
    # article is processed the second repair run has finished.
    client = e2e_app.test_client()
    posted = client.post("/v1/articles", json={"source": "zeta.example", "url": "https://zeta.example/marker",
                                               "title": "Lindenmark crown strengthens", "body": BANK[1],
                                               "published_at": "2024-03-09T07:00:00Z"})
    assert posted.status_code == 202
    marker = posted.get_json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/articles/{marker}").get_json()["status"] == "queued":
        assert time.monotonic() < deadline, "the marker article was not processed"
        time.sleep(0.1)

    after = snapshot(store.redis, store.keys.prefix)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # Only what the marker article itself wrote may differ.
    story_keys = {k for k in changed if b":story:" in k}
    marker_story = client.get(f"/v1/articles/{marker}").get_json()["story"]
    assert all(marker_story.encode() in k for k in story_keys), story_keys
    assert after[store.keys.story(gone.story_id).encode()] == before[store.keys.story(gone.story_id).encode()]


@pytest.mark.e2e
def test_beat_sends_the_repair_task_on_schedule(e2e_app, split_stories, worker_env, tmp_path):
    """A real `celery beat` (the command `make run` starts) with a 1 s interval
    makes the worker merge the stories without anyone sending the task."""
    kept, gone, _ = split_stories
    store = e2e_app.extensions["storywire"].store
    env = dict(worker_env, STORYWIRE_DATA_DIR=str(tmp_path / "data"), STORYWIRE_REPAIR_INTERVAL="1")
    log = tmp_path / "beat.log"
    with start_role("beat", env, log) as beat:
        try:
            assert wait_merged(store, gone.story_id, timeout=45) == kept.story_id
        except AssertionError:
            raise AssertionError(f"beat log:\n{beat.log_tail()}") from None
    assert (tmp_path / "data").is_dir()
    assert any(p.name.startswith("celerybeat-schedule") for p in (tmp_path / "data").iterdir())
    assert names.REPAIR_STORIES in log.read_text()


# ============================================================ configuration
@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5"])
def test_a_bad_repair_interval_is_a_config_error(value):
    with pytest.raises(ConfigError) as err:
        WorkerConfig.from_env({"STORYWIRE_REPAIR_INTERVAL": value})
    assert "STORYWIRE_REPAIR_INTERVAL" in str(err.value)


def test_the_repair_interval_defaults_to_a_minute_and_can_be_set():
    assert WorkerConfig.from_env({}).repair_interval == 60
    assert WorkerConfig.from_env({"STORYWIRE_REPAIR_INTERVAL": ""}).repair_interval == 60
    assert WorkerConfig.from_env({"STORYWIRE_REPAIR_INTERVAL": "15"}).repair_interval == 15
    assert WorkerConfig.from_env({"STORYWIRE_REPAIR_INTERVAL": "1"}).repair_interval == 1


@pytest.mark.parametrize("interval", [1, 15, 60])
def test_the_beat_schedule_runs_repair_at_the_configured_interval(interval):
    app = create_celery(WorkerConfig(redis_url="redis://127.0.0.1:1/0", repair_interval=interval))
    entry = app.conf.beat_schedule["repair-stories"]
    assert entry["task"] == names.REPAIR_STORIES
    assert float(entry["schedule"]) == float(interval)
    options = entry["options"]
    assert options["queue"] == names.MAINTENANCE_QUEUE  # never behind a backlog of articles
    # A run not started before the next one is due is dropped rather than piled up.
    assert 0 < float(options["expires"]) <= float(interval)
    # The worker built from this app imports the tasks module and so knows the task.
    assert "workers.tasks" in app.conf.include
    app.loader.import_default_modules()
    assert names.REPAIR_STORIES in app.tasks


def test_the_beat_role_runs_celery_beat_with_its_schedule_in_the_data_dir(tmp_path):
    from scripts.run import ROLES, role_command
    assert "beat" in ROLES
    data = tmp_path / "data" / "nested"
    cmd = role_command("beat", {"STORYWIRE_DATA_DIR": str(data), "LOG_LEVEL": "WARNING"})
    assert cmd[:6] == [sys.executable, "-m", "celery", "-A", "workers.main", "beat"]
    schedule = Path(cmd[cmd.index("--schedule") + 1])
    assert schedule.parent == data and schedule.parent.is_dir()
    assert cmd[cmd.index("--loglevel") + 1] == "WARNING"
    assert "worker" not in cmd  # beat only schedules; the worker runs the task
