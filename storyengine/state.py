"""What deciding a run of articles reads and writes: the storage seam.

As datasketch keeps one small storage interface with a dict twin and a Redis
twin, the decision code (storyengine.batch_reads, duplicates, assignment,
run_decider) reads and writes shared state only through a ``DecisionState``:

- ``RedisState``, the store of record: a batch's reads in two pipelined round
  trips (and a third only when a decision needs what no one read), its writes
  in one atomic script call under the assignment lock (storyengine.locking,
  commit_script), which also logs them for the replicas (storyengine.change_log).
- ``MemoryState`` (storyengine.memory_state), the same records in dicts,
  stored exactly as Redis stores them (redis-py's own encoding, the same
  parsing on the way back), so the engine's logic runs, and is tested, in a
  plain process: the same stream decided on either twin gives the same
  decisions.

What a decision reads: article statuses, the owners of exact fingerprints,
LSH band slots, the term index, stories with the window's day buckets,
candidate articles and the document frequencies. What it writes is a
storyengine.batch.Batch. Outside the seam, on Redis alone: loading articles
and their outlets' boilerplate, the lock, the stream clock and retention, and
the promotion of an earlier copy (storyengine.duplicates.Promotion).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import boilerplate, promotion, records
from .batch import Batch, Story, scored_members
from .change_log import Entry
from .document_frequencies import DocumentFrequencies, pack_delta
from .decisions import Decision, received_ts
from .features import Features
from .keys import Keys
from .locking import AssignmentConflict, AssignmentLock
from .metrics import queue_decided
from .records import CANDIDATE_FIELDS, STORY_FIELDS, bucket_field, decode
from .story_writer import StoryWriter
from .redis_scripts import BAND_LOOKUP, BAND_WRITE, DF_CHANGE, DROP_TEXT, TERM_LOOKUP
from .settings import Settings

Slot = tuple[str, bytes]  # (band key, field) of one LSH band slot
TermHits = list[tuple[str, float]]  # (story, score in the term index), newest first
DfFold = tuple[bytes, int]  # document frequencies folded (as {p}:df stores them), and the version they were read at


@dataclass
class FirstRead:
    """A batch's first read, in the order asked."""
    df_version: int
    statuses: list[bytes | None]
    owners: list[str | None]  # of each fingerprint
    band_values: list[str]  # space-separated article ids per slot ('' when empty)
    term_hits: list[TermHits]
    ahead: bool = False  # answered by the read ahead of the lock: nothing was logged since


class DecisionState(Protocol):
    def read_df(self, df: DocumentFrequencies) -> None:
        """Load the stream's document frequencies into ``df``."""

    def first_read(self, article_ids: list[str], fingerprints: list[str], slots: list[Slot], features: list[int],
                   since: float) -> FirstRead:
        """Statuses, fingerprint owners, band slots, and each feature's stories updated at or after ``since``."""

    def term_hits(self, features: list[int], since: float) -> list[TermHits]:
        """Each feature's stories updated at or after ``since`` (the newest ``stories_per_term``)."""

    def fetch(self, story_ids: list[str], article_ids: list[str], bucket_ids: list[int]
              ) -> tuple[list[Story | None], list[dict]]:
        """Stories (None where gone) with the ``bucket_ids``' buckets, and candidate articles (records.parse_candidate)."""

    def commit(self, batch: Batch, lock: AssignmentLock | None) -> None:
        """Write a batch's decisions, all or nothing, only while ``lock`` is held."""

    def promote(self, decision: Decision, record: dict, f: Features, lock: AssignmentLock | None) -> None:
        """Apply a ``promoted`` decision (storyengine.promotion), all or nothing, only while ``lock`` is held."""


class RedisState:
    """The decision state in Redis, the store of record."""

    def __init__(self, redis_client, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = redis_client, keys, settings
        self.band_lookup = redis_client.register_script(BAND_LOOKUP)
        self.band_write = redis_client.register_script(BAND_WRITE)
        self._term_lookup = redis_client.register_script(TERM_LOOKUP)
        self._df_change = redis_client.register_script(DF_CHANGE)
        self._drop_text = redis_client.register_script(DROP_TEXT)
        self._boilerplate_count = redis_client.register_script(boilerplate.COUNT)
        self.story_writer = StoryWriter(redis_client, keys)

    def read_df(self, df: DocumentFrequencies) -> None:
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.df)
            pipe.lrange(k.df_deltas, 0, -1)
            pipe.get(k.df_docs)
            pipe.get(k.df_version)
            base, deltas, docs, version = pipe.execute()
        df.load(base, deltas, docs, version)

    def first_read(self, article_ids, fingerprints, slots, features, since) -> FirstRead:
        k, s = self.keys, self.settings
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.df_version)
            for article_id in article_ids:
                pipe.hget(k.article(article_id), "status")
            for fp in fingerprints:
                pipe.get(k.fingerprint(fp))
            if slots:
                self.band_lookup(keys=[key for key, _ in slots], args=[f for _, f in slots], client=pipe)
            if features:
                self._term_lookup(keys=[k.term(x) for x in features], args=[since, s.stories_per_term], client=pipe)
            version, *rest = pipe.execute()
        statuses, rest = rest[:len(article_ids)], rest[len(article_ids):]
        owners, rest = [decode(v) if v else None for v in rest[:len(fingerprints)]], rest[len(fingerprints):]
        band_values = [decode(v) for v in rest.pop(0)] if slots else []
        term_hits = [scored_members(m) for m in rest.pop(0)] if features else []
        return FirstRead(int(version or 0), statuses, owners, band_values, term_hits)

    def term_hits(self, features, since) -> list[TermHits]:
        found = self._term_lookup(keys=[self.keys.term(x) for x in features],
                                  args=[since, self.settings.stories_per_term])
        return [scored_members(m) for m in found]

    def fetch(self, story_ids, article_ids, bucket_ids):
        k = self.keys
        story_fields = STORY_FIELDS + tuple(bucket_field(i) for i in bucket_ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in story_ids:
                pipe.hmget(k.story(sid), story_fields)
            for aid in article_ids:
                pipe.hmget(k.article(aid), CANDIDATE_FIELDS)
            rows = pipe.execute()
        return ([Story.from_row(sid, row, bucket_ids) for sid, row in zip(story_ids, rows)],
                [records.parse_candidate(row) for row in rows[len(story_ids):]])

    def commit(self, batch: Batch, lock: AssignmentLock | None, df_fold: DfFold | None = None,
               meanwhile=None) -> Entry | None:
        """Write the batch under ``lock``; returns what it logged (storyengine.change_log).
        ``df_fold``: the document frequencies after it, to store folded instead of as one more delta;
        ``meanwhile``: as AssignmentLock.commit takes it."""
        if lock is None:
            raise AssignmentConflict("no assignment lock held")
        return lock.commit(lambda pipe: self._queue_writes(pipe, batch, time.time(), df_fold), meanwhile)

    def promote(self, decision: Decision, record: dict, f: Features, lock: AssignmentLock | None,
                meanwhile=None) -> Entry | None:
        if lock is None:
            raise AssignmentConflict("no assignment lock held")
        k = self.keys
        old_ids = [o["article"] for o in decision.takes_over]
        story_id = decision.takes_over[0]["story"]
        with self.redis.pipeline(transaction=False) as pipe:
            for old in old_ids:
                pipe.hmget(k.article(old), promotion.OLD_CANONICAL_FIELDS)
            pipe.hmget(k.story(story_id), promotion.STORY_FIELDS)
            pipe.zrange(k.story_articles(story_id), 0, -1)
            *old_rows, story, members = pipe.execute()
        read = promotion.PromotionRead(old_rows, story, [decode(m) for m in members])
        slots = promotion.slots_to_read(k, f, read)
        with self.redis.pipeline(transaction=False) as pipe:
            for member in read.members:
                pipe.hmget(k.article(member), promotion.MEMBER_FIELDS)
            self.band_lookup(keys=[key for key, _ in slots], args=[x for _, x in slots], client=pipe)
            *read.member_rows, band_values = pipe.execute()
        read.band_values = [decode(v) for v in band_values]
        planned = promotion.plan(decision, record, f, read, slots, self.settings)
        return lock.commit(lambda pipe: self._queue_promotion(pipe, planned, received_ts(record), time.time()),
                           meanwhile)

    def _queue_promotion(self, pipe, p: promotion.PromotionPlan, received: float | None, now: float) -> None:
        k = self.keys
        fields = dict(p.article_fields, processed_ts=round(now, 3))
        queue_decided(pipe, k.metrics, [(received, False, False)], round(now, 3))
        pipe.hset(k.article(p.article_id), mapping=fields)
        self._drop_text(keys=[k.article(p.article_id)], client=pipe)
        pipe.zrem(k.queued, p.article_id)
        self.story_writer.write(pipe, [p.story])
        self.story_writer.add_members(pipe, p.story_id, {p.article_id: p.published}, {p.source: 1})
        for old, containment, fingerprint in p.olds:
            pipe.hset(k.article(old), mapping={"duplicate_of": p.article_id, "similarity": containment})
            # Only canonical articles are compared, and only they count in the term statistics.
            pipe.hdel(k.article(old), *records.CANONICAL_ONLY_FIELDS)
            if fingerprint:
                pipe.set(k.fingerprint(fingerprint), p.article_id)
        for copy, fingerprint in p.copies:
            pipe.hset(k.article(copy), "duplicate_of", p.article_id)
            if fingerprint:  # a copy that was canonical once still owns its text's key: re-point it
                pipe.set(k.fingerprint(fingerprint), p.article_id, xx=True)
        change = np.zeros(self.settings.hash_features, dtype=np.int64)
        for features in p.uncounted:
            change[features] -= 1  # a document's features are distinct
        self._queue_df_change(pipe, change, -len(p.uncounted), None)
        pipe.set(k.fingerprint(p.fingerprint), p.article_id)
        self._write_bands(pipe, p.band_values)

    def _queue_writes(self, pipe, batch: Batch, now: float, df_fold: DfFold | None) -> None:
        """Queue every write of the batch on ``pipe`` (sent as one commit: storyengine.commit_script)."""
        k = self.keys
        joined: dict[str, tuple[dict[str, float], Counter]] = {}
        for article_id, fields, story_id, source, published in batch.article_writes:
            fields["processed_ts"] = round(now, 3)
            pipe.hset(k.article(article_id), mapping=fields)
            members, sources = joined.setdefault(story_id, ({}, Counter()))
            members[article_id] = published
            sources[source] += 1
        for story_id, (members, sources) in joined.items():
            self.story_writer.add_members(pipe, story_id, members, sources)
        if batch.article_writes:
            # Decided: the texts are not needed any more.
            self._drop_text(keys=[k.article(a) for a, *_ in batch.article_writes], client=pipe)
            pipe.zrem(k.queued, *[a for a, *_ in batch.article_writes])
            queue_decided(pipe, k.metrics, batch.decided, round(now, 3))  # counted in the same step: exact
        self.story_writer.write(pipe, batch.story_updates())
        boilerplate.queue_counts(pipe, self._boilerplate_count, k, self.settings, batch.sentences_seen)
        for fp, owner in batch.written_fingerprints().items():
            pipe.set(k.fingerprint(fp), owner)
        self._write_bands(pipe, batch.written_band_values())
        if batch.docs_change or (batch.df_changes is not None and batch.df_changes.any()):
            self._queue_df_change(pipe, batch.df_changes, batch.docs_change, df_fold)

    def _queue_df_change(self, pipe, changes: np.ndarray | None, docs_change: int, fold: DfFold | None) -> None:
        """One change of the document frequencies: appended as a delta, or with ``fold`` the counters after it."""
        k = self.keys
        delta = pack_delta(changes) if changes is not None else b""
        self._df_change(keys=[k.df, k.df_deltas, k.df_docs, k.df_version],
                        args=[delta, docs_change, *(fold or (b"", b""))], client=pipe)

    def _write_bands(self, pipe, values: dict[Slot, str]) -> None:
        """Band slots' new values, in one call ('' empties a slot)."""
        if values:
            self.band_write(keys=[key for key, _ in values], args=[x for (_, slot), value in values.items()
                                                                  for x in (slot, value)], client=pipe)
