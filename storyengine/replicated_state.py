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

import logging
from dataclasses import replace

import numpy as np

from . import change_log, records
from .batch import Batch, Story
from .decisions import Decision
from .document_frequencies import DELTA, U32_MAX, DocumentFrequencies, as_base
from .features import Features
from .keys import Keys
from .locking import AssignmentLock
from .records import CANDIDATE_FIELDS, STORY_FIELDS, bucket_field
from .redis_scripts import HASH_FIELD, TERM_SETS
from .replica import MISSING, Replica
from .settings import Settings
from .state import DfFold, FirstRead, RedisState, TermHits

log = logging.getLogger("storywire.engine")


class ReplicatedState:
    def __init__(self, redis_client, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = redis_client, keys, settings
        self.writer = RedisState(redis_client, keys, settings)
        self.replica = Replica(keys, settings)
        self._term_sets = redis_client.register_script(TERM_SETS)
        self._follow = redis_client.register_script(change_log.FOLLOW)
        self._hash_field = redis_client.register_script(HASH_FIELD)
        self._ahead: tuple[int, tuple, FirstRead] | None = None  # the read ahead: (generation, what was asked, answer)
        self._parsed: dict[str, tuple[dict, tuple, Story | None]] = {}  # story -> (held dict, buckets, parsed)

    # ------------------------------------------------------------------ reads
    def read_df(self, df: DocumentFrequencies) -> None:
        if self.replica.df_counts is None:
            self._read(df=True, sync=True)  # with the log's tail: counts read ahead of it would be counted twice
        r = self.replica
        df.counts, df.docs, df.version = r.df_counts.copy(), r.df_docs, r.df_version

    def first_read(self, article_ids, fingerprints, slots, features, since) -> FirstRead:
        ahead, self._ahead = self._ahead, None
        self.replica.bound()  # a batch begins: the one moment to forget for room
        asked = (fingerprints, slots, features, since)
        if ahead is not None and ahead[0] == self.replica.generation and ahead[1] == asked:
            # Read ahead for these: if the log has nothing newer, that answer stands.
            statuses = self._read(article_ids=article_ids, sync=True)
            if ahead[0] == self.replica.generation:
                return replace(ahead[2], statuses=statuses, ahead=True)
            return self._answer(statuses, fingerprints, slots, features, since)
        statuses = self._read(article_ids=article_ids, fingerprints=fingerprints, slots=slots, features=features,
                              df=True, sync=True)
        return self._answer(statuses, fingerprints, slots, features, since)

    def _answer(self, statuses, fingerprints, slots, features, since) -> FirstRead:
        self._read(fingerprints=fingerprints, slots=slots, features=features, df=True)  # forgotten meanwhile
        r = self.replica
        return FirstRead(r.df_version, statuses, [r.fingerprint(fp) for fp in fingerprints],
                         [r.band(slot) for slot in slots], self._term_hits(features, since))

    def prefetch(self, fingerprints, slots, features, since) -> FirstRead:
        """Before the lock: follow the log and read what the replica lacks of
        these, as one snapshot (MULTI/EXEC), then answer from the replica (no statuses)."""
        self.replica.bound()
        self._read(fingerprints=fingerprints, slots=slots, features=features, df=True, sync=True, snapshot=True)
        r = self.replica
        read = FirstRead(r.df_version, [], [r.fingerprints.get(fp) for fp in fingerprints],
                         [r.bands.get(slot, "") for slot in slots],
                         [self.replica.term_hits(x, since, self.settings.stories_per_term) if x in r.terms else []
                          for x in features])
        self._ahead = (r.generation, (fingerprints, slots, features, since), read)
        return read

    def df_version(self) -> int | None:
        """The version of the document frequencies the replica holds (None: it holds none)."""
        return self.replica.df_version if self.replica.df_counts is not None else None

    def catch_up(self) -> bool:
        """Follow the log (one small round trip); whether that changed what the replica holds."""
        before = self.replica.generation
        self._read(sync=True)
        return self.replica.generation != before

    def prefetch_candidates(self, story_ids, article_ids, bucket_ids=()) -> None:
        """Before the lock: the candidate stories and articles the replica lacks, as one snapshot;
        then the stories parsed as a batch reading ``bucket_ids`` reads them (kept by :meth:`_stories`),
        so under the lock each is only copied, unless it changed meanwhile."""
        self._read(story_ids=story_ids, candidate_ids=article_ids, sync=True, snapshot=True)
        if bucket_ids:
            self._stories([sid for sid in story_ids if self.replica.story(sid) is not MISSING], bucket_ids,
                          copy=False)

    def term_hits(self, features, since) -> list[TermHits]:
        self._read(features=features)
        return self._term_hits(features, since)

    def fetch(self, story_ids, article_ids, bucket_ids):
        self._read(story_ids=story_ids, candidate_ids=article_ids)
        r = self.replica
        stories = self._stories(story_ids, bucket_ids)
        articles = []
        for aid in article_ids:
            held = r.article(aid)
            articles.append(records.parse_candidate([held.get(f) for f in _CANDIDATE]) if held is not MISSING
                            else records.parse_candidate([None] * len(_CANDIDATE)))
        return stories, articles

    def _stories(self, story_ids, bucket_ids, copy: bool = True) -> list[Story | None]:
        """``story_ids`` (held) as a batch reading ``bucket_ids`` reads them (None: no such story); with
        ``copy``, each a copy of its own for the batch to change. A story is parsed once while the
        replica holds the same dict for it (a change is a new dict) and batches read the same buckets."""
        story_fields = STORY_FIELDS + tuple(bucket_field(i) for i in bucket_ids)
        buckets, parsed = tuple(bucket_ids), self._parsed
        stories = []
        for sid in story_ids:
            held = self.replica.story(sid)
            if held is None:
                stories.append(None)
                continue
            known = parsed.get(sid)
            if known is not None and known[0] is held and known[1] == buckets:
                story = known[2]
            else:
                story = Story.from_row(sid, [held.get(f) for f in story_fields], bucket_ids)
                if len(parsed) >= self.settings.replica_stories:
                    for old in list(parsed)[:len(parsed) // 2]:  # the oldest half
                        del parsed[old]
                parsed[sid] = (held, buckets, story)  # ``held`` kept: its identity is what is checked
            stories.append(story.copy() if copy and story is not None else story)
        return stories

    def _term_hits(self, features, since) -> list[TermHits]:
        limit, terms, hits = self.settings.stories_per_term, self.replica.terms, self.replica.term_hits
        return [hits(x, since, limit) if terms[x] else [] for x in features]  # most of a batch's terms index nothing

    def _read(self, article_ids=(), fingerprints=(), slots=(), features=(), story_ids=(), candidate_ids=(),
              df: bool = False, sync: bool = False, snapshot: bool = False) -> list[bytes | None]:
        """One round trip: the log tail (``sync``), statuses, and whatever of
        the rest the replica does not hold; the replica follows the tail, then
        takes in the rest. Under the lock no one writes meanwhile; without it
        (``snapshot``), the round trip is a MULTI/EXEC, so the tail and the rest
        are one moment of Redis. Returns the statuses."""
        r, k = self.replica, self.keys
        fps = [fp for fp in dict.fromkeys(fingerprints) if fp not in r.fingerprints]
        slots = [slot for slot in dict.fromkeys(slots) if slot not in r.bands]
        features = [x for x in dict.fromkeys(features) if x not in r.terms]
        story_ids = [sid for sid in dict.fromkeys(story_ids) if sid not in r.stories]
        candidate_ids = [aid for aid in dict.fromkeys(candidate_ids) if aid not in r.articles]
        df = df and r.df_counts is None
        if not (sync or article_ids or fps or slots or features or story_ids or candidate_ids or df):
            return []
        # Each kind in one command: a reply of thousands of small ones costs more to parse than to serve.
        with self.redis.pipeline(transaction=snapshot) as pipe:
            if sync:
                self._follow(keys=[k.changes], args=[r.seq, r.token or b""], client=pipe)
            if article_ids:
                self._hash_field(keys=[k.article(a) for a in article_ids], args=["status"], client=pipe)
            if df:
                pipe.get(k.df)
                pipe.lrange(k.df_deltas, 0, -1)
                pipe.get(k.df_docs)
                pipe.get(k.df_version)
            if fps:
                pipe.mget([k.fingerprint(fp) for fp in fps])
            if slots:
                self.writer.band_lookup(keys=[key for key, _ in slots], args=[f for _, f in slots], client=pipe)
            if features:
                self._term_sets(keys=[k.term(x) for x in features], client=pipe)
            for sid in story_ids:
                pipe.hgetall(k.story(sid))
            for aid in candidate_ids:
                pipe.hmget(k.article(aid), CANDIDATE_FIELDS)
            replies = pipe.execute()
        replies.reverse()  # taken in the order asked, from the end
        if sync:
            r.follow(*change_log.followed(replies.pop()))
        statuses = [s or None for s in replies.pop()] if article_ids else []
        if df:
            r.fill_df(replies.pop(), replies.pop(), replies.pop(), replies.pop())
        if fps:
            for fp, owner in zip(fps, replies.pop()):
                r.fill_fingerprint(fp, owner.decode() if owner else None)
        if slots:
            for slot, value in zip(slots, replies.pop()):
                r.fill_band(slot, value.decode())
        if features:
            for x, flat in zip(features, replies.pop()):
                r.fill_term(x, flat)
        for sid in story_ids:
            r.fill_story(sid, replies.pop())
        for aid in candidate_ids:
            r.fill_article(aid, replies.pop())
        return statuses

    # ------------------------------------------------------------------ writes
    def commit(self, batch: Batch, lock: AssignmentLock | None) -> None:
        self._write(lambda meanwhile: self.writer.commit(batch, lock, self._df_fold(batch), meanwhile))

    def promote(self, decision: Decision, record: dict, f: Features, lock: AssignmentLock | None) -> None:
        self._write(lambda meanwhile: self.writer.promote(decision, record, f, lock, meanwhile))

    def _write(self, commit) -> None:
        """Commit; the replica applies the entry while Redis runs it, as the
        entry after its own (under the lock, the next in the log), and keeps
        it if Redis logged it so; otherwise it forgets everything."""
        r, applied = self.replica, []

        def meanwhile(token: bytes, commands: list) -> None:
            try:
                r.apply_entry(change_log.Entry(r.seq + 1, token, commands))
                applied.append(r.seq)
            except Exception:  # noqa: BLE001 - a replica that cannot apply forgets, and is read afresh
                log.exception("the replica could not apply its own commit; it forgets what it holds")
        try:
            entry = commit(meanwhile)
        except BaseException:
            if applied:
                r.forget_all()  # applied what may not have been written
            raise
        if entry is not None and applied != [entry.seq]:
            r.follow("lost", [entry])  # not applied, or not where the log put it: forget, follow from it

    def _df_fold(self, batch: Batch) -> DfFold | None:
        """The document frequencies after ``batch``, once the deltas since the
        last fold reach ``df_fold_bytes``: under the lock the replica holds
        them exactly (and DF_CHANGE checks the version it read them at)."""
        r, changes = self.replica, batch.df_changes
        if r.df_counts is None or changes is None:
            return None
        if r.df_delta_bytes + DELTA.itemsize * np.count_nonzero(changes) < self.settings.df_fold_bytes:
            return None
        return as_base(np.clip(r.df_counts + changes, 0, U32_MAX)), r.df_version


_CANDIDATE = tuple(name.encode() for name in CANDIDATE_FIELDS)
