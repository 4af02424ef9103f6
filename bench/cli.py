"""Measure Storywire's speed in one run, side by side, against its targets.

    python -m bench [--articles 100000] [--out bench.json] [options]
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
4. the naive reference (bench/naive_reference.py): at scale, on the last
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
   does within the run). ``--only retention`` runs this part alone;
7. scale-out on a Redis Cluster (bench/cluster.py): a 3-shard Cluster and a
   broker of its own on loopback (whatever REDIS_URL says); ``--cluster-articles`` (two copies of the stream, at most
   ``--articles``) decided by one partition, then split by copy over two
   partitions whose slots are on different shards, deciding at once:
   in-process (one process per partition) and with Celery (one worker
   process per partition, each on its own queue). ``--only cluster`` runs
   this part alone.

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
import json
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from evaluation.streams import DEFAULT_STREAM, read_stream
from storyengine.settings import Settings

from .cluster import cluster_bench
from .console import log
from .machine import machine_info
from .redis_server import bench_redis
from .report import finite_or_none, print_report
from .retention import retention_bench
from .settings import retention_settings
from .speed import speed_bench
from .stream import build_stream


def main(argv: list[str] | None = None) -> int:
    # prog: what `make bench` runs.
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--cluster-articles", type=int,
                        help="articles in the Redis Cluster run (default: two copies of --stream, at most --articles)")
    parser.add_argument("--only", choices=("retention", "cluster"),
                        help="run only this part (retention: the run over --retention-windows windows; cluster: "
                             "one partition against two on a 3-shard Redis Cluster)")
    args = parser.parse_args(argv)
    for name in ("articles", "batch", "naive_articles", "naive_probe", "e2e_articles", "read_clients",
                 "cluster_articles"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
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
        if args.only is None:
            result.update(speed_bench(args, source_rows, end, redis_url, embedded, run_tag))
        if args.only in (None, "retention"):
            window_days = retention_settings("sw").retention_days
            log(f"== retention, in-process: {args.retention_windows} windows of {window_days:g} days at "
                f"{args.retention_rate:g} articles per day, posted and decided in batches of {args.batch}")
            began = time.monotonic()
            # Default settings (30-day window) and, on its own server, the default prefix, as a deployment has them.
            result.update(retention_bench(source_rows, redis_url, Settings().key_prefix if embedded
                                          else f"sw-bench-{run_tag}-retention", args.retention_rate,
                                          args.retention_windows, args.batch, end))
            result["retention_elapsed_s"] = time.monotonic() - began
    if args.only in (None, "cluster"):
        articles = args.cluster_articles or min(2 * len(source_rows), args.articles)
        log(f"== scale-out on a 3-shard Redis Cluster: {articles} articles by one partition, then by two at once")
        with tempfile.TemporaryDirectory(prefix="storywire-bench-logs-") as logs:
            result.update(cluster_bench(build_stream(source_rows, articles, args.rate, end), args.batch,
                                        args.logs or Path(logs), args.e2e_timeout, run_tag))

    result["elapsed_s"] = time.monotonic() - started
    print_report(result)
    if args.out:
        args.out.write_text(json.dumps(finite_or_none(result), indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.out}")
    return 0
