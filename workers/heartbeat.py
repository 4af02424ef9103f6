"""Worker heartbeats in the store, so the API can tell whether anyone decides articles.

Every worker's main process writes its node name (the name Flower shows,
``storywire-<random>@<host>``: scripts/run.py) with the time into the
``{p}:workers`` sorted set every HEARTBEAT_INTERVAL seconds, from a timer in
the worker's own event loop (a consumer bootstep), so a heartbeat means the
process that fetches tasks is running, not merely that a thread is. Entries
older than FORGET_AFTER seconds are pruned on every write, and a worker that
shuts down cleanly removes its own at once.

Read by GET /readyz (503 when no worker was seen within
STORYWIRE_WORKER_STALE_SECONDS) and GET /metrics (``storywire_workers_seen``).
"""
from __future__ import annotations

import logging
import time

import redis
from celery import bootsteps

from storyengine.keys import Keys
from storyengine.store import connect

log = logging.getLogger("storywire.worker")

HEARTBEAT_INTERVAL = 5.0   # seconds between two heartbeats of one worker
FORGET_AFTER = 300.0       # seconds after which a silent worker's entry is pruned
# A heartbeat runs in the worker's event loop: a Redis that does not answer must
# cost it a second, not the store's usual five.
_TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def record(client: redis.Redis, keys: Keys, node: str, now: float | None = None) -> None:
    """Say that ``node`` is alive now, and prune entries silent for FORGET_AFTER seconds (one round trip)."""
    now = time.time() if now is None else now
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.workers, {node: now})
        pipe.zremrangebyscore(keys.workers, "-inf", now - FORGET_AFTER)
        pipe.execute()


def forget(client: redis.Redis, keys: Keys, node: str) -> None:
    client.zrem(keys.workers, node)


def seen(client: redis.Redis, keys: Keys, within: float, now: float | None = None) -> dict[str, float]:
    """The workers heard from within the last ``within`` seconds: node name -> last heartbeat."""
    now = time.time() if now is None else now
    return {name.decode() if isinstance(name, bytes) else name: score
            for name, score in client.zrangebyscore(keys.workers, now - within, "+inf", withscores=True)}


class Heartbeat(bootsteps.StartStopStep):
    """A consumer bootstep: a heartbeat at start, then one every HEARTBEAT_INTERVAL
    seconds from the consumer's timer; the entry removed at shutdown."""

    # Once tasks are consumed: a worker that is seen can take work.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs) -> None:
        super().__init__(c, **kwargs)
        self.tref = None
        self.client: redis.Redis | None = None
        self.keys: Keys | None = None
        self.node = ""
        self._failing = False

    def start(self, c) -> None:
        config = c.app.conf.storywire
        if self.client is None:
            self.client = connect(config.redis_url, **_TIMEOUTS)
            self.keys = Keys(config.settings.key_prefix)
        self.node = c.hostname
        self.beat()
        self.tref = c.timer.call_repeatedly(HEARTBEAT_INTERVAL, self.beat, priority=10)

    def beat(self) -> None:
        try:
            record(self.client, self.keys, self.node)
        except redis.RedisError as exc:
            # The broker is usually this very Redis: the worker reconnects on its
            # own, and the next heartbeat after that says it is alive again.
            if not self._failing:
                log.warning("heartbeat not recorded: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat recorded again")
            self._failing = False

    def stop(self, c) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c) -> None:
        self.stop(c)
        if self.client is not None and self.node:
            try:
                forget(self.client, self.keys, self.node)
            except redis.RedisError:
                pass  # pruned by age instead
            self.client.close()
            self.client = None
