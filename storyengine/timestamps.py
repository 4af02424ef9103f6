"""Epoch seconds as the API and the stored records write them: ISO 8601, UTC, whole seconds."""
from __future__ import annotations

import time


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
