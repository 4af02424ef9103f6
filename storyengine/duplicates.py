"""Duplicates: which canonical articles a newcomer may be a copy of, the rule
that says it is one, and promotion of a copy published before the canonical
copies that arrived ahead of it.

Only canonical articles (the earliest published copy of a text) are compared
with newcomers; a copy shares its canonical article's story.
"""
from __future__ import annotations

import json
import time
from operator import itemgetter

from . import records, signatures
from .batch import BAND_SLOT_IDS, Batch, Candidate, decode
from .batch_reads import BatchReads
from .decisions import Decision, received_ts
from .features import Features
from .locking import AssignmentLock
from .metrics import queue_decided
from .records import StoryUpdate, decompress_features
from .settings import Settings
from .store import RedisStore
from .stories import StoryScore


def is_copy(containment: float, chance: float, smaller: int, exact: bool, s: Settings) -> bool:
    """The rule: identical text, or enough of the smaller text's shingles (it
    having ``smaller`` of them) in the other, and by accident unlikely."""
    return exact or (containment >= s.duplicate_containment and chance < s.duplicate_chance_limit
                     and smaller >= s.containment_min_shingles)


def duplicate_rule(s: Settings) -> str:
    """The rule in English, as a decision report states it."""
    return (f"a copy when the texts are identical, or when at least {s.duplicate_containment:.0%} of "
            f"the smaller text's {s.shingle_size}-word shingles are in the other "
            f"(and it has at least {s.containment_min_shingles}); the canonical article is the "
            "earliest published copy")


class Duplicates:
    """Finds the canonical articles a newcomer is a copy of, inside a batch."""

    def __init__(self, reads: BatchReads, settings: Settings) -> None:
        self.reads, self.settings = reads, settings

    def find(self, batch: Batch, article_id: str, f: Features, stories: dict, scores: list[StoryScore]
             ) -> tuple[dict, list[dict]]:
        """(the duplicate report, the candidates verified as its canonical copies, best first)."""
        s = self.settings
        # LSH finds copies of about the same length; the newest canonical
        # articles of the best-matching stories find short copies of long
        # texts (and long ones of short texts), which LSH cannot.
        sources: dict[str, tuple[str, str | None]] = {}
        for c in sorted(batch.band_members(f.slots)):
            sources.setdefault(c, ("lsh", None))
        for score in scores[:s.duplicate_candidate_stories]:
            for c in stories[score.story_id].canonicals[-s.story_duplicate_candidates:]:
                sources.setdefault(c, ("story", score.story_id))
        exact_owner = batch.fingerprints.get(f.fingerprint)
        if exact_owner:
            # The text's owner may have become a copy since (an earlier copy took
            # over); identical text is then a copy of whatever it is a copy of.
            self.reads.fetch(batch, (), [exact_owner])
            info = batch.articles.get(exact_owner) or {}
            exact_owner = info.get("duplicate_of") or exact_owner
            sources[exact_owner] = ("exact", None)
        sources.pop(article_id, None)
        # Candidates no one in this process has seen yet: one round trip for all of them.
        unseen = [c for c, (_, sid) in sources.items() if c not in batch.articles
                  and (sid is None or self.reads.shingles.get(c) is None)]
        self.reads.fetch(batch, (), unseen)
        candidates = {c: self.reads.candidate(batch, c, sid) for c, (_, sid) in sources.items()}
        return self._verify(f, {c: found_by for c, (found_by, _) in sources.items()}, candidates, exact_owner)

    def _verify(self, f: Features, sources: dict[str, str], candidates: dict[str, Candidate | None],
                exact_owner: str | None) -> tuple[dict, list[dict]]:
        s = self.settings
        mask = signatures.ShingleMask(f.shingle_set)
        compared = [(c, candidates[c]) for c in sorted(sources) if candidates.get(c) is not None]
        overlaps = mask.overlaps([candidate.shingle_set for _, candidate in compared], s.duplicate_containment)
        # Light rows to sort; a record is only made for the reported and the verified ones.
        rows = []
        for (c, candidate), (containment, jaccard, chance) in zip(compared, overlaps):
            exact = c == exact_owner
            verified = is_copy(containment, chance, min(len(f.shingle_set), len(candidate.shingle_set)), exact, s)
            rows.append((not exact, -round(containment, 4), candidate.published, c, candidate, jaccard, verified))
        rows.sort(key=itemgetter(0, 1, 2, 3))

        def record(row) -> dict:
            inexact, containment, published, c, candidate, jaccard, verified = row
            return {"article": c, "found_by": sources[c], "story": candidate.story, "published": published,
                    "containment": -containment, "jaccard": round(jaccard, 4), "exact": not inexact,
                    "duplicate": verified}

        verified = [record(row) for row in rows if row[-1]]
        match = min(verified, key=lambda r: (r["published"], r["article"])) if verified else None
        report = {
            "candidates": [{k: r[k] for k in ("article", "found_by", "containment", "jaccard", "exact", "duplicate")}
                           for r in map(record, rows[:5])],
            "compared": len(rows),
            "matched": match["article"] if match else None,
        }
        return report, verified


# A story's fields a promotion reads to update its membership.
_MEMBERSHIP_FIELDS = ("first_seen", "last_updated", "article_count", "indexed")


def _membership_update(raw: list, published: float) -> tuple[float, float, int, list[int]]:
    """(first_seen, last_updated, article_count, indexed terms) of a story, from
    its ``_MEMBERSHIP_FIELDS``, once an article published at ``published`` joins."""
    return (min(float(raw[0] or published), published), max(float(raw[1] or published), published),
            int(raw[2] or 0) + 1, json.loads(raw[3] or "[]"))


class Promotion:
    """A copy published before the canonical one(s) arrived after them
    (workers run in parallel, feeds lag): it becomes the canonical article,
    and each old canonical and its copies now point to it. The story keeps
    its vectors: the texts are copies, so nothing new is learnt about it.
    Reads and writes the store itself (not a batch's view), under the
    assignment lock it is given."""

    def __init__(self, store: RedisStore, settings: Settings, band_lookup, band_write,
                 story_writer: records.StoryWriter) -> None:
        self.redis, self.keys, self.settings = store.redis, store.keys, settings
        self._band_lookup, self._band_write = band_lookup, band_write
        self._story_writer = story_writer

    def promote(self, lock: AssignmentLock, decision: Decision, record: dict, f: Features) -> None:
        """Apply a ``promoted`` decision; the write is refused if ``lock`` was lost."""
        k, s = self.keys, self.settings
        article_id, olds, dup_report = decision.article_id, decision.takes_over, decision.duplicate_report
        story_id = olds[0]["story"]
        old_ids = [o["article"] for o in olds]
        with self.redis.pipeline(transaction=False) as pipe:
            for old in old_ids:
                pipe.hmget(k.article(old), ("bands", "fingerprint", "terms"))
            pipe.hmget(k.story(story_id), _MEMBERSHIP_FIELDS + ("originals", "representative", "canonicals"))
            pipe.zrange(k.story_articles(story_id), 0, -1)
            *old_rows, story_raw, members = pipe.execute()
        # The term statistics count each canonical text once. The newcomer takes
        # the first old canonical's place in them; any further ones, now copies
        # too, are taken out again (their terms recomputed from their text).
        uncounted = [decompress_features(row[2]) for row in old_rows[1:]]
        first_seen, last_updated, article_count, indexed = _membership_update(story_raw, f.published)
        last_updated_before = float(story_raw[1]) if story_raw[1] else None
        originals, representative = int(story_raw[-3] or 0), story_raw[-2]
        canonicals = [c for c in json.loads(story_raw[-1] or "[]") if c not in old_ids] + [article_id]
        members = [m.decode() for m in members]
        # Band slots: the old canonicals leave theirs, the newcomer joins its own.
        old_slots = [x for row in old_rows if row[0]
                     for x in k.band_slots(signatures.BandLayout.slots_from_bytes(row[0]))]
        new_slots = f.slots
        slot_list = list(dict.fromkeys(old_slots + new_slots))
        with self.redis.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.hmget(k.article(m), ("duplicate_of", "fingerprint"))
            self._band_lookup(keys=[key for key, _ in slot_list], args=[x for _, x in slot_list], client=pipe)
            *member_rows, slot_values = pipe.execute()
        copies = [(m, fp) for m, (d, fp) in zip(members, member_rows) if d and d.decode() in old_ids]
        values = {}
        for slot, value in zip(slot_list, slot_values):
            ids = [i for i in decode(value).split(" ") if i and i not in old_ids and i != article_id]
            if slot in new_slots:
                ids = (ids + [article_id])[-BAND_SLOT_IDS:]
            values[slot] = " ".join(ids)
        report = {"duplicate": dict(dup_report, matched=None, promoted_over=old_ids),
                  "story": {"action": "followed_copy", "story": story_id,
                            "reason": f"published before {', '.join(old_ids)}, its copies, so it is now the "
                                      "canonical article"}}

        def writes(pipe):
            fields = records.decided_article_fields(f, story_id, None, None, report)
            now = round(time.time(), 3)
            fields["processed_ts"] = now
            queue_decided(pipe, k.metrics, [(received_ts(record), False, False)], now)
            pipe.hset(k.article(article_id), mapping=fields)
            pipe.hdel(k.article(article_id), "body")
            pipe.zrem(k.queued, article_id)
            # Texts now copies leave the story's originals; the representative follows its text.
            takes_representative = bool(representative) and representative.decode() in old_ids
            fields = records.encode_story_fields(
                first_seen=first_seen, last_updated=last_updated, article_count=article_count,
                canonicals=canonicals[-s.story_duplicate_candidates:],
                originals=originals - len(uncounted) if uncounted else None,
                representative=article_id if takes_representative else None,
                headline=record["title"] if takes_representative else None)
            self._story_writer.write(pipe, [StoryUpdate(story_id, fields, last_updated, article_count, indexed,
                                                        indexed, last_updated_before, kept=f.published)])
            self._story_writer.add_members(pipe, story_id, {article_id: f.published}, {record["source"]: 1})
            for old, (_, old_fingerprint, _) in zip(olds, old_rows):
                pipe.hset(k.article(old["article"]), mapping={"duplicate_of": article_id,
                                                              "similarity": old["containment"]})
                # Only canonical articles are compared, and only they count in the term statistics.
                pipe.hdel(k.article(old["article"]), "bands", "shingle_set", "terms")
                if old_fingerprint:
                    pipe.set(k.fingerprint(old_fingerprint.decode()), article_id)
            for copy, fingerprint in copies:
                pipe.hset(k.article(copy), "duplicate_of", article_id)
                if fingerprint:  # a copy that was canonical once still owns its text's key: re-point it
                    pipe.set(k.fingerprint(fingerprint.decode()), article_id, xx=True)
            for features in uncounted:
                if len(features):
                    counters = pipe.bitfield(k.df).overflow("SAT")
                    for feature in features:
                        counters.incrby("u32", f"#{int(feature)}", -1)
                    counters.execute()  # queued in the transaction
            if uncounted:
                pipe.decrby(k.df_docs, len(uncounted))
            pipe.incr(k.df_version)
            pipe.set(k.fingerprint(f.fingerprint), article_id)
            self._band_write(keys=[key for key, _ in values], args=[x for (_, slot), v in values.items()
                                                                    for x in (slot, v)], client=pipe)
        lock.commit(writes)
