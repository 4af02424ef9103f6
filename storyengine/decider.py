"""Deciding articles: featurise (storyengine.features) → read the batch
(storyengine.batch_reads) → candidate stories, ranked (storyengine.stories)
→ verify duplicate candidates (storyengine.duplicates) → follow the
canonical if it is a copy, else join the best story or open a new one
(storyengine.assignment). In batches (:meth:`Decider.process_many`): one lock
hold, two read round trips and one commit for up to ``BATCH_LIMIT`` articles
(storyengine.runs, storyengine.batch), deciding each exactly as it would be
decided alone, in order.

Concurrency. Everything that is pure computation (text, shingles, MinHash,
term counts) runs outside any lock. The decision itself (is it a copy of an
article we hold, which story does it join) reads shared state and then writes
it, so it runs under the assignment lock (storyengine.locking): two copies
of one event arriving together are decided one after the other, and the
second sees the story the first opened. What it reads comes from the
process's in-memory replica, kept exact by the change log
(storyengine.replica, docs/architecture.md), brought up to date before the
lock and again under it. A batch's writes go out in one atomic script call
that first checks the lock's token (storyengine.commit_script): if the lock
expired and another worker took it, nothing is written and the task
retries, so a slow worker can never write a decision made on stale reads.
Each article's status is set to ``processed`` in that same call, and the
first read under the lock checks it, so a retried or redelivered task
changes nothing.
"""
from __future__ import annotations

import logging
import time
from collections import Counter

import redis

from . import boilerplate
from .clock import stream_time
from .decisions import Outcome
from .errors import DecisionFailed, InvalidArticle, NotFound, StoreUnavailable
from .features import Featuriser
from .locking import AssignmentLock
from .phases import lap
from .retention import Retention
from .run_decider import RunDecider, failed
from .runs import runs
from .settings import Settings
from .replicated_state import ReplicatedState
from .store import CLUSTER_BUSY, SLOT_ELSEWHERE, RedisStore, out_of_memory

log = logging.getLogger("storywire.engine")

def _transient(exc: BaseException) -> bool:
    """An outage (Redis unreachable, out of memory, the lock lost): the whole
    call is retried later. Anything else is an error of ours about the articles at hand."""
    if isinstance(exc, (StoreUnavailable, redis.ConnectionError, redis.TimeoutError)):
        return True
    # redis-py parses these (and drops the code from their text): a Cluster node that does not serve
    # the slot or cannot now (storyengine.store), a replica (READONLY).
    if isinstance(exc, SLOT_ELSEWHERE + CLUSTER_BUSY + (redis.exceptions.ReadOnlyError,)):
        return True
    # Redis names these at the start of its answer, or inside a script's error.
    return out_of_memory(exc) or (isinstance(exc, redis.ResponseError) and str(exc).startswith(
        ("BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")))


class Decider:
    """Decides articles by id against a :class:`RedisStore`. One per worker
    process (not shared between threads: it remembers the lock it holds, and
    keeps caches of what never changes)."""

    def __init__(self, store: RedisStore, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or store.settings
        self.keys = store.keys
        self.redis = store.redis
        self.featuriser = Featuriser(self.settings, self.keys)
        self._lock: AssignmentLock | None = None  # set while this decider holds the assignment lock
        # Seconds spent per phase (storyengine.phases) over this decider's life; a
        # caller that wants one call's share takes the difference.
        self.phase_seconds: Counter[str] = Counter()
        self.state = ReplicatedState(self.redis, self.keys, self.settings)
        self.run_decider = RunDecider(self.state, self.settings, self.phase_seconds)
        self._retention = Retention(store, self.state.writer.band_lookup, self.state.writer.band_write)

    # ------------------------------------------------------------------ the flow
    def process(self, article_id: str) -> Outcome:
        """Decide one article; raises NotFound or InvalidArticle if it cannot be."""
        [outcome] = self.process_many([article_id])
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def process_many(self, article_ids: list[str]) -> list[Outcome]:
        """Decide articles in the order given, in batches. An article that is
        missing or invalid, or whose decision raised an error of ours, gets an
        Outcome with ``error`` set; the rest go on. Only a store that cannot be
        reached (StoreUnavailable) stops the call."""
        try:
            ids = list(dict.fromkeys(article_ids))  # the same id twice is decided once
            outcomes: dict[str, Outcome] = {}
            pending = []
            began = time.perf_counter()
            loaded = self.store.load_articles(ids)
            began = self._lap("load", began)
            learnt = boilerplate.Boilerplate(self.keys, self.settings)
            learnt.read(self.redis, [(i, r) for i, r in zip(ids, loaded)
                                     if r is not None and r.get("status") not in ("processed", "failed")])
            stripped = []
            for article_id, record in zip(ids, loaded):
                if record is None:
                    outcomes[article_id] = failed(article_id, NotFound(f"no article with id {article_id!r}"))
                elif record.get("status") == "processed":
                    outcomes[article_id] = self._already(article_id, record)
                elif record.get("status") == "failed":  # final: a later delivery never decides it
                    outcomes[article_id] = failed(article_id, InvalidArticle(
                        f"already failed: {record.get('error') or 'no reason recorded'}"))
                else:
                    try:
                        stripped.append((article_id, record, learnt.strip(article_id, record)))
                    except Exception as exc:  # noqa: BLE001 - a bug on one text fails that article alone
                        stripped.append((article_id, record, exc))
            # Featurised together (the array work of all at once); one that cannot be fails alone.
            featurised = iter(self.featuriser.featurise_many(
                [(r, s) for _, r, s in stripped if not isinstance(s, Exception)]))
            for article_id, record, s in stripped:
                features = s if isinstance(s, Exception) else next(featurised)
                if isinstance(features, InvalidArticle):
                    outcomes[article_id] = failed(article_id, features)
                elif isinstance(features, Exception):
                    outcomes[article_id] = failed(article_id, DecisionFailed.of(features))
                else:
                    pending.append((article_id, record, features))
            self._lap("featurise", began)
            for chunk in runs(pending, self.settings):
                began = time.perf_counter()
                self.run_decider.prepare(chunk)  # what depends on each article alone, before the lock
                began = self._lap("featurise", began)
                self._prefetch(chunk)
                began = self._lap("prefetch", began)
                with AssignmentLock(self.redis, self.keys, self.settings.change_log_entries,
                                    waiting=lambda chunk=chunk: self._catch_up(chunk)) as lock:
                    self._lock = lock
                    try:
                        began = self._lap("lock", began)
                        self._on_stream_clock(lock, chunk)
                        self._lap("retention", began)
                        outcomes.update(self._decide_isolated(chunk))
                    finally:
                        self._lock = None
                        began = time.perf_counter()
                self._lap("lock", began)
            return [outcomes[article_id] for article_id in article_ids]
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _on_stream_clock(self, lock: AssignmentLock, chunk: list) -> None:
        """Advance the stream clock by the chunk's dated articles, give the
        undated ones the stream's time, and age out what the clock leaves
        behind first, so a batch decides as its articles would one at a time."""
        try:
            clock = self._retention.advance_and_age_out(
                lock, [(record["source"], f.published) for _, record, f in chunk if f.dated])
        except Exception as exc:
            if _transient(exc):
                raise
            # A damaged record in an old story must not stop every decision: this
            # pass is skipped (and logged), the next batch tries again.
            log.exception("the retention pass failed; deciding this batch without it")
            clock = self._retention.clock.read()
        undated = [f for _, _, f in chunk if not f.dated]
        if undated:
            assigned = stream_time(clock, time.time(), self.settings.live_stream_hours)
            for f in undated:
                f.published = assigned

    def _prefetch(self, chunk: list) -> None:
        self._read_ahead(self.run_decider.reads.prefetch, chunk)

    def _catch_up(self, chunk: list) -> None:
        """While another process holds the lock: take in what it commits, and read ahead again."""
        began = time.perf_counter()
        try:
            self._read_ahead(self.run_decider.reads.catch_up, chunk)
        finally:  # reading ahead while it waits, not waiting: counted as such
            spent = time.perf_counter() - began
            self.phase_seconds["prefetch"] += spent
            self.phase_seconds["lock"] -= spent

    @staticmethod
    def _read_ahead(read, chunk: list) -> None:
        try:
            read(chunk)
        except Exception as exc:
            if _transient(exc):
                raise
            # Only a head start: what it did not read is read under the lock.
            log.exception("reading ahead of the lock failed (%s); deciding the batch without", read.__name__)

    def _decide_isolated(self, chunk: list) -> dict[str, Outcome]:
        """Decide a chunk; if that raises an error of ours (a bug, a script
        error: not an outage), decide its articles one at a time, so the one
        that raises fails alone and the rest are decided."""
        try:
            return self.run_decider.decide(chunk, self._lock)
        except Exception as exc:
            if _transient(exc):
                raise
            self.run_decider.forget_uncommitted()
            if len(chunk) == 1:
                log.exception("deciding article %s failed", chunk[0][0], extra={"article_id": chunk[0][0]})
                return {chunk[0][0]: failed(chunk[0][0], DecisionFailed.of(exc))}
            log.warning("a batch of %d raised %s; deciding its articles one at a time", len(chunk),
                        type(exc).__name__)
        outcomes: dict[str, Outcome] = {}
        for item in chunk:
            try:
                outcomes.update(self.run_decider.decide([item], self._lock))
            except Exception as exc:
                if _transient(exc):
                    raise
                self.run_decider.forget_uncommitted()
                log.exception("deciding article %s failed", item[0], extra={"article_id": item[0]})
                outcomes[item[0]] = failed(item[0], DecisionFailed.of(exc))
        return outcomes


    def _already(self, article_id: str, record: dict) -> Outcome:
        return Outcome(article_id, record.get("story", ""), record.get("duplicate_of") or None,
                       opened_story=False, already_processed=True)

    def _lap(self, phase: str, began: float) -> float:
        return lap(self.phase_seconds, phase, began)
