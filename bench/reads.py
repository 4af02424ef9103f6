"""Section 3, reads under load: the real API over the stored articles, timed
by the server's own ``Server-Timing`` header."""
from __future__ import annotations

import contextlib
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedded_redis.server import free_port
from service.timing import CountingConnection, round_trips
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .http_client import Http
from .processes import api_ready, running_role, service_env
from .stats import percentile

SERVER_TIMING_TRIPS = re.compile(r"(\d+)\s*round[ -]?trips?")


def parse_server_timing(header: str | None) -> tuple[float | None, int | None]:
    """(app duration in ms, Redis round trips) from a header such as
    ``app;dur=1.234, redis;desc="2 round trips"``; None for what it lacks."""
    if not header:
        return None, None
    duration, trips = None, None
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        values = {k.strip(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in params)}
        if name == "app" and values.get("dur"):
            with contextlib.suppress(ValueError):
                duration = float(values["dur"])
        found = SERVER_TIMING_TRIPS.search(values.get("desc", ""))
        if found:
            trips = max(trips or 0, int(found.group(1)))
    return duration, trips


@dataclass
class ReadSample:
    route: str
    status: int
    client_ms: float
    server_ms: float | None
    round_trips: int | None


def round_trips_in_process(redis_url: str, settings: Settings, story_ids: list[str]) -> int:
    """Without the header: the round trips of the store calls the two routes
    make, counted on a client of our own with the API's own counter
    (service.timing, which leaves a new connection's handshake out), over the
    same store code the API runs."""
    store = RedisStore(connect(redis_url, connection_class=CountingConnection), settings)
    most = 0
    calls: list[Callable[[], object]] = [lambda: store.list_stories("recent", 20),
                                         lambda: store.list_stories("size", 20)]
    calls += [lambda sid=sid: store.get_story(sid) for sid in story_ids]
    for call in calls:
        before = round_trips()
        call()
        most = max(most, round_trips() - before)
    store.redis.close()
    return most


def reads_under_load(redis_url: str, settings: Settings, clients: int, seconds: float, log_dir: Path) -> dict:
    port = free_port()
    env = service_env(redis_url, settings.key_prefix, API_PORT=str(port), API_WORKERS="2")
    log_path = log_dir / "api-reads.log"
    with running_role("api", env, log_path, api_ready(port)):
        http = Http(port)
        recent = [s["id"] for s in http.json("/v1/stories?limit=100")["stories"]]
        # The biggest stories are the costliest to read, so a share of the requests ask for them.
        biggest = [s["id"] for s in http.json("/v1/stories?sort=size&limit=20")["stories"]]
        story_ids = recent + biggest
        if not story_ids:
            raise RuntimeError("the store holds no stories to read")
        samples: list[ReadSample] = []
        failures: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            connection = Http(port)
            mine: list[ReadSample] = []
            try:
                while time.monotonic() < deadline:
                    if rng.random() < 0.5:
                        route, path = "get_stories", "/v1/stories?limit=20"
                    else:
                        route, path = "get_story", f"/v1/stories/{rng.choice(story_ids)}"
                    began = time.perf_counter()
                    status, headers, _ = connection.request("GET", path)
                    client_ms = 1000 * (time.perf_counter() - began)
                    server_ms, trips = parse_server_timing(headers.get("Server-Timing"))
                    mine.append(ReadSample(route, status, client_ms, server_ms, trips))
            except OSError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                with lock:
                    samples.extend(mine)

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
        for t in threads:
            t.start()
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            print(f"\rreads: {min(time.monotonic() - started, seconds):.0f}/{seconds:.0f} s", end="",
                  file=sys.stderr, flush=True)
        print(file=sys.stderr, flush=True)
        for t in threads:
            t.join()

    if failures:
        raise RuntimeError(f"reads: {len(failures)} clients lost the API ({failures[0]}); see {log_path}")
    answered = [s for s in samples if s.status == 200]
    result: dict[str, object] = {"reads_requests": len(samples), "reads_per_s": len(samples) / seconds,
                                 "reads_errors": len(samples) - len(answered)}
    with_header = bool(answered) and all(s.server_ms is not None for s in answered)
    result["reads_timing_source"] = "server (Server-Timing app;dur)" if with_header else \
        "client (no Server-Timing header: client-side time, includes HTTP and the client's own threads)"
    for route in ("get_stories", "get_story"):
        mine = [s for s in answered if s.route == route]
        chosen = [s.server_ms for s in mine] if with_header else [s.client_ms for s in mine]
        result[f"{route}_p50_ms"] = percentile(chosen, 50)
        result[f"{route}_p99_ms"] = percentile(chosen, 99)
        result[f"{route}_client_p50_ms"] = percentile([s.client_ms for s in mine], 50)
        result[f"{route}_client_p99_ms"] = percentile([s.client_ms for s in mine], 99)
        result[f"{route}_requests"] = len(mine)
        trips_seen = [s.round_trips for s in mine if s.round_trips is not None]
        if trips_seen:   # which route needs the most, for whoever makes it fewer
            result[f"{route}_round_trips_max"] = max(trips_seen)
    trips = [s.round_trips for s in answered if s.round_trips is not None]
    if trips and len(trips) == len(answered):
        result["reads_redis_round_trips_max"] = max(trips)
        result["reads_round_trips_source"] = "server (Server-Timing redis;desc)"
    else:
        result["reads_redis_round_trips_max"] = round_trips_in_process(redis_url, settings, biggest + recent[:20])
        result["reads_round_trips_source"] = "in-process count of the store calls (no round trips in Server-Timing)"
    return result
