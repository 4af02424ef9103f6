"""Service configuration: defaults, overridden by the environment or a test's mapping."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

from storyengine.errors import ConfigError
from storyengine.settings import Settings
from workers.names import QUEUE, queue_name

from .auth import parse_keys

DEFAULTS = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "CELERY_BROKER_URL": "",            # empty: the same server as REDIS_URL
    "STORYWIRE_QUEUE": QUEUE,           # the articles' queue: one per deployment sharing a broker
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,   # bytes in one request body
    "MAX_BATCH_ARTICLES": 500,
    "MAX_BODY_CHARS": 200_000,          # characters in one article's body
    "MAX_STORY_ARTICLES": 500,          # articles listed in GET /v1/stories/{id}
    "MAX_PAGE_SIZE": 100,
    "DEFAULT_PAGE_SIZE": 20,
    "FUTURE_TOLERANCE_SECONDS": 86400,  # published_at may be at most this far ahead of now
    "STORYWIRE_API_KEY": "",            # one key, or several comma-separated; empty: writes are open
    "STORYWIRE_PUBLIC_READS": "true",   # false: GETs under /v1 need a key too
}
_INTS = {k for k, v in DEFAULTS.items() if isinstance(v, int)}
# An API key: what RFC 6750 allows in a bearer token (ASCII), at least 16 characters.
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]{16,}=*$")


def load_config(overrides: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """DEFAULTS, then ``environ`` (``os.environ`` unless given), then ``overrides``."""
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for name in DEFAULTS:
        raw = env.get(name)
        if raw:
            if name in _INTS:
                try:
                    config[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"{name}={raw!r} is not an integer; fix or unset it") from None
                if config[name] <= 0:
                    raise ConfigError(f"{name} must be positive, got {raw!r}")
            else:
                config[name] = raw
    if not env.get("DEFAULT_PAGE_SIZE"):
        config["DEFAULT_PAGE_SIZE"] = min(config["DEFAULT_PAGE_SIZE"], config["MAX_PAGE_SIZE"])
    if config["DEFAULT_PAGE_SIZE"] > config["MAX_PAGE_SIZE"]:
        raise ConfigError(f"DEFAULT_PAGE_SIZE ({config['DEFAULT_PAGE_SIZE']}) must not exceed MAX_PAGE_SIZE "
                          f"({config['MAX_PAGE_SIZE']})")
    config["ENGINE_SETTINGS"] = Settings.from_env(env)
    if overrides:
        config.update(overrides)
    queue_name(config["STORYWIRE_QUEUE"])  # a ConfigError that says what a queue name may be
    public = str(config["STORYWIRE_PUBLIC_READS"]).strip().lower()
    if public not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError("STORYWIRE_PUBLIC_READS must be true or false")
    config["PUBLIC_READS"] = public in ("true", "1", "yes")
    raw_keys = config["STORYWIRE_API_KEY"] or ""
    config["API_KEYS"] = parse_keys(raw_keys)
    how = "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    if raw_keys and not config["API_KEYS"]:
        # Set, but blank or only commas: almost surely a mistake, and it would leave writes open.
        raise ConfigError(f"STORYWIRE_API_KEY is set but holds no key; set one of at least 16 characters {how}, "
                          "or unset it to leave writes open")
    if any(not _TOKEN.fullmatch(k.decode("utf-8", "replace")) for k in config["API_KEYS"]):
        raise ConfigError("STORYWIRE_API_KEY: every key must be at least 16 characters, each a letter, digit or "
                          f"one of - . _ ~ + / = (what an HTTP bearer token may hold) {how}")
    if not config["PUBLIC_READS"] and not config["API_KEYS"]:
        raise ConfigError("STORYWIRE_PUBLIC_READS=false needs STORYWIRE_API_KEY to be set")
    return config
