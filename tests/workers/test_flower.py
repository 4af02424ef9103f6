"""Flower against the real worker: a real Flower process, started with the
command `make run` and the image use (scripts.run.role_command("flower")),
on the same broker as the session's real Celery worker. Articles are posted
through the API and Storywire tasks sent by name; Flower's HTTP API must show
the worker and each task under its Storywire name with its state: SUCCESS for
decided and missing articles (with what happened in the result), FAILURE for a
malformed message. Behind FLOWER_BASIC_AUTH nothing is readable without the password.
"""
from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from embedded_redis.server import free_port
from tests.helpers import RunningProcess, listening, served_id, start_role
from workers import names

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data" / "two_events.jsonl"
FLOWER_USER, FLOWER_PASSWORD = "ops", "fl0wer-Watch-pw-2207"
FLOWER_AUTH = f"{FLOWER_USER}:{FLOWER_PASSWORD}"
POLL_TIMEOUT = 60.0   # seconds for Flower to show what the worker did, on a busy 2-core machine


@dataclass
class Flower:
    base: str
    process: RunningProcess

    def get(self, path: str, auth: str | None = FLOWER_AUTH, header: str | None = None) -> tuple[int, bytes]:
        """(status, body) of a GET; ``header`` replaces the Authorization header built from ``auth``."""
        request = urllib.request.Request(self.base + path)
        if header is not None:
            request.add_header("Authorization", header)
        elif auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def log_tail(self) -> str:
        return self.process.log_tail()


def poll(what: str, read, done, flower: Flower, timeout: float = POLL_TIMEOUT):
    """read() until done(answer) holds; on timeout fail with the last answer and Flower's log."""
    deadline = time.monotonic() + timeout
    while True:
        answer = read()
        if done(answer):
            return answer
        if (returncode := flower.process.proc.poll()) is not None:
            pytest.fail(f"Flower exited with {returncode} while waiting for {what}:\n{flower.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"Flower did not show {what} within {timeout:.0f}s. Last answer:\n"
                        f"{json.dumps(answer, indent=1, default=str)[:3000]}\nFlower log:\n{flower.log_tail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def flower(worker_env, celery_worker, tmp_path_factory):
    """A real Flower on a free port, on the session worker's broker, with a password."""
    tmp_path = tmp_path_factory.mktemp("flower")
    port = free_port()
    env = {k: v for k, v in worker_env.items() if not k.startswith("FLOWER_")}
    env.update(FLOWER_HOST="127.0.0.1", FLOWER_PORT=str(port), FLOWER_BASIC_AUTH=FLOWER_AUTH, HOME=str(tmp_path))
    process = start_role("flower", env, tmp_path / "flower.log", ready=listening(port))
    try:
        yield Flower(f"http://127.0.0.1:{port}", process)
    finally:
        process.stop()


def storywire_workers(status: dict) -> list[str]:
    return [name for name, alive in status.items() if name.startswith("storywire-") and alive is True]


@pytest.fixture(scope="module")
def live_worker(flower) -> str:
    """The worker's name once Flower receives its events (heartbeats): tasks sent
    after this are seen by Flower from their start."""
    status = poll("the storywire- worker alive in its event stream", lambda: flower.json("/api/workers?status=true"),
                  storywire_workers, flower)
    [name] = storywire_workers(status)
    return name


def test_flower_shows_the_worker_with_its_queue_and_storywire_tasks(flower, live_worker):
    workers = poll("the worker's inspect data", lambda: flower.json("/api/workers?refresh=true"),
                   lambda answer: live_worker in answer and answer[live_worker].get("registered"), flower)
    info = workers[live_worker]
    registered = set(info["registered"])
    assert {names.PROCESS_ARTICLE, names.PROCESS_ARTICLES, names.REPAIR_STORIES, names.REQUEUE_STALE} <= registered
    assert sorted(q["name"] for q in info["active_queues"]) == [names.QUEUE, names.MAINTENANCE_QUEUE], \
        info["active_queues"]
    # role_command's --hostname storywire-<6 random hex>@%h: one name per worker process
    assert re.fullmatch(rf"storywire-[0-9a-f]{{6}}@{re.escape(socket.gethostname())}", live_worker), live_worker


def fresh_articles(count: int) -> list[dict]:
    """Articles of the test stream under new ids and URLs, so nothing posted before counts as a repeat."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:count]
    tag = uuid.uuid4().hex[:8]
    for row in rows:
        row.pop("gold", None)
        row["id"] = f"{row['id']}-{tag}"
        row["url"] = f"{row['url']}-{tag}"
    return rows


def tasks_named(flower: Flower, task_name: str) -> dict[str, dict]:
    return flower.json(f"/api/tasks?taskname={task_name}")


def test_flower_shows_storywire_tasks_with_their_states(flower, live_worker, e2e_app, worker_env):
    client = e2e_app.test_client()
    one_by_one, batch = fresh_articles(2), fresh_articles(5)[2:]
    for row in one_by_one:
        answer = client.post("/v1/articles", json=row)
        assert answer.status_code == 202, answer.get_json()
        assert answer.get_json()["id"] == served_id(row), answer.get_json()  # tasks name the served ids
    answer = client.post("/v1/articles/batch", json={"articles": batch})
    assert answer.status_code in (200, 202), answer.get_json()
    assert [r.get("id") for r in answer.get_json()["results"]] == [served_id(a) for a in batch], answer.get_json()

    # Sent by name, as the service does: an id that was never stored, and a malformed message.
    sender = Celery("storywire-test-sender", broker=worker_env["CELERY_BROKER_URL"], set_as_current=False)
    missing_id = f"never-stored-{uuid.uuid4().hex[:8]}"
    missing = sender.send_task(names.PROCESS_ARTICLES, args=[[missing_id]], queue=names.QUEUE)
    malformed = sender.send_task(names.PROCESS_ARTICLES, args=[None], queue=names.QUEUE)
    sender.close()

    # One process_article task per single post, by its article id in the arguments.
    def singles_done(found: dict) -> bool:
        return all(any(served_id(a) in str(t.get("args")) and t.get("state") == "SUCCESS" for t in found.values())
                   for a in one_by_one)

    singles = poll("both process_article tasks in SUCCESS", lambda: tasks_named(flower, names.PROCESS_ARTICLE),
                   singles_done, flower)
    for row in one_by_one:
        [task] = [t for t in singles.values() if served_id(row) in str(t.get("args"))]
        assert task["name"] == names.PROCESS_ARTICLE and task["worker"] == live_worker, task
        assert "'processed'" in task["result"] and served_id(row) in task["result"], task["result"]

    # The batch post is one process_articles task listing its articles as decided.
    def batch_done(found: dict) -> bool:
        return any(all(served_id(a) in str(t.get("args")) for a in batch) and t.get("state") == "SUCCESS"
                   for t in found.values())

    batches = poll("the batch's process_articles task in SUCCESS", lambda: tasks_named(flower, names.PROCESS_ARTICLES),
                   batch_done, flower)
    [batch_task] = [t for t in batches.values() if all(served_id(a) in str(t.get("args")) for a in batch)]
    assert batch_task["worker"] == live_worker
    assert "'decided'" in batch_task["result"] and all(served_id(a) in batch_task["result"] for a in batch), batch_task

    # A missing article is no failure of the task: SUCCESS, and the result says it was missing.
    info = poll("the missing article's task finished", lambda: flower.json(f"/api/task/info/{missing.id}"),
                lambda t: t.get("state") in ("SUCCESS", "FAILURE"), flower)
    assert info["name"] == names.PROCESS_ARTICLES and info["state"] == "SUCCESS", info
    assert f"'missing': ['{missing_id}']" in info["result"], info["result"]

    # A malformed message fails the task: FAILURE, with the exception for the operator.
    info = poll("the malformed task finished", lambda: flower.json(f"/api/task/info/{malformed.id}"),
                lambda t: t.get("state") in ("SUCCESS", "FAILURE"), flower)
    assert info["name"] == names.PROCESS_ARTICLES and info["state"] == "FAILURE", info
    assert "TypeError" in (info.get("exception") or ""), info

    # Flower and the API agree: what Flower shows as done, the API shows as processed.
    for row in one_by_one + batch:
        assert client.get(f"/v1/articles/{served_id(row)}").get_json()["status"] == "processed", served_id(row)
    failed = flower.json(f"/api/tasks?state=FAILURE&taskname={names.PROCESS_ARTICLES}")
    assert malformed.id in failed and missing.id not in failed


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks", "/api/task/info/{task_id}", "/api/queues/length",
                                  "/tasks", "/"])
def test_flower_reads_need_the_password(flower, live_worker, path):
    """Unauthenticated, wrongly or malformedly authenticated reads get 401 and no data."""
    tasks = flower.json("/api/tasks?limit=1")
    task_id = next(iter(tasks), str(uuid.uuid4()))
    path = path.format(task_id=task_id)
    refusals = {
        "no header": flower.get(path, auth=None),
        "wrong password": flower.get(path, auth=f"{FLOWER_USER}:wrong-{FLOWER_PASSWORD}"),
        "wrong user": flower.get(path, auth=f"nobody:{FLOWER_PASSWORD}"),
        "no password": flower.get(path, auth=f"{FLOWER_USER}:"),
        "not base64": flower.get(path, header="Basic !!!not-base64!!!"),
        "another scheme": flower.get(path, header=f"Bearer {FLOWER_PASSWORD}"),
        "oversized": flower.get(path, header="Basic " + base64.b64encode(b"x" * 6000).decode()),
    }
    for why, (status, body) in refusals.items():
        assert status == 401, (path, why, status, body[:300])
        assert live_worker.encode() not in body and task_id.encode() not in body, (path, why, body[:300])
    status, _ = flower.get(path)
    assert status == 200, (path, status)
