"""Faults, with real processes only: a real redis-server (EmbeddedRedis, on a
free port, in the test's own folder), the real API under gunicorn and real
Celery workers, each started with the command `make run` uses
(scripts.run.role_command). Nothing is faked, mocked or run eagerly.

1. A pool child SIGKILLed in the middle of a batch: every accepted article
   is processed exactly once (the whole worker killed, with the shipped
   settings: test_killed_worker.py and test_recovery.py).
2. Redis stopped (gracefully, append-only file on) and started again
   mid-stream: the API answers 503 + Retry-After while it is down, workers
   retry and survive, nothing accepted is lost or counted twice.
3. The broker unreachable while Redis is up: POST answers 503 promptly and
   stores nothing; /readyz is 503 and does not leak the broker URL.
4. A task that fails for a bad article (not transient): marked failed with
   the reason, visible over the API, never retried.

Each test owns its Redis server (the ``stack`` fixture, tests/workers/conftest.py,
of tests/workers/process_stack.py), so its workers consume only its own tasks
(the session worker of tests/conftest.py never sees them, nor they its).
"""
from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from storyengine.articles import new_article_record
from embedded_redis.server import EmbeddedRedis, free_port
from storyengine.store import RedisStore
from tests.service.envelope import assert_error
from workers import names
from tests.helpers import pairs, served_id
from tests.workers.process_stack import (Answer, Role, Stack, assert_processed_exactly_once, http, realistic_articles,
                                         statuses, wait_all_processed, wait_until)

pytestmark = pytest.mark.e2e

PROMPT = 3.0            # an answer while a dependency is down must come faster than this


# ====================================================================== HTTP
def assert_unavailable(answer: Answer, code: str | None = None) -> dict:
    """503, the one error envelope, a Retry-After, and promptly."""
    err = assert_error(answer, 503, code)
    assert int(answer.headers["retry-after"]) > 0, answer.headers
    assert answer.elapsed < PROMPT, f"answered in {answer.elapsed:.1f}s"
    return err


def unacked(store: RedisStore) -> int:
    """Messages the broker handed to a worker that has not acknowledged them
    (kombu's Redis transport keeps them in the 'unacked' hash)."""
    return store.redis.hlen("unacked")


# ====================================================================== 1. SIGKILL
# For this test only, an unacknowledged message comes back after 10 s (the
# lowest STORYWIRE_VISIBILITY_TIMEOUT allowed). Production keeps 40 s
# (workers/config.py says why): several times the longest task, so a worker
# alive but slow is rarely doubled (and a doubled task changes nothing), and a
# dead worker's messages come back within a minute
# (tests/workers/test_killed_worker.py, with the shipped settings).
VISIBILITY = 10


def kill_pool_child_mid_task(worker: Role, store: RedisStore, ids: list[str], attempts: int = 10) -> int:
    """SIGKILL a pool child while it runs a task (billiard then reports a
    WorkerLostError for that job); try again on the respawned child if a
    kill landed between two tasks. Returns the number of kills."""
    for attempt in range(1, attempts + 1):
        before = sum(s == "processed" for s in statuses(store, ids).values())
        if before == len(ids):
            pytest.fail(f"every article was processed before a kill landed during a task ({attempt - 1} tries); "
                        "post a longer batch")
        # Decisions take milliseconds: kill as soon as the worker is busy again.
        wait_until(lambda: sum(s == "processed" for s in statuses(store, ids).values()) > before
                   and worker.children(), 30, "the worker processes articles", interval=0.005)
        victim = worker.children()[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=5)
        try:
            # Billiard reports a lost job within milliseconds; waiting longer only
            # lets the batch drain before the next try.
            wait_until(lambda: "WorkerLostError" in worker.log_text(), 0.5, "WorkerLostError reported",
                       interval=0.02)
            return attempt
        except AssertionError:
            continue  # the child was between tasks: kill the next one
    pytest.fail(f"no kill landed during a task in {attempts} attempts: {worker.log_text()[-3000:]}")


def test_a_pool_child_killed_mid_batch_loses_nothing_and_counts_nothing_twice(stack):
    """A pool child SIGKILLed while it decides: the main process puts its task
    back (acks_late + reject_on_worker_lost). A killed holder of the
    assignment lock blocks the others for at most its one-second lease. (The
    whole worker killed, main process and children, with the shipped
    settings: tests/workers/test_killed_worker.py and test_recovery.py.)"""
    stack.api()
    rows = realistic_articles(600, "pool-child")  # long enough that a kill lands mid-batch
    ids = [served_id(row) for row in rows]  # the ids the articles are stored under
    for row, article_id in zip(rows, ids):  # the whole batch is queued before any worker takes from it
        answer = stack.post(row)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert answer.get_json()["id"] == article_id, answer.get_json()
    store = stack.store
    # Two pool children, each with prefetched messages: several tasks in flight.
    worker = stack.worker(STORYWIRE_VISIBILITY_TIMEOUT=str(VISIBILITY), WORKER_CONCURRENCY="2")
    kill_pool_child_mid_task(worker, store, ids)
    # The main process lives on, forks a new child and puts the killed
    # child's task back on the queue (acks_late + reject_on_worker_lost).
    assert worker.proc.poll() is None

    wait_all_processed(store, ids, timeout=60)
    assert_processed_exactly_once(store, ids)
    # No message is left behind unacknowledged (it would come back one day).
    wait_until(lambda: unacked(store) == 0, 10, "every message acknowledged")
    # Over the API too: a sample reads back processed, with its story.
    for article_id in ids[::40]:
        article = stack.get(f"/v1/articles/{article_id}").get_json()
        assert article["status"] == "processed" and article["story"], article


# ====================================================================== 2. Redis restarted
def celery_client(url: str):
    """A Celery client that only sends tasks by name, like the service and beat."""
    from celery import Celery
    client = Celery("faults-client", broker=url, set_as_current=False)
    client.conf.update(task_default_queue=names.QUEUE, broker_connection_retry=False)
    return client


@dataclass
class Outage:
    worker: Role
    accepted: list[str]          # answered 202: before the stop and after the restart
    processed_before: list[str]  # processed when Redis was stopped
    refused_id: str              # posted while Redis was down (503)
    stopped_at: float


def redis_outage_mid_stream(stack: Stack, **worker_env) -> Outage:
    """Post half the stream, stop Redis gracefully while the worker is in the
    middle of it, check the API while it is down, start Redis again on the same
    port and data directory (the append-only file brings the data back), post
    the other half."""
    stack.api()
    store = stack.store
    rows = realistic_articles(121, "restart")
    first, rest, refused = rows[:60], rows[60:120], rows[120]
    accepted = []
    for row in first:  # queued before the worker starts, so it is mid-stream when Redis goes
        answer = stack.post(row)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert answer.get_json()["id"] == served_id(row), answer.get_json()
        accepted.append(answer.get_json()["id"])
    worker = stack.worker(**worker_env)
    wait_until(lambda: sum(s == "processed" for s in statuses(store, accepted).values()) >= 10, 30,
               "some articles processed", interval=0.01)
    processed_before = [i for i, s in statuses(store, accepted).items() if s == "processed"]
    stack.redis.stop()  # SIGTERM: a graceful shutdown, the append-only file flushed
    stopped_at = time.monotonic()

    # While it is down: 503 with the envelope and a Retry-After, promptly, never a 500 or a hang.
    assert_unavailable(stack.post(refused), "unavailable")
    assert_unavailable(http("POST", f"{stack.api_url}/v1/articles/batch", {"articles": [refused]}), "unavailable")
    assert_unavailable(stack.get(f"/v1/articles/{accepted[0]}"), "unavailable")
    assert_unavailable(stack.get("/v1/stories"), "unavailable")
    assert_unavailable(stack.get("/readyz"), "not_ready")
    time.sleep(max(0.0, stopped_at + 4 - time.monotonic()))  # down for a few seconds
    assert worker.proc.poll() is None, f"the worker died: {worker.log_text()[-3000:]}"
    assert stack.roles[0].proc.poll() is None, "gunicorn died"

    stack.redis = EmbeddedRedis(stack.redis.data_dir, port=stack.redis.port, appendonly=True).start()
    wait_until(lambda: stack.get("/readyz").status_code == 200, 10, "/readyz ready again")
    # What was processed before the stop is still there (the append-only file).
    assert set(statuses(store, processed_before).values()) == {"processed"}
    assert stack.get(f"/v1/articles/{served_id(refused)}").status_code == 404  # refused, so never stored
    for row in rest:
        answer = stack.post(row)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert answer.get_json()["id"] == served_id(row), answer.get_json()
        accepted.append(answer.get_json()["id"])
    return Outage(worker, accepted, processed_before, served_id(refused), stopped_at)


def test_redis_stopped_and_started_again_mid_stream(stack):
    """Nothing accepted is lost or counted twice. The worker survives the
    outage (with a BRPOP in flight too: workers/kombu_fixes.py, whose test
    makes that case every time) and reconnects with backoff; the articles whose tasks the outage
    took are sent again by the requeue pass, which
    beat runs in production (every STORYWIRE_REQUEUE_INTERVAL, for articles
    queued longer than STORYWIRE_REQUEUE_AFTER whose task cannot still be
    waiting) and this test sends by name."""
    outage = redis_outage_mid_stream(stack, STORYWIRE_REQUEUE_AFTER="2")
    store, worker = stack.store, outage.worker
    # The consumer lost the broker, retried with backoff, and came back.
    wait_until(lambda: worker.log_text().count("Connected to redis://") >= 2, 20, "the worker reconnects")
    log = worker.log_text()
    assert "Connection to broker lost" in log and "Trying again in" in log, log[-3000:]

    client = celery_client(stack.redis.url)
    deadline = time.monotonic() + 60
    while not all(s == "processed" for s in statuses(store, outage.accepted).values()):
        assert time.monotonic() < deadline, {i: s for i, s in statuses(store, outage.accepted).items()
                                              if s != "processed"}
        client.send_task(names.REQUEUE_STALE, queue=names.MAINTENANCE_QUEUE)  # what beat sends
        time.sleep(2)
    assert_processed_exactly_once(store, outage.accepted)
    assert worker.proc.poll() is None
    for article_id in outage.accepted[::20]:
        assert stack.get(f"/v1/articles/{article_id}").get_json()["status"] == "processed"


def test_tasks_caught_by_a_redis_outage_are_retried_not_dropped(stack):
    """The shipped setup: a worker and beat, Redis as store and broker. The
    task running when Redis goes away retries in the task, with backoff (a
    Celery retry could not be published to the Redis that is away, and the
    message would be dropped); a task the worker had taken and not finished
    stays in kombu's unacknowledged set until the visibility timeout, when a
    worker's sweep puts it back, and beat's requeue pass sends again the
    articles whose tasks the outage lost. Every article accepted before the
    stop is processed soon after Redis is back, none twice. (The deadline
    allows for the visibility timeout and the requeue period.)"""
    timing = dict(STORYWIRE_REPAIR_INTERVAL="1", STORYWIRE_REQUEUE_INTERVAL="1", STORYWIRE_REQUEUE_AFTER="3")
    outage = redis_outage_mid_stream(stack, **timing)
    beat = Role("beat", dict(stack.env, STORYWIRE_DATA_DIR=str(stack.tmp / "beat"), **timing),
                stack.tmp / "beat.log").start()
    stack.roles.append(beat)
    try:
        wait_all_processed(stack.store, outage.accepted, timeout=60)
    finally:
        log = outage.worker.log_text()
        print("rejected:", re.findall(r"Task storywire\.process_article\[[0-9a-f-]+\] reject requeue=False", log))
        print("unacked after the outage:", unacked(stack.store))
    assert "reject requeue=False" not in log
    # Whether a task was mid-decision at the instant Redis stopped is a matter of
    # timing; when one was, it retried in the task rather than being dropped.
    if "store unavailable (" in log:
        assert re.search(r"store unavailable \(.*\); retry 1 of \d+ in", log), log[-3000:]
    assert_processed_exactly_once(stack.store, outage.accepted)


# ====================================================================== 3. broker unreachable
def test_broker_unreachable_answers_503_promptly_and_stores_nothing(stack):
    """Redis (the store) is up; the broker URL points at a port where nothing
    listens. The URL carries a password, which must never reach a client."""
    dead_port = free_port()
    secret = "broker-secret-7f3a"
    broker_url = f"redis://:{secret}@127.0.0.1:{dead_port}/0"
    api = stack.api(CELERY_BROKER_URL=broker_url)
    store = stack.store
    assert store.ping()

    rows = realistic_articles(3, "nobroker")
    answer = stack.post(rows[0])
    err = assert_unavailable(answer, "queue_unavailable")
    assert "not" in err["message"] and "stored" in err["message"]
    batch = http("POST", f"{stack.api_url}/v1/articles/batch", {"articles": rows[1:]})
    assert_unavailable(batch, "queue_unavailable")
    again = stack.post(rows[0])  # a client retrying gets the same prompt answer
    assert_unavailable(again, "queue_unavailable")

    # Nothing is left behind for articles that were never queued: not under
    # the id the service would have stored each under (the record it makes).
    k = store.keys
    for row in rows:
        record = new_article_record(source=row["source"], url=row["url"], title=row["title"], body=row["body"],
                                    published_at=datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")),
                                    client_id=row["id"])
        assert record["id"] == served_id(row)
        assert not store.redis.exists(k.article(record["id"]))
        assert not store.redis.exists(k.article_ref(record["source"], record["canonical_url"]))
        assert store.redis.zscore(k.queued, record["id"]) is None
        assert stack.get(f"/v1/articles/{record['id']}").status_code == 404
    assert list(store.redis.scan_iter(match=f"{k.prefix}:*")) == []  # the keys carry the prefix as a hash tag

    ready = stack.get("/readyz")
    err = assert_unavailable(ready, "not_ready")
    assert "broker" in err["message"]
    text = ready.get_data(as_text=True) + json.dumps(ready.headers)
    for leak in (secret, str(dead_port), broker_url, "redis://"):
        assert leak not in text, f"/readyz leaks {leak!r}: {text}"
    assert secret not in api.log_text()  # nor does the log


# ====================================================================== 4. a bad article
BAD_ARTICLES = {
    # Passes the API's schema once stored, but has no words to work with.
    "no-words": ({"title": "!!! ???", "body": "--- ..."}, "no words"),
    # Written without its published time (as an older or foreign writer might).
    "no-published-time": ({"published_ts": None}, "no valid published time"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARTICLES))
def test_a_bad_article_is_marked_failed_and_never_retried(stack, case):
    changes, reason = BAD_ARTICLES[case]
    stack.api()
    worker = stack.worker()
    store = stack.store
    record = new_article_record(source="wire", url=f"https://wire.example/{case}", title="Ferry runs aground",
                                body="A passenger ferry ran aground off Crete on Tuesday; all 312 passengers "
                                     "were taken off safely.",
                                published_at=datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc), article_id=f"bad-{case}")
    for name, value in changes.items():
        if value is None:
            del record[name]
        else:
            record[name] = value
    assert pairs(store.accept_articles([record])) == [(record["id"], True)]
    assert stack.get(f"/v1/articles/{record['id']}").get_json()["status"] == "queued"

    task = celery_client(stack.redis.url).send_task(names.PROCESS_ARTICLE, args=[record["id"]],
                                                    queue=names.QUEUE)
    received = f"Task {names.PROCESS_ARTICLE}[{task.id}] received"

    def failed():
        answer = stack.get(f"/v1/articles/{record['id']}")
        return answer.get_json() if answer.get_json()["status"] != "queued" else None
    article = wait_until(failed, 20, "the article leaves 'queued'")
    assert article["status"] == "failed", article
    assert reason in article["error"], article
    assert store.redis.zscore(store.keys.queued, record["id"]) is None

    time.sleep(3)  # long enough for a retry (backoff starts at 0.5 s) to show
    log = worker.log_text()
    assert log.count(received) == 1, log[-3000:]
    assert log.count(f"[{task.id}] succeeded") == 1, log[-3000:]
    assert "Retry in" not in log and "retry:" not in log, log[-3000:]
    assert "article failed" in log
    assert stack.get(f"/v1/articles/{record['id']}").get_json() == article  # still failed, unchanged
