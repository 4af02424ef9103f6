"""Shared fixtures: a real Redis server on a free port (or STORYWIRE_TEST_REDIS_URL),
a fresh key prefix per test, the Flask app built from a test config, and a
real Celery worker process for end-to-end tests."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded_redis.server import EmbeddedRedis
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from tests.helpers import build_app, log_says, start_role

ROOT = Path(__file__).resolve().parent.parent
API_DB = 0   # API tests enqueue here; no worker consumes it
E2E_DB = 1   # the end-to-end worker's broker and store


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory):
    """A Redis server for the whole run: ours on a free port, or the one in
    STORYWIRE_TEST_REDIS_URL (only databases 0 and 1 of it are used)."""
    given = os.environ.get("STORYWIRE_TEST_REDIS_URL")
    if given:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Test processes would share its queues and its end-to-end worker's keys.
            pytest.fail("STORYWIRE_TEST_REDIS_URL is one server for every test process: run the tests in one "
                        "(make test sets TEST_PROCESSES=0 with it; with pytest alone, add -n 0)", pytrace=False)
        yield given.rstrip("/")  # redis://host:port, without a database number
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield f"redis://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_base_url):
    return f"{redis_base_url}/{API_DB}"


@pytest.fixture
def settings():
    # A fresh prefix isolates each test's keys without flushing anyone's data.
    return Settings(key_prefix=f"sw-test-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def redis_client(redis_url):
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(redis_client, settings):
    s = RedisStore(redis_client, settings)
    yield s
    s.clear()


@pytest.fixture
def fresh_store(redis_client, settings):
    """Makes stores on further fresh prefixes of the same Redis, with settings
    changed as asked (``fresh_store("tag", replica_records=60)``); cleared afterwards."""
    made = []

    def make(tag: str, **changes) -> RedisStore:
        store = RedisStore(redis_client, Settings(key_prefix=f"{settings.key_prefix}-{tag}", **changes))
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()


@pytest.fixture
def app(redis_url, settings):
    return build_app(redis_url, settings)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but never listening: connections to it are refused, and nobody else can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def no_auth_in_environment(monkeypatch) -> None:
    """create_app also reads os.environ: keep the developer's shell out of a test
    (use with ``pytestmark = pytest.mark.usefixtures("no_auth_in_environment")``)."""
    for name in ("STORYWIRE_API_KEY", "STORYWIRE_PUBLIC_READS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(app):
    return app.test_client()


# ---------------------------------------------------------------- a real worker
@pytest.fixture(scope="session")
def worker_env(redis_base_url):
    url = f"{redis_base_url}/{E2E_DB}"
    env = dict(os.environ, REDIS_URL=url, CELERY_BROKER_URL=url, STORYWIRE_KEY_PREFIX="sw-e2e",
               PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
    return env


@pytest.fixture(scope="session")
def celery_worker(worker_env, tmp_path_factory):
    """One real `celery worker` process, started with the same command `make run` uses.
    One process, so articles are decided in the order they were posted (the
    race between several workers is tested on its own)."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    # Celery logs "<hostname> ready." once it consumes from the queue.
    worker = start_role("worker", worker_env, log, ready=log_says(" ready."))
    yield worker.proc
    worker.stop()


@pytest.fixture
def e2e_app(worker_env, celery_worker):
    app = build_app(worker_env["REDIS_URL"], Settings.from_env(worker_env))
    store = app.extensions["storywire"].store
    store.clear()
    yield app
    store.clear()
