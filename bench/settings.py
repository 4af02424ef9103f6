"""The engine settings of each part of the run."""
from __future__ import annotations

from storyengine.settings import Settings

# Long enough that no article of sections 2 to 5 ages out, so every article
# counts in the store's size and in bytes per article (section 6 runs with
# the default retention).
RETENTION_DAYS = 3650


def retention_overrides() -> dict[str, int]:
    """Keep every article for sections 2 to 5 (the stream spans 40 days at
    the default rate); section 6 measures retention with its default window."""
    return {"retention_days": RETENTION_DAYS}


def bench_settings(prefix: str) -> Settings:
    return Settings.from_env().replace(key_prefix=prefix, **retention_overrides())


def retention_settings(prefix: str) -> Settings:
    """The deployment's own retention (by default 30 days, tombstones for
    7): not the bench's long override, so articles age out as they would live."""
    return Settings.from_env().replace(key_prefix=prefix)
