"""API keys: writes need one when any is configured; reads too, if so configured.

``STORYWIRE_API_KEY`` holds one key, or several separated by commas (to
rotate: add the new key, move the clients, drop the old one). A request
shows its key as ``Authorization: Bearer <key>``. The comparison is
constant-time (``hmac.compare_digest``) against every configured key, so
neither which key nor how much of it matched shows in the timing. Health
checks stay public. Keys never appear in logs or error messages.
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from flask import Flask, current_app, request

from .errors import ApiError

log = logging.getLogger("storywire.api")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


def parse_keys(raw: str) -> tuple[bytes, ...]:
    return tuple(k.strip().encode("utf-8") for k in raw.split(",") if k.strip())


def key_matches(presented: str, keys: tuple[bytes, ...]) -> bool:
    candidate = presented.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:  # no early exit: every key is compared every time
        matched |= hmac.compare_digest(candidate, key)
    return matched


def _challenge(message: str, error: str | None = None) -> ApiError:
    header = 'Bearer realm="storywire"' + (f', error="{error}"' if error else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": header})


def needs_key(config: Mapping, path: str, method: str) -> bool:
    """Whether a request for ``path`` with ``method`` needs an API key under this config
    (the OpenAPI document describes each operation by the same rule)."""
    if not config["API_KEYS"] or path in _PUBLIC_PATHS:
        return False
    return method in _WRITE_METHODS or not config["PUBLIC_READS"]


def require_key() -> None:
    keys = current_app.config["API_KEYS"]
    if not needs_key(current_app.config, request.path, request.method):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _challenge("This request needs an API key: send the header 'Authorization: Bearer <key>'.")
    if scheme.lower() != "bearer" or not token.strip():
        raise _challenge("Send the API key as 'Authorization: Bearer <key>'.", "invalid_request")
    if not key_matches(token.strip(), keys):
        # Which client sent a wrong key is worth knowing; the key itself never is.
        log.warning("rejected a request with an unknown API key", extra={"path": request.path})
        raise _challenge("The API key is not valid; check it with whoever runs this service.", "invalid_token")


def install(app: Flask) -> None:
    app.before_request(require_key)
    if not app.config["API_KEYS"]:
        log.warning("no STORYWIRE_API_KEY configured: anyone who reaches the API can post articles")
