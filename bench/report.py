"""The report: one table of figures against their targets on stdout, where
the time goes by phase, and the flat JSON figures written by ``--out``."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from storyengine.phases import PHASES

from .console import log

# Every figure the targets are judged on: a full run gives each as a finite number.
REQUIRED_KEYS = (
    "engine_articles_per_s", "engine_article_p50_ms", "engine_article_p99_ms", "naive_articles_per_s",
    "engine_vs_naive", "e2e_articles_per_s_1_worker", "e2e_articles_per_s_2_workers", "e2e_latency_p50_ms",
    "e2e_latency_p99_ms", "get_stories_p50_ms", "get_stories_p99_ms", "get_story_p50_ms", "get_story_p99_ms",
    "reads_redis_round_trips_max", "redis_bytes_per_article", "cost_100k_vs_10k", "stored_articles",
    "engine_phase_ms_reads", "redis_cpu_ms_per_article", "e2e_phase_ms_lock_2_workers",
    "retention_bytes_per_article", "retention_tombstone_share", "retention_memory_steady",
    "retention_tombstone_bound_bytes", "retention_clock_lag_hours", "retention_seconds",
    "cluster_engine_articles_per_s_1_partition", "cluster_engine_articles_per_s_2_partitions", "cluster_engine_scaling",
    "cluster_e2e_articles_per_s_1_partition", "cluster_e2e_articles_per_s_2_partitions", "cluster_e2e_scaling",
)


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
        return retention_rows(r) + cluster_rows(r)

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
            f" = {r['engine_vs_naive']:.1f}x", ">= 250x", ok(r["engine_vs_naive"], lambda v: v >= 250)),
        Row(f"  engine vs naive, first {r['naive_prefix_articles']} (empty store)",
            f"{r['engine_prefix_articles_per_s']:.0f} / {r['naive_prefix_articles_per_s']:.0f} articles/s"
            f" = {r['engine_vs_naive_prefix']:.1f}x"),
        Row("  reads under the lock, per article", f"{r['engine_phase_ms_reads']:.3f} ms", "<= 0.1 ms",
            ok(r["engine_phase_ms_reads"], lambda v: v <= 0.1)),
        Row("Redis CPU per article", f"{r['redis_cpu_ms_per_article']:.2f} ms", "<= 0.5 ms",
            ok(r["redis_cpu_ms_per_article"], lambda v: v <= 0.5)),
        Row("end to end, 1 worker", f"{e1:.0f} articles/s{failed('1_worker')}", ">= 500/s",
            ok(e1, lambda v: v >= 500)),
        Row("end to end, 2 workers", f"{e2:.0f} articles/s{failed('2_workers')}"),
        Row("  2 workers / 1 worker (2 cores shared with Redis and the API)", f"{scaling:.2f}x", ">= 1.3x",
            ok(scaling, lambda v: v >= 1.3)),
        Row("  lock wait per article, 2 workers", f"{r['e2e_phase_ms_lock_2_workers']:.2f} ms", "<= 0.3 ms",
            ok(r["e2e_phase_ms_lock_2_workers"], lambda v: v <= 0.3)),
        Row("  latency p50 / p99, 1 worker", f"{r['e2e_latency_p50_ms']:.0f} / {r['e2e_latency_p99_ms']:.0f} ms"),
        *cluster_rows(r),
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


def cluster_rows(r: dict) -> list[Row]:
    """Scale-out on a Redis Cluster (bench/cluster.py): two partitions at once
    against one, in-process and with Celery workers, with the cores each run
    kept busy and those the rest of the machine took meanwhile."""
    if "cluster_engine_scaling" not in r:
        return []

    def runs(how: str) -> str:
        return " / ".join(f"{r[f'cluster_{how}_articles_per_s_{n}']:.0f}" for n in ("2_partitions", "1_partition"))

    def cores(how: str) -> str:
        return ", ".join(f"{r[f'cluster_{how}_cores_{n}']:.2f} ({r[f'cluster_{how}_other_cores_{n}']:.2f})"
                         for n in ("1_partition", "2_partitions"))

    return [
        Row("Redis Cluster, 2 partitions / 1, in-process", f"{r['cluster_engine_scaling']:.2f}x "
            f"({runs('engine')} articles/s)", ">= 1.6x", ok(r["cluster_engine_scaling"], lambda v: v >= 1.6)),
        Row("  with Celery, a worker per partition", f"{r['cluster_e2e_scaling']:.2f}x ({runs('e2e')} articles/s)"),
        Row("  cores busy, 1 / 2 partitions (others')", f"in-process {cores('engine')}; Celery {cores('e2e')}"),
        Row("  shards (of 3) of 1 partition; of 2", f"{r['cluster_shard_single']}; {r['cluster_shard_a']} and "
            f"{r['cluster_shard_b']} ({r['cluster_articles']} articles: {r['cluster_partition_articles_a']} + "
            f"{r['cluster_partition_articles_b']})"),
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
    stored = (f"{r['stored_articles']} articles stored" if "stored_articles" in r
              else "retention run only" if "retention_bytes_per_article" in r else "Redis Cluster run only")
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
    if r.get("cluster_failed_articles"):
        print(f"warning: the Redis Cluster runs failed {r['cluster_failed_articles']} articles")
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
