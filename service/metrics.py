"""GET /metrics: Prometheus metrics for the whole deployment, read from Redis.

The counts are made in every API and worker process (storyengine.metrics
keeps them in one Redis hash), so any API process answers a scrape with the
same figures: a custom collector reads the hash, the queued-articles set (its
size and its oldest article), the workers' heartbeats (workers/heartbeat.py)
and the broker's queue in one round trip (two when the broker is another Redis).
Per-process metrics (the client library's process and GC collectors) are left
out on purpose: a scrape lands on whichever gunicorn process is free, so they
would jump between processes from one scrape to the next.

Access follows the read rule of service/auth.py: public by default, and
behind the API key with ``STORYWIRE_PUBLIC_READS=false`` (Prometheus sends it
with ``authorization: {credentials: <key>}`` in its scrape config).

Articles accepted are counted where they are accepted (service/articles.py),
once their task is queued: an accept undone because the queue was down does not count.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import redis
from flask import Blueprint, Flask, Response, current_app, request
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from storyengine.metrics import MetricsSnapshot
from storyengine.phases import PHASES
from storyengine.store import connect
from workers import names
from workers.config import same_redis

from .errors import ApiError
from .health import worker_stale_seconds
from .openapi import Reply, documented
from .runtime import Runtime

log = logging.getLogger("storywire.api")
bp = Blueprint("metrics", __name__)

_COUNTER_HELP = {
    "articles_accepted": "New articles the API stored and queued (a resend of a known article is not counted).",
    "articles_decided": "Articles decided (duplicate or not, which story); a redelivered task counts nothing.",
    "duplicates": "Decided articles that are copies of an earlier (canonical) article.",
    "stories_opened": "Decided articles that opened a new story.",
    "stories_merged": "Stories the repair pass merged into another story.",
    "articles_failed": "Articles marked failed (invalid, or an internal error while processing).",
}

# The waiting article with the lowest queued score (the longest since its task
# was sent: the head of the backlog, or one whose task was lost), and its
# receipt time: [score, received_ts or nil], or [] when nothing waits. A
# script rather than SORT ... GET pattern, which Redis before 7.0 refuses on
# a Cluster node; the article's key is built from the prefix (ARGV[1]), so it
# is in the queued set's slot. HGET through pcall: a record that is not a
# hash reads as no receipt time, as SORT's GET did.
OLDEST_QUEUED = """
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return {} end
local received = redis.pcall('HGET', ARGV[1] .. head[1], 'received_ts')
if type(received) ~= 'string' then received = false end
return {head[2], received}
"""


def broker_queue_keys(queue: str = names.QUEUE) -> list[str]:
    """The Redis lists a Celery queue lives in on a Redis broker: kombu keeps
    priority 0 (every message Storywire sends) under the queue's own name and
    each other priority step in a list of its own."""
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]


class StorywireCollector(Collector):
    """Reads the deployment's figures from Redis on every scrape."""

    def __init__(self, rt: Runtime, redis_url: str, broker_url: str, worker_stale_seconds: int = 30) -> None:
        self.rt = rt
        self.worker_stale_seconds = worker_stale_seconds
        # The broker is usually the store's own server and database: then one pipeline reads everything.
        self._same_server = same_redis(broker_url or redis_url, redis_url)
        self._broker: redis.Redis | None = None
        if not self._same_server and broker_url.startswith(("redis://", "rediss://", "unix://")):
            self._broker = connect(broker_url)

    def collect(self) -> Iterator[Metric]:
        store = self.rt.store
        queue_keys = broker_queue_keys(self.rt.queue)
        now = time.time()
        with store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(store.keys.metrics)
            pipe.zcard(store.keys.queued)
            pipe.zcount(store.keys.workers, now - self.worker_stale_seconds, "+inf")
            # EVAL, not EVALSHA: a script in a pipeline would cost a SCRIPT EXISTS round trip per scrape.
            pipe.eval(OLDEST_QUEUED, 1, store.keys.queued, store.keys.article(""))
            if self._same_server:
                for key in queue_keys:
                    pipe.llen(key)
            raw, queued, workers_seen, oldest, *lengths = pipe.execute()
        if self._broker is not None:
            try:
                with self._broker.pipeline(transaction=False) as pipe:
                    for key in queue_keys:
                        pipe.llen(key)
                    lengths = pipe.execute()
            except redis.RedisError as exc:
                # The counts live in the store, which answered: serve them, without the queue's length.
                log.warning("metrics: the broker did not answer, queue length left out: %s", exc)
        snapshot = MetricsSnapshot.from_hash(raw)
        for name, value in snapshot.counters.items():
            yield CounterMetricFamily(f"storywire_{name}", _COUNTER_HELP[name], value=value)
        yield HistogramMetricFamily(
            "storywire_processing_latency_seconds",
            "Seconds from an article's receipt by the API to its decision by a worker.",
            buckets=[("+Inf" if math.isinf(bound) else f"{bound:g}", count)
                     for bound, count in snapshot.latency_buckets],
            sum_value=snapshot.latency_sum)
        engine = CounterMetricFamily(
            "storywire_engine_seconds",
            f"Seconds worker processes spent deciding articles, by phase ({', '.join(PHASES)}; see "
            "storyengine/phases.py): only load and featurise run outside the assignment lock, and lock, the wait "
            "for it, grows when workers contend.",
            labels=["phase"])
        for phase, seconds in snapshot.engine_seconds.items():
            engine.add_metric([phase], seconds)
        yield engine
        yield GaugeMetricFamily("storywire_articles_queued",
                                "Articles accepted and not yet processed (waiting, or being decided now).",
                                value=queued)
        yield GaugeMetricFamily(
            "storywire_oldest_queued_age_seconds",
            "Seconds since the API received the article that has waited longest since its task was sent (the "
            "lowest score in the queued set); 0 when nothing waits. Growing: workers fall behind, or stopped.",
            value=_oldest_age(oldest, now))
        yield GaugeMetricFamily(
            "storywire_workers_seen",
            f"Workers heard from (a heartbeat in Redis) within the last {self.worker_stale_seconds} s "
            "(STORYWIRE_WORKER_STALE_SECONDS); 0 makes /readyz answer 503.",
            value=workers_seen)
        if lengths:
            queue = GaugeMetricFamily("storywire_queue_messages",
                                      "Tasks waiting in the broker queue (one per post: a batch is one task).",
                                      labels=["queue"])
            queue.add_metric([self.rt.queue], sum(lengths))
            yield queue


def _oldest_age(oldest: list, now: float) -> float:
    """Age of the oldest waiting article (OLDEST_QUEUED's [score, received_ts]):
    by its receipt time, or by its queued score if the record has none (read
    between its accept and a retention pass)."""
    if not oldest:
        return 0.0
    score, received = oldest
    try:
        since = float(received) if received else float(score)
    except (TypeError, ValueError):
        since = float(score)
    return max(0.0, now - since)


def registry_for(app: Flask) -> CollectorRegistry:
    registry = app.extensions.get("storywire_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StorywireCollector(app.extensions["storywire"], app.config["REDIS_URL"],
                                             app.config["CELERY_BROKER_URL"], worker_stale_seconds(app)))
        app.extensions["storywire_metrics"] = registry
    return registry


@documented(summary="Prometheus metrics for the whole deployment", tag="metrics",
            description="Counters (articles accepted, decided, duplicates, stories opened and merged, failed; the "
                        "workers' seconds by phase of deciding), the processing latency histogram, the queue's "
                        "depth, the oldest waiting article's age and the live workers, read from Redis: every API "
                        "process answers with the same figures. Prometheus text format, or OpenMetrics when the "
                        "Accept header asks for application/openmetrics-text.",
            replies={200: Reply("The metrics", media_type=("text/plain", "application/openmetrics-text"))},
            errors={406: "The Accept header names a metrics format version that cannot be read "
                                    "(not_acceptable)", 503: None})
@bp.get("/metrics")
def metrics():
    try:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    except (TypeError, ValueError):  # prometheus_client fails on some malformed versions (version=abc)
        raise ApiError(406, "not_acceptable", "The Accept header names a metrics format that cannot be read; send "
                       "Accept: text/plain (Prometheus text format) or application/openmetrics-text; "
                       "version=1.0.0, or leave it out.") from None
    return Response(encoder(registry_for(current_app)), status=200, content_type=content_type)
