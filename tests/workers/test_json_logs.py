"""JSON log lines from a real Celery worker and beat (workers/logs.py, LOG_FORMAT=json).

A worker and beat of their own, started with the same command `make run`
uses (scripts.run.role_command) on a Redis server of their own (a second
consumer of the session worker's queue would steal its tasks). Articles are
posted through the Flask app; the worker's log is read back line by line.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from scripts.run import role_command
from embedded_redis.server import EmbeddedRedis
from storyengine.errors import ConfigError
from storyengine.logs import JsonLineFormatter, log_format
from storyengine.settings import Settings
from tests.helpers import build_app, log_says, served_id, start_role
from tests.workers.posts_and_waits import wait_processed
from workers import names
from workers.logs import TaskContext

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "sw-json-logs"


def clean_env(url: str, **extra: str) -> dict[str, str]:
    # Nothing from the caller's STORYWIRE_* or LOG_FORMAT leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYWIRE_") and k != "LOG_FORMAT"}
    env.update(REDIS_URL=url, CELERY_BROKER_URL=url, STORYWIRE_KEY_PREFIX=PREFIX, PYTHONPATH=str(ROOT),
               WORKER_CONCURRENCY="1", LOG_LEVEL="INFO", **extra)
    return env


class JsonWorker:
    """A `celery worker` with LOG_FORMAT=json, its log in a file."""

    def __init__(self, url: str, log: Path) -> None:
        self.log = log
        # " ready." is what tests/conftest.py waits for, here inside the JSON message
        self.process = start_role("worker", clean_env(url, LOG_FORMAT="json"), log, ready=log_says(" ready."))

    def lines_after_ready(self) -> list[str]:
        """Every line from the "ready." line on: all of them are log records."""
        lines = self.log.read_text(encoding="utf-8").splitlines()
        start = next(i for i, line in enumerate(lines) if " ready." in line)
        return [line for line in lines[start:] if line.strip()]

    def records(self) -> list[dict]:
        out = []
        for line in self.lines_after_ready():
            record = json.loads(line)  # fails the test on any line that is not one JSON object
            assert isinstance(record, dict), line
            out.append(record)
        return out

    def wait_for(self, predicate, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if predicate(r)]
            if found:
                return found
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-json-logs"), appendonly=False).start()
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture(scope="module")
def json_worker(own_redis, tmp_path_factory):
    worker = JsonWorker(own_redis, tmp_path_factory.mktemp("json-worker") / "worker.log")
    yield worker
    worker.process.stop()


@pytest.fixture
def api(own_redis, json_worker):
    app = build_app(own_redis, Settings(key_prefix=PREFIX))
    yield app
    app.extensions["storywire"].store.clear()


def article(n: str, **changes) -> dict:
    return {"id": n, "source": "logs.example", "url": f"https://logs.example/{n}",
            "title": f"Ferry service to the islands resumes {n}",
            "body": "The ferry service to the outer islands resumed on Tuesday after the storm.", **changes}


def test_every_worker_line_is_json_and_names_its_task_and_articles(api, json_worker):
    client = api.test_client()
    single = article(f"one-{uuid.uuid4().hex[:8]}")
    batch = [article(f"two-{uuid.uuid4().hex[:8]}"), article(f"wordless-{uuid.uuid4().hex[:8]}", title="!!! ???",
                                                              body="\u2014")]
    assert client.post("/v1/articles", json=single).status_code == 202
    assert client.post("/v1/articles/batch", json={"articles": batch}).status_code == 202
    single_id = served_id(single)  # the id the article is served (and logged) under
    batch_ids = [served_id(a) for a in batch]
    wait_processed(client, [single_id] + batch_ids)
    [done] = json_worker.wait_for(lambda r: "succeeded" in r["message"] and r.get("article_ids") == batch_ids)

    records = json_worker.records()
    for record in records:
        assert {"timestamp", "level", "logger", "message", "pid"} <= set(record), record
        assert datetime.fromisoformat(record["timestamp"]).utcoffset().total_seconds() == 0
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    ready = [r for r in records if r["message"].endswith(" ready.")]
    assert ready and ready[0]["logger"].startswith("celery")

    def about(task_name: str, word: str) -> list[dict]:
        return [r for r in records if r.get("task_name") == task_name and f"] {word}" in r["message"]]

    [received_one] = [r for r in about(names.PROCESS_ARTICLE, "received") if r.get("article_id") == single_id]
    [succeeded_one] = [r for r in about(names.PROCESS_ARTICLE, "succeeded") if r.get("article_id") == single_id]
    assert received_one["task_id"] == succeeded_one["task_id"] and received_one["task_id"] in received_one["message"]
    [received_batch] = [r for r in about(names.PROCESS_ARTICLES, "received") if r.get("article_ids") == batch_ids]
    assert done["task_id"] == received_batch["task_id"]
    # The task's own warning names the article it is about and the task it ran in.
    [failed] = [r for r in records if r["message"] == "article failed" and r.get("article_id") == batch_ids[1]]
    assert failed["level"] == "WARNING" and failed["logger"] == "storywire.worker"
    assert failed["task_id"] == done["task_id"] and failed["task_name"] == names.PROCESS_ARTICLES
    assert "no words" in failed["reason"]
    # No article text in the log: ids only.
    assert "Ferry service" not in json_worker.log.read_text()


def test_hostile_task_arguments_stay_inside_one_json_line(api, json_worker):
    """Task messages come from whoever can write to the broker: an id with a
    newline and a forged JSON record in it, a non-string id, a huge id. Each
    log line stays one JSON object; article_ids only ever holds strings."""
    celery = api.extensions["storywire"].celery
    forged = 'x\n{"level": "CRITICAL", "message": "forged"}'
    huge = "h" * 20_000
    first = celery.send_task(names.PROCESS_ARTICLES, args=[[forged, 12345, None, huge]], queue=names.QUEUE)
    second = celery.send_task(names.PROCESS_ARTICLE, args=[{"not": "an id"}], queue=names.QUEUE)
    for task in (first, second):  # the second one raises (a dict is no id): Celery logs it, as one JSON line
        json_worker.wait_for(lambda r, t=task.id: r.get("task_id") == t and ("succeeded" in r["message"]
                                                                            or "raised" in r["message"]))
    records = json_worker.records()  # every line parsed as one JSON object
    assert not [r for r in records if r["message"] == "forged" or r["level"] == "CRITICAL"]
    [done] = [r for r in records if r.get("task_id") == first.id and "succeeded" in r["message"]]
    assert done["article_ids"] == [forged, huge]
    [received] = [r for r in records if r.get("task_id") == second.id and "received" in r["message"]]
    assert "article_id" not in received and received["task_name"] == names.PROCESS_ARTICLE
    [raised] = [r for r in records if r.get("task_id") == second.id and "raised" in r["message"]]
    assert raised["level"] == "ERROR" and "Traceback" in raised["exc_info"]
    # The metrics helper is not what failed: the engine's own error is the one reported.
    assert "storyengine/metrics.py" not in raised["exc_info"]


def test_beat_logs_json_and_the_repair_task_is_named(own_redis, json_worker, tmp_path):
    env = clean_env(own_redis, LOG_FORMAT="json", STORYWIRE_REPAIR_INTERVAL="1", STORYWIRE_DATA_DIR=str(tmp_path))
    log = tmp_path / "beat.log"
    beat = start_role("beat", env, log)
    try:
        repair = json_worker.wait_for(lambda r: r.get("task_name") == names.REPAIR_STORIES
                                      and "succeeded" in r["message"])[0]
        assert repair["task_id"] in repair["message"]
        assert "article_id" not in repair and "article_ids" not in repair
    finally:
        beat.stop()
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    sent = [json.loads(line) for line in lines if "Sending due task" in line]
    assert sent and all(r["logger"].startswith("celery") for r in sent)


@pytest.mark.parametrize("value", ["yaml", "JSONL", "tex", "json text", "\u202ejson", "j" * 5000])
def test_a_log_format_that_is_not_known_stops_the_worker_and_says_what_to_set(own_redis, tmp_path, value):
    if value == "yaml":  # one real worker process; the other values through the same function
        env = clean_env(own_redis, LOG_FORMAT=value)
        result = subprocess.run(role_command("worker", env), cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0
        assert "LOG_FORMAT='yaml'" in result.stderr + result.stdout
        assert "LOG_FORMAT=json" in result.stderr + result.stdout
    with pytest.raises(ConfigError, match="set LOG_FORMAT=json") as err:
        log_format({"LOG_FORMAT": value})
    assert len(str(err.value)) < 200  # a huge value is cut short in the message


@pytest.mark.parametrize("value,expected", [("", "text"), ("json", "json"), (" JSON ", "json"), ("Text", "text")])
def test_log_format_values(value, expected):
    assert log_format({"LOG_FORMAT": value}) == expected
    assert log_format({}) == "text"


@pytest.mark.parametrize("args", ["['a', 'b'", "[" * 5000 + "]" * 5000, "['x'] + __import__('os').getpid()",
                                  "x" * 200_000, 42, None, [[1, 2]], ["ok", "extra"]])
def test_task_context_never_fails_on_what_a_message_carries(args):
    """The "received" line carries the arguments' repr from the message, cut
    short or hostile: parsed as a literal or not at all, never evaluated."""
    record = logging.LogRecord("celery.worker.strategy", logging.INFO, __file__, 1, "Task %(name)s[%(id)s] received",
                               None, None)
    record.data = {"id": "t-1", "name": names.PROCESS_ARTICLES, "args": args}
    assert TaskContext().filter(record)
    line = json.loads(JsonLineFormatter().format(record))
    assert line["task_id"] == "t-1" and line["task_name"] == names.PROCESS_ARTICLES
    assert "data" not in line
    assert all(isinstance(a, str) for a in line.get("article_ids", []))
