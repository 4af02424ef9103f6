"""The benchmark (make bench, the bench package): one tiny run end to end,
through every section with real processes, and the pieces whose mistakes
would skew its figures."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.engine import start_engine
from bench.ingest import IngestRun, cost_ratio, engine_phase_figures
from bench.reads import parse_server_timing, round_trips_in_process
from bench.report import REQUIRED_KEYS
from bench.retention import DAY, Boundary, RetentionRun, retention_figures, retention_run, retention_stream
from bench.stream import build_stream
from evaluation.replay import record_of
from evaluation.streams import read_stream
from storyengine import tombstones
from storyengine.phases import PHASES
from storyengine.settings import Settings
from tests.shared_data import DEV_STREAM as DEV, require_shared

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = ROOT / "tests" / "data" / "two_events.jsonl"
MACHINE_KEYS = ("cpu_model", "cpu_cores", "python_version", "redis_version", "redis_embedded")


@pytest.mark.e2e
def test_a_tiny_run_writes_every_figure(tmp_path):
    require_shared(DEV)
    """Every figure the targets are judged on comes out as a finite number.

    The bench starts its own Redis rather than the suite's server: its
    end-to-end run starts Celery workers on the `storywire` queue, which would
    take tasks the API tests leave queued there (and the suite's own worker
    would take the bench's)."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "STORYWIRE_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--articles", "600", "--naive-articles", "150", "--e2e-articles", "200",
         "--read-seconds", "2", "--read-clients", "2", "--retention-rate", "3", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        value = figures.get(key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (key, value)
    assert figures["stored_articles"] == 600
    for key in MACHINE_KEYS:
        assert figures.get(key) not in (None, ""), key
    assert figures["redis_embedded"] is True
    # Where the time went, by phase: in-process from the engine's clock, end
    # to end from the workers' metrics. Each adds up to less than the time taken.
    for suffix in ("", "_early", "_late"):
        assert figures[f"engine_phase_ms_featurise{suffix}"] > 0 and figures[f"engine_phase_ms_commit{suffix}"] > 0
    engine_ms = 1000 / figures["engine_articles_per_s"]
    assert sum(figures[f"engine_phase_ms_{phase}"] for phase in PHASES) <= engine_ms
    for run in ("1_worker", "2_workers"):
        assert figures[f"e2e_phase_ms_decide_{run}"] > 0 and figures[f"e2e_phase_ms_featurise_{run}"] > 0
    assert "by phase" in result.stdout
    # The readable table, with a verdict on each target.
    assert "engine in-process" in result.stdout and ("PASS" in result.stdout or "MISS" in result.stdout)
    assert "memory steady" in result.stdout and figures["retention_articles"] == 450


@pytest.mark.e2e
def test_only_retention_runs_the_retention_part_alone(tmp_path):
    """``--only retention``: the 5-window run alone, its rows and its figures."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "STORYWIRE_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "retention", "--stream", str(SMALL), "--retention-rate", "2",
         "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert "engine_articles_per_s" not in figures and figures["retention_articles"] == 300
    assert figures["retention_days"] == Settings().retention_days and figures["retention_windows"] == 5
    assert "memory steady, window 5 / window 2" in result.stdout and "tombstones" in result.stdout
    assert "engine in-process" not in result.stdout


def test_the_retention_run_ages_out_leaves_tombstones_and_stays_bounded(store):
    """Five windows of a tiny stream with the default settings, posted and
    decided in batches: what is older than the window is gone and has a
    tombstone, what is inside it is held, and the store holds about one
    window's articles at every boundary after the first."""
    s = store.settings
    assert s.retention_days == Settings().retention_days   # the default window, not the bench's long one
    rate = 4.0
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    records = [record_of(r) for r in retention_stream(read_stream(SMALL), s, rate, 5, end)]
    assert len(records) == 600
    run = retention_run(store, records, batch=50)

    assert [b.windows for b in run.boundaries] == [1, 2, 3, 4, 5]
    last = run.boundaries[-1]
    assert last.clock is not None and run.last_published - DAY < last.clock <= run.last_published
    before = last.clock - s.retention_days * DAY
    with store.redis.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.exists(store.keys.article(record["id"]))
        held = dict(zip((r["id"] for r in records), pipe.execute()))
    # Stories of this stream span a few days: a week before the window, nothing is held.
    old = [r["id"] for r in records if r["published_ts"] < before - 7 * DAY]
    assert old and not any(held[i] for i in old)
    assert all(held[r["id"]] for r in records if r["published_ts"] >= before)
    assert run.stories_past_window == 0 and run.removed_inside_window == 0 and run.gone_without_tombstone == 0
    for article_id in old[:20] + old[-20:]:
        stone = tombstones.find(store.redis, store.keys, article_id, time.time(), s.tombstone_days)
        assert stone is not None and stone.kind in ("article", "failed"), article_id
    assert last.tombstones >= len(old)

    # Bounded: about one window's articles held at every boundary after the
    # first; tombstones only grow (none expires within the run).
    window_articles = rate * s.retention_days
    for b in run.boundaries[1:]:
        assert window_articles <= b.articles <= 1.5 * window_articles, b
    assert [b.tombstones for b in run.boundaries] == sorted(b.tombstones for b in run.boundaries)

    figures = retention_figures(run, s)
    for key, value in figures.items():
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    assert figures["retention_held_past_window"] + figures["retention_held_inside_window_days"] * rate \
        == pytest.approx(last.articles)
    assert 0 < figures["retention_tombstone_share"] < 1 and figures["retention_bytes_per_tombstone"] > 0


def test_retention_figures_price_tombstones_and_compare_window_5_with_2():
    run = RetentionRun(window_days=30, rate_per_day=100, baseline_memory=1_000, seconds=1.0,
                       last_published=100 * DAY)
    for n, (used, articles, stones, stone_bytes) in enumerate(
            [(5_000, 3000, 0, 0), (11_000, 3000, 4000, 400), (11_400, 3000, 8000, 800),
             (11_800, 3000, 12000, 1200), (12_200, 3000, 16000, 1600)], 1):
        run.boundaries.append(Boundary(n, 100 * DAY - 3600, 1_000 + used, articles, 1000, stones, stone_bytes))
    figures = retention_figures(run, Settings())
    assert figures["retention_bytes_per_article"] == pytest.approx(12_200 / 3000)
    assert figures["retention_tombstone_share"] == pytest.approx(1600 / 12_200)
    assert figures["retention_memory_steady"] == pytest.approx(12_200 / 11_000)
    assert figures["retention_memory_steady_without_tombstones"] == pytest.approx(10_600 / 10_600)
    assert figures["retention_bytes_per_tombstone"] == pytest.approx(0.1)
    # 16,000 tombstones over the 120 days after the first window, 8 days of them held at 0.1 B each.
    assert figures["retention_tombstones_per_day"] == pytest.approx(16_000 / 120)
    assert figures["retention_tombstone_bound_bytes"] == pytest.approx(16_000 / 120 * 8 * 0.1)
    assert figures["retention_clock_lag_hours"] == pytest.approx(1.0)


def test_the_stream_is_evenly_spaced_with_fresh_ids():
    """Evenly spaced at the rate, so the story window holds as many articles
    at 10k stored as at 100k; every copy a new article."""
    rows = read_stream(SMALL)
    end = datetime(2026, 3, 1, tzinfo=timezone.utc)
    stream = build_stream(rows, len(rows) * 3 + 1, rate_per_day=2400, end=end)
    assert len(stream) == len(rows) * 3 + 1
    assert len({r["id"] for r in stream}) == len(stream)
    times = [datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")) for r in stream]
    assert times[-1] == end
    assert {(b - a).total_seconds() for a, b in zip(times, times[1:])} == {36.0}


def test_server_timing_is_read_in_ms_with_round_trips():
    assert parse_server_timing('app;dur=1.234, redis;desc="2 round trips"') == (1.234, 2)
    assert parse_server_timing("app;dur=0.5") == (0.5, None)
    assert parse_server_timing(None) == (None, None)


def test_reads_without_the_header_count_round_trips_with_the_api_s_own_counter(store, redis_url):
    """Without round trips in Server-Timing, the bench counts the read
    routes' store calls with service.timing's counter, as the API counts
    them: at most two per read, the new connection's handshake left out."""
    records = [record_of(r) for r in read_stream(SMALL)[:40]]
    start_engine(store).process_many([a.id for a in store.accept_articles(records) if a.created])
    story_ids = [sid.decode() for sid in store.redis.zrevrange(store.keys.stories_size, 0, 4)]
    assert story_ids
    assert 1 <= round_trips_in_process(redis_url, store.settings, story_ids) <= 2


def test_cost_ratio_compares_10k_stored_with_the_end():
    run = IngestRun()
    for start in range(0, 20_000, 100):
        run.sizes.append(100)
        run.stored_before.append(start)
        run.seconds.append(0.2 if start >= 18_000 else 0.1)   # twice the cost at the end
    ratio, early_ms, late_ms, windows = cost_ratio(run, 20_000)
    assert ratio == pytest.approx(2.0) and early_ms == pytest.approx(1.0) and late_ms == pytest.approx(2.0)
    assert windows.startswith("9000-11000")


def test_phase_figures_are_per_article_over_their_windows():
    run = IngestRun()
    for start in range(0, 20_000, 100):
        run.sizes.append(100)
        run.stored_before.append(start)
        run.seconds.append(0.1)
        run.phase_seconds.append({"featurise": 0.02, "decide": 0.06 if start >= 18_000 else 0.03})
    figures = engine_phase_figures(run, 20_000)
    assert figures["engine_phase_ms_featurise"] == pytest.approx(0.2)
    assert figures["engine_phase_ms_decide_early"] == pytest.approx(0.3)
    assert figures["engine_phase_ms_decide_late"] == pytest.approx(0.6)
    assert figures["engine_phase_ms_decide"] == pytest.approx((180 * 0.3 + 20 * 0.6) / 200)
