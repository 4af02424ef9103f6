"""Sections 1 to 5 in order: the stream, in-process ingest, reads, the naive reference, end to end."""
from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

from evaluation.replay import record_of
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .console import log
from .end_to_end import end_to_end
from .ingest import cost_ratio, engine_phase_figures, ingest
from .naive_comparison import naive_at_scale, naive_vs_engine
from .reads import reads_under_load
from .settings import bench_settings
from .stats import percentile
from .stream import build_stream


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
                "cost_ratio_windows": windows})

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
