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

A decision and its counts are two writes, not one transaction (the decision
is the engine's commit under the assignment lock), so a worker that dies
between them loses that task's counts: the counters can fall short, never
count a decided article twice (the engine tells a redelivery by
``already_processed``, checked under the lock). An invalid article counts
as failed while its status is still ``queued``; only two deliveries of one
message running at the same moment could both count it. Counting is best
effort: a Redis error while counting is logged and never fails the work
that was counted.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from .errors import InvalidArticle
from .phases import PHASES
from .store import RedisStore

if TYPE_CHECKING:
    from .pipeline import Outcome

log = logging.getLogger("storywire.metrics")

COUNTERS = ("articles_accepted", "articles_decided", "duplicates", "stories_opened", "stories_merged",
            "articles_failed")
# Seconds from received to processed: a lone article takes milliseconds, a
# burst waits in the queue for seconds to minutes, a lost task until the
# requeue pass (5 minutes by default) sends it again.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_SUM = "latency_sum"
ENGINE_SECONDS = "engine_seconds:"


def bucket_field(bound: float) -> str:
    """The hash field of the latency bucket with this upper bound (``math.inf`` for the last)."""
    return "latency:+Inf" if math.isinf(bound) else f"latency:{bound:g}"


def latency_bucket(seconds: float) -> float:
    """The upper bound of the bucket a latency falls in (Prometheus buckets include their bound)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return bound
    return math.inf


def _is_queued(status: bytes | str | None) -> bool:
    return status in (b"queued", "queued")


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
            running += int(values.get(bucket_field(bound), 0))
            buckets.append((bound, running))
        engine = {phase: values.get(ENGINE_SECONDS + phase, 0.0) for phase in PHASES}
        return cls(counters, buckets, values.get(LATENCY_SUM, 0.0), engine)


class Metrics:
    """Adds to the counters. Every method costs at most two round trips and
    writes its increments in one MULTI/EXEC, so a scrape never sees an article
    counted as decided without its latency."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def count_accepted(self, count: int) -> bool:
        return self._add({"articles_accepted": count})

    def count_merges(self, count: int) -> bool:
        return self._add({"stories_merged": count})

    def count_outcomes(self, outcomes: Iterable[Outcome], engine_seconds: Mapping[str, float] | None = None) -> bool:
        """Count what one ``Processor.process_many`` call decided, from its
        Outcomes, and the seconds it spent by phase (``engine_seconds``, the
        change in ``Processor.phase_seconds`` over the call). Call it before
        the invalid articles are marked failed: an invalid article counts as
        failed only while it is still queued, so a redelivered task counts it
        once, as it counts a decided article once (``already_processed``
        outcomes count nothing; the time they took still counts)."""
        spent = {ENGINE_SECONDS + phase: seconds for phase, seconds in (engine_seconds or {}).items()
                 if phase in PHASES and seconds > 0}
        by_id = {o.article_id: o for o in outcomes}  # the same id twice is one article
        decided = [o for o in by_id.values() if o.error is None and not o.already_processed]
        invalid = [o.article_id for o in by_id.values() if isinstance(o.error, InvalidArticle)]
        if not decided and not invalid:
            return self._add({}, 0.0, spent)
        k = self.store.keys
        try:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for outcome in decided:
                    pipe.hmget(k.article(outcome.article_id), ("received_ts", "processed_ts"))
                for article_id in invalid:
                    pipe.hget(k.article(article_id), "status")
                rows = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not read the decided articles' times: %s", exc)
            return False
        increments: Counter = Counter(articles_decided=len(decided),
                                      duplicates=sum(1 for o in decided if o.duplicate_of),
                                      stories_opened=sum(1 for o in decided if o.opened_story),
                                      articles_failed=sum(1 for s in rows[len(decided):] if _is_queued(s)))
        latency_sum = 0.0
        for received, processed in rows[:len(decided)]:
            if received is None or processed is None:
                continue  # aged out already, or written by an older version: no time to report
            # Received on the API's clock, processed on the worker's: a skew between hosts is not a negative time.
            seconds = max(0.0, float(processed) - float(received))
            increments[bucket_field(latency_bucket(seconds))] += 1
            latency_sum += seconds
        return self._add(increments, latency_sum, spent)

    def count_failed(self, article_ids: Iterable[str]) -> bool:
        """Count articles about to be marked failed for an internal error (the
        ones still queued: those already failed or processed were counted)."""
        ids = list(dict.fromkeys(a for a in article_ids if isinstance(a, str)))  # whatever a message carried
        if not ids:
            return True
        try:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for article_id in ids:
                    pipe.hget(self.store.keys.article(article_id), "status")
                statuses = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not read the failed articles' status: %s", exc)
            return False
        return self._add({"articles_failed": sum(1 for s in statuses if _is_queued(s))})

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
