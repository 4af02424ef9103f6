"""Scale-out on a real Redis Cluster (docs/scaling.md, Step 3): two partitions,
each a deployment under its own key prefix (so its own hash slot) with its own
queue on one plain broker and its own worker process, on a 3-shard Cluster
started from the project's redis-server. Each partition's keys must all be on
the shard that serves its slot, its stories right, and nothing of it in the
other. A partition's /metrics on a shard (Redis 6.2 refuses SORT's GET patterns
there); a partition pointed at a node that does not serve its slot, or while
its slot moves or the Cluster is down: 503 from the API, an outage (retried,
no article failed) for the workers, nothing written. And the queue setting
(STORYWIRE_QUEUE) that lets partitions share a broker."""
from __future__ import annotations

import os
import time
import uuid

import pytest
import redis

from embedded_redis.cluster import NODE_ARGS, EmbeddedCluster, cluster_port, shard_url
from embedded_redis.server import EmbeddedRedis
from scripts.run import role_command
from service.config import load_config
from service.metrics import broker_queue_keys
from storyengine.decider import Decider, _transient
from storyengine.errors import ConfigError, StoreUnavailable
from storyengine.keys import Keys
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from tests.helpers import ROOT, build_app, log_says, start_role, stream_ids
from tests.service.envelope import assert_error
from tests.service.test_metrics import article, counter, scrape
from tests.workers.posts_and_waits import load_articles, wait_processed
from workers.config import WorkerConfig
from workers.names import MAINTENANCE_QUEUE, QUEUE

# Partition names to try, in order: the first two whose slots are on different shards are used.
LANGUAGES = ("en", "fr", "de", "es", "it", "nl", "pt", "pl")


def partitions_on_two_shards(cluster: EmbeddedCluster) -> list[tuple[str, int]]:
    """Two (prefix, shard) pairs on different shards, by CLUSTER KEYSLOT and CLUSTER SLOTS."""
    chosen: list[tuple[str, int]] = []
    for language in LANGUAGES:
        prefix = f"sw-cluster-{language}"
        shard = cluster.shard_of(prefix)
        if all(shard != s for _, s in chosen):
            chosen.append((prefix, shard))
        if len(chosen) == 2:
            return chosen
    pytest.fail(f"no two of {LANGUAGES} hash to different shards")


def keys_by_node(cluster: EmbeddedCluster) -> list[set[bytes]]:
    """Every key each node holds (SCAN on each: a node answers for itself only)."""
    found = []
    for url in cluster.urls:
        client = redis.Redis.from_url(url)
        found.append(set(client.scan_iter(count=1000)))
        client.close()
    return found


# One Cluster and one broker for the module (starting a Cluster takes about 2 s). Each test's partitions
# have prefixes of their own, and the tests below the first clear theirs, so it finds only its own keys.
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster"), shards=3) as started:
        yield started


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("broker"), appendonly=False) as started:
        yield started


@pytest.fixture
def prefix(cluster, broker):
    """A fresh partition prefix; its keys (on its shard) and its queue (on the broker) are removed after the test."""
    prefix = f"sw-cluster-{uuid.uuid4().hex[:8]}"
    yield prefix
    node, queues = connect(shard_url(cluster.urls[0], prefix)), connect(broker.url)
    RedisStore(node, Settings(key_prefix=prefix)).clear()
    queues.delete(*broker_queue_keys(f"storywire-{prefix}"))
    node.close()
    queues.close()


@pytest.mark.e2e
@pytest.mark.usefixtures("no_auth_in_environment")
def test_two_partitions_each_on_its_own_shard(cluster, broker, tmp_path):
    rows = load_articles()
    for row in rows:
        row.pop("gold")  # never sent
    # Two events: ECB+ topic 37 (West Papua) for one partition, topic 20 (Iran) for the other.
    streams = [[r for r in rows if r["id"].startswith("ecb-37_")], [r for r in rows if r["id"].startswith("ecb-20_")]]
    partitions = partitions_on_two_shards(cluster)
    assert partitions[0][1] != partitions[1][1]
    envs, workers, apps = [], [], []
    try:
        for prefix, shard in partitions:
            url = shard_url(cluster.urls[2], prefix)   # any node answers where the slot is
            assert url == cluster.urls[shard]
            env = dict(os.environ, REDIS_URL=url, CELERY_BROKER_URL=broker.url, STORYWIRE_KEY_PREFIX=prefix,
                       STORYWIRE_QUEUE=f"storywire-{prefix}", PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1",
                       LOG_LEVEL="INFO")
            env.pop("STORYWIRE_API_KEY", None)
            envs.append(env)
            workers.append(start_role("worker", env, tmp_path / f"worker-{prefix}.log"))  # both start at once
            apps.append(build_app(url, Settings.from_env(env), CELERY_BROKER_URL=broker.url,
                                  STORYWIRE_QUEUE=env["STORYWIRE_QUEUE"]))
        for worker in workers:
            worker.wait_for("worker did not start", lambda: log_says(" ready.")(worker))

        clients = [app.test_client() for app in apps]
        for pair in zip(*streams):   # interleaved, so both partitions work at once
            for client, row in zip(clients, pair):
                assert client.post("/v1/articles", json=row).status_code == 202
        served = [stream_ids(stream) for stream in streams]   # served id -> stream id, per partition
        for client, ids in zip(clients, served):
            assert {a["status"] for a in wait_processed(client, list(ids)).values()} == {"processed"}
    finally:
        for worker in workers:
            worker.stop()

    # The stories: one per partition, its event's five articles, the reprint folded under its canonical.
    for client, ids, other in zip(clients, served, reversed(served)):
        [summary] = client.get("/v1/stories").get_json()["stories"]
        assert summary["article_count"] == 5
        story = client.get(f"/v1/stories/{summary['id']}").get_json()
        assert len(story["articles"]) == 4
        [folded] = [a for a in story["articles"] if a["duplicates"]]
        assert folded["duplicates"][0]["duplicate_of"] == folded["id"]
        assert {m["id"] for a in story["articles"] for m in (a, *a["duplicates"])} == set(ids)
        assert all(client.get(f"/v1/articles/{i}").status_code == 404 for i in other)

    # The keys: each partition's all on its own shard, none elsewhere, nothing else on the Cluster.
    held = keys_by_node(cluster)
    for prefix, shard in partitions:
        tag = f"{{{prefix}}}:".encode()
        assert any(k.startswith(tag) for k in held[shard])
        assert not [k for node, keys in enumerate(held) if node != shard for k in keys if k.startswith(tag)]
    tags = tuple(f"{{{prefix}}}:".encode() for prefix, _ in partitions)
    assert all(k.startswith(tags) for keys in held for k in keys)

    # The queues: each worker decided its own partition's articles only (its log lists what each task decided).
    for worker, ids, other in zip(workers, served, reversed(served)):
        log = worker.log_text()
        assert all(i in log for i in ids) and not any(i in log for i in other)


# ---------------------------------------------------------------- one partition on a shard, and outages
def partition(node_url: str, prefix: str, broker: EmbeddedRedis):
    """A partition's API (a test client) over ``node_url``, with its own queue on ``broker``."""
    return build_app(node_url, Settings(key_prefix=prefix), CELERY_BROKER_URL=broker.url,
                     STORYWIRE_QUEUE=f"storywire-{prefix}").test_client()


def tasks_waiting(broker: EmbeddedRedis, prefix: str) -> int:
    client = connect(broker.url)
    try:
        return sum(client.llen(key) for key in broker_queue_keys(f"storywire-{prefix}"))
    finally:
        client.close()


def gauge(families: dict, name: str, **labels) -> float:
    return families[name][(name, tuple(sorted(labels.items())))]


def refused(call) -> redis.RedisError:
    with pytest.raises(redis.RedisError) as caught:
        call()
    return caught.value


def assert_outage_everywhere(client, store: RedisStore, queued_id: str) -> list[dict]:
    """The API answers 503 (unavailable) to reads, /metrics and posts; a worker's
    decider raises StoreUnavailable (retried, then left to the requeue pass)
    rather than failing the article. Returns the error envelopes."""
    replies = [client.get("/v1/stories"), client.get(f"/v1/articles/{queued_id}"), client.get("/metrics"),
               client.post("/v1/articles", json=article()),
               client.post("/v1/articles/batch", json={"articles": [article(), article()]})]
    errors = []
    for resp in replies:
        errors.append(assert_error(resp, 503, "unavailable"))
        assert resp.headers["Retry-After"]
    with pytest.raises(StoreUnavailable):
        Decider(store).process_many([queued_id])
    return errors


@pytest.mark.e2e
@pytest.mark.usefixtures("no_auth_in_environment")
def test_metrics_on_a_shard_count_the_queue_and_age_its_oldest_article(cluster, broker, prefix):
    url, keys = shard_url(cluster.urls[0], prefix), Keys(prefix)
    client = partition(url, prefix, broker)
    first, second = (client.post("/v1/articles", json=article()).get_json()["id"] for _ in range(2))
    node = connect(url)
    try:
        node.hset(keys.article(first), "received_ts", round(time.time() - 120, 3))
        families = scrape(client)
        assert counter(families, "articles_accepted") == 2
        assert gauge(families, "storywire_articles_queued") == 2
        assert 119 <= gauge(families, "storywire_oldest_queued_age_seconds") < 130
        assert gauge(families, "storywire_queue_messages", queue=f"storywire-{prefix}") == 2
        # The lowest queued score's receipt time (a requeued article keeps its age); without one, the score.
        node.zadd(keys.queued, {first: time.time() - 5, second: time.time() - 10})
        node.hset(keys.article(second), "received_ts", round(time.time() - 300, 3))
        assert 299 <= gauge(scrape(client), "storywire_oldest_queued_age_seconds") < 310
        node.hdel(keys.article(second), "received_ts")
        assert 9 <= gauge(scrape(client), "storywire_oldest_queued_age_seconds") < 20
    finally:
        node.close()


@pytest.mark.e2e
@pytest.mark.usefixtures("no_auth_in_environment")
def test_a_partition_pointed_at_another_shard_is_unavailable_and_writes_nothing(cluster, broker, prefix):
    keys, tag = Keys(prefix), f"{{{prefix}}}:".encode()
    owner = cluster.shard_of(prefix)
    right = partition(cluster.urls[owner], prefix, broker)
    queued_id = right.post("/v1/articles", json=article()).get_json()["id"]
    held_before = {k for node in keys_by_node(cluster) for k in node if k.startswith(tag)}
    wrong_url = cluster.urls[(owner + 1) % len(cluster.urls)]
    wrong = connect(wrong_url)
    try:
        moved = refused(lambda: wrong.hgetall(keys.article(queued_id)))
        assert isinstance(moved, redis.exceptions.MovedError) and _transient(moved)
        errors = assert_outage_everywhere(partition(wrong_url, prefix, broker),
                                          RedisStore(wrong, Settings(key_prefix=prefix)), queued_id)
    finally:
        wrong.close()
    for err in errors:   # says what to do about it
        assert "REDIS_URL" in err["message"] and "python -m embedded_redis.cluster NODE_URL PREFIX" in err["message"]
    # Nothing written anywhere: the partition's keys as they were, on its shard only; one task (the first post's).
    held = keys_by_node(cluster)
    assert {k for k in held[owner] if k.startswith(tag)} == held_before
    assert not [k for node, keys_ in enumerate(held) if node != owner for k in keys_ if k.startswith(tag)]
    assert tasks_waiting(broker, prefix) == 1
    record = right.get(f"/v1/articles/{queued_id}").get_json()
    assert record["status"] == "queued"
    node = connect(cluster.urls[owner])
    try:
        assert node.hget(keys.article(queued_id), "attempts") is None   # no try counted against it
    finally:
        node.close()


@pytest.mark.e2e
@pytest.mark.usefixtures("no_auth_in_environment")
def test_a_slot_being_moved_or_a_cluster_down_is_an_outage(cluster, broker, prefix, tmp_path):
    keys, settings = Keys(prefix), Settings(key_prefix=prefix)
    owner = cluster.shard_of(prefix)
    url = cluster.urls[owner]
    client = partition(url, prefix, broker)
    queued_id = client.post("/v1/articles", json=article()).get_json()["id"]
    node = connect(url)
    target = connect(cluster.urls[(owner + 1) % len(cluster.urls)])
    slot = node.execute_command("CLUSTER KEYSLOT", keys.queued)
    # Resharding, as redis-cli --cluster reshard begins it: the slot importing on the target, migrating on
    # its owner, which answers ASK for a key it does not hold; the target answers a client that says ASKING
    # TRYAGAIN for a command on several keys it does not all hold yet.
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", node.execute_command("CLUSTER MYID"))
    node.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.execute_command("CLUSTER MYID"))
    try:
        ask = refused(lambda: node.get(keys.article("not-here")))
        with target.pipeline(transaction=False) as pipe:
            try_again = refused(lambda: pipe.execute_command("ASKING").exists(keys.queued, keys.metrics).execute())
        assert type(ask) is redis.exceptions.AskError and type(try_again) is redis.exceptions.TryAgainError
        assert _transient(ask) and _transient(try_again)
        assert client.get(f"/v1/articles/{queued_id}").status_code == 200   # what is still here is served
        assert_error(client.post("/v1/articles", json=article()), 503, "unavailable")
        with pytest.raises(StoreUnavailable):
            Decider(RedisStore(node, settings)).process_many([queued_id])
    finally:
        for either in (node, target):
            either.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        target.close()
    assert node.hget(keys.article(queued_id), "attempts") is None
    assert node.hget(keys.article(queued_id), "status") == b"queued"
    assert node.zcard(keys.queued) == 1 and tasks_waiting(broker, prefix) == 1
    node.close()

    # A node whose Cluster serves no slot (down): CLUSTERDOWN.
    with EmbeddedRedis(tmp_path / "down", port=cluster_port(), appendonly=False, extra_args=NODE_ARGS) as down:
        lone = connect(down.url)
        try:
            cluster_down = refused(lambda: lone.get(keys.queued))
            assert isinstance(cluster_down, redis.exceptions.ClusterDownError) and _transient(cluster_down)
            for err in assert_outage_everywhere(partition(down.url, prefix, broker), RedisStore(lone, settings),
                                                queued_id):
                assert "Cluster cannot serve" in err["message"]
        finally:
            lone.close()


# ---------------------------------------------------------------- STORYWIRE_QUEUE
def test_the_queue_is_storywire_unless_set():
    config = WorkerConfig.from_env({})
    assert (config.queue, config.maintenance_queue) == (QUEUE, MAINTENANCE_QUEUE) == ("storywire",
                                                                                       "storywire.maintenance")
    assert load_config(environ={})["STORYWIRE_QUEUE"] == QUEUE


def test_a_partition_has_its_own_queues_everywhere():
    env = {"STORYWIRE_QUEUE": "storywire-en", "REDIS_URL": "redis://127.0.0.1:1/0"}
    config = WorkerConfig.from_env(env)
    assert (config.queue, config.maintenance_queue) == ("storywire-en", "storywire-en.maintenance")
    from workers.app import create_celery
    app = create_celery(config)
    assert app.conf.task_default_queue == "storywire-en"
    assert {e["options"]["queue"] for e in app.conf.beat_schedule.values()} == {"storywire-en.maintenance"}
    command = role_command("worker", env)
    assert command[command.index("--queues") + 1] == "storywire-en,storywire-en.maintenance"
    assert load_config(environ=env)["STORYWIRE_QUEUE"] == "storywire-en"


@pytest.mark.parametrize("bad", ["storywire en", "a,b", "{sw}:queued", "_kombu.binding.x", "unacked", "-x",
                                 "storywire.maintenance", "q" * 101, "héllo"])
def test_a_bad_queue_name_is_refused_saying_what_a_name_may_be(bad):
    for refuse in (lambda: WorkerConfig.from_env({"STORYWIRE_QUEUE": bad}),
                   lambda: load_config(environ={"STORYWIRE_QUEUE": bad}),
                   lambda: load_config({"STORYWIRE_QUEUE": bad}, environ={})):
        with pytest.raises(ConfigError, match=r"STORYWIRE_QUEUE=.* cannot name a queue: use 1 to 100 letters"):
            refuse()
    with pytest.raises(SystemExit, match="STORYWIRE_QUEUE"):
        role_command("worker", {"STORYWIRE_QUEUE": bad})
