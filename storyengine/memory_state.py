"""The decision state in dicts (storyengine.state's in-memory twin): the
records decisions read and write, stored exactly as Redis stores them, for a
process that decides alone (the tests decide streams on it and on Redis and
compare)."""
from __future__ import annotations

import numpy as np
from redis.connection import Encoder

from . import promotion, records
from .batch import Batch, Story
from .document_frequencies import DocumentFrequencies
from .decisions import Decision
from .features import Features
from .keys import Keys
from .locking import AssignmentLock
from .records import CANDIDATE_FIELDS, STORY_FIELDS, bucket_field
from .settings import Settings
from .state import FirstRead, Slot, TermHits
from .story_writer import StoryUpdate, index_score

_U32_MAX = 2 ** 32 - 1


class MemoryState:
    """The decision state in dicts, for one process (no lock: nothing else writes it).
    Articles to decide are registered first with :meth:`queue`."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.keys = settings, Keys(settings.key_prefix)
        self._encode = Encoder("utf-8", "strict", False).encode  # values stored as Redis stores them
        self.statuses: dict[str, bytes] = {}
        self.owners: dict[str, str] = {}
        self.bands: dict[Slot, str] = {}
        self.terms: dict[int, dict[str, float]] = {}
        self.stories: dict[str, dict[str, bytes]] = {}
        self.members: dict[str, dict[str, float]] = {}
        self.articles: dict[str, dict[str, bytes]] = {}
        self.df_counts = np.zeros(settings.hash_features, dtype=np.int64)
        self.df_docs = 0
        self.df_version = 0

    def queue(self, article_ids: list[str]) -> None:
        for article_id in article_ids:
            self.statuses.setdefault(article_id, b"queued")

    def read_df(self, df: DocumentFrequencies) -> None:
        df.counts, df.docs, df.version = self.df_counts.copy(), self.df_docs, self.df_version

    def first_read(self, article_ids, fingerprints, slots, features, since) -> FirstRead:
        return FirstRead(self.df_version, [self.statuses.get(a) for a in article_ids],
                         [self.owners.get(fp) for fp in fingerprints], [self.bands.get(slot, "") for slot in slots],
                         self.term_hits(features, since) if features else [])

    def term_hits(self, features, since) -> list[TermHits]:
        out = []
        for feature in features:
            entries = [(sid, score) for sid, score in self.terms.get(feature, {}).items() if score >= since]
            # As ZREVRANGEBYSCORE orders them: score, then member, both descending.
            entries.sort(key=lambda e: (e[1], e[0].encode()), reverse=True)
            out.append(entries[:self.settings.stories_per_term])
        return out

    def fetch(self, story_ids, article_ids, bucket_ids):
        story_fields = STORY_FIELDS + tuple(bucket_field(i) for i in bucket_ids)
        return ([Story.from_row(sid, self._row(self.stories, sid, story_fields), bucket_ids) for sid in story_ids],
                [records.parse_candidate(self._row(self.articles, aid, CANDIDATE_FIELDS)) for aid in article_ids])

    @staticmethod
    def _row(hashes: dict, key: str, fields) -> list:
        stored = hashes.get(key, {})
        return [stored.get(name) for name in fields]

    def commit(self, batch: Batch, lock: AssignmentLock | None) -> None:
        for article_id, fields, story_id, _, published in batch.article_writes:
            self._decided(article_id, fields, story_id, published)
        self._write_stories(batch.story_updates())
        self.owners.update(batch.written_fingerprints())
        self._write_bands(batch.written_band_values())
        if batch.docs_change or (batch.df_changes is not None and batch.df_changes.any()):
            if batch.df_changes is not None:
                self._count(batch.df_changes)
            self.df_docs += batch.docs_change
            self.df_version += 1

    def promote(self, decision: Decision, record: dict, f: Features, lock: AssignmentLock | None) -> None:
        old_ids = [o["article"] for o in decision.takes_over]
        story_id = decision.takes_over[0]["story"]
        read = promotion.PromotionRead([self._row(self.articles, old, promotion.OLD_CANONICAL_FIELDS)
                                        for old in old_ids],
                                       self._row(self.stories, story_id, promotion.STORY_FIELDS),
                                       sorted(self.members.get(story_id, {}),
                                              key=lambda m: (self.members[story_id][m], m.encode())))
        slots = promotion.slots_to_read(self.keys, f, read)
        read.member_rows = [self._row(self.articles, m, promotion.MEMBER_FIELDS) for m in read.members]
        read.band_values = [self.bands.get(slot, "") for slot in slots]
        p = promotion.plan(decision, record, f, read, slots, self.settings)
        self._decided(p.article_id, p.article_fields, p.story_id, p.published)
        self._write_stories([p.story])
        for old, containment, fingerprint in p.olds:
            stored = self.articles.setdefault(old, {})
            stored.update(duplicate_of=self._encode(p.article_id), similarity=self._encode(containment))
            for name in records.CANONICAL_ONLY_FIELDS:
                stored.pop(name, None)
            if fingerprint:
                self.owners[fingerprint] = p.article_id
        for copy, fingerprint in p.copies:
            self.articles.setdefault(copy, {})["duplicate_of"] = self._encode(p.article_id)
            if fingerprint and fingerprint in self.owners:  # SET XX
                self.owners[fingerprint] = p.article_id
        change = np.zeros(len(self.df_counts), dtype=np.int64)
        for features in p.uncounted:
            change[features] -= 1
        self._count(change)
        self.df_docs -= len(p.uncounted)
        self.df_version += 1
        self.owners[p.fingerprint] = p.article_id
        self._write_bands(p.band_values)

    def _decided(self, article_id: str, fields: dict, story_id: str, published: float) -> None:
        self.statuses[article_id] = b"processed"
        stored = self.articles.setdefault(article_id, {"published_ts": self._encode(published)})
        stored.update({name: self._encode(value) for name, value in fields.items()})
        self.members.setdefault(story_id, {})[article_id] = published

    def _write_stories(self, updates: list[StoryUpdate]) -> None:
        for update in updates:
            self.stories.setdefault(update.story_id, {}).update(
                {name: self._encode(value) for name, value in update.fields.items()})
            for feature in set(update.indexed_before or ()) - set(update.indexed):
                self.terms.get(feature, {}).pop(update.story_id, None)
            for feature in update.indexed:
                self.terms.setdefault(feature, {})[update.story_id] = index_score(update.last_updated)

    def _write_bands(self, values: dict[Slot, str]) -> None:
        for slot, value in values.items():
            if value:
                self.bands[slot] = value
            else:
                self.bands.pop(slot, None)

    def _count(self, change: np.ndarray) -> None:
        # Saturating u32 counters (storyengine.document_frequencies).
        self.df_counts = np.clip(self.df_counts + change, 0, _U32_MAX)
