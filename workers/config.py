"""Worker configuration from the environment (read when the app is built, never at import)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from storyengine.errors import ConfigError
from storyengine.settings import Settings

from . import names


# STORYWIRE_VISIBILITY_TIMEOUT's allowed range, in seconds (see WorkerConfig.visibility_timeout).
VISIBILITY_TIMEOUT_RANGE = (10, 86400)


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    # The articles' queue (STORYWIRE_QUEUE): one per deployment on a shared
    # broker, as partitions on a Redis Cluster have (docs/scaling.md, Step 3).
    queue: str = names.QUEUE
    # Seconds a delivered, unacknowledged task (acks_late) may go unacknowledged
    # before the broker hands it to another worker: how soon the work of a
    # worker killed mid-task is decided again. A task decides one post, at most
    # MAX_BATCH_ARTICLES (500) articles, in a few seconds, and a worker takes
    # one task at a time (prefetch 1), so 40 s is several times the longest
    # task; with kombu sweeping every 5 s (workers/app.py) a killed worker's
    # task runs again within about 45 s. A task that does run longer (a store
    # outage retried in the task, an overloaded host) is delivered a second
    # time while the first still runs: harmless, since deciding is idempotent
    # (storyengine.decider) and the second finds the articles decided.
    visibility_timeout: int = 40
    max_retries: int = 8
    # Celery beat runs the repair pass (merge stories that converged) this often.
    repair_interval: int = 60
    # Articles still queued after this many seconds, whose task cannot still be
    # waiting in the broker, are sent again (their task was lost): see
    # workers.tasks.requeue_stale. Processing is idempotent.
    requeue_after: int = 60
    # Beat runs the requeue pass this often: its own setting, shorter than the
    # repair pass's, because it is cheap (no lock, one script per 500 articles)
    # and a lost task should cost an article a minute or so, not several.
    requeue_interval: int = 20
    # Articles one requeue pass sends at most (in tasks of REQUEUE_BATCH): the
    # API's waiting limit (max_waiting) by default, so one pass clears any backlog.
    requeue_max_per_run: int = 100_000
    settings: Settings = field(default_factory=Settings)

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def maintenance_queue(self) -> str:
        return names.maintenance_queue(self.queue)

    @property
    def broker_is_store(self) -> bool:
        """Whether the broker's queues live in the store's own Redis (server and database)."""
        return same_redis(self.broker, self.redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "WorkerConfig":
        env = os.environ if environ is None else environ
        values: dict = {"settings": Settings.from_env(env)}
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if env.get("CELERY_BROKER_URL"):
            values["broker_url"] = env["CELERY_BROKER_URL"]
        if env.get("STORYWIRE_QUEUE"):
            values["queue"] = names.queue_name(env["STORYWIRE_QUEUE"])
        for name, var in (("visibility_timeout", "STORYWIRE_VISIBILITY_TIMEOUT"),
                          ("max_retries", "STORYWIRE_MAX_RETRIES"),
                          ("repair_interval", "STORYWIRE_REPAIR_INTERVAL"),
                          ("requeue_after", "STORYWIRE_REQUEUE_AFTER"),
                          ("requeue_interval", "STORYWIRE_REQUEUE_INTERVAL")):
            if env.get(var):
                try:
                    values[name] = int(env[var])
                except ValueError:
                    raise ConfigError(f"{var}={env[var]!r} is not an integer") from None
        if values.get("repair_interval", 1) < 1:
            raise ConfigError("STORYWIRE_REPAIR_INTERVAL must be at least 1 (seconds)")
        if values.get("requeue_after", 1) < 1:
            raise ConfigError("STORYWIRE_REQUEUE_AFTER must be at least 1 (seconds)")
        if values.get("requeue_interval", 1) < 1:
            raise ConfigError("STORYWIRE_REQUEUE_INTERVAL must be at least 1 (seconds)")
        low, high = VISIBILITY_TIMEOUT_RANGE
        if not low <= values.get("visibility_timeout", low) <= high:
            raise ConfigError(f"STORYWIRE_VISIBILITY_TIMEOUT must be between {low} and {high} (seconds): below "
                              f"{low} a task still running would be handed to a second worker, above {high} the work "
                              "of a killed worker would wait that long")
        return cls(**values)


def same_redis(a: str, b: str) -> bool:
    """Whether two Redis URLs name the same server and database (written alike or not)."""
    if a == b:
        return True
    try:
        pa, pb = redis.connection.parse_url(a), redis.connection.parse_url(b)
    except ValueError:  # not a Redis URL (another broker)
        return False
    defaults = {"host": "localhost", "port": 6379, "db": 0, "path": None}
    return all(pa.get(name, d) == pb.get(name, d) for name, d in defaults.items())
