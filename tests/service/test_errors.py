"""Errors the whole API shares (service/errors.py) and the headers every answer
carries (service/__init__.py), through the real Flask app over a real Redis.

Out of memory: the session's Redis is given ``maxmemory`` of one byte with
``noeviction`` (and its own settings back afterwards), so it refuses every
write as a full production Redis would: a plain command with an
OutOfMemoryError, a write inside a script with an error quoting ``OOM``.
"""
from __future__ import annotations

import pytest

from service.errors import STORE_FULL_RETRY_AFTER_SECONDS
from service.runtime import runtime
from tests.helpers import build_app, snapshot
from tests.service.envelope import assert_error
from tests.service.posting import article, broker_length


@pytest.fixture
def store_out_of_memory(redis_client):
    """The session's Redis at its maxmemory: every write refused until the test ends."""
    saved = {**redis_client.config_get("maxmemory"), **redis_client.config_get("maxmemory-policy")}
    redis_client.config_set("maxmemory-policy", "noeviction")  # first: an evicting policy would empty the server
    redis_client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        redis_client.config_set("maxmemory", saved["maxmemory"])
        redis_client.config_set("maxmemory-policy", saved["maxmemory-policy"])


def assert_store_full(resp) -> None:
    err = assert_error(resp, 503, "store_full")
    assert resp.headers["Retry-After"] == str(STORE_FULL_RETRY_AFTER_SECONDS)
    for words in ("out of memory", "nothing was stored", "retry", "maxmemory", "STORYWIRE_RETENTION_DAYS"):
        assert words.lower() in err["message"].lower(), err["message"]


@pytest.fixture
def app_with_plain_writes(redis_url, settings):
    """The real app with one more route, which writes with a plain command or a
    pipeline (no view of the API writes outside a script today, but any may)."""
    app = build_app(redis_url, settings)

    def write(how: str):
        store = runtime().store
        key = f"{store.keys.prefix}:probe"
        if how == "pipeline":
            with store.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, "x").hset(f"{key}:hash", "field", "x").execute()
        else:
            store.redis.set(key, "x")
        return {"written": True}
    app.add_url_rule("/test-only/write/<how>", "test_only_write", write, methods=["POST"])

    def crash():
        raise RuntimeError("a bug")
    app.add_url_rule("/test-only/crash", "test_only_crash", crash)
    return app


# ---------------------------------------------------------------- Redis out of memory
@pytest.mark.usefixtures("store_out_of_memory")
@pytest.mark.parametrize("path,body", [("/v1/articles", article(1)),
                                       ("/v1/articles/batch", {"articles": [article(2), article(3)]})])
def test_a_post_to_a_full_store_is_a_503_and_stores_nothing(client, store, redis_client, settings, path, body):
    before, queued = snapshot(redis_client, settings.key_prefix), broker_length(store)
    assert_store_full(client.post(path, json=body))
    assert snapshot(redis_client, settings.key_prefix) == before  # no article, ref, queue entry or count
    assert broker_length(store) == queued  # and no task


@pytest.mark.usefixtures("store_out_of_memory")
@pytest.mark.parametrize("how", ["command", "pipeline"])
def test_a_plain_write_refused_for_memory_is_a_503_not_a_500(app_with_plain_writes, store, redis_client, how):
    # A plain command (or one in a pipeline) is refused with an OutOfMemoryError, whose text
    # has lost the OOM code: once answered 500 internal_error.
    assert_store_full(app_with_plain_writes.test_client().post(f"/test-only/write/{how}"))
    assert redis_client.exists(f"{store.keys.prefix}:probe", f"{store.keys.prefix}:probe:hash") == 0


@pytest.mark.usefixtures("store_out_of_memory")
def test_reads_go_on_while_the_store_is_full(client, store):
    assert client.get("/v1/stories").status_code == 200


# ---------------------------------------------------------------- headers on every answer
def assert_no_sniffing(resp, status: int) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("method,path,body,status", [
    ("GET", "/v1/stories", None, 200),
    ("GET", "/", None, 200),
    ("GET", "/healthz", None, 200),
    ("GET", "/openapi.json", None, 200),
    ("POST", "/v1/articles", article(5), 202),
    ("GET", "/v1/stories?limit=abc", None, 400),
    ("GET", "/v1/stories/st_0123456789abcdef", None, 404),
    ("GET", "/no/such/route", None, 404),
    ("DELETE", "/v1/stories", None, 405),
    ("POST", "/v1/articles", {"source": "x"}, 422),
])
def test_every_answer_says_nosniff(client, store, method, path, body, status):
    assert_no_sniffing(client.open(path, method=method, json=body), status)


def test_a_401_says_nosniff(redis_url, settings):
    private = build_app(redis_url, settings, STORYWIRE_API_KEY="k" * 32).test_client()
    assert_no_sniffing(private.post("/v1/articles", json=article(7)), 401)


@pytest.mark.usefixtures("store_out_of_memory")
def test_a_503_for_a_full_store_says_nosniff(client, store):
    assert_no_sniffing(client.post("/v1/articles", json=article(6)), 503)


def test_a_503_for_an_unreachable_store_says_nosniff(settings, closed_port):
    dead = build_app(f"redis://127.0.0.1:{closed_port}/0", settings).test_client()
    assert_no_sniffing(dead.get("/v1/stories"), 503)


def test_a_500_says_nosniff(app_with_plain_writes):
    resp = app_with_plain_writes.test_client().get("/test-only/crash")
    assert_no_sniffing(resp, 500)
    assert resp.get_json()["error"]["code"] == "internal_error"
