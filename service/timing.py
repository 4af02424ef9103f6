"""Server-side timing on every response: ``Server-Timing: app;dur=<ms>,
redis;desc="<n> round trips"``.

The time is measured inside the app, from the request's start to the
response being built, so clients (and the benchmark) can tell the server's
share of a request apart from the network's. The round trips are counted at
the Redis connection: every command, pipeline or transaction is one write to
the socket, and each is counted once. Outside a request the count is never
reset, so a caller (the bench's in-process count, bench/reads.py) takes the
difference of round_trips() around the calls it measures.
"""
from __future__ import annotations

import threading
import time

import redis
from flask import Flask, g

_counter = threading.local()


def round_trips() -> int:
    return getattr(_counter, "value", 0)


class CountingConnection(redis.Connection):
    """A TCP connection that counts what it sends, per thread. The handshake
    of a new connection (once per connection, not per request) is not counted."""

    def send_packed_command(self, command, check_health=True):
        _counter.value = getattr(_counter, "value", 0) + 1
        return super().send_packed_command(command, check_health)

    def on_connect_check_health(self, check_health: bool = True):
        before = round_trips()
        try:
            super().on_connect_check_health(check_health)
        finally:
            _counter.value = before


def install(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        _counter.value = 0

    @app.after_request
    def _stamp(response):
        started = g.get("started")
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000.0
            trips = round_trips()
            response.headers["Server-Timing"] = (f'app;dur={elapsed:.3f}, '
                                                  f'redis;desc="{trips} round trip{"" if trips == 1 else "s"}"')
        return response
