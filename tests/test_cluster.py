"""Scale-out on a real Redis Cluster (docs/scaling.md, Step 3): two partitions,
each a deployment under its own key prefix (so its own hash slot) with its own
queue on one plain broker and its own worker process, on a 3-shard Cluster
started from the project's redis-server. Each partition's keys must all be on
the shard that serves its slot, its stories right, and nothing of it in the
other. And the queue setting (STORYWIRE_QUEUE) that lets partitions share a broker."""
from __future__ import annotations

import os

import pytest
import redis

from embedded_redis.cluster import EmbeddedCluster, shard_url
from embedded_redis.server import EmbeddedRedis
from scripts.run import role_command
from service.config import load_config
from storyengine.errors import ConfigError
from storyengine.settings import Settings
from tests.helpers import ROOT, build_app, log_says, start_role, stream_ids
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


@pytest.mark.e2e
@pytest.mark.usefixtures("no_auth_in_environment")
def test_two_partitions_each_on_its_own_shard(tmp_path):
    rows = load_articles()
    for row in rows:
        row.pop("gold")  # never sent
    # Two events: ECB+ topic 37 (West Papua) for one partition, topic 20 (Iran) for the other.
    streams = [[r for r in rows if r["id"].startswith("ecb-37_")], [r for r in rows if r["id"].startswith("ecb-20_")]]
    with EmbeddedCluster(tmp_path / "cluster", shards=3) as cluster, \
            EmbeddedRedis(tmp_path / "broker", appendonly=False) as broker:
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
