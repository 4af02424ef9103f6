"""Section 5, end to end: articles posted over HTTP to the real API and
decided by real Celery workers, timed until every one is processed."""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from embedded_redis.server import free_port
from evaluation.progress import Progress
from evaluation.streams import without_gold
from storyengine.metrics import MetricsSnapshot
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .console import log
from .http_client import Http
from .processes import api_ready, running_role, service_env, tail, worker_ready
from .stats import percentile

POST_CHUNK = 100
POST_CLIENTS = 4
POLL_WINDOW = 500   # articles asked about per poll, end to end


def processed_clock(store: RedisStore) -> tuple[Callable[[list[str]], dict[str, tuple[float, bool]]], str, float]:
    """(poll, source, interval): poll(ids) gives {id: (time, failed)} for the
    ids done so far: a processed article at the time the commit wrote, a
    failed one (done too, or the run would wait for it forever, but counted
    apart) when this poll first saw it."""
    def poll(ids: list[str]) -> dict[str, tuple[float, bool]]:
        with store.redis.pipeline(transaction=False) as pipe:
            for article_id in ids:
                pipe.hmget(store.keys.article(article_id), ("status", "processed_ts"))
            rows = pipe.execute()
        now = time.time()
        return {i: (float(processed) if status == b"processed" else now, status == b"failed")
                for i, (status, processed) in zip(ids, rows)
                if status == b"failed" or (status == b"processed" and processed)}
    return poll, "store (processed_ts)", 0.25


def end_to_end(rows: list[dict], redis_url: str, settings: Settings, workers: int, log_dir: Path,
               timeout: float) -> dict:
    """Post ``rows`` over HTTP from 4 client threads and wait until every
    article is processed. Throughput runs from the first POST to the last
    article processed; latency from each article's POST answer to its processing."""
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    port = free_port()
    env = service_env(redis_url, settings.key_prefix, API_PORT=str(port), API_WORKERS="2",
                      WORKER_CONCURRENCY=str(workers))
    label = f"e2e, {workers} worker{'s' if workers > 1 else ''}"
    worker_log, api_log = log_dir / f"worker-{workers}.log", log_dir / f"api-e2e-{workers}.log"
    articles = [without_gold(r) for r in rows]
    ids = [a["id"] for a in articles]
    batches: queue.Queue[list[dict]] = queue.Queue()
    for start in range(0, len(articles), POST_CHUNK):
        batches.put(articles[start:start + POST_CHUNK])
    answered_at: dict[str, float] = {}
    service_id: dict[str, str] = {}   # stream id -> the id the API answered (it scopes a client's id by outlet)
    sent_first: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        connection = Http(port)
        while True:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            sent = time.time()
            try:
                status, _, payload = connection.request("POST", "/v1/articles/batch", {"articles": batch})
            except OSError as exc:
                with lock:
                    errors.append(f"POST failed: {exc}")
                return
            answered = time.time()
            results = json.loads(payload).get("results", []) if status in (200, 202) else []
            rejected = [r for r in results if r.get("error")] if status in (200, 202) else [payload[:300]]
            with lock:
                sent_first.append(sent)
                if status not in (200, 202) or rejected:
                    errors.append(f"POST answered {status}: {rejected[:2]!r}")
                for article, answer in zip(batch, results):
                    answered_at[article["id"]] = answered
                    service_id[article["id"]] = answer.get("id", article["id"])

    try:
        with running_role("worker", env, worker_log, worker_ready(worker_log)), \
                running_role("api", env, api_log, api_ready(port)):
            poll, source, interval = processed_clock(store)
            threads = [threading.Thread(target=client, daemon=True) for _ in range(POST_CLIENTS)]
            for t in threads:
                t.start()
            processed: dict[str, tuple[float, bool]] = {}
            pending = list(ids)
            progress = Progress(len(ids), f"{label}: processed")
            deadline = time.monotonic() + timeout
            while pending:
                time.sleep(interval)
                if errors:
                    raise RuntimeError(f"{label}: the API refused articles: {errors[:3]}")
                # The articles answered first are processed first (one queue), so
                # only the oldest few are asked about: polling all of them would
                # take CPU from the workers being measured.
                with lock:
                    oldest = sorted((i for i in pending if i in service_id), key=answered_at.__getitem__)[:POLL_WINDOW]
                    asked: dict[str, list[str]] = {}   # two posts can name one article (the same outlet and URL)
                    for i in oldest:
                        asked.setdefault(service_id[i], []).append(i)
                processed.update({i: done for sid, done in poll(list(asked)).items() for i in asked[sid]})
                pending = [i for i in pending if i not in processed]
                progress.update(len(processed))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: {len(pending)} of {len(ids)} articles not processed after "
                                       f"{timeout:.0f} s; last lines of {worker_log}:\n{tail(worker_log)}")
            for t in threads:
                t.join()
            spent = worker_phase_ms(store, len(ids))
    finally:
        store.clear()
    # An article can be processed before its batch's answer reaches the
    # client; its wait, as the client sees it, is then zero.
    latencies = [1000 * max(0.0, processed[i][0] - answered_at[i]) for i in ids]
    elapsed = max(done for done, _ in processed.values()) - min(sent_first)
    failed = sum(1 for _, has_failed in processed.values() if has_failed)
    if failed:
        log(f"warning: {label}: {failed} articles failed, counted as done (--logs DIR keeps the worker log)")
    return {"articles_per_s": len(ids) / elapsed, "seconds": elapsed, "failed_articles": failed,
            "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99),
            "processed_time_source": source, **{f"phase_ms_{phase}": ms for phase, ms in spent.items()}}


def worker_phase_ms(store: RedisStore, articles: int, wait: float = 10.0) -> dict[str, float]:
    """The workers' milliseconds per article by phase, from the metrics they
    count (storyengine.metrics): every worker process together, so with two
    "lock" includes each one's wait for the other. A worker counts a task
    just after its decisions are written: wait for the last one's counts."""
    deadline = time.monotonic() + wait
    while True:
        snapshot = MetricsSnapshot.from_hash(store.redis.hgetall(store.keys.metrics))
        counted = snapshot.counters["articles_decided"] + snapshot.counters["articles_failed"]
        if counted >= articles or time.monotonic() > deadline:
            return {phase: 1000 * seconds / articles for phase, seconds in snapshot.engine_seconds.items()}
        time.sleep(0.05)
