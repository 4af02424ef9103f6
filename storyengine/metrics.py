"""Service counters, kept in Redis so that every API and worker process, on any host, adds to the same figures.

Per-process counters would be wrong here: the API runs as several gunicorn
processes and the articles are decided in Celery worker processes elsewhere,
while a scrape reaches one API process. So the counts live in one hash,
``{p}:metrics`` (:attr:`storyengine.keys.Keys.metrics`), and the API's
``/metrics`` reads it back in one round trip (service/metrics.py).

    articles_accepted       new articles the API stored and queued (not resends)
    articles_decided        articles decided for the first time (a redelivery counts nothing)
    duplicates              of those, copies of an earlier article
    stories_opened          of those, founders of a new story
    stories_merged          stories the repair pass merged into another
    articles_failed         articles marked failed (invalid, or an internal error)
    latency:<bound>         decided articles whose time from received to processed fell in
                            (previous bound, bound] seconds; ``latency:+Inf`` above the last
    latency_sum             those times, summed (seconds)
    engine_seconds:<phase>  seconds worker processes spent deciding, by phase of
                            ``storyengine.phases.PHASES`` (featurise, lock, reads, ...):
                            where the workers' time goes, and whether they wait on each other

Each article is counted in the very step that changes it, so the counters
are exact: accepted in the accept script (and taken back if its task cannot
be sent), decided in the commit (one atomic script call) that turns it ``processed``
(:func:`queue_decided`; a redelivery finds it processed and counts nothing),
failed in the script that marks it failed (only from queued). The engine's
seconds and the merges are counted after the work, best effort: a Redis
error then is logged and never fails the work that was counted.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from .phases import PHASES
from .store import RedisStore

log = logging.getLogger("storywire.metrics")

COUNTERS = ("articles_accepted", "articles_decided", "duplicates", "stories_opened", "stories_merged",
            "articles_failed")
# Seconds from received to processed: a lone article takes milliseconds, a
# burst waits in the queue for seconds to minutes, a lost task until the
# requeue pass (5 minutes by default) sends it again.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_SUM = "latency_sum"
ENGINE_SECONDS = "engine_seconds:"


def latency_field(bound: float) -> str:
    """The hash field of the latency bucket with this upper bound (``math.inf`` for the last)."""
    return "latency:+Inf" if math.isinf(bound) else f"latency:{bound:g}"


def latency_bucket(seconds: float) -> float:
    """The upper bound of the bucket a latency falls in (Prometheus buckets include their bound)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return bound
    return math.inf


@dataclass(frozen=True)
class MetricsSnapshot:
    counters: dict[str, int]
    # (upper bound, decided articles at or under it), cumulative, ending with math.inf
    latency_buckets: list[tuple[float, int]]
    latency_sum: float
    engine_seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds, every phase of PHASES

    @property
    def latency_count(self) -> int:
        return self.latency_buckets[-1][1]

    @classmethod
    def from_hash(cls, raw: Mapping) -> "MetricsSnapshot":
        """Read back the ``{p}:metrics`` hash (bytes or str). A field that is not
        a number (written by hand, or by a different version) is skipped with a
        warning instead of failing every scrape."""
        values: dict[str, float] = {}
        for name, value in raw.items():
            name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                log.warning("metrics: ignoring field %r, its value is not a number", name[:100])
        counters = {name: int(values.get(name, 0)) for name in COUNTERS}
        running = 0
        buckets = []
        for bound in (*LATENCY_BUCKETS, math.inf):
            running += int(values.get(latency_field(bound), 0))
            buckets.append((bound, running))
        engine = {phase: values.get(ENGINE_SECONDS + phase, 0.0) for phase in PHASES}
        return cls(counters, buckets, values.get(LATENCY_SUM, 0.0), engine)


def queue_decided(pipe, key: str, decided: Iterable[tuple[float | None, bool, bool]], now: float) -> None:
    """Queue the counts of decided articles on ``pipe``, the commit's own
    atomic commit (storyengine.commit_script; the batch's, a promotion's): each (received_ts, duplicate,
    opened_story) once, in the same step as its status turns ``processed``,
    so the counters are exact. Processed is ``now``, the commit's time."""
    increments: Counter = Counter()
    latency_sum = 0.0
    for received, duplicate, opened in decided:
        increments["articles_decided"] += 1
        increments["duplicates"] += bool(duplicate)
        increments["stories_opened"] += bool(opened)
        if received is None:
            continue
        # Received on the API's clock, processed on the worker's: a skew between hosts is not a negative time.
        seconds = max(0.0, now - received)
        increments[latency_field(latency_bucket(seconds))] += 1
        latency_sum += seconds
    for name, n in increments.items():
        if n:
            pipe.hincrby(key, name, n)
    if latency_sum:
        pipe.hincrbyfloat(key, LATENCY_SUM, latency_sum)


class Metrics:
    """Adds what is not counted where it happens: the engine's seconds by
    phase and the repair pass's merges. Every method costs one round trip,
    in one atomic step. (Accepted, decided and failed articles are counted in
    the very step that stores, decides or fails them: the store's scripts and
    the commit, with :func:`queue_decided`.)"""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def count_merges(self, count: int) -> bool:
        return self._add({"stories_merged": count})

    def count_engine_seconds(self, engine_seconds: Mapping[str, float]) -> bool:
        """Add the seconds one ``Decider.process_many`` call spent by phase
        (the change in ``Decider.phase_seconds`` over the call)."""
        spent = {ENGINE_SECONDS + phase: seconds for phase, seconds in engine_seconds.items()
                 if phase in PHASES and seconds > 0}
        return self._add({}, 0.0, spent)

    def _add(self, increments: Mapping[str, int], latency_sum: float = 0.0,
             sums: Mapping[str, float] | None = None) -> bool:
        """Add ``increments`` (whole counts) and the float ``sums`` to the hash, in one transaction."""
        increments = {name: n for name, n in increments.items() if n}
        sums = {name: x for name, x in dict(sums or {}, **{LATENCY_SUM: latency_sum}).items() if x}
        if not increments and not sums:
            return True
        try:
            with self.store.redis.pipeline(transaction=True) as pipe:
                for name, n in increments.items():
                    pipe.hincrby(self.store.keys.metrics, name, n)
                for name, x in sums.items():
                    pipe.hincrbyfloat(self.store.keys.metrics, name, x)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not count %s: %s", ", ".join(sorted([*increments, *sums])), exc)
            return False
        return True
