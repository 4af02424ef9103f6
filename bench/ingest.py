"""Section 2, engine ingest in-process: every article accepted, then processed
in timed chunks; the cost per article as the store grows, and by phase."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from evaluation.progress import Progress
from storyengine.store import RedisStore

from .engine import start_engine
from .redis_server import redis_cpu_seconds, used_memory
from .stats import median

ACCEPT_CHUNK = 500
TIMED_WINDOW = (9_000, 11_000)   # "at 10k stored"


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
    decider = start_engine(store)
    process = decider.process_many
    clock = getattr(decider, "phase_seconds", {})  # an engine from before the phases were timed has none
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
