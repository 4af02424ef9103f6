"""Measure Storywire's speed in one run, side by side, against its targets.

    python scripts/bench.py [--articles 100000] [--out bench.json] [options]
    make bench [BENCH_OUT=bench.json] [ARGS="--articles 20000"]

One run, so every figure comes from the same machine, the same code and the
same stream. In the order it runs (progress goes to stderr):

1. the stream: the dev stream copied to ``--articles`` articles (each copy
   with fresh ids and its own vocabulary) and retimed to ``--rate`` per day;
2. engine ingest in-process: every article accepted (not timed), then
   processed in chunks of ``--batch``; articles/s, per-article cost, Redis
   bytes and Redis CPU per article, and the cost once the store is large
   against the cost at 10,000 stored;
3. reads under load: the real API (gunicorn) over the store from 2, with
   ``--read-clients`` threads for ``--read-seconds``; server-side time from
   the ``Server-Timing`` header;
4. the naive reference (scripts/naive_reference.py): at scale, on the last
   ``--naive-probe`` articles with the rest of the run's articles stored (as
   the engine had them), against the engine's cost for the same articles;
   and from an empty store, beside the engine, on the first
   ``--naive-articles``;
5. end to end: the real API and Celery worker, started with the commands
   ``make run`` uses, with 1 and then 2 worker processes; ``--e2e-articles``
   posted in batches of 100 by 4 client threads;
6. retention, in-process with the default settings (a 30-day window,
   tombstones for 7 days): ``--retention-windows`` windows of stream (5: 150
   days) at ``--retention-rate`` articles a day (50: 7,500 articles),
   posted and decided in order in batches of ``--batch``, as a feed would;
   at each window's end, used memory and the articles, stories and
   tombstones held. Bytes per article held (tombstones included), whether
   memory holds steady from the second window to the last, and what the
   tombstones cost once they expire (they expire by the wall clock, so none
   does within the run). ``--only retention`` runs this part alone.

Then one table (figure, value, target, PASS or MISS) on stdout, where the
time goes per article by phase (storyengine.phases: in-process from the
engine's own clock, end to end from the workers' metrics), and, with
``--out``, one flat JSON object. The exit code is 0 even when a figure misses:
this is a measurement, not a gate.

Redis: a private server for the run, unless REDIS_URL is set. Keys go under
throwaway prefixes and are deleted, but the end-to-end workers consume the
``storywire`` queue there, so never point REDIS_URL at a server a Storywire
deployment uses. With REDIS_URL, bytes per article counts whatever else
writes to that server during ingest.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import queue
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.evaluate import DEFAULT_STREAM, Progress, read_stream, record_of, without_gold  # noqa: E402
from scripts.naive_reference import NaiveReference  # noqa: E402
from scripts.run import role_command  # noqa: E402
from storyengine import evaluation  # noqa: E402
from storyengine.clock import parse as parse_clock  # noqa: E402
from storyengine.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from storyengine.metrics import MetricsSnapshot  # noqa: E402
from storyengine.phases import PHASES  # noqa: E402
from storyengine.pipeline import Processor, collect_less  # noqa: E402
from storyengine.settings import Settings  # noqa: E402
from storyengine.store import RedisStore, connect  # noqa: E402

# Long enough that no article of sections 2 to 5 ages out, so every article
# counts in the store's size and in bytes per article (section 6 runs with
# the default retention).
RETENTION_DAYS = 3650
ACCEPT_CHUNK = 500
POST_CHUNK = 100
POST_CLIENTS = 4
POLL_WINDOW = 500   # articles asked about per poll, end to end
READ_CHUNK = 1000   # articles asked about per round trip, retention run
DAY = 86400.0
TIMED_WINDOW = (9_000, 11_000)   # "at 10k stored"
REQUIRED_KEYS = (
    "engine_articles_per_s", "engine_article_p50_ms", "engine_article_p99_ms", "naive_articles_per_s",
    "engine_vs_naive", "e2e_articles_per_s_1_worker", "e2e_articles_per_s_2_workers", "e2e_latency_p50_ms",
    "e2e_latency_p99_ms", "get_stories_p50_ms", "get_stories_p99_ms", "get_story_p50_ms", "get_story_p99_ms",
    "reads_redis_round_trips_max", "redis_bytes_per_article", "cost_100k_vs_10k", "stored_articles",
    "retention_bytes_per_article", "retention_tombstone_share", "retention_memory_steady",
    "retention_tombstone_bound_bytes", "retention_clock_lag_hours", "retention_seconds",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def median(values: list[float]) -> float:
    return percentile(values, 50)


# ---------------------------------------------------------------- 1. the stream
def build_stream(rows: list[dict], total: int, rate_per_day: float, end: datetime) -> list[dict]:
    """``total`` articles: copies of ``rows`` (fresh ids, own vocabulary per
    copy), in the replicated order, evenly spaced at ``rate_per_day``, the last
    one published at ``end``.

    Retimed because replicate() stacks copies a day apart, so the number of
    articles inside the 96-hour story window would grow with the number of
    copies. Evenly spaced, the window holds the same number of articles
    (4 days x rate) whether 10,000 or 100,000 are stored, so comparing the cost
    at 10k with the cost at 100k measures the store's size, not the stream's
    density."""
    copies = math.ceil(total / len(rows))
    replicated, _ = evaluation.replicate(rows, [], copies)
    replicated = replicated[:total]
    spacing = timedelta(days=1) / rate_per_day
    first = end - spacing * (len(replicated) - 1)
    return [dict(row, published_at=(first + spacing * i).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for i, row in enumerate(replicated)]


# ---------------------------------------------------------------- Redis and settings
@contextlib.contextmanager
def bench_redis() -> Iterator[tuple[str, bool]]:
    """(url, embedded): REDIS_URL if set, else a private server without an
    append-only file (the bench measures the engine, not the disk)."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given, False
        return
    with tempfile.TemporaryDirectory(prefix="storywire-bench-redis-") as tmp, \
            EmbeddedRedis(tmp, appendonly=False) as server:
        yield server.url, True


def retention_overrides() -> dict[str, int]:
    """Keep every article for sections 2 to 5 (the stream spans 40 days at
    the default rate); section 6 measures retention with its default window."""
    return {"retention_days": RETENTION_DAYS}


def bench_settings(prefix: str) -> Settings:
    return Settings.from_env().replace(key_prefix=prefix, **retention_overrides())


def service_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of an api or worker process: the same for every run,
    writes open (no API key), reads public, the run's key prefix."""
    env = dict(os.environ)
    env.pop("STORYWIRE_API_KEY", None)
    env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, STORYWIRE_KEY_PREFIX=prefix,
               STORYWIRE_PUBLIC_READS="true", STORYWIRE_RETENTION_DAYS=str(RETENTION_DAYS), API_HOST="127.0.0.1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# ---------------------------------------------------------------- processes
@contextlib.contextmanager
def running_role(role: str, env: dict[str, str], log_path: Path, ready: Callable[[], bool],
                 timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """One role started with scripts/run.py's command (what `make run` and the
    Dockerfile start), output to ``log_path``; stopped cleanly on the way out."""
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(role_command(role, env), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {role} did not start; last lines of {log_path}:\n{tail(log_path)}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def api_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return Http(port).request("GET", "/healthz")[0] == 200
        except OSError:
            return False
    return ready


def worker_ready(log_path: Path) -> Callable[[], bool]:
    # Celery logs "<hostname> ready." once it consumes from the queue.
    return lambda: b" ready." in log_path.read_bytes()


class Http:
    """One connection per client thread, kept alive where the server allows
    (gunicorn's sync workers close it after each answer; http.client reopens)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.headers, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a kept-alive connection between requests:
                # once more on a new one (posting is idempotent by id).
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, path: str) -> dict:
        status, _, payload = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {payload[:300]!r}")
        return json.loads(payload)


# ---------------------------------------------------------------- 2. engine ingest
@dataclass
class IngestRun:
    """Per chunk: its size, its time, and how many articles were processed before it."""
    sizes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stored_before: list[int] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    bytes_per_article: float = math.nan
    redis_cpu_ms_per_article: float = math.nan
    phase_seconds: list[dict[str, float]] = field(default_factory=list)  # per chunk, by phase (storyengine.phases)

    @property
    def per_article_ms(self) -> list[float]:
        return [1000 * s / n for s, n in zip(self.seconds, self.sizes)]

    @property
    def articles_per_s(self) -> float:
        return sum(self.sizes) / sum(self.seconds) if self.seconds else math.nan


def batch_processor(processor: Processor) -> Callable[[list[str]], list]:
    """``process_many`` where the engine has it (one call per chunk, as a
    worker would), else one ``process`` per article."""
    many = getattr(processor, "process_many", None)
    if many is not None:
        return many
    return lambda ids: [processor.process(article_id) for article_id in ids]


def accept_all(store: RedisStore, records: list[dict], label: str) -> list[str]:
    """Accept every record as the API would (not timed); the ids to process."""
    ids: list[str] = []
    progress = Progress(len(records), f"{label}: accept")
    for start in range(0, len(records), ACCEPT_CHUNK):
        ids.extend(a.id for a in store.accept_articles(records[start:start + ACCEPT_CHUNK]) if a.created)
        progress.update(min(start + ACCEPT_CHUNK, len(records)))
    return ids


def ingest(store: RedisStore, records: list[dict], batch: int, label: str) -> IngestRun:
    """Accept, then process in chunks of ``batch``, timing each chunk. Bytes
    per article is the server's used memory after minus before, so it counts
    everything kept: the article, its signatures and its share of indexes and stories."""
    before = used_memory(store.redis)
    ids = accept_all(store, records, label)
    cpu_before = redis_cpu_seconds(store.redis)
    collect_less()  # as a worker process does (workers/tasks.py)
    processor = Processor(store)
    process = batch_processor(processor)
    clock = getattr(processor, "phase_seconds", {})  # an engine from before the phases were timed has none
    run = IngestRun()
    progress = Progress(len(ids), f"{label}: process")
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        clock_before = dict(clock)
        began = time.perf_counter()
        outcomes = process(chunk)
        run.seconds.append(time.perf_counter() - began)
        run.phase_seconds.append({phase: seconds - clock_before.get(phase, 0.0) for phase, seconds in clock.items()})
        run.sizes.append(len(chunk))
        run.stored_before.append(run.processed)
        # An outcome may carry an error (process_many decides the rest of the
        # chunk anyway): only articles decided now count as stored.
        done = [o for o in outcomes if getattr(o, "error", None) is None]
        run.failed += len(outcomes) - len(done)
        run.processed += sum(1 for o in done if not getattr(o, "already_processed", False))
        progress.update(start + len(chunk))
    run.bytes_per_article = (used_memory(store.redis) - before) / max(run.processed, 1)
    run.redis_cpu_ms_per_article = 1000 * (redis_cpu_seconds(store.redis) - cpu_before) / max(run.processed, 1)
    return run


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU time the Redis server has used (user + system): what it spends per article is its share of the work."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def cost_windows(run: IngestRun, total: int) -> tuple[list[int], list[int], str]:
    """(early chunks, late chunks, which windows): the chunks that started
    while the store held 9,000-11,000 articles and those in the last 10 % of
    the run. Runs too short to hold both windows apart (under 20,000) take
    the first and last 10 % of chunks."""
    late_from = int(total * 0.9)
    if total >= 20_000:
        early = [i for i, s in enumerate(run.stored_before) if TIMED_WINDOW[0] <= s < TIMED_WINDOW[1]]
        late = [i for i, s in enumerate(run.stored_before) if s >= late_from]
        return early, late, f"{TIMED_WINDOW[0]}-{TIMED_WINDOW[1]} vs {late_from}-{total} stored"
    k = max(1, len(run.sizes) // 10)
    return list(range(k)), list(range(len(run.sizes) - k, len(run.sizes))), \
        f"first vs last 10% of chunks (only {total} articles)"


def cost_ratio(run: IngestRun, total: int) -> tuple[float, float, float, str]:
    """(late / early, early ms, late ms, which windows): median per-article
    cost of the chunks in the two :func:`cost_windows`."""
    per = run.per_article_ms
    early, late, windows = cost_windows(run, total)
    early_ms, late_ms = median([per[i] for i in early]), median([per[i] for i in late])
    return late_ms / early_ms, early_ms, late_ms, windows


def phase_ms(run: IngestRun, chunks: list[int] | None = None) -> dict[str, float]:
    """Milliseconds per article by phase over ``chunks`` (default: all):
    where the engine's time goes."""
    chunks = range(len(run.sizes)) if chunks is None else chunks
    articles = sum(run.sizes[i] for i in chunks)
    totals: dict[str, float] = {}
    for i in chunks:
        for phase, seconds in run.phase_seconds[i].items():
            totals[phase] = totals.get(phase, 0.0) + seconds
    return {phase: 1000 * seconds / max(articles, 1) for phase, seconds in totals.items()}


def engine_phase_figures(run: IngestRun, total: int) -> dict[str, float]:
    """``engine_phase_ms_<phase>`` over the whole run, and ``..._early`` and
    ``..._late`` over the cost windows: which phases grow with the store."""
    early, late, _ = cost_windows(run, total)
    figures = {}
    for suffix, chunks in (("", None), ("_early", early), ("_late", late)):
        figures.update({f"engine_phase_ms_{phase}{suffix}": ms for phase, ms in phase_ms(run, chunks).items()})
    return figures


# ---------------------------------------------------------------- 3. reads under load
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


class CountingConnection(redis.Connection):
    """Counts what is sent to Redis: one send is one round trip (a pipeline
    sends all its commands at once)."""
    sends = 0

    def send_packed_command(self, command, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def round_trips_in_process(redis_url: str, settings: Settings, story_ids: list[str]) -> int:
    """Without the header: the round trips of the store calls the two routes
    make, counted on a client of our own (the same store code the API runs)."""
    store = RedisStore(connect(redis_url, connection_class=CountingConnection), settings)
    store.redis.ping()  # connect first, so the handshake is not counted
    most = 0
    calls: list[Callable[[], object]] = [lambda: store.list_stories("recent", 20),
                                         lambda: store.list_stories("size", 20)]
    calls += [lambda sid=sid: store.get_story(sid) for sid in story_ids]
    for call in calls:
        CountingConnection.sends = 0
        call()
        most = max(most, CountingConnection.sends)
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


# ---------------------------------------------------------------- 4. naive reference
def naive_reference(redis_url: str, settings: Settings, basename: str) -> NaiveReference:
    """The naive reference on the bench's Redis, with the engine's own settings."""
    options = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    return NaiveReference(options.get("host", "127.0.0.1"), int(options.get("port", 6379)), int(options.get("db", 0)),
                          basename=basename.encode(), password=options.get("password"),
                          num_perm=settings.num_perm, shingle_size=settings.shingle_size,
                          lsh_threshold=settings.lsh_threshold, story_threshold=settings.story_threshold)


def time_naive(naive: NaiveReference, records: list[dict], label: str,
               preload: list[dict] | None = None) -> list[float]:
    """Seconds per article through the naive reference, after loading the
    vectors of ``preload`` (not timed); its keys are deleted afterwards."""
    naive.clear()
    per_article: list[float] = []
    try:
        if preload:
            naive.preload_vectors(preload)
        progress = Progress(len(records), label)
        for n, record in enumerate(records, 1):
            began = time.perf_counter()
            naive.add(record["id"], record["title"], record["body"])
            per_article.append(time.perf_counter() - began)
            progress.update(n)
    finally:
        naive.clear()
        naive.close()
    return per_article


def naive_vs_engine(records: list[dict], redis_url: str, settings: Settings, batch: int, tag: str) -> dict:
    """The engine and the naive reference on exactly the same articles, in
    the same run, so their ratio compares like with like."""
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    try:
        engine = ingest(store, records, batch, f"engine on the first {len(records)}")
    finally:
        store.clear()

    per_article = time_naive(naive_reference(redis_url, settings, f"naive-{tag}"), records, "naive reference")
    naive_rate = len(records) / sum(per_article)
    return {"naive_prefix_articles": len(records), "naive_prefix_articles_per_s": naive_rate,
            "naive_prefix_article_p50_ms": 1000 * median(per_article),
            "engine_prefix_articles_per_s": engine.articles_per_s,
            "engine_vs_naive_prefix": engine.articles_per_s / naive_rate}


def naive_at_scale(records: list[dict], redis_url: str, settings: Settings, run: "IngestRun", probe: int,
                   tag: str) -> dict:
    """The naive reference's per-article cost with as many articles stored
    as the engine had, on the same last ``probe`` articles the engine
    processed at the end of its run: the comparison that matters, since the
    naive path compares every article with every stored vector. The stored
    vectors are loaded in bulk first (not timed)."""
    stored, probed = records[:-probe], records[-probe:]
    log(f"   loading {len(stored)} stored vectors into the naive reference (not timed)")
    per_article = time_naive(naive_reference(redis_url, settings, f"naive-scale-{tag}"), probed,
                             f"naive reference at {len(stored)} stored", preload=stored)
    naive_ms = 1000 * sum(per_article) / len(per_article)
    # The engine's cost for the same articles: the chunks that held them.
    engine = [(s, n) for s, n, before in zip(run.seconds, run.sizes, run.stored_before) if before + n > len(stored)]
    engine_ms = 1000 * sum(s for s, _ in engine) / max(sum(n for _, n in engine), 1)
    return {"naive_probe_articles": len(probed), "naive_probe_stored": len(stored),
            "naive_articles_per_s": 1000 / naive_ms, "naive_ms_per_article_at_scale": naive_ms,
            "engine_ms_per_article_at_scale": engine_ms, "engine_vs_naive": naive_ms / engine_ms}


# ---------------------------------------------------------------- 5. end to end
def processed_clock(store: RedisStore) -> tuple[Callable[[list[str]], dict[str, tuple[float, bool]]], str, float]:
    """(poll, source, interval): poll(ids) gives {id: (time, failed)} for the
    ids done so far. The store's own processing times where it has them;
    else the time this poll first saw the article done (late by up to the
    interval, so frequent). A failed article is done too, or the run would
    wait for it forever, but it is counted apart."""
    times = getattr(store, "processing_times", None)
    if times is not None:
        def from_store(ids: list[str]) -> dict[str, tuple[float, bool]]:
            return {i: (float(p), False) for i, (_, p) in zip(ids, times(ids)) if p is not None}
        return from_store, "store (processing_times)", 0.25

    def observed(ids: list[str]) -> dict[str, tuple[float, bool]]:
        with store.redis.pipeline(transaction=False) as pipe:
            for article_id in ids:
                pipe.hget(store.keys.article(article_id), "status")
            statuses = pipe.execute()
        now = time.time()
        return {i: (now, status == b"failed") for i, status in zip(ids, statuses)
                if status in (b"processed", b"failed")}
    return observed, "observed by polling the store every 100 ms (no RedisStore.processing_times)", 0.1


def end_to_end(rows: list[dict], redis_url: str, settings: Settings, workers: int, log_dir: Path,
               timeout: float) -> dict:
    """Post ``rows`` over HTTP from 4 client threads and wait until every
    article is processed. Throughput runs from the first POST to the last
    article processed; latency from each article's POST answer to its processing."""
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    port = free_port()
    env = service_env(redis_url, settings.key_prefix, API_PORT=str(port), API_WORKERS="2",
                      WORKER_CONCURRENCY=str(workers))
    label = f"e2e, {workers} worker{'s' if workers > 1 else ''}"
    worker_log, api_log = log_dir / f"worker-{workers}.log", log_dir / f"api-e2e-{workers}.log"
    articles = [without_gold(r) for r in rows]
    ids = [a["id"] for a in articles]
    batches: queue.Queue[list[dict]] = queue.Queue()
    for start in range(0, len(articles), POST_CHUNK):
        batches.put(articles[start:start + POST_CHUNK])
    answered_at: dict[str, float] = {}
    service_id: dict[str, str] = {}   # stream id -> the id the API answered (it scopes a client's id by outlet)
    sent_first: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        connection = Http(port)
        while True:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            sent = time.time()
            try:
                status, _, payload = connection.request("POST", "/v1/articles/batch", {"articles": batch})
            except OSError as exc:
                with lock:
                    errors.append(f"POST failed: {exc}")
                return
            answered = time.time()
            results = json.loads(payload).get("results", []) if status in (200, 202) else []
            rejected = [r for r in results if r.get("error")] if status in (200, 202) else [payload[:300]]
            with lock:
                sent_first.append(sent)
                if status not in (200, 202) or rejected:
                    errors.append(f"POST answered {status}: {rejected[:2]!r}")
                for article, answer in zip(batch, results):
                    answered_at[article["id"]] = answered
                    service_id[article["id"]] = answer.get("id", article["id"])

    try:
        with running_role("worker", env, worker_log, worker_ready(worker_log)), \
                running_role("api", env, api_log, api_ready(port)):
            poll, source, interval = processed_clock(store)
            threads = [threading.Thread(target=client, daemon=True) for _ in range(POST_CLIENTS)]
            for t in threads:
                t.start()
            processed: dict[str, tuple[float, bool]] = {}
            pending = list(ids)
            progress = Progress(len(ids), f"{label}: processed")
            deadline = time.monotonic() + timeout
            while pending:
                time.sleep(interval)
                if errors:
                    raise RuntimeError(f"{label}: the API refused articles: {errors[:3]}")
                # The articles answered first are processed first (one queue), so
                # only the oldest few are asked about: polling all of them would
                # take CPU from the workers being measured.
                with lock:
                    oldest = sorted((i for i in pending if i in service_id), key=answered_at.__getitem__)[:POLL_WINDOW]
                    asked: dict[str, list[str]] = {}   # two posts can name one article (the same outlet and URL)
                    for i in oldest:
                        asked.setdefault(service_id[i], []).append(i)
                processed.update({i: done for sid, done in poll(list(asked)).items() for i in asked[sid]})
                pending = [i for i in pending if i not in processed]
                progress.update(len(processed))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: {len(pending)} of {len(ids)} articles not processed after "
                                       f"{timeout:.0f} s; last lines of {worker_log}:\n{tail(worker_log)}")
            for t in threads:
                t.join()
            spent = worker_phase_ms(store, len(ids))
    finally:
        store.clear()
    # An article can be processed before its batch's answer reaches the
    # client; its wait, as the client sees it, is then zero.
    latencies = [1000 * max(0.0, processed[i][0] - answered_at[i]) for i in ids]
    elapsed = max(done for done, _ in processed.values()) - min(sent_first)
    failed = sum(1 for _, has_failed in processed.values() if has_failed)
    if failed:
        log(f"warning: {label}: {failed} articles failed, counted as done (--logs DIR keeps the worker log)")
    return {"articles_per_s": len(ids) / elapsed, "seconds": elapsed, "failed_articles": failed,
            "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99),
            "processed_time_source": source, **{f"phase_ms_{phase}": ms for phase, ms in spent.items()}}


def worker_phase_ms(store: RedisStore, articles: int, wait: float = 10.0) -> dict[str, float]:
    """The workers' milliseconds per article by phase, from the metrics they
    count (storyengine.metrics): every worker process together, so with two
    "lock" includes each one's wait for the other. A worker counts a task
    just after its decisions are written: wait for the last one's counts."""
    deadline = time.monotonic() + wait
    while True:
        snapshot = MetricsSnapshot.from_hash(store.redis.hgetall(store.keys.metrics))
        counted = snapshot.counters["articles_decided"] + snapshot.counters["articles_failed"]
        if counted >= articles or time.monotonic() > deadline:
            return {phase: 1000 * seconds / articles for phase, seconds in snapshot.engine_seconds.items()}
        time.sleep(0.05)


# ---------------------------------------------------------------- 6. retention over 5 windows
@dataclass(frozen=True)
class Boundary:
    """The store at the end of one retention window of stream time."""
    windows: int            # windows of stream time passed (1 = the first full window)
    clock: float | None     # the stream clock
    used_memory: int        # the server's used_memory
    articles: int           # articles held (canonical, copies and failed)
    stories: int            # stories held
    tombstones: int         # tombstone entries held (HLEN of every {p}:gone:{day})
    tombstone_bytes: int    # their memory (MEMORY USAGE of those hashes), in used_memory too


@dataclass
class RetentionRun:
    window_days: float
    rate_per_day: float
    baseline_memory: int = 0                  # used_memory before the run (the prefix empty)
    boundaries: list[Boundary] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    seconds: float = 0.0
    last_published: float = math.nan
    held_past_window: int = 0                 # articles held, published before the final cutoff (in live stories)
    removed_inside_window: int = 0            # articles published after that cutoff, not held (must be 0)
    df_bytes: int = 0                         # the term statistics, a fixed size whatever the store holds
    stories_past_window: int = 0              # stories held whose newest article is before it (must be 0)
    gone_without_tombstone: int = 0           # articles removed with no tombstone (must be 0)


def retention_settings(prefix: str) -> Settings:
    """The deployment's own retention (by default 30 days, tombstones for
    7): not the bench's long override, so articles age out as they would live."""
    return Settings.from_env().replace(key_prefix=prefix)


def retention_stream(rows: list[dict], settings: Settings, rate_per_day: float, windows: int,
                     end: datetime) -> list[dict]:
    """``windows`` retention windows of stream at ``rate_per_day``, ending at ``end``."""
    return build_stream(rows, round(rate_per_day * settings.retention_days * windows), rate_per_day, end)


def tombstone_keys(store: RedisStore) -> list[bytes]:
    return list(store.redis.scan_iter(match=store.keys.gone("*"), count=1000))


def held_ids(store: RedisStore, ids: list[str]) -> list[str]:
    """Of ``ids``, those whose article the store still holds."""
    held = []
    for start in range(0, len(ids), READ_CHUNK):
        chunk = ids[start:start + READ_CHUNK]
        with store.redis.pipeline(transaction=False) as pipe:
            for article_id in chunk:
                pipe.exists(store.keys.article(article_id))
            held += [i for i, there in zip(chunk, pipe.execute()) if there]
    return held


def boundary(store: RedisStore, windows: int, articles: int) -> Boundary:
    gone = tombstone_keys(store)
    with store.redis.pipeline(transaction=False) as pipe:
        for key in gone:
            pipe.hlen(key)
        for key in gone:
            pipe.memory_usage(key, samples=0)   # every field counted, not a sample
        pipe.zcard(store.keys.stories_kept)
        pipe.get(store.keys.clock)
        *sizes, stories, clock = pipe.execute()
    return Boundary(windows, parse_clock(clock), used_memory(store.redis), articles, int(stories),
                    sum(sizes[:len(gone)]), sum(s or 0 for s in sizes[len(gone):]))


def retention_run(store: RedisStore, records: list[dict], batch: int, label: str = "retention") -> RetentionRun:
    """Post ``records`` (in published order) and decide them as a live feed
    would: accept a batch, decide it, then the next, each batch moving the
    stream clock and ageing out what it leaves behind (storyengine.retention).
    After each ``retention_days`` of stream time from the first article, the
    store's size: used memory, articles, stories and tombstones held."""
    s = store.settings
    window = s.retention_days * DAY
    first, last = float(records[0]["published_ts"]), float(records[-1]["published_ts"])
    # Evenly spaced (build_stream): n articles span n - 1 gaps.
    run = RetentionRun(window_days=s.retention_days,
                       rate_per_day=(len(records) - 1) / ((last - first) / DAY) if last > first else math.nan)
    run.last_published = last
    run.baseline_memory = used_memory(store.redis)
    collect_less()  # as a worker process does (workers/tasks.py)
    processor = Processor(store)
    accepted: list[str] = []       # every id accepted so far
    published: dict[str, float] = {}
    maybe_held: list[str] = []     # not yet seen removed
    progress = Progress(len(records), f"{label}: post and decide")
    began = time.perf_counter()
    start, windows = 0, 1
    while start < len(records):
        # A batch ends at the batch size or at a window boundary, so each
        # boundary is measured with exactly the articles published before it.
        edge = first + windows * window
        end = start
        while end < len(records) and end - start < batch and float(records[end]["published_ts"]) < edge:
            end += 1
        chunk = records[start:end]
        if chunk:
            ids = [a.id for a in store.accept_articles(chunk) if a.created]
            for record in chunk:
                published[record["id"]] = float(record["published_ts"])
            accepted += ids
            maybe_held += ids
            outcomes = processor.process_many(ids) if ids else []
            errors = sum(1 for o in outcomes if getattr(o, "error", None) is not None)
            run.failed += errors
            run.processed += len(outcomes) - errors
            progress.update(end)
        start = end
        if start == len(records) or float(records[start]["published_ts"]) >= edge:
            maybe_held = held_ids(store, maybe_held)
            run.boundaries.append(boundary(store, windows, len(maybe_held)))
            windows += 1
    run.seconds = time.perf_counter() - began

    # What must hold at the end: nothing past the window on the final clock
    # (stories by their newest article), and a tombstone for each article removed.
    clock = run.boundaries[-1].clock
    before = (clock if clock is not None else math.inf) - window
    run.held_past_window = sum(1 for i in maybe_held if published[i] < before)
    run.removed_inside_window = sum(1 for i in set(accepted) - set(maybe_held) if published[i] >= before)
    run.df_bytes = sum(store.redis.memory_usage(key, samples=0) or 0
                       for key in (store.keys.df, store.keys.df_docs, store.keys.df_version))
    run.stories_past_window = int(store.redis.zcount(store.keys.stories_kept, "-inf", f"({before}"))
    stones: set[bytes] = set()
    for key in tombstone_keys(store):
        stones.update(store.redis.hkeys(key))
    run.gone_without_tombstone = sum(1 for i in set(accepted) - set(maybe_held) if i.encode() not in stones)
    return run


def retention_figures(run: RetentionRun, settings: Settings) -> dict[str, object]:
    """Flat figures of a :class:`RetentionRun`, ``retention_`` each.

    Bytes per article held: used memory over the baseline at the last
    boundary, tombstones included, over the articles held then. Memory
    steady: used memory (over the baseline) at the last boundary over that at
    the second, the first whose window had been ageing out for a whole
    window. No tombstone expires during the run (they expire by the wall
    clock, ``tombstone_days`` after their day, and the run lasts minutes), so
    the run ends holding one for every id removed since the start; in
    production at most ``tombstone_days`` + 1 days of them are held, which
    ``retention_tombstone_bound_bytes`` prices at the run's rate.
    ``retention_w{n}_*``: the store at the end of window n (``used_bytes``:
    used memory over the baseline)."""
    b = run.boundaries
    last, second = b[-1], b[1] if len(b) > 1 else b[-1]
    delta = [x.used_memory - run.baseline_memory for x in b]
    per_tombstone = last.tombstone_bytes / last.tombstones if last.tombstones else math.nan
    # Tombstones left per stream-day once retention runs (the first window removes nothing).
    days_removing = (last.windows - b[0].windows) * run.window_days
    tombstones_per_day = (last.tombstones - b[0].tombstones) / days_removing if days_removing else math.nan
    bound_days = math.ceil(settings.tombstone_days) + 1   # today's hash and the tombstone_days before it
    bound_bytes = tombstones_per_day * bound_days * per_tombstone
    held = max(last.articles, 1)
    clock_lag_h = (run.last_published - last.clock) / 3600 if last.clock is not None else math.nan
    figures: dict[str, object] = {
        "retention_days": settings.retention_days, "retention_tombstone_days": settings.tombstone_days,
        "retention_windows": last.windows, "retention_rate_per_day": run.rate_per_day,
        "retention_articles": run.processed + run.failed, "retention_failed_articles": run.failed,
        "retention_seconds": run.seconds,
        "retention_bytes_per_article": delta[-1] / held,
        "retention_tombstone_bytes_per_article": last.tombstone_bytes / held,
        "retention_tombstone_share": last.tombstone_bytes / delta[-1] if delta[-1] > 0 else math.nan,
        "retention_bytes_per_article_without_tombstones": (delta[-1] - last.tombstone_bytes) / held,
        "retention_bytes_per_tombstone": per_tombstone,
        "retention_memory_steady": delta[-1] / delta[1] if len(b) > 1 and delta[1] > 0 else math.nan,
        "retention_memory_steady_without_tombstones":
            (delta[-1] - last.tombstone_bytes) / (delta[1] - second.tombstone_bytes)
            if len(b) > 1 and delta[1] - second.tombstone_bytes > 0 else math.nan,
        "retention_tombstones_per_day": tombstones_per_day,
        "retention_tombstone_bound_days": bound_days,
        "retention_tombstone_bound_bytes": bound_bytes,
        "retention_bytes_per_article_at_tombstone_bound": (delta[-1] - last.tombstone_bytes + bound_bytes) / held,
        "retention_tombstone_bytes_per_article_at_bound": bound_bytes / held,
        "retention_clock_lag_hours": clock_lag_h,
        "retention_held_days": last.articles / run.rate_per_day,
        "retention_held_inside_window_days": (last.articles - run.held_past_window) / run.rate_per_day,
        "retention_held_past_window": run.held_past_window,
        "retention_removed_inside_window": run.removed_inside_window,
        "retention_df_bytes": run.df_bytes,
        "retention_stories_past_window": run.stories_past_window,
        "retention_gone_without_tombstone": run.gone_without_tombstone,
    }
    for x, used in zip(b, delta):
        figures.update({f"retention_w{x.windows}_{name}": value for name, value in (
            ("used_bytes", used), ("articles", x.articles), ("stories", x.stories),
            ("tombstones", x.tombstones), ("tombstone_bytes", x.tombstone_bytes))})
    return figures


def retention_bench(rows: list[dict], redis_url: str, prefix: str, rate_per_day: float, windows: int, batch: int,
                    end: datetime) -> dict[str, object]:
    settings = retention_settings(prefix)
    records = [record_of(row) for row in retention_stream(rows, settings, rate_per_day, windows, end)]
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    try:
        run = retention_run(store, records, batch)
    finally:
        store.clear()
    return retention_figures(run, settings)


# ---------------------------------------------------------------- machine
def machine_info(redis_url: str, embedded: bool) -> dict[str, object]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    client = connect(redis_url)
    try:
        redis_version = str(client.info("server").get("redis_version", "unknown"))
    finally:
        client.close()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu_model, "cpu_cores": os.cpu_count() or 0, "cpu_cores_usable": usable or 0,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "redis_version": redis_version, "redis_embedded": embedded, "git_commit": git_commit()}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (modified)' if dirty else ''}" if head else "unknown"


# ---------------------------------------------------------------- report
@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None   # None: shown for context, no target


def ok(value: float, test: Callable[[float], bool]) -> bool:
    return math.isfinite(value) and test(value)


def report_rows(r: dict) -> list[Row]:
    """The speed rows (sections 2 to 5, unless the run had only retention),
    with the retention rows beside the bytes per article."""
    if "engine_articles_per_s" not in r:
        return retention_rows(r)

    def failed(run: str) -> str:
        count = r.get(f"e2e_failed_articles_{run}", 0)
        return f" ({count} failed)" if count else ""

    e1, e2 = r["e2e_articles_per_s_1_worker"], r["e2e_articles_per_s_2_workers"]
    scaling = e2 / e1 if e1 else math.nan
    return [
        Row("engine in-process, one core", f"{r['engine_articles_per_s']:.0f} articles/s", ">= 800/s per core",
            ok(r["engine_articles_per_s"], lambda v: v >= 800)),
        Row("  per article p50 / p99", f"{r['engine_article_p50_ms']:.2f} / {r['engine_article_p99_ms']:.2f} ms"),
        Row(f"engine vs naive, {r['naive_probe_stored']} stored",
            f"{r['naive_ms_per_article_at_scale']:.1f} / {r['engine_ms_per_article_at_scale']:.2f} ms"
            f" = {r['engine_vs_naive']:.1f}x", ">= 30x", ok(r["engine_vs_naive"], lambda v: v >= 30)),
        Row(f"  engine vs naive, first {r['naive_prefix_articles']} (empty store)",
            f"{r['engine_prefix_articles_per_s']:.0f} / {r['naive_prefix_articles_per_s']:.0f} articles/s"
            f" = {r['engine_vs_naive_prefix']:.1f}x"),
        Row("  Redis CPU per article", f"{r['redis_cpu_ms_per_article']:.2f} ms"),
        Row("end to end, 1 worker", f"{e1:.0f} articles/s{failed('1_worker')}", ">= 400/s",
            ok(e1, lambda v: v >= 400)),
        Row("end to end, 2 workers", f"{e2:.0f} articles/s{failed('2_workers')}", ">= 800/s (400 per worker)",
            ok(e2, lambda v: v >= 800)),
        Row("  2 workers / 1 worker", f"{scaling:.2f}x", "> 1x", ok(scaling, lambda v: v > 1)),
        Row("  latency p50 / p99, 1 worker", f"{r['e2e_latency_p50_ms']:.0f} / {r['e2e_latency_p99_ms']:.0f} ms"),
        *(Row(f"GET {path} {q}", f"{r[f'{key}_{q}_ms']:.2f} ms", f"<= {limit} ms",
              ok(r[f"{key}_{q}_ms"], lambda v, limit=limit: v <= limit))
          for path, key in (("/v1/stories", "get_stories"), ("/v1/stories/{id}", "get_story"))
          for q, limit in (("p50", 2), ("p99", 10))),
        Row("Redis round trips per read, max", f"{r['reads_redis_round_trips_max']}", "<= 2",
            ok(r["reads_redis_round_trips_max"], lambda v: v <= 2)),
        Row("Redis bytes per article", f"{r['redis_bytes_per_article']:.0f} B", "<= 4096 B",
            ok(r["redis_bytes_per_article"], lambda v: v <= 4096)),
        *retention_rows(r),
        Row("cost per article, end / 10k stored", f"{r['cost_100k_vs_10k']:.2f}x "
            f"({r['cost_late_ms_per_article']:.2f} / {r['cost_early_ms_per_article']:.2f} ms)", "~1x (<= 1.25)",
            ok(r["cost_100k_vs_10k"], lambda v: v <= 1.25)),
    ]


def retention_rows(r: dict) -> list[Row]:
    """The retention run: bytes per article held with tombstones, whether
    memory holds steady over the windows, and whether it aged out on time."""
    if "retention_bytes_per_article" not in r:
        return []
    w, last = 2, r["retention_windows"]
    days = r["retention_days"]
    mib = 1 / (1 << 20)

    def held(n: int) -> str:
        return (f"{r[f'retention_w{n}_articles']} articles, {r[f'retention_w{n}_stories']} stories, "
                f"{r[f'retention_w{n}_tombstones']} tombstones")

    # Inside the window: every article published since the clock less the
    # window, up to the newest (at most a day past the clock), at the rate.
    slack = 1 / r["retention_rate_per_day"]
    on_time = ok(r["retention_held_inside_window_days"], lambda v: days - slack <= v <= days + 1 + slack) and \
        r["retention_stories_past_window"] == 0 and r["retention_removed_inside_window"] == 0 and \
        r["retention_gone_without_tombstone"] == 0
    return [
        Row(f"Redis bytes per article, {last}x-window run",
            f"{r['retention_bytes_per_article']:.0f} B ({r[f'retention_w{last}_articles']} held, tombstones incl.)"),
        Row("  of which tombstones (every id removed)",
            f"{r['retention_tombstone_bytes_per_article']:.0f} B = {r['retention_tombstone_share']:.1%} "
            f"({r[f'retention_w{last}_tombstones']} x {r['retention_bytes_per_tombstone']:.0f} B)"),
        Row(f"  tombstones at {r['retention_tombstone_days']:g}-day steady state",
            f"{r['retention_tombstone_bytes_per_article_at_bound']:.0f} B per article held "
            f"({r['retention_tombstones_per_day']:.0f}/day x {r['retention_tombstone_bound_days']} days x "
            f"{r['retention_bytes_per_tombstone']:.0f} B = {r['retention_tombstone_bound_bytes'] * mib:.2f} MiB)"),
        Row(f"memory steady, window {last} / window {w}",
            f"{r['retention_memory_steady']:.3f}x, tombstones incl. ({r[f'retention_w{last}_used_bytes'] * mib:.1f}"
            f" / {r[f'retention_w{w}_used_bytes'] * mib:.1f} MiB added)", "<= 1.1",
            ok(r["retention_memory_steady"], lambda v: v <= 1.1)),
        Row("  without tombstones", f"{r['retention_memory_steady_without_tombstones']:.3f}x"),
        Row(f"  held at window {w}", held(w)),
        Row(f"  held at window {last}", held(last)),
        Row("  clock behind the newest article", f"{r['retention_clock_lag_hours']:.1f} h", "< 24 h",
            ok(r["retention_clock_lag_hours"], lambda v: 0 <= v < 24)),
        Row("  held inside the window",
            f"{r['retention_held_inside_window_days']:.1f} days of stream (+{r['retention_held_past_window']} "
            f"older, in live stories)", f"{days:g}-{days + 1:g} days, none lost", on_time),
    ]


def retention_lines(r: dict) -> list[str]:
    if "retention_bytes_per_article" not in r:
        return []
    last = r["retention_windows"]
    return [
        f"retention run: {r['retention_articles']} articles over {r['retention_days'] * last:g} stream-days "
        f"({last} windows of {r['retention_days']:g} days, default settings) at {r['retention_rate_per_day']:g}/day, "
        f"posted and decided in order in batches: {r['retention_seconds']:.0f} s "
        f"({r['retention_elapsed_s']:.0f} s with building the stream)",
        f"  its bytes per article are those of a store of {r[f'retention_w{last}_articles']} articles, where "
        f"fixed-size structures weigh on each (the term statistics alone: "
        f"{r['retention_df_bytes'] / r[f'retention_w{last}_articles']:.0f} B per article held): not comparable "
        f"with the row at 100,000 stored",
        f"  no tombstone expires during the run (they expire by the wall clock, {r['retention_tombstone_days']:g} "
        f"days after their day, and the run lasts minutes), so it ends holding one for every id removed, and used "
        f"memory grows by about {r['retention_bytes_per_tombstone']:.0f} B per tombstone; a deployment holds at "
        f"most {r['retention_tombstone_bound_days']} days of them (the steady state above)",
        f"  at the end: {r['retention_stories_past_window']} stories past the window, "
        f"{r['retention_removed_inside_window']} articles inside it removed, "
        f"{r['retention_gone_without_tombstone']} removed articles without a tombstone (each must be 0)",
    ]


def phase_lines(r: dict) -> list[str]:
    """Where the time goes, per article by phase: the in-process engine over
    the whole run and in the two cost windows, and the workers end to end."""
    def columns(prefix: str, suffixes: tuple[str, ...]) -> str:
        return "; ".join(f"{phase} " + " / ".join(f"{r.get(f'{prefix}{phase}{x}', math.nan):.2f}" for x in suffixes)
                         for phase in PHASES)

    if "engine_phase_ms_featurise" not in r:
        return []
    return ["engine ms per article by phase, whole run / early / late window: "
            + columns("engine_phase_ms_", ("", "_early", "_late")),
            "workers' ms per article by phase, 1 / 2 worker processes: "
            + columns("e2e_phase_ms_", ("_1_worker", "_2_workers"))]


def print_report(r: dict) -> None:
    rows = report_rows(r)
    widths = [max(len(x) for x in col) for col in zip(*[(row.figure, row.value, row.target) for row in rows],
                                                       ("figure", "value", "target"))]
    line = f"{{:<{widths[0]}}}  {{:>{widths[1]}}}  {{:<{widths[2]}}}  {{}}"
    print()
    stored = f"{r['stored_articles']} articles stored" if "stored_articles" in r else "retention run only"
    print(f"Storywire bench: {stored}, {r['cpu_cores']} cores ({r['cpu_model']}), "
          f"Python {r['python_version']}, Redis {r['redis_version']}"
          f"{' (embedded)' if r['redis_embedded'] else ''}, {r['elapsed_s']:.0f} s")
    print(line.format("figure", "value", "target", "result"))
    print(line.format(*("-" * w for w in widths), "------"))
    for row in rows:
        print(line.format(row.figure, row.value, row.target, "" if row.met is None else "PASS" if row.met else "MISS"))
    if r.get("engine_failed_articles"):
        print(f"warning: the engine failed {r['engine_failed_articles']} articles in-process; they are not stored")
    if r.get("retention_failed_articles"):
        print(f"warning: the retention run failed {r['retention_failed_articles']} articles")
    if "cost_ratio_windows" in r:
        print(f"cost windows: {r['cost_ratio_windows']}")
    for line in phase_lines(r) + retention_lines(r):
        print(line)
    if "reads_timing_source" in r:
        print(f"read times: {r['reads_timing_source']}; round trips: {r['reads_round_trips_source']}")
        print(f"end-to-end processing times: {r['e2e_processed_time_source']}")
    missed = [row.figure.strip() for row in rows if row.met is False]
    print(f"MISSED {len(missed)} of {sum(row.met is not None for row in rows)} targets: {'; '.join(missed)}"
          if missed else "every target met")


def finite_or_none(result: dict) -> dict:
    """JSON has no NaN: a figure that could not be measured is null (and named)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            log(f"warning: {key} could not be measured; written as null")
            value = None
        out[key] = value
    return out


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM, help="JSON lines to replicate")
    parser.add_argument("--out", type=Path, help="write the figures here, one flat JSON object")
    parser.add_argument("--articles", type=int, default=100_000, help="articles ingested in-process (default 100000)")
    parser.add_argument("--rate", type=float, default=2500, help="articles per stream-day after retiming")
    parser.add_argument("--batch", type=int, default=100, help="articles per process_many call")
    parser.add_argument("--naive-articles", type=int, default=1000,
                        help="articles for engine vs naive from an empty store")
    parser.add_argument("--naive-probe", type=int, default=60,
                        help="last articles timed through the naive reference with the rest stored")
    parser.add_argument("--e2e-articles", type=int, default=4000, help="articles posted end to end, per run")
    parser.add_argument("--e2e-timeout", type=float, default=600, help="seconds to wait for processing, per run")
    parser.add_argument("--read-clients", type=int, default=8, help="concurrent reading threads")
    parser.add_argument("--read-seconds", type=float, default=10, help="seconds of reads")
    parser.add_argument("--logs", type=Path, help="keep the api and worker logs here (default: deleted after the run)")
    parser.add_argument("--retention-rate", type=float, default=50,
                        help="articles per stream-day in the retention run (default 100)")
    parser.add_argument("--retention-windows", type=int, default=5,
                        help="retention windows of stream in the retention run (default 5)")
    parser.add_argument("--only", choices=("retention",),
                        help="run only this part (retention: the run over --retention-windows windows)")
    args = parser.parse_args(argv)
    for name in ("articles", "batch", "naive_articles", "naive_probe", "e2e_articles", "read_clients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate <= 0 or args.read_seconds <= 0 or args.retention_rate <= 0:
        parser.error("--rate, --read-seconds and --retention-rate must be positive")
    if args.retention_windows < 2:
        parser.error("--retention-windows must be at least 2 (memory is compared with the second)")
    if args.naive_probe >= args.articles:
        parser.error("--naive-probe must be less than --articles")
    if args.naive_articles > args.articles or args.e2e_articles > args.articles:
        parser.error("--naive-articles and --e2e-articles must not exceed --articles (they are its first articles)")
    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a JSON lines file")

    started = time.monotonic()
    run_tag = uuid.uuid4().hex[:8]
    # The last article an hour ago: published_at must not be in the future for the API.
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    source_rows = read_stream(args.stream)
    result: dict[str, object] = {"batch": args.batch}
    with bench_redis() as (redis_url, embedded):
        result.update(machine_info(redis_url, embedded))
        if args.only != "retention":
            result.update(speed_bench(args, source_rows, end, redis_url, embedded, run_tag))
        window_days = retention_settings("sw").retention_days
        log(f"== retention, in-process: {args.retention_windows} windows of {window_days:g} days at "
            f"{args.retention_rate:g} articles per day, posted and decided in batches of {args.batch}")
        began = time.monotonic()
        # Default settings (30-day window) and, on its own server, the default prefix, as a deployment has them.
        result.update(retention_bench(source_rows, redis_url, Settings().key_prefix if embedded
                                      else f"sw-bench-{run_tag}-retention", args.retention_rate,
                                      args.retention_windows, args.batch, end))
        result["retention_elapsed_s"] = time.monotonic() - began

    result["elapsed_s"] = time.monotonic() - started
    print_report(result)
    if args.out:
        args.out.write_text(json.dumps(finite_or_none(result), indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.out}")
    return 0


def speed_bench(args: argparse.Namespace, source_rows: list[dict], end: datetime, redis_url: str, embedded: bool,
                run_tag: str) -> dict[str, object]:
    """Sections 1 to 5: the stream, in-process ingest, reads, the naive reference, end to end."""
    log(f"== stream: {args.stream.name} to {args.articles} articles at {args.rate:g} per day")
    rows = build_stream(source_rows, args.articles, args.rate, end)
    records = [record_of(row) for row in rows]
    result: dict[str, object] = {
        "articles": args.articles, "rate_per_day": args.rate,
        "e2e_articles": args.e2e_articles, "read_clients": args.read_clients, "read_seconds": args.read_seconds,
    }
    with tempfile.TemporaryDirectory(prefix="storywire-bench-logs-") as logs:
        log_dir = args.logs or Path(logs)
        log_dir.mkdir(parents=True, exist_ok=True)

        log(f"== engine ingest, in-process: {args.articles} articles in chunks of {args.batch}")
        # On its own server the main run uses the default key prefix, so bytes
        # per article are those of a default deployment (key names included);
        # on a server given by REDIS_URL, a throwaway prefix of its own.
        settings = bench_settings(Settings().key_prefix if embedded else f"sw-bench-{run_tag}")
        store = RedisStore(connect(redis_url), settings)
        store.clear()
        try:
            run = ingest(store, records, args.batch, "engine")
            per = run.per_article_ms
            ratio, early_ms, late_ms, windows = cost_ratio(run, args.articles)
            result.update({
                "stored_articles": run.processed, "engine_failed_articles": run.failed,
                "engine_articles_per_s": run.articles_per_s,
                "engine_article_p50_ms": percentile(per, 50), "engine_article_p99_ms": percentile(per, 99),
                "redis_bytes_per_article": run.bytes_per_article, "cost_100k_vs_10k": ratio,
                "cost_early_ms_per_article": early_ms, "cost_late_ms_per_article": late_ms,
                **engine_phase_figures(run, args.articles),
                "cost_ratio_windows": windows, "engine_processing": "process_many" if getattr(
                    Processor, "process_many", None) else "process (no process_many yet)"})

            result["redis_cpu_ms_per_article"] = run.redis_cpu_ms_per_article
            log(f"== naive reference at scale: the last {args.naive_probe} articles with "
                f"{args.articles - args.naive_probe} stored")
            result.update(naive_at_scale(records, redis_url, settings, run, args.naive_probe, run_tag))

            log(f"== reads under load: {args.read_clients} clients for {args.read_seconds:g} s "
                f"over {run.processed} stored articles")
            result.update(reads_under_load(redis_url, settings, args.read_clients, args.read_seconds, log_dir))
        finally:
            store.clear()

        log(f"== naive reference and engine on the first {args.naive_articles} articles")
        result.update(naive_vs_engine(records[:args.naive_articles], redis_url,
                                      bench_settings(f"sw-bench-{run_tag}-prefix"), args.batch, run_tag))

        for workers in (1, 2):
            log(f"== end to end, {workers} worker process{'es' if workers > 1 else ''}: {args.e2e_articles} articles")
            e2e = end_to_end(rows[:args.e2e_articles], redis_url, bench_settings(f"sw-bench-{run_tag}-e2e"),
                             workers, log_dir, args.e2e_timeout)
            suffix = "1_worker" if workers == 1 else f"{workers}_workers"
            result["e2e_processed_time_source"] = e2e.pop("processed_time_source")
            result.update({f"e2e_{key}_{suffix}": value for key, value in e2e.items()})
        # One deployment's default is one worker process: its latency is the headline.
        result["e2e_latency_p50_ms"] = result["e2e_latency_p50_ms_1_worker"]
        result["e2e_latency_p99_ms"] = result["e2e_latency_p99_ms_1_worker"]
    return result


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RuntimeError as exc:   # a stage that could not run (a role that did not start, a stuck worker)
        raise SystemExit(f"bench stopped: {exc}") from None
