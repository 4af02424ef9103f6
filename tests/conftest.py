"""Shared fixtures: a real Redis server on a free port (or STORYWIRE_TEST_REDIS_URL),
a fresh key prefix per test, the Flask app built from a test config, and a
real Celery worker process for end-to-end tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from storyengine.embedded_redis import EmbeddedRedis
from storyengine.keys import Keys
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

ROOT = Path(__file__).resolve().parent.parent
API_DB = 0   # API tests enqueue here; no worker consumes it
E2E_DB = 1   # the end-to-end worker's broker and store


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory):
    """A Redis server for the whole run: ours on a free port, or the one in
    STORYWIRE_TEST_REDIS_URL (only databases 0 and 1 of it are used)."""
    given = os.environ.get("STORYWIRE_TEST_REDIS_URL")
    if given:
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


def keys_under(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key of the deployment with this key_prefix (a setting, ``sw``) or
    key tag (``Keys.prefix``, ``{sw}``): the keys carry the prefix as a hash tag."""
    tag = prefix if prefix.startswith("{") and prefix.endswith("}") else Keys(prefix).prefix
    return sorted(client.scan_iter(match=f"{tag}:*", count=1000))


def snapshot(client: redis.Redis, prefix: str) -> dict:
    """Every key under the prefix with its value, compared by content (DUMP's
    byte order of a hash is not stable, so it cannot be compared)."""
    out = {}
    for key in keys_under(client, prefix):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = client.smembers(key)
        else:
            out[key] = client.get(key)
    return out


@pytest.fixture
def app(redis_url, settings):
    from service import create_app
    return create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                       "TESTING": True})


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
    sys.path.insert(0, str(ROOT))
    from scripts.run import role_command
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(role_command("worker", worker_env), cwd=ROOT, env=worker_env,
                                stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    # Celery logs "<hostname> ready." once it consumes from the queue.
    while b" ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"celery worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def e2e_app(worker_env, celery_worker):
    from service import create_app
    settings = Settings.from_env(worker_env)
    app = create_app({"REDIS_URL": worker_env["REDIS_URL"], "CELERY_BROKER_URL": worker_env["REDIS_URL"],
                      "ENGINE_SETTINGS": settings, "TESTING": True})
    store = app.extensions["storywire"].store
    store.clear()
    yield app
    store.clear()
