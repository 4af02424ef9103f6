"""GET /healthz (the process is up) and GET /readyz (Redis and the broker answer)."""
from __future__ import annotations

import logging

from flask import Blueprint

from storyengine.errors import StoreUnavailable

from . import response_schemas as answers
from .errors import ApiError
from .openapi import Reply, documented
from .runtime import runtime

bp = Blueprint("health", __name__)
log = logging.getLogger("storywire.api")


@documented(summary="The process is up", tag="health", replies={200: Reply("Up", answers.Health)})
@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@documented(summary="Redis and the broker answer", tag="health", replies={200: Reply("Ready", answers.Readiness)},
            errors={503: "Redis or the broker is unreachable (not_ready): retry after Retry-After seconds"})
@bp.get("/readyz")
def readyz():
    rt = runtime()
    checks = {}
    try:
        rt.store.ping()
        checks["redis"] = "ok"
    except StoreUnavailable as exc:
        # The detail goes to the log, not to an unauthenticated caller: it can
        # name hosts, and a broker URL can carry a password.
        log.warning("readiness: redis unreachable: %s", exc)
        checks["redis"] = "unreachable"
    try:
        with rt.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: broker unreachable: %s", type(exc).__name__)
        checks["broker"] = "unreachable"
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    raise ApiError(503, "not_ready", "A dependency is unreachable: " + "; ".join(
        f"{k} {v}" for k, v in checks.items() if v != "ok") + ". Retry after a few seconds.",
        headers={"Retry-After": "5"})
