"""The decision state a worker decides on: reads from its in-memory replica
(storyengine.replica), writes to Redis (storyengine.state.RedisState).

A batch's first read, under the lock, is one round trip: the change log from
the replica's own entry on, the batch's article statuses (admission and
failures write those outside the lock, so they are always read), and
whatever the replica does not hold of what the batch asks for. The replica
applies the log, then takes in what was read: both are Redis as it stands
under the lock. Everything else comes from memory; what a decision needs
later and the replica lacks is read then, in one more round trip.

Writes go to Redis as before (one MULTI/EXEC under the lock, which logs
them), and the replica applies the entry its commit logged.
"""
from __future__ import annotations

from . import change_log, records
from .batch import Batch, Story
from .decisions import Decision
from .document_frequencies import DocumentFrequencies
from .features import Features
from .keys import Keys
from .locking import AssignmentLock
from .records import CANDIDATE_FIELDS, STORY_FIELDS, bucket_field, decode
from .replica import MISSING, Replica
from .settings import Settings
from .state import FirstRead, RedisState, TermHits


class ReplicatedState:
    def __init__(self, redis_client, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = redis_client, keys, settings
        self.writer = RedisState(redis_client, keys, settings)
        self.replica = Replica(keys, settings)
        self.round_trips = 0  # under the lock, over this state's life (the bench reads it)

    # ------------------------------------------------------------------ reads
    def read_df(self, df: DocumentFrequencies) -> None:
        if self.replica.df_counts is None:
            self._read(df=True)
        r = self.replica
        df.counts, df.docs, df.version = r.df_counts.copy(), r.df_docs, r.df_version

    def first_read(self, article_ids, fingerprints, slots, features, since) -> FirstRead:
        statuses = self._read(article_ids=article_ids, fingerprints=fingerprints, slots=slots, features=features,
                              df=True, sync=True)
        self._read(fingerprints=fingerprints, slots=slots, features=features, df=True)  # forgotten meanwhile
        r = self.replica
        return FirstRead(r.df_version, statuses, [r.fingerprint(fp) for fp in fingerprints],
                         [r.band(slot) for slot in slots], self._term_hits(features, since))

    def term_hits(self, features, since) -> list[TermHits]:
        self._read(features=features)
        return self._term_hits(features, since)

    def fetch(self, story_ids, article_ids, bucket_ids):
        self._read(story_ids=story_ids, candidate_ids=article_ids)
        r = self.replica
        story_fields = STORY_FIELDS + tuple(bucket_field(i) for i in bucket_ids)
        stories = []
        for sid in story_ids:
            held = r.story(sid)
            stories.append(None if held is None else Story.from_row(sid, [held.get(f) for f in story_fields],
                                                                     bucket_ids))
        articles = []
        for aid in article_ids:
            held = r.article(aid)
            articles.append(records.parse_candidate([held.get(f) for f in _CANDIDATE]) if held is not MISSING
                            else records.parse_candidate([None] * len(_CANDIDATE)))
        return stories, articles

    def _term_hits(self, features, since) -> list[TermHits]:
        limit = self.settings.stories_per_term
        return [self.replica.term_hits(x, since, limit) for x in features]

    def _read(self, article_ids=(), fingerprints=(), slots=(), features=(), story_ids=(), candidate_ids=(),
              df: bool = False, sync: bool = False) -> list[bytes | None]:
        """One round trip: the log tail (``sync``), statuses, and whatever of
        the rest the replica does not hold; the replica follows the tail, then
        takes in the rest. Returns the statuses."""
        r, k = self.replica, self.keys
        fps = [fp for fp in dict.fromkeys(fingerprints) if r.fingerprint(fp) is MISSING]
        slots = [slot for slot in dict.fromkeys(slots) if r.band(slot) is MISSING]
        features = [x for x in dict.fromkeys(features) if not r.has_term(x)]
        story_ids = [sid for sid in dict.fromkeys(story_ids) if r.story(sid) is MISSING]
        candidate_ids = [aid for aid in dict.fromkeys(candidate_ids) if r.article(aid) is MISSING]
        df = df and r.df_counts is None
        if not (sync or article_ids or fps or slots or features or story_ids or candidate_ids or df):
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            if sync:
                if r.fresh:
                    pipe.xrevrange(k.changes, count=1)
                else:
                    pipe.xrange(k.changes, min=f"{r.seq}-0")
            for aid in article_ids:
                pipe.hget(k.article(aid), "status")
            if df:
                pipe.get(k.df)
                pipe.get(k.df_docs)
                pipe.get(k.df_version)
            for fp in fps:
                pipe.get(k.fingerprint(fp))
            if slots:
                self.writer.band_lookup(keys=[key for key, _ in slots], args=[f for _, f in slots], client=pipe)
            for x in features:
                pipe.zrange(k.term(x), 0, -1, withscores=True)
            for sid in story_ids:
                pipe.hgetall(k.story(sid))
            for aid in candidate_ids:
                pipe.hmget(k.article(aid), CANDIDATE_FIELDS)
            replies = pipe.execute()
        self.round_trips += 1
        at = 0
        if sync:
            r.follow(change_log.entries(replies[0]))
            at = 1
        statuses = replies[at:at + len(article_ids)]
        at += len(article_ids)
        if df:
            r.fill_df(*replies[at:at + 3])
            at += 3
        for fp, owner in zip(fps, replies[at:at + len(fps)]):
            r.fill_fingerprint(fp, decode(owner) if owner else None)
        at += len(fps)
        if slots:
            for slot, value in zip(slots, replies[at]):
                r.fill_band(slot, decode(value))
            at += 1
        for x, pairs in zip(features, replies[at:at + len(features)]):
            r.fill_term(x, [v for member, score in pairs for v in (member, score)])
        at += len(features)
        for sid, stored in zip(story_ids, replies[at:at + len(story_ids)]):
            r.fill_story(sid, stored)
        at += len(story_ids)
        for aid, row in zip(candidate_ids, replies[at:]):
            r.fill_article(aid, row)
        r.bound()
        return statuses

    # ------------------------------------------------------------------ writes
    def commit(self, batch: Batch, lock: AssignmentLock | None) -> None:
        self._applied(self.writer.commit(batch, lock))

    def promote(self, decision: Decision, record: dict, f: Features, lock: AssignmentLock | None) -> None:
        self._applied(self.writer.promote(decision, record, f, lock))

    def _applied(self, entry: change_log.Entry | None) -> None:
        if entry is not None:
            self.replica.apply_entry(entry)


_CANDIDATE = tuple(name.encode() for name in CANDIDATE_FIELDS)
