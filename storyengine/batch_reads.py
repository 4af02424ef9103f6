"""The reads of a batch of decisions, and the caches that spare them: the
stream's document frequencies and the shingle sets of canonical articles.

A batch reads what it will need up front in two reads of the decision state
(storyengine.state: statuses, fingerprints, band slots and the term index;
then candidate stories and articles), and tops up only when a decision needs
something no one read yet (storyengine.batch holds the view they fill).
"""
from __future__ import annotations

import numpy as np

from .batch import Batch, Candidate
from .document_frequencies import DocumentFrequencies
from .features import Features
from .settings import Settings
from .state import DecisionState
from .buckets import bucket_index
from .vectors import SparseVector, tfidf


class ShingleCache:
    """Shingle sets and publication times of canonical articles by id. Both
    never change once written, so a process can keep them across batches;
    whether an article is still canonical is always read afresh."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._items: dict[str, tuple[np.ndarray, float]] = {}

    def get(self, article_id: str) -> tuple[np.ndarray, float] | None:
        return self._items.get(article_id)

    def put(self, article_id: str, shingles: np.ndarray, published: float) -> None:
        if len(self._items) >= self.capacity:
            # Drop the oldest half (dicts keep insertion order): recent canonicals are the likely matches.
            for key in list(self._items)[: self.capacity // 2]:
                del self._items[key]
        self._items[article_id] = (shingles, published)


class BatchReads:
    """Reads for one deciding process (its caches are the process's own)."""

    def __init__(self, state: DecisionState, settings: Settings) -> None:
        self.state, self.settings = state, settings
        self.df = DocumentFrequencies(settings.hash_features)
        self.shingles = ShingleCache()
        self._wanted_last: tuple | None = None  # (chunk's ids, df version) and what _wanted gave for them
        self._candidates_ahead: tuple[set[str], set[str]] | None = None  # what the read ahead found

    def refresh_df(self) -> None:
        self.state.read_df(self.df)

    def vector(self, f: Features) -> SparseVector:
        """The article's TF-IDF vector, weighed by the stream's counts as this process holds them."""
        return tfidf(f.term_indices, f.term_counts, self.df.counts[f.term_indices].astype(np.float64), self.df.docs)

    def prefetch(self, chunk: list) -> None:
        """Before the lock: bring the state up to date with what this batch will
        read (storyengine.replicated_state), so little is left to read under it."""
        self._candidates_ahead = None
        prefetch = getattr(self.state, "prefetch", None)
        if prefetch is None:
            return
        s = self.settings
        since = min(f.published for _, _, f in chunk) - s.story_window_hours * 3600.0
        for attempt in range(2):
            # Weighed with the counts the replica holds, or the answer would not stand under the lock.
            if self.df.version is None or self.df.version != self.state.df_version():
                self.refresh_df()
            lookups, features, fps, slot_list = self._wanted(chunk)
            read = prefetch(fps, slot_list, features, since)
            if read.df_version == self.df.version:
                break
            # The log it followed held another process's counts: weigh again.
        story_ids, articles = self._candidates(Batch(s), chunk, read, (lookups, features, fps, slot_list))
        self._candidates_ahead = (story_ids, articles)
        self.state.prefetch_candidates(sorted(story_ids), sorted(articles), self._bucket_ids(chunk))

    def catch_up(self, chunk: list) -> None:
        """While waiting for the lock: if the log moved since the read ahead, read ahead again."""
        catch_up = getattr(self.state, "catch_up", None)
        if catch_up is not None and catch_up():
            self.prefetch(chunk)

    def _wanted(self, chunk: list) -> tuple[dict, list[int], list[str], list]:
        """What a batch looks up: each article's heaviest terms and their
        weights, every term, fingerprint and band slot to read."""
        key = (tuple(a for a, _, _ in chunk), self.df.version)
        if self.df.version is not None and self._wanted_last is not None and self._wanted_last[0] == key:
            return self._wanted_last[1]  # weighed before the lock, against the same counts
        s = self.settings
        lookups = {}
        features_set: set[int] = set()
        for article_id, _, f in chunk:
            # The batch's own articles shift the weights a little before each
            # is decided, so look up a few more terms: fewer lookups later.
            vector = self.vector(f)
            heaviest = [int(x) for x in vector.heaviest(s.lookup_terms + 10)]
            lookups[article_id] = (heaviest[:s.lookup_terms], vector.weights_of(heaviest[:s.lookup_terms]))
            features_set.update(heaviest)
        slot_list = list(dict.fromkeys(x for _, _, f in chunk for x in f.slots))
        wanted = lookups, sorted(features_set), sorted({f.fingerprint for _, _, f in chunk}), slot_list
        self._wanted_last = (key, wanted)
        return wanted

    def read_batch(self, chunk: list) -> Batch:
        """Read what the batch will need: round trip 1 (statuses, fingerprints,
        band slots, the term index), then 2 (candidate stories and articles)."""
        s = self.settings
        batch = Batch(s)
        window = s.story_window_hours * 3600.0
        since = min(f.published for _, _, f in chunk) - window
        batch.bucket_ids = self._bucket_ids(chunk)
        for attempt in range(2):
            lookups, features, fps, slot_list = self._wanted(chunk)
            read = self.state.first_read([a for a, _, _ in chunk], fps, slot_list, features, since)
            if self.df.version is not None and read.df_version == self.df.version:
                break
            # Another process counted terms since: read the counts, then weigh again.
            self.refresh_df()
        batch.status = dict(zip((a for a, _, _ in chunk), read.statuses))
        ahead, self._candidates_ahead = self._candidates_ahead, None
        # Answered by the read ahead: the candidates it found are still the candidates.
        story_ids, articles = self._candidates(batch, chunk, read, (lookups, features, fps, slot_list),
                                               ahead if read.ahead else None)
        self.fetch(batch, story_ids, articles)
        return batch

    def _bucket_ids(self, chunk: list) -> list[int]:
        """The day buckets a batch reads of its candidate stories: those its articles' windows reach."""
        s = self.settings
        window = s.story_window_hours * 3600.0
        published = [f.published for _, _, f in chunk]
        return list(range(bucket_index(min(published) - window, s), bucket_index(max(published) + window, s) + 1))

    def _candidates(self, batch: Batch, chunk: list, read, wanted: tuple,
                    known: tuple[set[str], set[str]] | None = None) -> tuple[set[str], set[str]]:
        """Take a first read into ``batch``; the candidate stories and articles
        it points to (``known``: already worked out from the same read)."""
        s = self.settings
        window = s.story_window_hours * 3600.0
        lookups, features, fps, slot_list = wanted
        batch.fingerprints = dict(zip(fps, read.owners))
        batch.band_values = dict(zip(slot_list, read.band_values))
        batch.term_hits = dict(zip(features, read.term_hits))
        if known is not None:
            return known
        story_ids = set()
        for article_id, _, f in chunk:
            heaviest, weights = lookups[article_id]
            story_ids |= batch.stories_for_terms(heaviest, f.published - window, weights, s.candidate_stories)
        return story_ids, set(batch.band_members(slot_list)) | {o for o in batch.fingerprints.values() if o}

    def fetch(self, batch: Batch, story_ids, article_ids) -> None:
        """Read stories and candidate articles the batch does not hold yet, in one round trip."""
        story_ids = sorted({x for x in story_ids if x not in batch.stories})
        article_ids = sorted({x for x in article_ids if x not in batch.articles})
        if not story_ids and not article_ids:
            return
        stories, articles = self.state.fetch(story_ids, article_ids, batch.bucket_ids)
        batch.stories.update(zip(story_ids, stories))
        batch.articles.update(zip(article_ids, articles))

    def ensure_terms(self, batch: Batch, features: list[int], since: float) -> None:
        """Read the term index for any of ``features`` the batch has not read yet."""
        missing = [x for x in features if x not in batch.term_hits]
        if missing:
            batch.term_hits.update(zip(missing, self.state.term_hits(missing, since)))

    def candidate(self, batch: Batch, article_id: str, story_id: str | None = None) -> Candidate | None:
        """A canonical article to compare with, or None if it is not one (any longer)."""
        info = batch.articles.get(article_id)
        if info is None and story_id is not None:
            cached = self.shingles.get(article_id)
            if cached is not None:
                # In a story's list of canonical articles: canonical, and in that story.
                info = {"story": story_id, "duplicate_of": None, "published": cached[1], "shingles": cached[0]}
        if info is None:
            return None
        if info["shingles"] is None or info["story"] is None or info["duplicate_of"] or info["published"] is None:
            return None  # not processed yet, or no longer a canonical copy
        return Candidate(article_id, info["story"], info["published"], info["shingles"])
