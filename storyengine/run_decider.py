"""Deciding one run of featurised articles (storyengine.runs) against a
decision state (storyengine.state): the batch's reads, each article's
decision in order in the batch's view, and one commit.

It touches shared state only through the state, so a run decides the same
way on Redis or in memory. An article that must take over as the canonical
copy from earlier-decided ones (a ``promoted`` decision) rewrites what the
batch has read: the batch so far is committed, the state applies the
promotion (storyengine.promotion), and the rest is read afresh as a new batch.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import NamedTuple

from . import records
from .assignment import StoryAssigner
from .batch import Batch
from .batch_reads import BatchReads
from .decisions import Decision, Outcome
from .duplicates import Duplicates
from .errors import InvalidArticle, NotFound
from .features import Features
from .locking import AssignmentLock
from .phases import lap
from .settings import Settings
from .state import DecisionState
from .stories import rank_stories


def failed(article_id: str, error: Exception) -> Outcome:
    return Outcome(article_id, "", None, opened_story=False, error=error)


class Prepared(NamedTuple):
    """What RunDecider.prepare made of an article before the lock."""
    features: Features  # what it was made from: used only for these same features
    canonical_fields: dict  # storyengine.records.canonical_article_fields


class RunDecider:
    """One per deciding process: it keeps the caches of what never changes
    (storyengine.batch_reads) across runs."""

    def __init__(self, state: DecisionState, settings: Settings, phase_seconds: Counter | None = None) -> None:
        self.state, self.settings = state, settings
        self.phase_seconds = Counter() if phase_seconds is None else phase_seconds
        self.reads = BatchReads(state, settings)
        self._duplicates = Duplicates(self.reads, settings)
        self._assigner = StoryAssigner(self.reads, settings)
        self._prepared: dict[str, Prepared] = {}

    def prepare(self, items: list) -> None:
        """Before the lock: what deciding each of ``items`` (article id, record,
        Features) needs that depends on the article alone, so the lock is held
        for less. Deciding an article not prepared makes it then."""
        self._prepared = {article_id: Prepared(f, records.canonical_article_fields(f)) for article_id, _, f in items}

    def _canonical_fields(self, article_id: str, f: Features) -> dict:
        prepared = self._prepared.get(article_id)
        return (prepared.canonical_fields if prepared is not None and prepared.features is f
                else records.canonical_article_fields(f))

    def decide(self, chunk: list, lock: AssignmentLock | None) -> dict[str, Outcome]:
        """The outcome of each article of ``chunk``, decided in order and written under ``lock``."""
        outcomes: dict[str, Outcome] = {}
        while chunk:
            decided, promoted = self._decide_until_promotion(chunk, lock)
            outcomes.update(decided)
            if promoted is None:
                break
            n, decision = promoted
            article_id, record, f = chunk[n]
            began = time.perf_counter()
            self.reads.df.version = None  # promotion changes term counts: read them afresh next batch
            self.state.promote(decision, record, f, lock)
            self.reads.shingles.put(article_id, f.shingle_set, f.published)
            outcomes[article_id] = decision.outcome()
            lap(self.phase_seconds, "decide", began)
            chunk = chunk[n + 1:]
        return outcomes

    def forget_uncommitted(self) -> None:
        """After a decision raised: what this process counted ahead of the store is read again."""
        self.reads.df.version = None

    def _decide_until_promotion(self, chunk: list, lock: AssignmentLock | None
                                ) -> tuple[dict[str, Outcome], tuple[int, Decision] | None]:
        """One batch: (the outcome of each article decided, and where it stopped
        at a ``promoted`` decision: its place in ``chunk`` and the decision)."""
        if not chunk:
            return {}, None
        began = time.perf_counter()
        batch = self.reads.read_batch(chunk)
        began = lap(self.phase_seconds, "reads", began)
        outcomes: dict[str, Outcome] = {}
        for n, (article_id, record, f) in enumerate(chunk):
            status = batch.status.get(article_id)
            if status == b"processed":  # decided meanwhile by another delivery
                outcomes[article_id] = self._already(batch, article_id)
                continue
            if status == b"failed":  # failed meanwhile by another delivery: final
                outcomes[article_id] = failed(article_id, InvalidArticle("already failed"))
                continue
            if status is None:
                outcomes[article_id] = failed(article_id, NotFound(f"article {article_id!r} disappeared while processing"))
                continue
            decision = self._decide(batch, article_id, record, f)
            if decision.kind == "promoted":
                began = lap(self.phase_seconds, "decide", began)
                self._commit(batch, lock)
                lap(self.phase_seconds, "commit", began)
                return outcomes, (n, decision)
            outcomes[article_id] = decision.outcome()
        began = lap(self.phase_seconds, "decide", began)
        self._commit(batch, lock)
        lap(self.phase_seconds, "commit", began)
        return outcomes, None

    def _already(self, batch: Batch, article_id: str) -> Outcome:
        self.reads.fetch(batch, (), [article_id])
        info = batch.articles.get(article_id) or {}
        return Outcome(article_id, info.get("story") or "", info.get("duplicate_of"), opened_story=False,
                       already_processed=True)

    def _decide(self, batch: Batch, article_id: str, record: dict, f: Features) -> Decision:
        """Decide one article in the batch's view (applied to it, unless it is ``promoted``)."""
        s = self.settings
        window = s.story_window_hours * 3600.0
        # Weighed again, not taken from the batch read: each original decided
        # before it in this batch moved the document frequencies it weighs against.
        vector = self.reads.vector(f)
        heaviest = vector.heaviest(s.lookup_terms).tolist()
        self.reads.ensure_terms(batch, heaviest, f.published - window)
        story_ids = batch.stories_for_terms(heaviest, f.published - window, vector.weights_of(heaviest),
                                            s.candidate_stories)
        self.reads.fetch(batch, story_ids, ())
        stories = {sid: batch.stories[sid] for sid in sorted(story_ids) if batch.stories.get(sid) is not None}
        scores = rank_stories(vector, f.published, [st.as_candidate() for st in stories.values()], s, f.word_groups,
                              f.distinct_words)
        duplicate_report, verified = self._duplicates.find(batch, article_id, f, stories, scores)
        if verified:
            earliest = min(verified, key=lambda r: (r["published"], r["article"]))
            if f.published < earliest["published"]:
                # Earlier than every canonical copy it matches: it takes over
                # from all of them that share the story of the best match.
                best = verified[0]
                return Decision("promoted", article_id, best["story"], duplicate_report=duplicate_report,
                                takes_over=[r for r in verified if r["story"] == best["story"]])
            return self._assigner.follow_canonical(batch, article_id, record, f, earliest, duplicate_report)
        return self._assigner.assign(batch, article_id, record, f, vector, stories, scores, duplicate_report,
                                     self._canonical_fields(article_id, f))

    def _commit(self, batch: Batch, lock: AssignmentLock | None) -> None:
        if not batch.article_writes:
            return
        df = self.reads.df
        try:
            self.state.commit(batch, lock)
        except BaseException:
            df.version = None  # the local counts ran ahead of the store: read them again
            raise
        if batch.docs_change or batch.df_changes is not None:
            df.version += 1  # our own commit, made under the lock the version was read under
        for article_id, shingles, published in batch.new_canonicals:
            self.reads.shingles.put(article_id, shingles, published)  # only what was written: it never changes
