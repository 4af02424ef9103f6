"""One task per post: POST /v1/articles/batch enqueues ONE
``storywire.process_articles`` task carrying the batch's new articles
(workers/names.py PROCESS_ARTICLES), POST /v1/articles one
``storywire.process_article``; articles already known enqueue nothing.

The first tests read the broker itself: the API fixtures enqueue to database
0 of the test Redis, where no worker consumes, so every message the API sent
is still in the ``storywire`` list (kombu's JSON envelope, body base64).
The last one runs the batch through the session's real Celery worker
(tests/conftest.py ``celery_worker``) and reads the worker's own log for the
tasks it received and what each decided.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import re
import time
import uuid
from datetime import timedelta

import pytest

from tests.helpers import served_id
from tests.articles import BANK, COURIER, REPRINT, T0, as_post
from tests.workers.posts_and_waits import WORDLESS, wait_processed
from storyengine.admission import RESEND_AFTER_SECONDS
from storyengine.decider import Decider
from workers import names


def enqueued(redis_client, ids: set[str]) -> list[tuple[str, list]]:
    """(task name, args) of every message in the broker queue that names any of ``ids``, oldest first."""
    out = []
    for raw in reversed(redis_client.lrange(names.QUEUE, 0, -1)):  # LPUSHed: newest first
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        flat = args[0] if args and isinstance(args[0], list) else args
        if ids & set(flat):
            out.append((message["headers"]["task"], args))
    return out


def new_article(tag: str = "") -> dict:
    """An article no other test posts (its id derives from its unique URL)."""
    token = uuid.uuid4().hex[:12]
    return {"source": "batch-task.example", "url": f"https://batch-task.example/{tag}{token}",
            "title": f"Regional council approves harbour budget {token}",
            "body": "The regional council approved the harbour budget after a long debate on dredging costs."}


def post_batch(client, articles: list) -> dict:
    resp = client.post("/v1/articles/batch", json={"articles": articles})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()


# ---------------------------------------------------------------- what the API enqueues
def test_a_batch_enqueues_one_process_articles_task_with_its_new_articles(client, redis_client):
    """Three valid articles and an invalid one in a batch: one
    storywire.process_articles task with the three ids, in the batch's order."""
    articles = [new_article("a"), new_article("b"), {"source": "x", "url": "javascript:1", "title": "t"},
                new_article("c")]
    body = post_batch(client, articles)
    assert (body["accepted"], body["rejected"]) == (3, 1)
    ids = [r["id"] for r in body["results"] if "id" in r]
    assert len(ids) == 3
    assert enqueued(redis_client, set(ids)) == [(names.PROCESS_ARTICLES, [ids])]


def test_a_single_post_enqueues_one_process_article_task(client, redis_client):
    resp = client.post("/v1/articles", json=new_article())
    assert resp.status_code == 202
    article_id = resp.get_json()["id"]
    assert enqueued(redis_client, {article_id}) == [(names.PROCESS_ARTICLE, [article_id])]


def test_a_batch_task_carries_the_new_articles_and_the_known_ones_still_waiting(client, redis_client, store):
    """A batch of an article posted before (still waiting: no worker here), two
    new ones and a repeat of one of them (same outlet and URL): one task
    carries the new ids and the waiting one, once each; the waiting one's
    task is sent again, since a client's retry may follow a task that was lost."""
    earlier = new_article("earlier")
    first = client.post("/v1/articles", json=earlier).get_json()["id"]
    # Its task went out a while ago (RESEND_AFTER_SECONDS): a retry sends it again.
    redis_client.zadd(store.keys.queued, {first: time.time() - RESEND_AFTER_SECONDS - 1})
    fresh = [new_article("d"), new_article("e")]
    repeat = dict(fresh[0], url=fresh[0]["url"] + "?utm_source=feed")  # the same canonical URL
    body = post_batch(client, [earlier, *fresh, repeat])
    statuses = [(r["status"], r["created"]) for r in body["results"]]
    assert statuses == [("known", False), ("queued", True), ("queued", True), ("known", False)]
    new_ids = [r["id"] for r in body["results"][1:3]]
    assert body["results"][3]["id"] == new_ids[0]
    assert enqueued(redis_client, {first, *new_ids}) == [(names.PROCESS_ARTICLE, [first]),
                                                        (names.PROCESS_ARTICLES, [[*new_ids, first]])]


def test_a_batch_with_one_new_article_enqueues_a_single_article_task(client, redis_client, store):
    """As service/runtime.py documents: one task per post, a single article's task when only one needs it."""
    known = new_article("known")
    known_id = client.post("/v1/articles", json=known).get_json()["id"]
    Decider(store).process(known_id)  # decided: nothing to send for it again
    fresh = new_article("only")
    body = post_batch(client, [known, fresh])
    new_id = body["results"][1]["id"]
    assert enqueued(redis_client, {new_id}) == [(names.PROCESS_ARTICLE, [new_id])]


def test_sending_a_decided_batch_again_enqueues_nothing(client, redis_client, store):
    """Every article of a re-sent batch is "known" (created false, its id as
    before); once they are decided, no task names any of them again."""
    articles = [new_article("f"), new_article("g"), new_article("h")]
    first = post_batch(client, articles)
    ids = {r["id"] for r in first["results"]}
    before = enqueued(redis_client, ids)
    assert len(before) == 1
    Decider(store).process_many(sorted(ids))
    again = post_batch(client, articles)
    assert [(r["id"], r["status"], r["created"]) for r in again["results"]] == \
        [(r["id"], "known", False) for r in first["results"]]
    assert enqueued(redis_client, ids) == before


# ---------------------------------------------------------------- through the real worker
SUCCEEDED = re.compile(r"Task (?P<name>storywire\.process_articles?)\[(?P<task>[^\]]+)\] succeeded in "
                       r"[0-9.e-]+s: (?P<result>\{.*\})$", re.MULTILINE)
RECEIVED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<task>[0-9a-f-]+)\] received")


class WorkerLog:
    """The session worker's log (its stdout is a file), read from an offset on."""

    def __init__(self, proc) -> None:
        self.path = os.readlink(f"/proc/{proc.pid}/fd/1")
        self.offset = os.path.getsize(self.path)

    def text(self) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode("utf-8", "replace")

    def wait_for_results(self, count: int, timeout: float = 30.0) -> list[tuple[str, dict]]:
        """(task name, logged result) of the first ``count`` tasks that succeeded since the offset."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(m["name"], ast.literal_eval(m["result"])) for m in SUCCEEDED.finditer(self.text())]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"worker logged {len(found)} results, wanted {count}"
            time.sleep(0.1)

    def received(self) -> list[str]:
        return [m["name"] for m in RECEIVED.finditer(self.text())]


@pytest.mark.e2e
def test_a_batch_is_decided_by_one_task_and_a_resend_by_none(e2e_app, celery_worker):
    """A batch of an article, its reprint, an unrelated article and one that
    passes the API's checks but has no words: one process_articles task decides
    it; the reprint is a copy of the article decided just before it in the same
    task, and the wordless one is failed with its reason. Sending the batch
    again enqueues nothing: a single article posted after it is the next (and
    only) task the worker receives."""
    client = e2e_app.test_client()
    log = WorkerLog(celery_worker)
    batch = [as_post(COURIER), as_post(REPRINT), as_post(BANK), WORDLESS]
    body = post_batch(client, batch)
    assert body["accepted"] == 4 and [r["status"] for r in body["results"]] == ["queued"] * 4
    ids = [r["id"] for r in body["results"]]
    assert ids == [served_id(a) for a in batch]  # each client id, scoped by its outlet
    assert [r["client_id"] for r in body["results"]] == ["fire-courier", "fire-reprint", "bank", "wordless"]
    courier, reprint, bank, wordless = ids

    articles = wait_processed(client, ids)
    [(name, result)] = log.wait_for_results(1)
    assert name == names.PROCESS_ARTICLES
    assert result["articles"] == 4
    assert result["decided"] == [courier, reprint, bank]
    assert result["failed"] == [wordless]
    assert result["already_processed"] == result["missing"] == result["queued"] == []
    assert log.received() == [names.PROCESS_ARTICLES]

    assert {a: articles[a]["status"] for a in ids} == {courier: "processed", reprint: "processed",
                                                      bank: "processed", wordless: "failed"}
    assert articles[reprint]["duplicate_of"] == courier
    assert articles[reprint]["story"] == articles[courier]["story"] != articles[bank]["story"]
    assert "no words" in articles[wordless]["error"]
    assert articles[wordless]["story"] is None

    # Again: every article known, nothing enqueued.
    log = WorkerLog(celery_worker)
    again = post_batch(client, batch)
    assert [(r["id"], r["status"], r["created"]) for r in again["results"]] == [(a, "known", False) for a in ids]
    # A sentinel, published near the batch (so it does not move the stream's clock far enough to age anything out).
    sentinel = dict(WORDLESS, id="sentinel", url="https://shouty.example/2", title="Harbour dredging resumes",
                    body="Dredging of the harbour resumed on Monday.",
                    published_at=(T0 + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert client.post("/v1/articles", json=sentinel).status_code == 202
    wait_processed(client, [served_id(sentinel)])
    [(name, result)] = log.wait_for_results(1)
    assert (name, result["article"]) == (names.PROCESS_ARTICLE, served_id(sentinel))
    assert log.received() == [names.PROCESS_ARTICLE]
    after = {a: client.get(f"/v1/articles/{a}").get_json() for a in ids}
    assert after == {a: articles[a] for a in ids}
