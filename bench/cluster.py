"""Section 7, scale-out on a Redis Cluster (docs/scaling.md, Step 3): one
stream decided by one partition, then split in two partitions deciding at once.

A 3-shard Cluster on loopback (embedded_redis/cluster.py) and a plain Redis
as the broker. A partition is a deployment under its own key prefix, so its
own hash slot: the bench picks two prefixes whose slots are on different
shards, and each partition's engine talks to its shard with a plain client
(embedded_redis.cluster.shard_url). The stream is copies of the dev stream
that share no vocabulary (bench/stream.py), split by copy, even and odd, as
a stream splits by language: stories never cross partitions.

Measured twice, each time one partition with the whole stream, then two
with half each at once, on fresh stores:

- in-process: one process per partition deciding its articles in chunks of
  ``--batch`` (as section 2 does), all accepted beforehand; from the moment
  every process is ready to the last decision;
- with Celery: one worker process per partition on its own queue of the
  shared broker; the articles accepted beforehand, then every task sent to
  the broker at once (as the API sends them, one per 100); from the first
  send to the last article's ``processed_ts``.

Each run also says how many cores its processes kept busy (partitions,
shards and broker: CPU seconds over the run's seconds) and how many the rest
of the machine took meanwhile: on a shared machine, what was left for it.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from celery import Celery

from embedded_redis.cluster import EmbeddedCluster, shard_url
from embedded_redis.server import EmbeddedRedis
from evaluation.replay import record_of
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from workers import names

from .console import log
from .engine import start_engine
from .ingest import accept_all
from .processes import running_role, service_env, tail, worker_ready
from .settings import bench_settings

SHARDS = 3
TASK_ARTICLES = 100   # articles per task, as the bench's clients post them (section 5)


def copy_of(row: dict) -> int:
    """Which copy of the source stream a row is (evaluation.variants.replicate tags copy k with "~c<k>")."""
    _, tag, copy = row["id"].rpartition("~c")
    return int(copy) if tag and copy.isdigit() else 0


class Partition:
    """One deployment: its prefix, the URL of the shard that serves its slot, its records."""

    def __init__(self, cluster: EmbeddedCluster, prefix: str, records: list[dict]) -> None:
        self.prefix, self.records = prefix, records
        self.settings = bench_settings(prefix)
        self.url = shard_url(cluster.urls[0], prefix)
        self.shard = cluster.urls.index(self.url)
        self.queue = f"storywire-{prefix}"
        self.store = RedisStore(connect(self.url), self.settings)

    def accept(self) -> list[str]:
        self.store.clear()
        return accept_all(self.store, self.records, self.prefix)


def choose_prefixes(cluster: EmbeddedCluster, tag: str) -> tuple[str, str, str]:
    """The single partition's prefix, and two whose slots are on different shards."""
    pair: list[tuple[str, int]] = []
    for k in range(1, 100):
        prefix = f"sw-bench-{tag}-p{k}"
        shard = cluster.shard_of(prefix)
        if not pair or pair[0][1] != shard:
            pair.append((prefix, shard))
        if len(pair) == 2:
            return f"sw-bench-{tag}-p0", pair[0][0], pair[1][0]
    raise RuntimeError("no two key prefixes hash to different shards")


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def machine_busy() -> float:
    """CPU seconds the machine's cores have spent busy so far (guest time is inside user time already)."""
    times = psutil.cpu_times()._asdict()
    return sum(times.values()) - sum(times.get(k, 0.0) for k in ("idle", "iowait", "guest", "guest_nice"))


# A run's result: articles/s, failed articles, seconds timed, CPU seconds of
# the partition processes (and servers) and of the whole machine meanwhile.
Run = tuple[float, int, float, float, float]
Meter = Callable[[], tuple[float, float]]   # () -> (servers' CPU seconds, machine busy seconds)


def _decide(url: str, settings: Settings, ids: list[str], batch: int, ready, results) -> None:
    """One partition's process: decide ``ids`` in chunks once every partition's process is ready."""
    decider = start_engine(RedisStore(connect(url), settings))
    ready.wait()
    began, cpu, failed = time.monotonic(), time.process_time(), 0
    for start in range(0, len(ids), batch):
        failed += sum(1 for o in decider.process_many(ids[start:start + batch]) if getattr(o, "error", None))
    results.put((began, time.monotonic(), failed, time.process_time() - cpu))


def in_process(parts: list[Partition], batch: int, meter: Meter) -> Run:
    """The partitions deciding at once, one process each."""
    ids = [p.accept() for p in parts]
    context = multiprocessing.get_context("fork")   # the engine is imported already
    ready, results = context.Barrier(len(parts) + 1), context.Queue()
    processes = [context.Process(target=_decide, args=(p.url, p.settings, i, batch, ready, results))
                 for p, i in zip(parts, ids)]
    for process in processes:
        process.start()
    ready.wait()
    servers, busy = meter()
    done = [results.get(timeout=600) for _ in processes]
    servers_after, busy_after = meter()
    for process in processes:
        process.join()
    seconds = max(d[1] for d in done) - min(d[0] for d in done)
    return (sum(map(len, ids)) / seconds, sum(d[2] for d in done), seconds,
            sum(d[3] for d in done) + servers_after - servers, busy_after - busy)


def with_workers(parts: list[Partition], broker_url: str, log_dir: Path, timeout: float, meter: Meter) -> Run:
    """The partitions' Celery workers, one process each on its own queue."""
    sender = Celery("storywire-bench", broker=broker_url, set_as_current=False)
    with contextlib.ExitStack() as stack:
        logs, workers = [], []
        for p in parts:
            logs.append(log_dir / f"worker-cluster-{p.prefix}.log")
            env = service_env(p.url, p.prefix, CELERY_BROKER_URL=broker_url, STORYWIRE_QUEUE=p.queue,
                              WORKER_CONCURRENCY="1")
            workers.append(stack.enter_context(running_role("worker", env, logs[-1], worker_ready(logs[-1]))).pid)
        ids = [p.accept() for p in parts]
        chunks = [[i[s:s + TASK_ARTICLES] for s in range(0, len(i), TASK_ARTICLES)] for i in ids]
        (servers, busy), cpu = meter(), cpu_seconds(workers)
        began = time.time()
        for n in range(max(map(len, chunks))):   # the partitions' tasks interleaved, as two feeds would post
            for p, c in zip(parts, chunks):
                if n < len(c):
                    sender.send_task(names.PROCESS_ARTICLES, args=[c[n]], queue=p.queue)
        deadline = time.monotonic() + timeout
        while any(p.store.redis.zcard(p.store.keys.queued) for p in parts):   # accepted, not yet decided
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster: articles left undecided after {timeout:.0f} s; last lines of "
                                   f"{logs[0]}:\n{tail(logs[0])}")
            time.sleep(0.2)
        (servers_after, busy_after), cpu_after = meter(), cpu_seconds(workers)
    ends, failed = [], 0
    for p, i in zip(parts, ids):
        with p.store.redis.pipeline(transaction=False) as pipe:
            for article_id in i:
                pipe.hmget(p.store.keys.article(article_id), ("status", "processed_ts"))
            for status, processed in pipe.execute():
                failed += status != b"processed"
                ends.append(float(processed or 0))
    seconds = max(ends) - began
    return (sum(map(len, ids)) / seconds, failed, seconds, cpu_after - cpu + servers_after - servers,
            busy_after - busy)


def cluster_bench(rows: list[dict], batch: int, log_dir: Path, timeout: float, tag: str) -> dict[str, object]:
    """One partition against two on a 3-shard Cluster, in-process and with Celery: the ``cluster_`` figures."""
    records = [record_of(row) for row in rows]
    halves = [[r for r, row in zip(records, rows) if copy_of(row) % 2 == side] for side in (0, 1)]
    began = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="storywire-bench-cluster-") as tmp, \
            EmbeddedCluster(Path(tmp) / "cluster", SHARDS) as cluster, \
            EmbeddedRedis(Path(tmp) / "broker", appendonly=False) as broker:
        servers = [node.process.pid for node in (*cluster.nodes, broker)]
        one, a, b = choose_prefixes(cluster, tag)
        single = [Partition(cluster, one, records)]
        pair = [Partition(cluster, a, halves[0]), Partition(cluster, b, halves[1])]
        log(f"   partitions: {one} alone on shard {single[0].shard}; {a} on shard {pair[0].shard} "
            f"({len(halves[0])} articles) and {b} on shard {pair[1].shard} ({len(halves[1])})")
        figures: dict[str, object] = {
            "cluster_shards": SHARDS, "cluster_articles": len(records),
            "cluster_partition_articles_a": len(halves[0]), "cluster_partition_articles_b": len(halves[1]),
            "cluster_shard_single": single[0].shard, "cluster_shard_a": pair[0].shard,
            "cluster_shard_b": pair[1].shard}
        failed = 0

        def meter() -> tuple[float, float]:
            return cpu_seconds(servers), machine_busy()
        try:
            for how, run in (("engine", lambda parts: in_process(parts, batch, meter)),
                             ("e2e", lambda parts: with_workers(parts, broker.url, log_dir, timeout, meter))):
                for label, parts in (("1_partition", single), ("2_partitions", pair)):
                    rate, lost, seconds, ours, busy = run(parts)
                    cores, others = ours / seconds, max(0.0, busy - ours) / seconds
                    figures.update({f"cluster_{how}_articles_per_s_{label}": rate, f"cluster_{how}_cores_{label}":
                                    cores, f"cluster_{how}_other_cores_{label}": others})
                    log(f"   {how}, {label}: {rate:.0f} articles/s, {cores:.2f} cores busy (others: {others:.2f})")
                    failed += lost
                    for p in parts:
                        p.store.clear()
                figures[f"cluster_{how}_scaling"] = (figures[f"cluster_{how}_articles_per_s_2_partitions"]
                                                     / figures[f"cluster_{how}_articles_per_s_1_partition"])
        finally:
            for p in single + pair:
                p.store.clear()
    figures.update(cluster_failed_articles=failed, cluster_seconds=time.monotonic() - began)
    return figures
