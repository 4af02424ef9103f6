"""Worker configuration from the environment (read when the app is built, never at import)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from storyengine.errors import ConfigError
from storyengine.settings import Settings


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    # Longer than any task can take, so an unacknowledged task is only
    # redelivered when its worker really died (acks_late).
    visibility_timeout: int = 3600
    max_retries: int = 8
    # Celery beat runs the repair pass (merge stories that converged) this often.
    repair_interval: int = 60
    # Articles still queued after this many seconds are sent again (their task
    # was lost); checked every repair_interval. Processing is idempotent.
    requeue_after: int = 300
    settings: Settings = field(default_factory=Settings)

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "WorkerConfig":
        env = os.environ if environ is None else environ
        values: dict = {"settings": Settings.from_env(env)}
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if env.get("CELERY_BROKER_URL"):
            values["broker_url"] = env["CELERY_BROKER_URL"]
        for name, var in (("visibility_timeout", "STORYWIRE_VISIBILITY_TIMEOUT"),
                          ("max_retries", "STORYWIRE_MAX_RETRIES"),
                          ("repair_interval", "STORYWIRE_REPAIR_INTERVAL"),
                          ("requeue_after", "STORYWIRE_REQUEUE_AFTER")):
            if env.get(var):
                try:
                    values[name] = int(env[var])
                except ValueError:
                    raise ConfigError(f"{var}={env[var]!r} is not an integer") from None
        if values.get("repair_interval", 1) < 1:
            raise ConfigError("STORYWIRE_REPAIR_INTERVAL must be at least 1 (seconds)")
        if values.get("requeue_after", 1) < 1:
            raise ConfigError("STORYWIRE_REQUEUE_AFTER must be at least 1 (seconds)")
        return cls(**values)
