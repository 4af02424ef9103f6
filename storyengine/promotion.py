"""Promotion of an earlier copy: a copy published before the canonical
article(s) it matches arrived after them (workers run in parallel, feeds
lag). It becomes the canonical article, and each old canonical and its
copies now point to it. The story keeps its vectors: the texts are copies,
so nothing new is learnt about it.

It rewrites what a batch has read, so it is applied against the decision
state itself (storyengine.state), between runs, under the same lock: the
state reads what a promotion needs (``PromotionRead``, in two steps: the
band slots to read depend on the first), this module plans every change
(``plan``), and the state applies the plan, all or nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import records, signatures
from .batch import BAND_SLOT_IDS
from .decisions import Decision
from .features import Features
from .keys import Keys
from .records import decompress_features, json_field
from .settings import Settings
from .story_writer import StoryUpdate

# What a promotion reads: of each old canonical article, of the story, and of each of its members.
OLD_CANONICAL_FIELDS = ("bands", "fingerprint", "terms")
STORY_FIELDS = ("first_seen", "last_updated", "article_count", "indexed", "originals", "representative",
                "canonicals")
MEMBER_FIELDS = ("duplicate_of", "fingerprint")


@dataclass
class PromotionRead:
    old_rows: list[list]  # OLD_CANONICAL_FIELDS of each old canonical, in the decision's order
    story: list  # STORY_FIELDS
    members: list[str]  # the story's articles
    member_rows: list[list] | None = None  # MEMBER_FIELDS of each member (the second read)
    band_values: list[str] | None = None  # of each slot of slots_to_read (the second read)


@dataclass
class PromotionPlan:
    article_id: str
    story_id: str
    source: str
    published: float
    article_fields: dict  # the newcomer's, as decided
    story: StoryUpdate
    olds: list[tuple[str, float, str | None]]  # (old canonical, its containment, its fingerprint)
    copies: list[tuple[str, str | None]]  # (a copy of an old canonical, its fingerprint)
    uncounted: list[np.ndarray]  # term features of texts that leave the term statistics
    fingerprint: str
    band_values: dict[tuple[str, bytes], str]  # '' empties a slot


def slots_to_read(keys: Keys, f: Features, read: PromotionRead) -> list[tuple[str, bytes]]:
    """Band slots: the old canonicals leave theirs, the newcomer joins its own."""
    old_slots = [x for row in read.old_rows if row[0]
                 for x in keys.band_slots(signatures.BandLayout.slots_from_bytes(row[0]))]
    return list(dict.fromkeys(old_slots + f.slots))


def plan(decision: Decision, record: dict, f: Features, read: PromotionRead, slots: list, settings: Settings
         ) -> PromotionPlan:
    article_id, olds = decision.article_id, decision.takes_over
    story_id = olds[0]["story"]
    old_ids = [o["article"] for o in olds]
    # The term statistics count each canonical text once. The newcomer takes
    # the first old canonical's place in them; any further ones, now copies
    # too, are taken out again (their terms recomputed from their text).
    uncounted = [decompress_features(row[2]) for row in read.old_rows[1:]]
    first_seen, last_updated, count, indexed, originals, representative, canonicals = read.story
    published = f.published
    last_updated_before = float(last_updated) if last_updated else None
    first_seen = min(float(first_seen or published), published)
    last_updated = max(float(last_updated or published), published)
    count, indexed = int(count or 0) + 1, json_field(indexed, [])
    canonicals = [c for c in json_field(canonicals, []) if c not in old_ids] + [article_id]
    # Texts now copies leave the story's originals; the representative follows its text.
    takes_representative = bool(representative) and records.decode(representative) in old_ids
    story_fields = records.encode_story_fields(
        first_seen=first_seen, last_updated=last_updated, article_count=count,
        canonicals=canonicals[-settings.story_duplicate_candidates:],
        originals=int(originals or 0) - len(uncounted) if uncounted else None,
        representative=article_id if takes_representative else None,
        headline=record["title"] if takes_representative else None)
    values = {}
    for slot, value in zip(slots, read.band_values):
        ids = [i for i in records.decode(value).split(" ") if i and i not in old_ids and i != article_id]
        if slot in f.slots:
            ids = (ids + [article_id])[-BAND_SLOT_IDS:]
        values[slot] = " ".join(ids)
    report = {"duplicate": dict(decision.duplicate_report, matched=None, promoted_over=old_ids),
              "story": {"action": "followed_copy", "story": story_id,
                        "reason": f"published before {', '.join(old_ids)}, its copies, so it is now the "
                                  "canonical article"}}
    return PromotionPlan(
        article_id, story_id, record["source"], published,
        records.decided_article_fields(f, story_id, None, None, report),
        StoryUpdate(story_id, story_fields, last_updated, count, indexed, indexed, last_updated_before,
                    kept=published),
        [(old["article"], old["containment"], _decoded(row[1])) for old, row in zip(olds, read.old_rows)],
        [(m, _decoded(fp)) for m, (d, fp) in zip(read.members, read.member_rows)
         if d and records.decode(d) in old_ids],
        uncounted, f.fingerprint, values)


def _decoded(value) -> str | None:
    return records.decode(value) if value else None
