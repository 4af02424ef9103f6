"""The run's Redis server and what it reports about itself (memory, CPU)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import redis

from embedded_redis.server import EmbeddedRedis


@contextlib.contextmanager
def bench_redis() -> Iterator[tuple[str, bool]]:
    """(url, embedded): REDIS_URL if set, else a private server without an
    append-only file (the bench measures the engine, not the disk)."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given, False
        return
    with tempfile.TemporaryDirectory(prefix="storywire-bench-redis-") as tmp, \
            EmbeddedRedis(tmp, appendonly=False) as server:
        yield server.url, True


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU time the Redis server has used (user + system): what it spends per article is its share of the work."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
