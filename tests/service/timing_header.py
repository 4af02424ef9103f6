"""The Server-Timing header of an API response (service/timing.py) read back
as numbers: the app's milliseconds and its Redis round trips."""
from __future__ import annotations

import re

HEADER = re.compile(r'^app;dur=(?P<dur>[0-9]+(?:\.[0-9]+)?), redis;desc="(?P<trips>[0-9]+) round trips?"$')


def timing(resp) -> tuple[float, int]:
    """(app milliseconds, Redis round trips) from a response's Server-Timing header."""
    header = resp.headers.get("Server-Timing")
    assert header is not None, f"{resp.status_code} response without Server-Timing"
    m = HEADER.match(header)
    assert m, header
    dur = float(m["dur"])
    assert dur >= 0.0
    return dur, int(m["trips"])
