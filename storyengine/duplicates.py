"""Duplicates: which canonical articles a newcomer may be a copy of, and the
rule that says it is one (a copy published before the canonical copies that
arrived ahead of it takes over from them: storyengine.promotion).

Only canonical articles (the earliest published copy of a text) are compared
with newcomers; a copy shares its canonical article's story.
"""
from __future__ import annotations

from operator import itemgetter

import numpy as np

from . import signatures
from .batch import Batch, Candidate
from .batch_reads import BatchReads
from .features import Features
from .settings import Settings
from .stories import StoryScore

# How many of the candidates compared a decision report lists, best first.
REPORTED = 5


def is_copy(containment: float, chance: float, smaller: int, exact: bool, s: Settings) -> bool:
    """The rule: identical text, or enough of the smaller text's shingles (it
    having ``smaller`` of them) in the other, and by accident unlikely.
    Elementwise when given arrays (one entry per candidate)."""
    return exact | ((containment >= s.duplicate_containment) & (chance < s.duplicate_chance_limit)
                    & (smaller >= s.containment_min_shingles))


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
        # What this batch made of a candidate already stands for the rest of it (Batch.candidates).
        known = batch.candidates
        # Candidates no one in this process has seen yet: one round trip for all of them.
        unseen = [c for c, (_, sid) in sources.items() if (c, sid) not in known and c not in batch.articles
                  and (sid is None or self.reads.shingles.get(c) is None)]
        if unseen:
            self.reads.fetch(batch, (), unseen)
        candidates = {}
        for c, (_, sid) in sources.items():
            if (c, sid) not in known:
                known[c, sid] = self.reads.candidate(batch, c, sid)
            candidates[c] = known[c, sid]
        return self._verify(f, {c: found_by for c, (found_by, _) in sources.items()}, candidates, exact_owner)

    def _verify(self, f: Features, sources: dict[str, str], candidates: dict[str, Candidate | None],
                exact_owner: str | None) -> tuple[dict, list[dict]]:
        s = self.settings
        compared = [(c, candidates[c]) for c in sorted(sources) if candidates.get(c) is not None]
        rows = []
        if compared:
            figures = signatures.ShingleMask(f.shingle_set).overlap_arrays(
                [candidate.shingle_set for _, candidate in compared], s.duplicate_containment)
            exact = np.array([c == exact_owner for c, _ in compared])
            verified = is_copy(figures.containment, figures.chance, figures.smaller, exact, s)
            # Rows (their containment rounded by Python's round, as reported) are made only for the
            # verified and those that may be among the REPORTED first in report order: one whose
            # containment is below the REPORTED-th largest by more than rounding can close (5e-5) is not.
            made = verified | exact
            if len(compared) > REPORTED:
                made |= ~(figures.containment < -np.partition(-figures.containment, REPORTED - 1)[REPORTED - 1] - 1e-3)
            else:
                made[:] = True
            containments, jaccards = figures.containment.tolist(), figures.jaccard.tolist()
            exact, verified = exact.tolist(), verified.tolist()
            for i in np.flatnonzero(made).tolist():
                c, candidate = compared[i]
                rows.append((not exact[i], -round(containments[i], 4), candidate.published, c, candidate,
                             jaccards[i], verified[i]))
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
                           for r in map(record, rows[:REPORTED])],
            "compared": len(compared),
            "matched": match["article"] if match else None,
        }
        return report, verified
