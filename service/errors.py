"""One JSON error envelope for every error the API returns.

    {"error": {"status": 422, "code": "invalid_article",
               "message": "what went wrong and what to do",
               "details": [{"field": "title", "problem": "..."}]}}
"""
from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from storyengine.errors import Gone, InvalidArticle, InvalidCursor, NotFound, QueueFull, StoreUnavailable
from storyengine.store import CLUSTER_BUSY, SLOT_ELSEWHERE, out_of_memory

log = logging.getLogger("storywire.api")

RETRY_AFTER_SECONDS = 5
# Past the waiting limit the workers need time to catch up, not a moment.
QUEUE_FULL_RETRY_AFTER_SECONDS = 30
# A full store frees memory only when retention runs or an operator acts.
STORE_FULL_RETRY_AFTER_SECONDS = 30


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers or {}


def envelope(status: int, code: str, message: str, details: list | None = None) -> dict:
    body = {"status": status, "code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(error: ApiError):
    response = jsonify(envelope(error.status, error.code, error.message, error.details))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def validation_details(exc: ValidationError, prefix: str = "") -> list[dict]:
    details = []
    for e in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in e["loc"])
        details.append({"field": f"{prefix}{path}" if path else prefix.rstrip(".") or "body",
                        "problem": e["msg"]})
    return details


def invalid_article(exc: ValidationError | InvalidArticle, prefix: str = "") -> ApiError:
    if isinstance(exc, ValidationError):
        details = validation_details(exc, prefix)
    else:
        details = [{"field": prefix.rstrip(".") or "body", "problem": str(exc)}]
    fields = ", ".join(d["field"] for d in details)
    return ApiError(422, "invalid_article", f"The article is not valid ({fields}); fix the listed fields and "
                    "send it again. Required: source, url, and a title or a body (or both); optional: published_at, id, "
                    "language.",
                    details)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(ApiError(413, "body_too_large",
                                       f"The request body exceeds {limit} bytes; send fewer or smaller articles."))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            404: "No such resource; see the API's routes in the README.",
            405: f"{exc.code} method not allowed on this route; see the README for the allowed methods.",
        }
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(ApiError(exc.code or 500, code, messages.get(exc.code, exc.description or code)))
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(NotFound)
    def not_found(exc):
        if isinstance(exc, Gone):
            return error_response(ApiError(410, "gone", f"{exc}. It is not coming back; send it again only if it "
                                           "is inside the retention window."))
        return error_response(ApiError(404, "not_found", f"{exc}; check the id."))

    @app.errorhandler(QueueFull)
    def queue_full(exc):
        return error_response(ApiError(503, "queue_full", f"{exc}; nothing was stored. Retry after Retry-After "
                                       "seconds, when the workers have caught up (STORYWIRE_MAX_WAITING sets the "
                                       "limit).", headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)}))

    @app.errorhandler(redis.ResponseError)
    def store_refused(exc):
        if out_of_memory(exc):
            log.error("store out of memory: %s", exc)
            return error_response(ApiError(503, "store_full", "The store is out of memory and refuses writes; "
                                           "nothing was stored. Retry after Retry-After seconds; operators: raise "
                                           "Redis maxmemory or shorten STORYWIRE_RETENTION_DAYS.",
                                           headers={"Retry-After": str(STORE_FULL_RETRY_AFTER_SECONDS)}))
        return internal(exc)

    @app.errorhandler(InvalidCursor)
    def bad_cursor(exc):
        return error_response(ApiError(400, "invalid_cursor", f"{exc}. Use next_cursor exactly as a previous "
                                       "page returned it, or leave cursor out to start from the first page."))

    # Redis Cluster: the node does not serve this deployment's slot (MOVED, or
    # ASK while the slot migrates away), or the Cluster cannot serve it now
    # (CLUSTERDOWN, MASTERDOWN, TRYAGAIN: a failover or resharding). Not a 500:
    # nothing is wrong with the request, and a post stores in one atomic step,
    # so a refused one stored nothing.
    def slot_elsewhere(exc):
        log.error("the store's node does not serve this deployment's slot (check REDIS_URL): %s %s",
                  type(exc).__name__, exc)
        return error_response(ApiError(503, "unavailable", "The store's Redis Cluster node does not serve this "
                                       "deployment's keys: REDIS_URL names another shard, or the slot moved or is "
                                       "moving. Retry after Retry-After seconds (sending the same articles again is "
                                       "safe). Operators: point REDIS_URL at the shard that owns the hash tag of "
                                       "STORYWIRE_KEY_PREFIX (python -m embedded_redis.cluster NODE_URL PREFIX "
                                       "prints it; docs/scaling.md, Step 3) and restart the partition's processes.",
                                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))

    def cluster_busy(exc):
        log.warning("the store's cluster cannot serve now: %s %s", type(exc).__name__, exc)
        return error_response(ApiError(503, "unavailable", "The store's Redis Cluster cannot serve this deployment's "
                                       "keys now (down, failing over or resharding). Retry after Retry-After "
                                       "seconds (sending the same articles again is safe).",
                                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))

    for kind in SLOT_ELSEWHERE:
        app.register_error_handler(kind, slot_elsewhere)
    for kind in CLUSTER_BUSY:
        app.register_error_handler(kind, cluster_busy)

    @app.errorhandler(StoreUnavailable)
    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def unavailable(exc):
        log.warning("store unavailable: %s", exc)
        return error_response(ApiError(503, "unavailable", "The store is unavailable; retry after a few seconds.",
                                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))

    @app.errorhandler(Exception)
    def internal(exc):
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", "Something went wrong on our side; "
                                       "retry later, and report it if it persists."))
