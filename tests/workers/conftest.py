"""Fixtures of the worker tests: a deployment of real processes of the test's
own, and the shared dev stream."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedded_redis.server import EmbeddedRedis
from tests.shared_data import DEV_STREAM, require_shared
from tests.workers.process_stack import PREFIX, ROOT, Stack


@pytest.fixture
def stack(tmp_path):
    """Its own redis-server with the append-only file on (as the project ships
    it), and an environment for roles on it under one key prefix."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    env = dict(os.environ, REDIS_URL=server.url, CELERY_BROKER_URL=server.url, STORYWIRE_KEY_PREFIX=PREFIX,
               PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
    env.pop("STORYWIRE_API_KEY", None)  # writes open, as in the other end-to-end tests
    s = Stack(tmp_path, server, env)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def dev_stream() -> Path:
    """../shared/eval/dev.jsonl, or a loud skip (a failure where STORYWIRE_REQUIRE_SHARED=1).
    Session-scoped, so it is decided before a module's processes are started."""
    return require_shared(DEV_STREAM)
