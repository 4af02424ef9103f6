"""The requeue pass against a real Redis: it keeps up with any backlog, and never
sends again work that is merely waiting (workers/tasks.py, requeue_stale).

The pass runs here in the test's process (workers.tasks.requeue_pass, the body
of the task), with the Celery app a worker builds (workers.app.create_celery)
on a Redis server of the module's own, so the broker's lists hold exactly the
task messages each test sends, as real kombu messages sent by Celery. The
articles are ids in the queued set (``{p}:queued``, scored by when their task
was sent): that set is all the pass reads of them. tests/workers/test_requeue.py
runs the task in a real worker, on real articles.
"""
from __future__ import annotations

import json
import time

import pytest
import redis

from embedded_redis.server import EmbeddedRedis
from storyengine.errors import ConfigError
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from workers import names
from workers.app import create_celery
from workers.config import WorkerConfig
from workers.tasks import REQUEUE_BATCH, broker_lists, message_article_ids, requeue_pass, waiting_bound

PREFIX = "sw-requeue"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("requeue-redis"), appendonly=False) as s:
        yield s


@pytest.fixture
def url(server):
    client = connect(server.url)
    client.flushall()  # the broker's lists too: each test starts with an empty queue
    client.close()
    return server.url


@pytest.fixture
def store(url):
    s = RedisStore(connect(url), Settings(key_prefix=PREFIX))
    yield s
    s.redis.close()


def worker_app(url: str, **config):
    """The Celery app a worker builds, with the shipped requeue settings unless given."""
    return create_celery(WorkerConfig(redis_url=url, settings=Settings(key_prefix=PREFIX), **config))


def queue_ids(store: RedisStore, ids: list[str], age: float) -> None:
    """Articles waiting in the queued set, their task sent ``age`` seconds ago."""
    at = time.time() - age
    for start in range(0, len(ids), 5000):
        store.redis.zadd(store.keys.queued, {i: at for i in ids[start:start + 5000]})


def scores(store: RedisStore, ids: list[str]) -> list[float]:
    return store.redis.zmscore(store.keys.queued, ids)


def waiting_tasks(store: RedisStore) -> list[list[str]]:
    """The article ids of each task waiting in the broker's article queue, oldest first."""
    return [message_article_ids(raw) for raw in reversed(store.redis.lrange(names.QUEUE, 0, -1))]


def ids_of(tag: str, n: int) -> list[str]:
    return [f"{tag}-{i:05d}" for i in range(n)]


# ====================================================================== the rule
@pytest.mark.e2e
def test_stale_articles_behind_an_empty_queue_are_all_sent_again_in_one_pass(store, url):
    """3,000 articles whose tasks were lost: more than the 1,000 the pass used to
    take per run. One pass sends them all, in tasks of 500, once."""
    lost = ids_of("lost", 3000)
    queue_ids(store, lost, age=1000)
    app = worker_app(url)
    started = time.time()
    report = requeue_pass(app, store)
    assert report == {"status": "done", "requeued": 3000, "rule": "empty"}
    tasks = waiting_tasks(store)
    assert [len(t) for t in tasks] == [REQUEUE_BATCH] * 6
    assert sorted(i for t in tasks for i in t) == lost
    assert min(scores(store, lost)) >= started  # each one's wait restarted
    # At once again: their tasks wait now, so nothing is stale.
    assert requeue_pass(app, store)["requeued"] == 0
    assert len(waiting_tasks(store)) == 6


@pytest.mark.e2e
def test_articles_whose_tasks_wait_in_the_broker_are_not_sent_again(store, url):
    """A backlog older than requeue_after waits in the broker: only what was sent
    before its oldest task (and is still queued) lost its task."""
    app = worker_app(url)
    lost, first, later = ids_of("lost", 300), ids_of("first", 500), ids_of("later", 200)
    queue_ids(store, lost, age=900)                     # tasks lost
    queue_ids(store, first, age=600)                    # the oldest task still waiting
    app.send_task(names.PROCESS_ARTICLES, args=[first], queue=names.QUEUE)
    between = ids_of("between", 50)
    queue_ids(store, between, age=500)                  # sent after it: waits its turn
    queue_ids(store, later, age=300)
    app.send_task(names.PROCESS_ARTICLES, args=[later], queue=names.QUEUE)
    single = "single-00000"
    queue_ids(store, [single], age=200)                 # a one-article post: process_article
    app.send_task(names.PROCESS_ARTICLE, args=[single], queue=names.QUEUE)
    waiting_before = {i: s for i, s in zip(first + later + between + [single],
                                           scores(store, first + later + between + [single]))}

    report = requeue_pass(app, store)
    assert report == {"status": "done", "requeued": 300, "rule": "fifo"}
    assert waiting_tasks(store) == [first, later, [single], lost]
    # Untouched: the waiting articles keep their scores, so they are never taken for lost.
    assert dict(zip(waiting_before, scores(store, list(waiting_before)))) == waiting_before


@pytest.mark.e2e
def test_the_oldest_waiting_tasks_whose_articles_are_all_decided_are_read_past(store, url):
    app = worker_app(url)
    lost, waiting = ids_of("lost", 40), ids_of("waiting", 10)
    queue_ids(store, lost, age=900)
    for n in range(30):  # decided since they were sent: in no queued set any more
        app.send_task(names.PROCESS_ARTICLES, args=[[f"decided-{n}-a", f"decided-{n}-b"]], queue=names.QUEUE)
    app.send_task(names.REPAIR_STORIES, queue=names.QUEUE)  # names no article at all
    queue_ids(store, waiting, age=600)
    app.send_task(names.PROCESS_ARTICLES, args=[waiting], queue=names.QUEUE)
    assert waiting_bound(store, True).rule == "fifo"
    report = requeue_pass(app, store)
    assert report["requeued"] == 40 and report["rule"] == "fifo"
    assert waiting_tasks(store)[-1] == lost


@pytest.mark.e2e
def test_articles_of_a_task_a_worker_holds_are_not_sent_again(store, url):
    """A task taken by a worker and not acknowledged (it is being decided, or its
    worker died and the visibility timeout brings it back) is no lost task."""
    app = worker_app(url)
    held, lost = ids_of("held", 20), ids_of("lost", 5)
    queue_ids(store, held + lost, age=900)
    app.send_task(names.PROCESS_ARTICLES, args=[held], queue=names.QUEUE)
    with app.connection_for_read() as conn:
        message = conn.default_channel.basic_get(names.QUEUE, no_ack=False)  # as a worker takes it
        assert message is not None and store.redis.hlen("unacked") == 1 and store.redis.llen(names.QUEUE) == 0
        report = requeue_pass(app, store)
        message.ack()
    assert report == {"status": "done", "requeued": 5, "rule": "empty"}
    assert waiting_tasks(store) == [lost]


@pytest.mark.e2e
def test_recent_articles_are_never_stale(store, url):
    app = worker_app(url)
    queue_ids(store, ids_of("fresh", 10), age=30)  # within requeue_after (60 s)
    assert requeue_pass(app, store) == {"status": "done", "requeued": 0, "rule": "empty"}


@pytest.mark.e2e
def test_a_claim_reads_past_the_articles_it_leaves_alone(store):
    """The store's claim: ids to skip never use up its limit, so the pass's loop ends with all claimed."""
    ids = ids_of("a", 10)
    queue_ids(store, ids, age=900)
    assert store.claim_stale_queued(60, 5, skip=ids[:5]) == ids[5:]
    assert store.claim_stale_queued(60, 5, skip=ids[:5]) == []
    queue_ids(store, ids, age=900)
    bound = time.time() - 900  # every score is this, or a hair earlier: none strictly before it is newer
    assert store.claim_stale_queued(60, 100, sent_before=bound - 1) == []
    assert sorted(store.claim_stale_queued(60, 100, sent_before=bound + 1)) == ids


# ====================================================================== the fallback: the age rule alone
@pytest.mark.e2e
def test_a_broker_on_another_redis_falls_back_to_the_age_rule(store, server):
    """CELERY_BROKER_URL names another server (here another database): the pass
    cannot see the queue, so everything older than requeue_after is sent again."""
    other = server.url.rsplit("/", 1)[0] + "/1"
    app = worker_app(server.url, broker_url=other)
    assert not app.conf.storywire.broker_is_store
    waiting = ids_of("waiting", 30)
    queue_ids(store, waiting, age=900)
    app.send_task(names.PROCESS_ARTICLES, args=[waiting], queue=names.QUEUE)  # waits in database 1
    report = requeue_pass(app, store)
    assert report == {"status": "done", "requeued": 30, "rule": "age"}
    broker = redis.Redis.from_url(other)
    assert [message_article_ids(m) for m in reversed(broker.lrange(names.QUEUE, 0, -1))] == [waiting, waiting]
    broker.flushdb()


@pytest.mark.e2e
@pytest.mark.parametrize("raw", [b"not json", json.dumps({"body": "???", "headers": {"task": names.PROCESS_ARTICLES},
                                                           "content-type": "application/json",
                                                           "properties": {"body_encoding": "base64"}}).encode()])
def test_a_waiting_message_that_cannot_be_read_falls_back_to_the_age_rule(store, url, raw):
    app = worker_app(url)
    waiting = ids_of("waiting", 10)
    queue_ids(store, waiting, age=900)
    app.send_task(names.PROCESS_ARTICLES, args=[waiting], queue=names.QUEUE)
    store.redis.rpush(names.QUEUE, raw)  # the right end: the oldest waiting message
    assert message_article_ids(raw) is None
    assert requeue_pass(app, store) == {"status": "done", "requeued": 10, "rule": "age"}


# ====================================================================== bounded, and the settings
@pytest.mark.e2e
def test_a_pass_is_bounded_and_the_next_one_takes_the_rest(store, url):
    app = worker_app(url, requeue_max_per_run=1200)
    lost = ids_of("lost", 3000)
    queue_ids(store, lost, age=1000)
    assert requeue_pass(app, store)["requeued"] == 1200
    assert [len(t) for t in waiting_tasks(store)] == [500, 500, 200]
    # The next pass: the tasks just sent wait, but the rest were sent long before them.
    assert requeue_pass(app, store) == {"status": "done", "requeued": 1200, "rule": "fifo"}
    assert requeue_pass(app, store)["requeued"] == 600
    assert sorted(i for t in waiting_tasks(store) for i in t) == lost


@pytest.mark.e2e
def test_a_message_names_its_articles(store, url):
    app = worker_app(url)
    app.send_task(names.PROCESS_ARTICLE, args=["one"], queue=names.QUEUE)
    app.send_task(names.PROCESS_ARTICLES, args=[["a", "b", 7, None]], queue=names.QUEUE)
    app.send_task(names.PROCESS_ARTICLES, args=[None], queue=names.QUEUE)   # malformed: names none
    app.send_task(names.REQUEUE_STALE, queue=names.MAINTENANCE_QUEUE)
    assert waiting_tasks(store) == [["one"], ["a", "b"], []]
    assert [message_article_ids(m) for m in store.redis.lrange(names.MAINTENANCE_QUEUE, 0, -1)] == [[]]
    assert broker_lists()[0] == names.QUEUE and len(broker_lists()) == 4  # kombu's priority steps


def test_the_requeue_settings_default_to_a_minute_and_twenty_seconds():
    config = WorkerConfig.from_env({})
    assert (config.requeue_after, config.requeue_interval, config.requeue_max_per_run) == (60, 20, 100_000)
    config = WorkerConfig.from_env({"STORYWIRE_REQUEUE_INTERVAL": "5", "STORYWIRE_REQUEUE_AFTER": "30"})
    assert (config.requeue_after, config.requeue_interval) == (30, 5)
    entry = create_celery(config).conf.beat_schedule["requeue-stale"]
    assert entry["schedule"] == 5.0 and entry["options"] == {"queue": names.MAINTENANCE_QUEUE, "expires": 5.0}


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_a_bad_requeue_interval_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="STORYWIRE_REQUEUE_INTERVAL"):
        WorkerConfig.from_env({"STORYWIRE_REQUEUE_INTERVAL": bad})
