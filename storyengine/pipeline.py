"""Processing articles: normalise → fingerprint → MinHash → LSH candidates →
TF-IDF → candidate stories (average link) → verify duplicate candidates (LSH,
fingerprint, the best stories' newest canonical articles) → follow the
canonical if it is a copy, else join the best story or open a new one.

Articles are decided in batches (:meth:`Processor.process_many`): one lock
hold, two read round trips and one commit for up to ``BATCH_LIMIT`` articles
(:mod:`storyengine.batch`), deciding each exactly as it would be decided
alone, in order.

Concurrency. Everything that is pure computation (text, shingles, MinHash,
term counts) runs outside any lock. The decision itself (is it a copy of an
article we hold, which story does it join) reads shared state and then writes
it, so it runs under the assignment lock (:mod:`storyengine.locking`): two
copies of one event arriving together are decided one after the other, and
the second sees the story the first opened. A batch's writes go out in
one MULTI/EXEC transaction that WATCHes the lock key: if the lock expired and
another worker took it, the transaction aborts and the task retries, so a
slow worker can never write a decision made on stale reads. Each article's
status is set to ``processed`` in that same transaction, and the first read
under the lock checks it, so a retried or redelivered task changes nothing.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
import redis

from . import boilerplate, signatures
from .batch import (BAND_LOOKUP, BAND_SLOT_IDS, BAND_WRITE, DF_CHANGE, INDEX_STORY, STORY_FIELDS, TERM_LOOKUP,
                    Batch, Candidate, DocumentFrequencies, ShingleCache, Story, compress_features, decode,
                    decompress_features, scored_members)
from .clock import stream_time
from .errors import DecisionFailed, InvalidArticle, NotFound, StoreUnavailable
from .locking import AssignmentConflict, AssignmentLock  # noqa: F401 - AssignmentConflict is part of this API
from .metrics import queue_decided
from .retention import Retention
from .settings import Settings
from .store import RedisStore, out_of_memory
from .stories import (Bucket, base_threshold, bucket_field, bucket_index, choose_story, rank_stories, threshold_for,
                      updated_centroid)
from .text import (ENTITY_PREFIX, WordTest, content_terms, normalise, readable_forms, stem, without_addresses,
                   words)
from .vectors import SparseVector, Vectorizer, tfidf

log = logging.getLogger("storywire.engine")


def _transient(exc: BaseException) -> bool:
    """An outage (Redis unreachable, out of memory, the lock lost): the whole
    call is retried later. Anything else is an error of ours about the articles at hand."""
    if isinstance(exc, (StoreUnavailable, redis.ConnectionError, redis.TimeoutError)):
        return True
    # Redis names these at the start of its answer, or inside a script's error.
    return out_of_memory(exc) or (isinstance(exc, redis.ResponseError) and str(exc).startswith(
        ("BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")))


@dataclass
class Features:
    """Everything computed from an article's text, before any shared state is read."""
    published: float
    fingerprint: str
    signature: np.ndarray
    shingle_set: np.ndarray
    bands: list[tuple[int, bytes]]  # (bucket, slot) per LSH band
    slots: list[tuple[str, bytes]]  # (key, field) of each band's slot
    term_indices: np.ndarray
    term_counts: np.ndarray
    term_names: dict[int, str] = field(default_factory=dict)
    # False for an article posted without a date: ``published`` is set, under
    # the lock, to the stream's time (storyengine.clock.stream_time).
    dated: bool = True
    # Its body's edge sentences (counted for its outlet once it is decided)
    # and how many of them were boilerplate and left out (storyengine.boilerplate).
    sentences: list[bytes] = field(default_factory=list)
    boilerplate: int = 0
    headline_boilerplate: int = 0  # parts of its headline left out as the outlet's furniture
    # One id per term (a name and its word share one: storyengine.pipeline.word_groups), and how many there are.
    word_groups: np.ndarray | None = None
    distinct_words: int | None = None


@dataclass
class Outcome:
    article_id: str
    story_id: str
    duplicate_of: str | None
    opened_story: bool
    already_processed: bool = False
    error: Exception | None = None  # InvalidArticle or NotFound: this article was not decided


# term -> whether it is a name's feature ("e:..."), remembered (``filter`` over a dict stays in C).
_IS_ENTITY = WordTest(lambda term: term.startswith(ENTITY_PREFIX))

# A containment counts only if an accidental overlap that large is this unlikely.
CHANCE_LIMIT = 1e-6


# Python's collector runs a young-generation pass every 700 allocations and
# a full pass once enough objects survive; a deciding process allocates
# hundreds of small objects per article and keeps large caches, so the full
# passes re-scan those caches over and over. Fewer, larger passes took 5 %
# off the cost per article at 10,000 stored and 10 % at 20,000 (side by side
# on the bench's stream); the cycles an article makes are few, so memory
# stays bounded.
GC_THRESHOLDS = (20_000, 20, 50)


def collect_less() -> None:
    """Tune the garbage collector for a process that decides articles (a
    worker process, the bench's in-process engine): what exists now (modules,
    models, settings) is never scanned again, and collections run less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _received(record: dict) -> float | None:
    try:
        return float(record["received_ts"])
    except (KeyError, TypeError, ValueError):
        return None


def story_id_for(article_id: str) -> str:
    # Derived from the founding article, so a retried task re-creates the same id.
    return "st_" + hashlib.blake2b(article_id.encode("utf-8"), digest_size=8).hexdigest()


_MEMBERSHIP_FIELDS = ("first_seen", "last_updated", "article_count", "indexed")

# The representative's heaviest terms kept with its story, to compare newcomers with.
REPRESENTATIVE_TERMS = 64

# Decisions per hold of the assignment lock: enough to spread the round trips
# thin, few enough that a waiting worker never waits long.
BATCH_LIMIT = 200


def readable_terms(terms: list[str], limit: int) -> list[str]:
    """A story's top terms for people: entity features shown as the word
    they count, each word once."""
    out: list[str] = []
    for term in terms:
        word = term[len(ENTITY_PREFIX):] if term.startswith(ENTITY_PREFIX) else term
        if word not in out:
            out.append(word)
    return out[:limit]


def _membership_update(raw: list, published: float) -> tuple[float, float, int, list[int]]:
    """(first_seen, last_updated, article_count, indexed terms) of a story, from
    its ``_MEMBERSHIP_FIELDS``, once an article published at ``published`` joins."""
    return (min(float(raw[0] or published), published), max(float(raw[1] or published), published),
            int(raw[2] or 0) + 1, json.loads(raw[3] or "[]"))


def _with_text_report(decision: dict, f: Features) -> dict:
    """The decision, saying how many of the body's sentences and of the
    headline's parts were its outlet's boilerplate and left out."""
    if f.boilerplate:
        decision.setdefault("text", {})["boilerplate_sentences_left_out"] = f.boilerplate
    if f.headline_boilerplate:
        decision.setdefault("text", {})["headline_parts_left_out"] = f.headline_boilerplate
    return decision


def word_groups(indices: np.ndarray, entity_terms: list[str], vectorizer: Vectorizer) -> tuple[np.ndarray, int]:
    """(one word id per feature of ``indices``, how many words): a name ("e:"
    and the word) has the id of its word's stem, so shared words are counted
    once however the article weighs them. Ids are feature numbers."""
    keys = indices.copy()
    if entity_terms:
        at = np.searchsorted(indices, [vectorizer.feature_of(term) for term in entity_terms])
        keys[at] = [vectorizer.feature_of(stem(term[len(ENTITY_PREFIX):])) for term in entity_terms]
    return keys, len(set(keys.tolist()))


def compact_decision(decision: dict) -> bytes:
    """A decision as stored: the parts that differ per article (the rule and
    method texts are the settings', added back when it is read), compressed."""
    return zlib.compress(json.dumps(decision, separators=(",", ":")).encode("utf-8"), 6)


class Processor:
    """Processes articles by id against a :class:`RedisStore`. One per worker
    process (not shared between threads: it remembers the lock it holds, and
    keeps caches of what never changes)."""

    def __init__(self, store: RedisStore, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or store.settings
        self.keys = store.keys
        self.redis = store.redis
        self.vectorizer = Vectorizer(self.settings.hash_features)
        self.layout = signatures.BandLayout.for_threshold(self.settings.lsh_threshold, self.settings.num_perm)
        self._lock: AssignmentLock | None = None  # set while this processor holds the assignment lock
        # Seconds spent per phase (storyengine.phases) over this processor's life; a
        # caller that wants one call's share takes the difference.
        self.phase_seconds: Counter[str] = Counter()
        self._df = DocumentFrequencies(self.settings.hash_features)
        self._shingles = ShingleCache()
        self._band_lookup = self.redis.register_script(BAND_LOOKUP)
        self._band_write = self.redis.register_script(BAND_WRITE)
        self._term_lookup = self.redis.register_script(TERM_LOOKUP)
        self._retention = Retention(store, self._band_lookup, self._band_write)
        self._scripts = {"band_write": self._band_write, "df_change": self.redis.register_script(DF_CHANGE),
                         "index_story": self.redis.register_script(INDEX_STORY),
                         "boilerplate_count": self.redis.register_script(boilerplate.COUNT)}

    # ------------------------------------------------------------------ pure part
    def featurise(self, record: dict, body: str | None = None, copy_body: str | None = None,
                  terms_title: str | None = None) -> Features:
        """``body`` and ``terms_title``: the body and headline the story terms
        come from, and ``copy_body`` the body copies are compared on, each
        with its outlet's boilerplate left out (storyengine.boilerplate); the
        stored ones if not given."""
        s = self.settings
        # A headline made from the body (an untitled item) would count its first sentence twice.
        title = "" if record.get("title_derived") == "1" else record.get("title", "")
        headline_stripped = bool(title) and terms_title is not None and terms_title != title
        body = record.get("body", "") if body is None else body
        copy_body = body if copy_body is None else copy_body
        # Addresses and handles say where to find an outlet, not what happened.
        # Copies are compared on headline and body together: a changed headline
        # costs a long article a few shingles out of hundreds, and a short item
        # (headline and a snippet) is mostly its headline.
        # Words never span a line break, so these are the words of "title\nbody".
        title = normalise(without_addresses(title))  # once, for the words and the entities
        body = normalise(without_addresses(body))
        title_words, body_words = words(title, normalised=True), words(body, normalised=True)
        copy_words = body_words if copy_body is body or copy_body == body else \
            words(normalise(without_addresses(copy_body)), normalised=True)
        tokens = title_words + copy_words
        if not tokens:
            raise InvalidArticle("the article has no words in its title or body")
        joined = " ".join(tokens).encode("utf-8")  # shingles and the fingerprint both hash the words from it
        shingles = signatures.shingle_hashes(tokens, s.shingle_size, joined)
        signature = signatures.minhash(shingles, s.num_perm)
        if headline_stripped:
            # The outlet's headline furniture left out (storyengine.boilerplate): the words it kept.
            terms_title = normalise(without_addresses(terms_title))
            terms_title_words = words(terms_title, normalised=True)
        else:
            terms_title, terms_title_words = title, title_words
        terms = content_terms(terms_title, body, s.title_weight, s.entity_weight, terms_title_words, body_words,
                              normalised=True) or title_words + body_words or tokens
        indices, counts, names = self.vectorizer.counted(terms)
        groups, distinct = word_groups(indices, list(filter(_IS_ENTITY.__getitem__, names.values())), self.vectorizer)
        forms = readable_forms(title_words, body_words)  # a stem is shown as the article's own first word for it
        names = dict(zip(names, map(forms.get, names.values(), names.values())))
        dated = record.get("published_assigned") != "1"
        try:
            published = float(record["published_ts"]) if dated else math.nan
        except (KeyError, ValueError):
            raise InvalidArticle("the article has no valid published time") from None
        bands = self.layout.band_slots(signature)
        return Features(published, signatures.exact_fingerprint(tokens, joined), signature,
                        signatures.shingle_set(shingles), bands, self.keys.band_slots(bands), indices, counts, names,
                        dated=dated, word_groups=groups, distinct_words=distinct)

    # ------------------------------------------------------------------ the flow
    def process(self, article_id: str) -> Outcome:
        """Decide one article; raises NotFound or InvalidArticle if it cannot be."""
        [outcome] = self.process_many([article_id])
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def process_many(self, article_ids: list[str]) -> list[Outcome]:
        """Decide articles in the order given, in batches. An article that is
        missing or invalid, or whose decision raised an error of ours, gets an
        Outcome with ``error`` set; the rest go on. Only a store that cannot be
        reached (StoreUnavailable) stops the call."""
        try:
            ids = list(dict.fromkeys(article_ids))  # the same id twice is decided once
            outcomes: dict[str, Outcome] = {}
            pending = []
            began = time.perf_counter()
            records = self.store.load_articles(ids)
            began = self._lap("load", began)
            learnt = boilerplate.Boilerplate(self.keys, self.settings)
            learnt.read(self.redis, [(i, r) for i, r in zip(ids, records)
                                     if r is not None and r.get("status") not in ("processed", "failed")])
            for article_id, record in zip(ids, records):
                if record is None:
                    outcomes[article_id] = self._failed(article_id, NotFound(f"no article with id {article_id!r}"))
                elif record.get("status") == "processed":
                    outcomes[article_id] = self._already(article_id, record)
                elif record.get("status") == "failed":  # final: a later delivery never decides it
                    outcomes[article_id] = self._failed(article_id, InvalidArticle(
                        f"already failed: {record.get('error') or 'no reason recorded'}"))
                else:
                    try:
                        stripped = learnt.strip(article_id, record)
                        features = self.featurise(record, stripped.body, stripped.copy_body, stripped.title)
                        features.sentences = stripped.digests
                        features.boilerplate = stripped.sentences_dropped
                        features.headline_boilerplate = stripped.segments_dropped
                        pending.append((article_id, record, features))
                    except InvalidArticle as exc:
                        outcomes[article_id] = self._failed(article_id, exc)
                    except Exception as exc:  # noqa: BLE001 - a bug on one text fails that article alone
                        outcomes[article_id] = self._failed(article_id, DecisionFailed.of(exc))
            self._lap("featurise", began)
            for chunk in self._runs(pending):
                began = time.perf_counter()
                with AssignmentLock(self.redis, self.keys.assign_lock) as lock:
                    self._lock = lock
                    try:
                        began = self._lap("lock", began)
                        self._on_stream_clock(lock, chunk)
                        self._lap("retention", began)
                        outcomes.update(self._decide_isolated(chunk))
                    finally:
                        self._lock = None
                        began = time.perf_counter()
                self._lap("lock", began)
            return [outcomes[article_id] for article_id in article_ids]
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _runs(self, pending: list):
        """The articles in order, in runs of at most BATCH_LIMIT decided under
        one lock hold on one clock. A run also ends before its published times
        would span more than the retention window less the story window: the
        clock a run moves to must not age out a story its first articles could
        still join (an archive of years posted in one batch)."""
        s = self.settings
        span = max(0.0, s.retention_days * 86400.0 - s.story_window_hours * 3600.0)
        run: list = []
        low = high = None
        for item in pending:
            f = item[2]
            if f.dated:
                lo, hi = (f.published, f.published) if low is None else (min(low, f.published), max(high, f.published))
                if run and hi - lo > span:
                    yield run
                    run, (lo, hi) = [], (f.published, f.published)
                low, high = lo, hi
            run.append(item)
            if len(run) == BATCH_LIMIT:
                yield run
                run, low, high = [], None, None
        if run:
            yield run

    def _on_stream_clock(self, lock: AssignmentLock, chunk: list) -> None:
        """Advance the stream clock by the chunk's dated articles, give the
        undated ones the stream's time, and age out what the clock leaves
        behind first, so a batch decides as its articles would one at a time."""
        try:
            clock = self._retention.advance_and_age_out(
                lock, [(record["source"], f.published) for _, record, f in chunk if f.dated])
        except Exception as exc:
            if _transient(exc):
                raise
            # A damaged record in an old story must not stop every decision: this
            # pass is skipped (and logged), the next batch tries again.
            log.exception("the retention pass failed; deciding this batch without it")
            clock = self._retention.clock.read()
        undated = [f for _, _, f in chunk if not f.dated]
        if undated:
            assigned = stream_time(clock, time.time(), self.settings.live_stream_hours)
            for f in undated:
                f.published = assigned

    def _decide_isolated(self, chunk: list) -> dict[str, Outcome]:
        """Decide a chunk; if that raises an error of ours (a bug, a script
        error: not an outage), decide its articles one at a time, so the one
        that raises fails alone and the rest are decided."""
        try:
            return self._decide_batch(chunk)
        except Exception as exc:
            if _transient(exc):
                raise
            self._forget_uncommitted()
            if len(chunk) == 1:
                log.exception("deciding article %s failed", chunk[0][0], extra={"article_id": chunk[0][0]})
                return {chunk[0][0]: self._failed(chunk[0][0], DecisionFailed.of(exc))}
            log.warning("a batch of %d raised %s; deciding its articles one at a time", len(chunk),
                        type(exc).__name__)
        outcomes: dict[str, Outcome] = {}
        for item in chunk:
            try:
                outcomes.update(self._decide_batch([item]))
            except Exception as exc:
                if _transient(exc):
                    raise
                self._forget_uncommitted()
                log.exception("deciding article %s failed", item[0], extra={"article_id": item[0]})
                outcomes[item[0]] = self._failed(item[0], DecisionFailed.of(exc))
        return outcomes

    def _forget_uncommitted(self) -> None:
        """After a decision raised: what this process counted ahead of the store is read again."""
        self._df.version = None

    @staticmethod
    def _failed(article_id: str, error: Exception) -> Outcome:
        return Outcome(article_id, "", None, opened_story=False, error=error)

    def _already(self, article_id: str, record: dict) -> Outcome:
        return Outcome(article_id, record.get("story", ""), record.get("duplicate_of") or None,
                       opened_story=False, already_processed=True)

    def _lap(self, phase: str, began: float) -> float:
        """Add the time since ``began`` to ``phase``; the time now, to start the next one."""
        now = time.perf_counter()
        self.phase_seconds[phase] += now - began
        return now

    def _decide_batch(self, chunk: list) -> dict[str, Outcome]:
        if not chunk:
            return {}
        began = time.perf_counter()
        batch = self._read_batch(chunk)
        began = self._lap("reads", began)
        outcomes: dict[str, Outcome] = {}
        for n, (article_id, record, f) in enumerate(chunk):
            status = batch.status.get(article_id)
            if status == b"processed":
                outcomes[article_id] = self._already(article_id, self.store.load_article(article_id) or {})
                continue
            if status == b"failed":  # failed meanwhile by another delivery: final
                outcomes[article_id] = self._failed(article_id, InvalidArticle("already failed"))
                continue
            if status is None:
                outcomes[article_id] = self._failed(
                    article_id, NotFound(f"article {article_id!r} disappeared while processing"))
                continue
            outcome = self._decide(batch, article_id, record, f)
            if isinstance(outcome, tuple):
                # An earlier copy takes over from canonical ones: that rewrites
                # what the batch has read, so write the batch so far, promote
                # against the store itself, and read afresh for the rest.
                began = self._lap("decide", began)
                self._commit_batch(batch)
                began = self._lap("commit", began)
                outcomes[article_id] = self._promote_earlier_copy(article_id, record, f, *outcome)
                self._lap("decide", began)
                outcomes.update(self._decide_batch(chunk[n + 1:]))
                return outcomes
            outcomes[article_id] = outcome
        began = self._lap("decide", began)
        self._commit_batch(batch)
        self._lap("commit", began)
        return outcomes

    # ------------------------------------------------------------------ batch reads
    def _refresh_df(self) -> None:
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.df)
            pipe.get(k.df_docs)
            pipe.get(k.df_version)
            raw, docs, version = pipe.execute()
        self._df.load(raw, docs, version)

    def _vector(self, f: Features) -> SparseVector:
        return tfidf(f.term_indices, f.term_counts, self._df.counts[f.term_indices].astype(np.float64), self._df.docs)

    def _read_batch(self, chunk: list) -> Batch:
        """Read what the batch will need: round trip 1 (statuses, fingerprints,
        band slots, the term index), then 2 (candidate stories and articles)."""
        k, s = self.keys, self.settings
        batch = Batch(k, s)
        window = s.story_window_hours * 3600.0
        published = [f.published for _, _, f in chunk]
        since = min(published) - window
        batch.bucket_ids = list(range(bucket_index(min(published) - window, s),
                                      bucket_index(max(published) + window, s) + 1))
        slot_list = list(dict.fromkeys(x for _, _, f in chunk for x in f.slots))
        for attempt in range(2):
            lookups = {}
            features_set: set[int] = set()
            for article_id, _, f in chunk:
                # The batch's own articles shift the weights a little before each
                # is decided, so look up a few more terms: fewer lookups later.
                vector = self._vector(f)
                heaviest = [int(x) for x in vector.heaviest(s.lookup_terms + 10)]
                lookups[article_id] = (heaviest[:s.lookup_terms], vector.weights_of(heaviest[:s.lookup_terms]))
                features_set.update(heaviest)
            features = sorted(features_set)
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(k.df_version)
                for article_id, _, _ in chunk:
                    pipe.hget(k.article(article_id), "status")
                fps = sorted({f.fingerprint for _, _, f in chunk})
                for fp in fps:
                    pipe.get(k.fingerprint(fp))
                if slot_list:
                    self._band_lookup(keys=[key for key, _ in slot_list], args=[f for _, f in slot_list], client=pipe)
                if features:
                    self._term_lookup(keys=[k.term(x) for x in features], args=[since, s.stories_per_term],
                                      client=pipe)
                version, *rest = pipe.execute()
            if self._df.version is not None and int(version or 0) == self._df.version:
                break
            # Another process counted terms since: read the counts, then weigh again.
            self._refresh_df()
        batch.status = dict(zip((a for a, _, _ in chunk), rest[:len(chunk)]))
        rest = rest[len(chunk):]
        batch.fingerprints = {fp: decode(v) if v else None for fp, v in zip(fps, rest[:len(fps)])}
        rest = rest[len(fps):]
        if slot_list:
            batch.band_values = {slot: decode(v) for slot, v in zip(slot_list, rest[0])}
            rest = rest[1:]
        if features:
            batch.term_hits = {x: scored_members(m) for x, m in zip(features, rest[0])}
        story_ids = set()
        for article_id, _, f in chunk:
            heaviest, weights = lookups[article_id]
            story_ids |= batch.stories_for_terms(heaviest, f.published - window, weights, s.candidate_stories)
        articles = set(batch.band_members(slot_list)) | {o for o in batch.fingerprints.values() if o}
        self._fetch(batch, story_ids, articles)
        return batch

    def _fetch(self, batch: Batch, story_ids, article_ids) -> None:
        """Read stories and candidate articles the batch does not hold yet, in one round trip."""
        k = self.keys
        story_ids = sorted(set(story_ids) - set(batch.stories))
        article_ids = sorted(set(article_ids) - set(batch.articles))
        if not story_ids and not article_ids:
            return
        bucket_fields = [bucket_field(i) for i in batch.bucket_ids]
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in story_ids:
                pipe.hmget(k.story(sid), STORY_FIELDS + tuple(bucket_fields))
            for aid in article_ids:
                pipe.hmget(k.article(aid), ("story", "duplicate_of", "published_ts", "shingle_set"))
            rows = pipe.execute()
        for sid, row in zip(story_ids, rows):
            batch.stories[sid] = Story.from_row(sid, row, batch.bucket_ids)
        for aid, (story, duplicate_of, published, shingles) in zip(article_ids, rows[len(story_ids):]):
            batch.articles[aid] = {
                "story": decode(story) if story else None, "duplicate_of": decode(duplicate_of or b"") or None,
                "published": float(published) if published else None,
                "shingles": signatures.shingle_set_from_bytes(shingles) if shingles else None}

    def _ensure_terms(self, batch: Batch, features: list[int], since: float) -> None:
        missing = [x for x in features if x not in batch.term_hits]
        if missing:
            found = self._term_lookup(keys=[self.keys.term(x) for x in missing],
                                      args=[since, self.settings.stories_per_term])
            for x, m in zip(missing, found):
                batch.term_hits[x] = scored_members(m)

    def _candidate(self, batch: Batch, article_id: str, story_id: str | None = None) -> Candidate | None:
        """A canonical article to compare with, or None if it is not one (any longer)."""
        info = batch.articles.get(article_id)
        if info is None and story_id is not None:
            cached = self._shingles.get(article_id)
            if cached is not None:
                # In a story's list of canonical articles: canonical, and in that story.
                info = {"story": story_id, "duplicate_of": None, "published": cached[1], "shingles": cached[0]}
        if info is None:
            return None
        if info["shingles"] is None or info["story"] is None or info["duplicate_of"] or info["published"] is None:
            return None  # not processed yet, or no longer a canonical copy
        return Candidate(article_id, info["story"], info["published"], info["shingles"])

    # ------------------------------------------------------------------ one decision
    def _decide(self, batch: Batch, article_id: str, record: dict, f: Features):
        s = self.settings
        window = s.story_window_hours * 3600.0
        vector = self._vector(f)
        heaviest = [int(x) for x in vector.heaviest(s.lookup_terms)]
        self._ensure_terms(batch, heaviest, f.published - window)
        story_ids = batch.stories_for_terms(heaviest, f.published - window, vector.weights_of(heaviest),
                                            s.candidate_stories)
        self._fetch(batch, story_ids, ())
        stories = {sid: batch.stories[sid] for sid in sorted(story_ids) if batch.stories.get(sid) is not None}
        scores = rank_stories(vector, f.published, [st.state() for st in stories.values()], s, f.word_groups,
                              f.distinct_words)

        # Duplicate candidates: LSH finds copies of about the same length; the
        # newest canonical articles of the best-matching stories find short
        # copies of long texts (and long ones of short texts), which LSH cannot.
        slots = f.slots
        sources: dict[str, tuple[str, str | None]] = {}
        for c in sorted(batch.band_members(slots)):
            sources.setdefault(c, ("lsh", None))
        for score in scores[:3]:
            for c in stories[score.story_id].canonicals[-s.story_duplicate_candidates:]:
                sources.setdefault(c, ("story", score.story_id))
        exact_owner = batch.fingerprints.get(f.fingerprint)
        if exact_owner:
            # The text's owner may have become a copy since (an earlier copy took
            # over); identical text is then a copy of whatever it is a copy of.
            self._fetch(batch, (), [exact_owner])
            info = batch.articles.get(exact_owner) or {}
            exact_owner = info.get("duplicate_of") or exact_owner
            sources[exact_owner] = ("exact", None)
        sources.pop(article_id, None)
        # Candidates no one in this process has seen yet: one round trip for all of them.
        unseen = [c for c, (_, sid) in sources.items() if c not in batch.articles
                  and (sid is None or self._shingles.get(c) is None)]
        self._fetch(batch, (), unseen)
        candidates = {c: self._candidate(batch, c, sid) for c, (_, sid) in sources.items()}
        duplicate_report, verified = self._verify_duplicates(
            f, {c: found_by for c, (found_by, _) in sources.items()}, candidates, exact_owner)
        if verified:
            earliest = min(verified, key=lambda r: (r["published"], r["article"]))
            if f.published < earliest["published"]:
                # Earlier than every canonical copy it matches: it takes over
                # from all of them that share the story of the best match.
                best = verified[0]
                return ([r for r in verified if r["story"] == best["story"]], duplicate_report)
            return self._commit_duplicate(batch, article_id, record, f, earliest, duplicate_report)
        return self._assign_story(batch, article_id, record, f, vector, stories, scores, duplicate_report)

    # ------------------------------------------------------------------ duplicates
    def _verify_duplicates(self, f: Features, sources: dict[str, str], candidates: dict[str, Candidate | None],
                           exact_owner: str | None):
        s = self.settings
        mask = signatures.ShingleMask(f.shingle_set)
        compared = [(c, candidates[c]) for c in sorted(sources) if candidates.get(c) is not None]
        overlaps = mask.overlaps([candidate.shingle_set for _, candidate in compared], s.duplicate_containment)
        # Light rows to sort; a record is only made for the reported and the verified ones.
        rows = []
        for (c, candidate), (containment, jaccard, chance) in zip(compared, overlaps):
            exact = c == exact_owner
            verified = exact or (containment >= s.duplicate_containment and chance < CHANCE_LIMIT
                                 and min(len(f.shingle_set), len(candidate.shingle_set)) >= s.containment_min_shingles)
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

    def _article_fields(self, record: dict, f: Features, story_id: str, duplicate_of: str | None,
                        similarity: float | None, decision: dict) -> dict:
        fields = {"status": "processed", "story": story_id, "duplicate_of": duplicate_of or "",
                  # None when nothing was compared (it opened its story, or took over as the canonical article)
                  "similarity": "" if similarity is None else round(float(similarity), 4),
                  "decision": compact_decision(decision),
                  "fingerprint": f.fingerprint}
        if not f.dated:
            fields["published_ts"] = f.published  # the stream's time, given under the lock
        if not duplicate_of:  # only canonical articles are ever compared with newcomers
            # The body itself is not kept once decided: what is needed later is
            # what the text counted for (its terms, if an earlier copy takes over)
            # and its shingles and band slots (to compare and to age out).
            fields.update(shingle_set=signatures.shingle_set_to_bytes(f.shingle_set),
                          bands=signatures.BandLayout.slots_to_bytes(f.bands),
                          terms=compress_features(f.term_indices))
        return fields

    def _commit_duplicate(self, batch: Batch, article_id, record, f: Features, match: dict,
                          dup_report: dict) -> Outcome:
        story_id = match["story"]
        self._fetch(batch, [story_id], ())
        story = batch.stories[story_id]
        decision = _with_text_report({"duplicate": dup_report,
                                      "story": {"action": "followed_canonical", "story": story_id,
                                                "reason": "a copy shares the story of its canonical article "
                                                          f"{match['article']}"}}, f)
        batch.count_sentences(record["source"], f.sentences)
        if abs(f.published - match["published"]) <= self.settings.story_window_hours * 3600.0:
            story.first_seen = min(story.first_seen, f.published)
            story.last_updated = max(story.last_updated, f.published)
        # else: a reprint long after the original is still its copy, but it does
        # not make an old story current again (its times stay as they were).
        story.article_count += 1
        batch.touch(story)
        batch.article_writes.append((article_id, self._article_fields(record, f, story_id, match["article"],
                                                                      match["containment"], decision),
                                     story_id, record["source"], f.published))
        batch.articles[article_id] = {"story": story_id, "duplicate_of": match["article"],
                                      "published": f.published, "shingles": None}
        batch.decided.append((_received(record), True, False))
        return Outcome(article_id, story_id, match["article"], opened_story=False)

    # ------------------------------------------------------------------ stories
    def _assign_story(self, batch: Batch, article_id, record, f: Features, vector: SparseVector,
                      stories: dict[str, Story], scores: list, dup_report: dict) -> Outcome:
        s = self.settings
        chosen = choose_story(scores, s, f.distinct_words)
        story_report = {"candidates": [sc.as_dict() for sc in scores[:3]]}
        # The rule each candidate was held to (storyengine.stories.choose_story):
        # the threshold for this article's length and the story's size, and the
        # shared words needed, so a join or a new story can be read off the record.
        floor = base_threshold(s, f.distinct_words)
        for report, sc in zip(story_report["candidates"], scores[:3]):
            report["threshold"] = round(threshold_for(sc.members, floor, s, f.distinct_words), 4)
        story_report["article_words"] = f.distinct_words
        # The threshold the joined story (or, for a new story, the best one) was held to.
        story_report["threshold"] = (story_report["candidates"][scores.index(chosen)]["threshold"]
                                     if chosen is not None and scores.index(chosen) < 3 else
                                     round(threshold_for(chosen.members if chosen else
                                                         (scores[0].members if scores else 1),
                                                         floor, s, f.distinct_words), 4))
        if chosen is not None and chosen is not scores[0]:
            story_report["passed_over"] = (f"{scores[0].story_id} scored higher but did not reach its threshold "
                                           f"or shared fewer than {s.min_shared_words} words")
        day = bucket_index(f.published, s)
        if chosen is None:
            story_id = story_id_for(article_id)
            story = Story(story_id, f.published, f.published, 0, 0, {})
            story.details = {"centroid": vector, "rep_vec": vector, "names": {}, "headline": record["title"],
                             "representative": article_id}
            batch.stories[story_id] = story
            centroid = vector
            story.buckets[day] = Bucket.of(vector, f.published)
            story_report.update(action="opened", story=story_id)
            similarity = None  # it was compared with no story: no score to report
        else:
            story_id = chosen.story_id
            story = stories[story_id]
            details = story.load_details()
            centroid = updated_centroid(details["centroid"], vector, s)
            current = story.buckets.get(day)
            story.buckets[day] = (current.add(vector, f.published, s.bucket_terms) if current
                                  else Bucket.of(vector, f.published))
            story.first_seen = min(story.first_seen, f.published)
            story.last_updated = max(story.last_updated, f.published)
            details["centroid"] = centroid
            # The representative is the original closest to the story's centre,
            # the earlier one unless a newcomer is clearly closer: the headline
            # follows what the story is about as a whole, not its latest
            # write-up. Both are compared as stored (their heaviest terms), and
            # a headline made from a body never replaces one an outlet wrote.
            rep_vec = vector.top(REPRESENTATIVE_TERMS).stored()
            if record.get("title_derived") != "1" and rep_vec.cosine(centroid) > \
                    details["rep_vec"].cosine(centroid) + s.representative_margin:
                details.update(headline=record["title"], representative=article_id, rep_vec=vector)
            story_report.update(action="joined", story=story_id)
            similarity = chosen.score
        details = story.details
        # What later articles of this batch see is exactly what they would read
        # back from Redis: vectors at stored precision, the representative's cut to its stored terms.
        story.buckets[day] = story.buckets[day].stored()
        centroid = details["centroid"] = centroid.stored()
        details["rep_vec"] = details["rep_vec"].top(REPRESENTATIVE_TERMS).stored()
        story.dirty_buckets.add(day)
        story.article_count += 1
        story.originals += 1
        story.canonicals = (story.canonicals + [article_id])[-s.story_duplicate_candidates:]
        names = dict(details["names"])
        names.update(f.term_names)
        heaviest = [int(x) for x in centroid.heaviest(s.index_terms)]
        details["names"] = {feature: names[feature] for feature in heaviest if feature in names}
        story.indexed = heaviest
        batch.touch(story)
        details["top_terms"] = readable_terms([details["names"][x] for x in heaviest if x in details["names"]],
                                              s.top_terms)
        story.details_changed = True  # written once per batch, however many articles joined
        decision = _with_text_report({"duplicate": dup_report, "story": story_report}, f)
        batch.count_sentences(record["source"], f.sentences)
        batch.article_writes.append((article_id, self._article_fields(record, f, story_id, None, similarity, decision),
                                     story_id, record["source"], f.published))
        batch.articles[article_id] = {"story": story_id, "duplicate_of": None, "published": f.published,
                                      "shingles": f.shingle_set}
        batch.new_canonicals.append((article_id, f.shingle_set, f.published))  # cached once committed
        batch.index_canonical(article_id, f.fingerprint, f.slots)
        batch.count_terms(f.term_indices, 1)
        self._df.counts[f.term_indices] += 1  # later articles of this batch weigh against it already
        self._df.docs += 1
        batch.decided.append((_received(record), False, chosen is None))
        return Outcome(article_id, story_id, None, opened_story=chosen is None)

    # ------------------------------------------------------------------ writes
    def _commit_batch(self, batch: Batch) -> None:
        if not batch.article_writes:
            return
        try:
            self._commit(lambda pipe: batch.writes(pipe, self._scripts, time.time()))
        except BaseException:
            self._df.version = None  # the local counts ran ahead of the store: read them again
            raise
        if batch.docs_change or batch.df_changes is not None:
            self._df.version += 1  # our own commit, made under the lock the version was read under
        for article_id, shingles, published in batch.new_canonicals:
            self._shingles.put(article_id, shingles, published)  # only what was written: it never changes

    def _commit(self, writes) -> None:
        """Write a decision only if we still hold the lock it was made under."""
        if self._lock is None:
            raise AssignmentConflict("no assignment lock held")
        self._lock.commit(writes)

    # ------------------------------------------------------------------ promotion
    def _promote_earlier_copy(self, article_id, record, f: Features, olds: list[dict], dup_report: dict) -> Outcome:
        """A copy published before the canonical one(s) arrived after them
        (workers run in parallel, feeds lag): it becomes the canonical article,
        and each old canonical and its copies now point to it. The story keeps
        its vectors: the texts are copies, so nothing new is learnt about it."""
        k, s = self.keys, self.settings
        self._df.version = None  # term counts change below: read them afresh next batch
        story_id = olds[0]["story"]
        old_ids = [o["article"] for o in olds]
        with self.redis.pipeline(transaction=False) as pipe:
            for old in old_ids:
                pipe.hmget(k.article(old), ("bands", "fingerprint", "terms"))
            pipe.hmget(k.story(story_id), _MEMBERSHIP_FIELDS + ("representative", "canonicals"))
            pipe.zrange(k.story_articles(story_id), 0, -1)
            *old_rows, story_raw, members = pipe.execute()
        # The term statistics count each canonical text once. The newcomer takes
        # the first old canonical's place in them; any further ones, now copies
        # too, are taken out again (their terms recomputed from their text).
        uncounted = [decompress_features(row[2]) for row in old_rows[1:]]
        membership = _membership_update(story_raw, f.published)
        representative = story_raw[-2]
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
        decision = {"duplicate": dict(dup_report, matched=None, promoted_over=old_ids),
                    "story": {"action": "followed_copy", "story": story_id,
                              "reason": f"published before {', '.join(old_ids)}, its copies, so it is now the "
                                        "canonical article"}}

        def writes(pipe):
            fields = self._article_fields(record, f, story_id, None, None, decision)
            now = round(time.time(), 3)
            fields["processed_ts"] = now
            queue_decided(pipe, k.metrics, [(_received(record), False, False)], now)
            pipe.hset(k.article(article_id), mapping=fields)
            pipe.hdel(k.article(article_id), "body")
            pipe.zrem(k.queued, article_id)
            first_seen, last_updated, article_count, indexed = membership
            pipe.hset(k.story(story_id), mapping={
                "first_seen": first_seen, "last_updated": last_updated, "article_count": article_count,
                "canonicals": json.dumps(canonicals[-s.story_duplicate_candidates:])})
            pipe.zadd(k.story_articles(story_id), {article_id: f.published})
            pipe.hincrby(k.story_sources(story_id), record["source"], 1)
            pipe.zadd(k.stories_recent, {story_id: last_updated})
            pipe.zadd(k.stories_size, {story_id: article_count * 1e10 + last_updated})
            pipe.zadd(k.stories_kept, {story_id: f.published}, gt=True)
            for feature in indexed:
                pipe.zadd(k.term(feature), {story_id: last_updated})
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
                pipe.hincrby(k.story(story_id), "originals", -len(uncounted))
            pipe.incr(k.df_version)
            if representative and representative.decode() in old_ids:
                pipe.hset(k.story(story_id), mapping={"representative": article_id, "headline": record["title"]})
            pipe.set(k.fingerprint(f.fingerprint), article_id)
            self._band_write(keys=[key for key, _ in values], args=[x for (_, slot), v in values.items()
                                                                    for x in (slot, v)], client=pipe)
        self._commit(writes)
        self._shingles.put(article_id, f.shingle_set, f.published)
        return Outcome(article_id, story_id, None, opened_story=False)
