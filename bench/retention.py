"""Section 6, retention over several windows: a feed posted and decided in
order with the default settings, the store measured at each window's end."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime

from evaluation.progress import Progress
from evaluation.replay import record_of
from storyengine.clock import parse as parse_clock
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .engine import start_engine
from .redis_server import used_memory
from .settings import retention_settings
from .stream import build_stream

READ_CHUNK = 1000   # articles asked about per round trip, retention run
DAY = 86400.0


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
    decider = start_engine(store)
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
            outcomes = decider.process_many(ids) if ids else []
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
