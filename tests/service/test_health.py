"""Health and readiness, a dead Redis or broker, and the app-wide 404/405 answers."""
from __future__ import annotations

import time

import pytest

from tests.helpers import build_app, keys_under
from tests.service.envelope import ACTION_WORDS, assert_error  # noqa: F401
from workers import heartbeat

QUICK_SECONDS = 8.0

ARTICLE = {"source": "example-news.com", "url": "https://example-news.com/a", "title": "Harbour reopens",
           "body": "The harbour authority reopened the northern pier on Monday."}



def assert_retry_after(resp) -> None:
    assert int(resp.headers["Retry-After"]) > 0


@pytest.fixture
def dead_app(closed_port, settings):
    url = f"redis://127.0.0.1:{closed_port}/0"
    return build_app(url, settings)


@pytest.fixture
def dead_broker_app(closed_port, redis_url, settings):
    """Redis answers, the broker does not."""
    return build_app(redis_url, settings, CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port}/0")


def timed(call):
    start = time.monotonic()
    resp = call()
    return resp, time.monotonic() - start


# ============================================================ health
def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_healthz_answers_without_redis(dead_app):
    assert dead_app.test_client().get("/healthz").status_code == 200


def test_readyz(client, store):
    heartbeat.record(store.redis, store.keys, "storywire-0a1b2c@test")  # a worker heard from just now
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "checks": {"redis": "ok", "broker": "ok", "workers": "ok",
                                                             "workers_seen": 1, "queued": 0, "memory": "ok"}}


def test_readyz_with_dead_redis_and_broker(dead_app):
    resp, elapsed = timed(lambda: dead_app.test_client().get("/readyz"))
    assert elapsed < QUICK_SECONDS
    err = assert_error(resp, 503, "not_ready")
    assert_retry_after(resp)
    assert "redis" in err["message"] and "broker" in err["message"]


def test_readyz_with_only_the_broker_dead(dead_broker_app):
    resp, elapsed = timed(lambda: dead_broker_app.test_client().get("/readyz"))
    assert elapsed < QUICK_SECONDS
    err = assert_error(resp, 503, "not_ready")
    assert_retry_after(resp)
    assert "broker" in err["message"] and "redis unreachable" not in err["message"]


# ============================================================ a dead store
def test_post_article_with_dead_redis(dead_app):
    resp, elapsed = timed(lambda: dead_app.test_client().post("/v1/articles", json=ARTICLE))
    assert elapsed < QUICK_SECONDS
    assert_error(resp, 503, "unavailable")
    assert_retry_after(resp)


def test_post_batch_with_dead_redis(dead_app):
    resp, elapsed = timed(lambda: dead_app.test_client().post("/v1/articles/batch", json={"articles": [ARTICLE]}))
    assert elapsed < QUICK_SECONDS
    assert_error(resp, 503, "unavailable")
    assert_retry_after(resp)


@pytest.mark.parametrize("path", ["/v1/articles/a_00000000000000000000", "/v1/stories",
                                  "/v1/stories/st_0123456789abcdef"])
def test_reads_with_dead_redis(dead_app, path):
    resp, elapsed = timed(lambda: dead_app.test_client().get(path))
    assert elapsed < QUICK_SECONDS
    assert_error(resp, 503, "unavailable")
    assert_retry_after(resp)


def test_invalid_article_with_dead_redis_is_still_a_422(dead_app):
    resp = dead_app.test_client().post("/v1/articles", json={"source": "x"})
    assert_error(resp, 422, "invalid_article")


def test_post_article_with_dead_broker_stores_nothing(dead_broker_app, redis_client, settings):
    resp, elapsed = timed(lambda: dead_broker_app.test_client().post("/v1/articles", json=ARTICLE))
    assert elapsed < QUICK_SECONDS
    assert_error(resp, 503, "queue_unavailable")
    assert_retry_after(resp)
    assert keys_under(redis_client, settings.key_prefix) == []


def test_post_batch_with_dead_broker_stores_nothing(dead_broker_app, redis_client, settings):
    articles = [dict(ARTICLE, url=f"https://example-news.com/{i}") for i in range(3)]
    resp = dead_broker_app.test_client().post("/v1/articles/batch", json={"articles": articles})
    assert_error(resp, 503, "queue_unavailable")
    assert keys_under(redis_client, settings.key_prefix) == []


def test_retry_after_the_broker_returns_accepts_the_article(dead_broker_app, client, redis_client, settings):
    assert dead_broker_app.test_client().post("/v1/articles", json=ARTICLE).status_code == 503
    resp = client.post("/v1/articles", json=ARTICLE)
    assert resp.status_code == 202
    assert resp.get_json()["created"] is True


# ============================================================ routes
@pytest.mark.parametrize("path", ["/nothing-here", "/v1", "/v2/articles", "/v1/story", "/readyz/extra",
                                  "/v1/articles/a/b"])
def test_unknown_route(client, path):
    err = assert_error(client.get(path), 404, "not_found")
    assert "README" in err["message"]


def test_unknown_route_post(client, redis_client, settings):
    assert_error(client.post("/v1/article", json=ARTICLE), 404, "not_found")
    assert keys_under(redis_client, settings.key_prefix) == []


@pytest.mark.parametrize("method,path,allowed", [
    ("get", "/v1/articles", {"POST"}),
    ("get", "/v1/articles/batch", None),  # /batch also matches GET /v1/articles/<id>: an unknown id
    ("put", "/v1/articles/a_1", {"GET"}),
    ("delete", "/v1/articles/a_1", {"GET"}),
    ("post", "/v1/stories", {"GET"}),
    ("delete", "/v1/stories/st_0123456789abcdef", {"GET"}),
    ("post", "/healthz", {"GET"}),
    ("put", "/readyz", {"GET"}),
    ("patch", "/v1/articles/batch", {"POST"}),
])
def test_wrong_method(client, redis_client, settings, method, path, allowed):
    resp = getattr(client, method)(path, json=ARTICLE)
    if allowed is None:
        assert_error(resp, 404, "not_found")
        return
    err = assert_error(resp, 405, "method_not_allowed")
    assert "method" in err["message"]
    listed = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= listed
    assert keys_under(redis_client, settings.key_prefix) == []
