"""GET /healthz (the process is up) and GET /readyz (Redis and the broker
answer, and a worker is alive to decide what is posted).

For an orchestrator: /healthz is the liveness probe (restart the API process
when it fails), /readyz the readiness probe (take the process out of load
balancing while it fails). A worker proves it is alive with a heartbeat in
Redis every few seconds (workers/heartbeat.py); with none heard within
STORYWIRE_WORKER_STALE_SECONDS (30), /readyz answers 503, saying so.
"""
from __future__ import annotations

import logging
import os
import time

import redis
from flask import Blueprint, Flask, current_app

from storyengine.errors import ConfigError, StoreUnavailable
from workers.heartbeat import HEARTBEAT_INTERVAL

from . import response_schemas as answers
from .errors import ApiError
from .openapi import Reply, documented
from .runtime import runtime

bp = Blueprint("health", __name__)
log = logging.getLogger("storywire.api")

WORKER_STALE_DEFAULT = 30
_STALE_VAR = "STORYWIRE_WORKER_STALE_SECONDS"


def worker_stale_seconds(app: Flask) -> int:
    """STORYWIRE_WORKER_STALE_SECONDS: the app's config (a test's mapping), else
    the environment, else 30. At least two heartbeat intervals, so one late
    heartbeat does not make the API unready. Read once per app."""
    if "WORKER_STALE_SECONDS" not in app.config:
        raw = str(app.config.get(_STALE_VAR) or os.environ.get(_STALE_VAR) or WORKER_STALE_DEFAULT)
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{_STALE_VAR}={raw[:40]!r} is not an integer; fix or unset it") from None
        lowest = int(2 * HEARTBEAT_INTERVAL)
        if value < lowest:
            raise ConfigError(f"{_STALE_VAR} must be at least {lowest} (seconds; workers beat every "
                              f"{HEARTBEAT_INTERVAL:g} s), got {raw!r}")
        app.config["WORKER_STALE_SECONDS"] = value
    return app.config["WORKER_STALE_SECONDS"]


# A bad value stops create_app, as every other setting does.
bp.record_once(lambda state: worker_stale_seconds(state.app))


def store_full(memory: dict) -> bool:
    """Redis is at its maxmemory (0: no limit): with the noeviction policy it then refuses every write."""
    limit = int(memory.get("maxmemory") or 0)
    return bool(limit) and int(memory.get("used_memory") or 0) >= limit


@documented(summary="The process is up", tag="health", replies={200: Reply("Up", answers.Health)})
@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@documented(summary="Redis and the broker answer, and a worker is alive", tag="health",
            description="The readiness probe: take the process out of load balancing while it fails. `checks` "
                        "says what was checked and holds the backlog (`queued`: articles waiting to be decided) "
                        "and the workers heard from within STORYWIRE_WORKER_STALE_SECONDS (`workers_seen`).",
            replies={200: Reply("Ready", answers.Readiness)},
            errors={503: "Redis or the broker is unreachable, or no worker has been heard from within "
                         "STORYWIRE_WORKER_STALE_SECONDS (not_ready; the message says which): retry after "
                         "Retry-After seconds"})
@bp.get("/readyz")
def readyz():
    rt = runtime()
    checks: dict = {}
    problems = []
    try:
        rt.store.ping()
        checks["redis"] = "ok"
    except StoreUnavailable as exc:
        # The detail goes to the log, not to an unauthenticated caller: it can
        # name hosts, and a broker URL can carry a password.
        log.warning("readiness: redis unreachable: %s", exc)
        checks["redis"] = "unreachable"
        problems.append("redis unreachable")
    try:
        with rt.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: broker unreachable: %s", type(exc).__name__)
        checks["broker"] = "unreachable"
        problems.append("broker unreachable")
    stale = worker_stale_seconds(current_app)
    if checks["redis"] == "ok":
        store = rt.store
        try:
            with store.redis.pipeline(transaction=False) as pipe:
                pipe.zcount(store.keys.workers, time.time() - stale, "+inf")
                pipe.zcard(store.keys.queued)
                pipe.info("memory")
                seen, queued, memory = pipe.execute()
        except redis.RedisError as exc:
            log.warning("readiness: redis failed mid-check: %s", exc)
            checks["redis"] = "unreachable"
            problems.append("redis unreachable")
        else:
            checks.update(workers="ok" if seen else "none_seen", workers_seen=seen, queued=queued,
                          memory="full" if store_full(memory) else "ok")
            if checks["memory"] == "full":
                # Redis refuses writes at maxmemory: nothing can be accepted or decided until it has room.
                log.error("readiness: redis is at its maxmemory (%s bytes)", memory.get("maxmemory"))
                problems.append("redis is out of memory and refuses writes (raise maxmemory, or shorten "
                                "STORYWIRE_RETENTION_DAYS)")
            if not seen:
                log.warning("readiness: no worker heard from within %d s (%d articles waiting)", stale, queued)
    if not problems and checks.get("workers") == "ok":
        return {"status": "ready", "checks": checks}
    parts = [f"Not ready: {'; '.join(problems)}."] if problems else []
    if checks.get("workers") == "none_seen":
        parts.append(f"No worker has been heard from within {stale} s (each writes a heartbeat to Redis every "
                     f"{HEARTBEAT_INTERVAL:g} s), so nothing would decide the articles posted; "
                     f"{checks['queued']} are waiting. Start a worker, or see why it stopped.")
    raise ApiError(503, "not_ready", " ".join(parts) + " Retry after a few seconds.", headers={"Retry-After": "5"})
