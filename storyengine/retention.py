"""Retention: stories age out, with everything that points at them, so memory stays bounded.

A story whose newest article (a late reprint counts too) is older than
``retention_days`` before the stream clock is deleted: the story, its
articles (canonical and copies), their URL references and exact
fingerprints, their LSH band slots, the story's term index entries and the
redirects of stories merged into it. Failed articles are removed on the same
clock, by the stream's time when they failed. Each id removed leaves a
tombstone (storyengine.tombstones), so it answers 410 Gone, saying when and
why, instead of 404.

The clock is the stream's own watermark (storyengine.clock), not the wall
clock and not the newest date seen: replaying an archive ages stories out as
it would have live, one article dated far ahead moves nothing, and a service
that receives nothing deletes nothing. Articles older than the window on
that clock are refused when posted (the store's accept script), so what was
accepted stays until the clock has moved ``retention_days`` past its story.

The stream's term statistics ({p}:df) keep counting aged-out articles: they
are a fixed-size array, and IDF is the stream's history, not the window's.

Runs under the assignment lock (the decider calls it before deciding a
batch, on the clock that batch moves to, so a batch decides as its articles
would one at a time), reads first, and writes in one atomic commit that checks the lock's token,
like every other decision.
"""
from __future__ import annotations

import logging
import time

import redis

from . import records, tombstones
from .records import decode
from .story_writer import StoryWriter
from .clock import StreamClock, parse
from .locking import AssignmentLock
from .signatures import BandLayout
from .store import RedisStore, out_of_memory
from .text import canonical_url

log = logging.getLogger("storywire.engine")

DAY = 86400.0
# Stories deleted per call: a call runs once per batch, so this bounds how long
# it holds the lock, and deletion keeps pace with any realistic arrival rate.
STORIES_PER_CALL = 100


def cutoff(newest: float, retention_days: float) -> float:
    return newest - retention_days * DAY


class Retention:
    def __init__(self, store: RedisStore, band_lookup, band_write) -> None:
        self.store = store
        self.keys = store.keys
        self.redis = store.redis
        self.settings = store.settings
        self.clock = StreamClock(store.redis, store.keys, store.settings)
        self._band_lookup = band_lookup
        self._band_write = band_write
        self._stories = StoryWriter(store.redis, store.keys)

    def advance_and_age_out(self, lock: AssignmentLock, events, limit: int = STORIES_PER_CALL) -> float | None:
        """Advance the stream clock by dated (outlet, published) ``events``
        and, in the same round trip, see whether anything is past retention
        on it; if so, delete up to ``limit`` stories (and failed articles).
        Returns the clock (None while no dated article was ever decided)."""
        k, r = self.keys, self.redis
        with r.pipeline(transaction=False) as pipe:
            self.clock.advance(events, client=pipe)
            pipe.get(k.clock)
            pipe.zrange(k.stories_kept, 0, 0, withscores=True)
            pipe.zrange(k.failed, 0, 0, withscores=True)
            advanced, current, oldest_story, oldest_failed = pipe.execute(raise_on_error=False)
        for result in (current, oldest_story, oldest_failed):
            if isinstance(result, Exception):
                raise result
        if isinstance(advanced, Exception):
            if not out_of_memory(advanced):
                raise advanced
            # Redis at maxmemory refuses the clock's writes, but deleting is what frees memory:
            # age out on the clock as it stands.
            log.warning("the stream clock could not advance (Redis is out of memory); ageing out on it as it is")
            advanced = current
        clock = parse(advanced)
        if clock is None:
            return None
        before = cutoff(clock, self.settings.retention_days)
        if any(score < before for _, score in oldest_story + oldest_failed):
            self.age_out(lock, before, limit, clock=clock)
        return clock

    def age_out(self, lock: AssignmentLock, before: float, limit: int = STORIES_PER_CALL,
                clock: float | None = None) -> int:
        """Delete up to ``limit`` stories (and failed articles) kept only by
        articles published before ``before`` (on the stream ``clock``, by
        default ``before`` plus the window). Returns how many stories went."""
        if clock is None:
            clock = before + self.settings.retention_days * DAY
        k, r = self.keys, self.redis
        with r.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(k.stories_kept, "-inf", f"({before}", start=0, num=limit, withscores=True)
            pipe.zrangebyscore(k.failed, "-inf", f"({before}", start=0, num=1000)
            story_ids, failed = pipe.execute()
        kept_until = {decode(sid): score for sid, score in story_ids}
        story_ids = list(kept_until)
        failed = [decode(a) for a in failed]
        if not story_ids and not failed:
            return 0
        with r.pipeline(transaction=False) as pipe:
            for sid in story_ids:
                pipe.zrange(k.story_articles(sid), 0, -1)
                pipe.hmget(k.story(sid), ("indexed", "merged_from"))
            rows = pipe.execute()
        members = {sid: [decode(a) for a in rows[2 * i]] for i, sid in enumerate(story_ids)}
        story_rows = {sid: rows[2 * i + 1] for i, sid in enumerate(story_ids)}
        articles = [a for sid in story_ids for a in members[sid]] + failed
        gone = set(articles)
        fields = ("source", "url", "fingerprint", "bands")
        with r.pipeline(transaction=False) as pipe:
            for a in articles:
                pipe.hmget(k.article(a), fields)
            article_rows = pipe.execute()
        fingerprints = sorted({decode(row[2]) for row in article_rows if row[2]})
        slots = []
        for row in article_rows:
            if row[3]:  # a canonical article's band slots
                slots += k.band_slots(BandLayout.slots_from_bytes(row[3]))
        slots = list(dict.fromkeys(slots))
        with r.pipeline(transaction=False) as pipe:
            for fp in fingerprints:
                pipe.get(k.fingerprint(fp))
            if slots:
                self._band_lookup(keys=[key for key, _ in slots], args=[f for _, f in slots], client=pipe)
            found = pipe.execute()
        owners = dict(zip(fingerprints, found[:len(fingerprints)]))
        slot_values = {}
        if slots:
            for slot, value in zip(slots, found[-1]):
                ids = [i for i in decode(value).split(" ") if i and i not in gone]
                slot_values[slot] = " ".join(ids)

        failed_set = set(failed)
        stones = [(a, "article", sid) for sid in story_ids for a in members[sid] if a not in failed_set]
        stones += [(a, "failed", "") for a in failed]
        for sid in story_ids:
            last = f"{kept_until[sid]:.0f}"
            stones += [(sid, "story", last)] + [(m, "story", last)
                                                for m in records.json_field(story_rows[sid][1], [])]

        def writes(pipe):
            for a, row in zip(articles, article_rows):
                pipe.delete(k.article(a))
                if row[0] is not None and row[1] is not None:
                    pipe.delete(k.article_ref(decode(row[0]), canonical_url(decode(row[1]))))
            for fp, owner in owners.items():
                if owner is not None and decode(owner) in gone:
                    pipe.delete(k.fingerprint(fp))
            if slot_values:
                self._band_write(keys=[key for key, _ in slot_values],
                                 args=[x for (_, slot), v in slot_values.items() for x in (slot, v)], client=pipe)
            self._stories.delete(pipe, {sid: (records.json_field(story_rows[sid][0], []),
                                              records.json_field(story_rows[sid][1], [])) for sid in story_ids})
            if failed:
                pipe.zrem(k.failed, *failed)
        lock.commit(writes)
        # The tombstones after the deletes, on their own: Redis at maxmemory refuses
        # them but not the deletes, which free the memory. Until they are written an
        # id removed answers 404 instead of 410.
        try:
            with r.pipeline(transaction=False) as pipe:
                tombstones.leave(pipe, k, stones, clock, time.time(), self.settings.tombstone_days)
                pipe.execute()
        except redis.ResponseError as exc:
            if not out_of_memory(exc):
                raise
            log.warning("%d tombstones not written (Redis is out of memory): those ids answer 404, not 410",
                        len(stones))
        return len(story_ids)

