"""The API's log lines under a real gunicorn (service/logs.py), started with the
command `make run` uses (scripts.run.role_command), on a free port.

With LOG_FORMAT=json every line gunicorn writes (its own, the access lines,
the app's) is one JSON object; access lines and the app's lines name the
request; hostile paths, headers and bodies stay inside JSON strings or out
of the log; no API key and no article text is ever written.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.parse
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from scripts.run import role_command
from service.logs import request_id
from embedded_redis.server import free_port
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from tests.helpers import answers, start_role

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "sw-logs-2a7c9e1f3b5d7f9a1c"
WRONG = "sw-fake-logs-00000000000000"


class Gunicorn:
    def __init__(self, redis_url: str, log: Path, log_format: str) -> None:
        self.port = free_port()
        self.prefix = f"sw-test-logs-{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORYWIRE_") and k != "LOG_FORMAT"}
        env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, PYTHONPATH=str(ROOT), API_WORKERS="1",
                   API_HOST="127.0.0.1", API_PORT=str(self.port), LOG_FORMAT=log_format, STORYWIRE_API_KEY=KEY,
                   STORYWIRE_KEY_PREFIX=self.prefix)
        self.log = log
        self.process = start_role("api", env, log, ready=answers(f"http://127.0.0.1:{self.port}/healthz"))

    def request(self, method: str, path: str, body: dict | None = None, **headers: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers={k.replace("_", "-"): v for k, v in headers.items()})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.process.stop()
        store = RedisStore(connect(self.redis_url), Settings(key_prefix=self.prefix))
        store.clear()  # what it accepted; its task messages stay in database 0's queue, as the API tests' do
        store.redis.close()

    def records_when(self, predicate, timeout: float = 10.0) -> list[dict]:
        """Every line as JSON (failing on any that is not), once one matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            records = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]
            assert all(isinstance(r, dict) for r in records)
            if any(predicate(r) for r in records):
                return records
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)


@pytest.fixture(scope="module")
def json_api(redis_base_url, tmp_path_factory):
    server = Gunicorn(f"{redis_base_url}/0", tmp_path_factory.mktemp("api-logs") / "api.log", "json")
    yield server
    server.stop()


def article(marker: str) -> dict:
    return {"source": "logs.example", "url": f"https://logs.example/{uuid.uuid4().hex}",
            "title": f"Council approves the new tram line {marker}",
            "body": f"The city council approved the new tram line on Thursday. {marker}"}


@pytest.mark.e2e
def test_access_and_app_lines_are_json_and_name_the_request(json_api):
    marker = f"body-marker-{uuid.uuid4().hex}"
    status, body = json_api.request("POST", "/v1/articles", article(marker), Authorization=f"Bearer {KEY}",
                                    X_Request_ID="req-accepted-1")
    assert status == 202
    article_id = json.loads(body)["id"]
    status, body = json_api.request("POST", "/v1/articles/batch", {"articles": [article("a"), article("b")]},
                                    Authorization=f"Bearer {KEY}", X_Request_ID="req-batch-3")
    assert status == 202
    batch_ids = [r["id"] for r in json.loads(body)["results"]]
    status, _ = json_api.request("POST", "/v1/articles", article(marker), Authorization=f"Bearer {WRONG}",
                                 X_Request_ID="req-refused-2")
    assert status == 401
    records = json_api.records_when(lambda r: r.get("request_id") == "req-refused-2" and r.get("status") == 401)
    for record in records:
        assert {"timestamp", "level", "logger", "message", "pid"} <= set(record), record
        assert datetime.fromisoformat(record["timestamp"]).utcoffset().total_seconds() == 0
    assert any(r["logger"] == "gunicorn.error" and "Listening at" in r["message"] for r in records)

    [accepted] = [r for r in records if r.get("request_id") == "req-accepted-1" and r["logger"] == "gunicorn.access"]
    # The app's line for the accepted article names it and the task that will decide it.
    [queued] = [r for r in records if r.get("request_id") == "req-accepted-1" and r["logger"] == "storywire.api"]
    assert queued["article_id"] == article_id and len(queued["task_id"]) >= 32, queued
    [queued_batch] = [r for r in records if r.get("request_id") == "req-batch-3" and r["logger"] == "storywire.api"]
    assert queued_batch["article_ids"] == batch_ids and queued_batch["task_id"] != queued["task_id"], queued_batch
    assert (accepted["method"], accepted["path"], accepted["status"]) == ("POST", "/v1/articles", 202)
    assert accepted["duration_ms"] > 0 and accepted["bytes"] > 0 and accepted["remote_addr"] == "127.0.0.1"
    # The app's own warning, logged while handling the refused request, names that request.
    [refused] = [r for r in records if r["logger"] == "storywire.api" and r.get("request_id") == "req-refused-2"]
    assert "unknown API key" in refused["message"] and refused["level"] == "WARNING"
    assert (refused["method"], refused["path"]) == ("POST", "/v1/articles")

    text = json_api.log.read_text()
    for secret in (KEY, WRONG, marker, "Council approves"):
        assert secret not in text


@pytest.mark.e2e
@pytest.mark.parametrize("value", ["has space", 'quote"d', "x" * 129, "", "tab\there", "\u00e9t\u00e9",
                                   "{\"level\":\"CRITICAL\"}"])
def test_a_request_id_that_is_not_an_id_is_left_out(json_api, value):
    assert request_id(value) is None
    path = f"/healthz?probe={uuid.uuid4().hex}"
    status, _ = json_api.request("GET", path, X_Request_ID=value.encode("utf-8").decode("latin-1"))
    assert status == 200
    records = json_api.records_when(lambda r: r.get("query") == path.split("?")[1])
    [line] = [r for r in records if r.get("query") == path.split("?")[1]]
    assert "request_id" not in line


@pytest.mark.e2e
def test_hostile_paths_queries_and_agents_stay_inside_one_json_line(json_api):
    probe = uuid.uuid4().hex
    forged = '\n{"level": "CRITICAL", "message": "forged"}\n'
    path = "/v1/articles/" + urllib.parse.quote(forged + probe, safe="")
    status, _ = json_api.request("GET", f"{path}?q={'Q' * 3000}", User_Agent="U" * 5000)  # under gunicorn's limits
    assert status == 404
    records = json_api.records_when(lambda r: probe in (r.get("path") or ""))
    [line] = [r for r in records if probe in (r.get("path") or "")]
    assert line["path"] == f"/v1/articles/{forged}{probe}"
    assert line["status"] == 404
    assert len(line["query"]) == 1000 and len(line["user_agent"]) == 1000
    assert not [r for r in records if r.get("message") == "forged" or r["level"] == "CRITICAL"]


@pytest.mark.e2e
def test_text_format_keeps_gunicorns_lines_and_names_the_apps(redis_base_url, tmp_path):
    server = Gunicorn(f"{redis_base_url}/0", tmp_path / "api.log", "text")
    try:
        assert server.request("GET", "/v1/stories", Authorization=f"Bearer {WRONG}")[0] == 200  # reads are public
        assert server.request("POST", "/v1/articles", article("t"), Authorization=f"Bearer {WRONG}")[0] == 401
        deadline = time.monotonic() + 10
        while '"POST /v1/articles HTTP/1.1" 401' not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("{")]
    assert [line for line in lines if "[WARNING] storywire.api: rejected a request with an unknown API key" in line]
    assert [line for line in lines if '"GET /v1/stories HTTP/1.1" 200' in line]  # gunicorn's own access format


@pytest.mark.e2e
def test_a_log_format_that_is_not_known_stops_gunicorn_and_says_what_to_set(redis_base_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYWIRE_")}
    env.update(REDIS_URL=f"{redis_base_url}/0", PYTHONPATH=str(ROOT), API_PORT=str(free_port()), API_WORKERS="1",
               LOG_FORMAT="logfmt")
    result = subprocess.run(role_command("api", env), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "LOG_FORMAT='logfmt'" in result.stderr and "LOG_FORMAT=json" in result.stderr
