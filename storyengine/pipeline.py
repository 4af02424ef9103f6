"""Processing one article: normalise → fingerprint → MinHash → LSH candidates →
TF-IDF → candidate stories (average link) → verify duplicate candidates (LSH,
fingerprint, the best stories' newest canonical articles) → follow the
canonical if it is a copy, else join the best story or open a new one.

Concurrency. Everything that is pure computation (text, shingles, MinHash,
term counts) runs outside any lock. The decision itself (is it a copy of an
article we hold, which story does it join) reads shared state and then writes
it, so it runs under the assignment lock (:mod:`storyengine.locking`): two
copies of one event arriving together are decided one after the other, and
the second sees the story the first opened. The decision's writes go out in
one MULTI/EXEC transaction that WATCHes the lock key: if the lock expired and
another worker took it, the transaction aborts and the task retries, so a
slow worker can never write a decision made on stale reads. The article's
status is set to ``processed`` in that same transaction, and the first read
under the lock checks it, so a retried or redelivered task changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import redis

from . import signatures
from .errors import InvalidArticle, NotFound, StoreUnavailable
from .locking import AssignmentConflict, AssignmentLock  # noqa: F401 - AssignmentConflict is part of this API
from .settings import Settings
from .store import RedisStore, iso
from .stories import (Bucket, StoryState, bucket_field, bucket_index, buckets_near, choose_story, rank_stories,
                      updated_centroid)
from .text import ENTITY_PREFIX, content_terms, words
from .vectors import SparseVector, Vectorizer, tfidf

@dataclass
class Features:
    """Everything computed from an article's text, before any shared state is read."""
    published: float
    fingerprint: str
    signature: np.ndarray
    shingle_set: np.ndarray
    bands: list[str]
    term_indices: np.ndarray
    term_counts: np.ndarray
    term_names: dict[int, str] = field(default_factory=dict)


@dataclass
class Outcome:
    article_id: str
    story_id: str
    duplicate_of: str | None
    opened_story: bool
    already_processed: bool = False


# A containment counts only if an accidental overlap that large is this unlikely.
CHANCE_LIMIT = 1e-6


def story_id_for(article_id: str) -> str:
    # Derived from the founding article, so a retried task re-creates the same id.
    return "st_" + hashlib.blake2b(article_id.encode("utf-8"), digest_size=8).hexdigest()


_MEMBERSHIP_FIELDS = ("first_seen", "last_updated", "article_count", "indexed")


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


class Processor:
    """Processes articles by id against a :class:`RedisStore`. One per worker
    process (not shared between threads: it remembers the lock it holds)."""

    def __init__(self, store: RedisStore, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or store.settings
        self.keys = store.keys
        self.redis = store.redis
        self.vectorizer = Vectorizer(self.settings.hash_features)
        self.layout = signatures.BandLayout.for_threshold(self.settings.lsh_threshold, self.settings.num_perm)
        self._lock: AssignmentLock | None = None  # set while this processor holds the assignment lock

    # ------------------------------------------------------------------ pure part
    def featurise(self, record: dict) -> Features:
        s = self.settings
        title = record.get("title", "")
        body = record.get("body", "")
        # Copies are compared on headline and body together: a changed headline
        # costs a long article a few shingles out of hundreds, and a short item
        # (headline and a snippet) is mostly its headline.
        tokens = words(f"{title}\n{body}")
        if not tokens:
            raise InvalidArticle("the article has no words in its title or body")
        shingles = signatures.shingle_hashes(tokens, s.shingle_size)
        signature = signatures.minhash(shingles, s.num_perm)
        terms = content_terms(title, body, s.title_weight, s.entity_weight) or tokens
        indices, counts = self.vectorizer.term_counts(terms)
        names = {self.vectorizer.feature_of(t): t for t in set(terms)}
        try:
            published = float(record["published_ts"])
        except (KeyError, ValueError):
            raise InvalidArticle("the article has no valid published time") from None
        return Features(published, signatures.exact_fingerprint(tokens), signature, signatures.shingle_set(shingles),
                        self.layout.band_hashes(signature), indices, counts, names)

    # ------------------------------------------------------------------ the flow
    def process(self, article_id: str) -> Outcome:
        try:
            record = self.store.load_article(article_id)
            if record is None:
                raise NotFound(f"no article with id {article_id!r}")
            if record.get("status") == "processed":
                return self._already(article_id, record)
            features = self.featurise(record)
            with AssignmentLock(self.redis, self.keys.assign_lock) as lock:
                self._lock = lock
                try:
                    return self._decide(article_id, record, features)
                finally:
                    self._lock = None
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _already(self, article_id: str, record: dict) -> Outcome:
        return Outcome(article_id, record.get("story", ""), record.get("duplicate_of") or None,
                       opened_story=False, already_processed=True)

    def _decide(self, article_id: str, record: dict, f: Features) -> Outcome:
        k, s = self.keys, self.settings
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.article(article_id), "status")
            pipe.get(k.fingerprint(f.fingerprint))
            # The stream's document frequencies of this article's terms, and the
            # number of documents counted (read now, used if it is not a copy).
            pipe.execute_command("BITFIELD_RO", k.df, *[x for i in f.term_indices for x in ("GET", "u32", f"#{i}")])
            pipe.get(k.df_docs)
            for i, band in enumerate(f.bands):
                pipe.smembers(k.band(i, band))
            status, exact_owner, df, docs, *band_members = pipe.execute()
        if status == b"processed":
            return self._already(article_id, self.store.load_article(article_id) or {})
        if status is None:
            raise NotFound(f"article {article_id!r} disappeared while processing")

        vector = tfidf(f.term_indices, f.term_counts, np.asarray(df, dtype=np.float64), int(docs or 0))
        stories = self._candidate_stories(vector, f)
        scores = rank_stories(vector, f.published, [st for st, _ in stories.values()], s)

        # Duplicate candidates: LSH finds copies of about the same length; the
        # newest canonical articles of the best-matching stories find short
        # copies of long texts (and long ones of short texts), which LSH cannot.
        sources: dict[str, str] = {}
        for c in sorted({m.decode() for members in band_members for m in members}):
            sources.setdefault(c, "lsh")
        for score in scores[:3]:
            for c in stories[score.story_id][1]["canonicals"][-s.story_duplicate_candidates:]:
                sources.setdefault(c, "story")
        exact_owner = exact_owner.decode() if exact_owner else None
        if exact_owner:
            # The text's owner may have become a copy since (an earlier copy took
            # over); identical text is then a copy of whatever it is a copy of.
            canonical = self.redis.hget(k.article(exact_owner), "duplicate_of")
            exact_owner = canonical.decode() if canonical else exact_owner
            sources[exact_owner] = "exact"
        sources.pop(article_id, None)
        duplicate_report, verified = self._verify_duplicates(f, sources, exact_owner)
        if verified:
            earliest = min(verified, key=lambda r: (r["published"], r["article"]))
            if f.published < earliest["published"]:
                # Earlier than every canonical copy it matches: it takes over
                # from all of them that share the story of the best match.
                best = verified[0]
                later = [r for r in verified if r["story"] == best["story"]]
                return self._promote_earlier_copy(article_id, record, f, later, duplicate_report)
            return self._commit_duplicate(article_id, record, f, earliest, duplicate_report)
        return self._assign_story(article_id, record, f, vector, stories, scores, duplicate_report)

    _STORY_FIELDS = ("centroid", "first_seen", "last_updated", "originals", "article_count", "rep_vec",
                     "term_names", "headline", "representative", "canonicals", "indexed")

    def _candidate_stories(self, vector: SparseVector, f: Features) -> dict[str, tuple[StoryState, dict]]:
        """Stories that share one of the article's heaviest terms and were
        updated inside the window, with the buckets the window can reach."""
        s, k = self.settings, self.keys
        window_start = f.published - s.story_window_hours * 3600.0
        with self.redis.pipeline(transaction=False) as pipe:
            for feature in vector.heaviest(s.lookup_terms):
                pipe.zrangebyscore(k.term(int(feature)), window_start, "+inf")
            found = pipe.execute()
        candidate_ids = sorted({m.decode() for members in found for m in members})
        near = buckets_near(f.published, s)
        fields = self._STORY_FIELDS + tuple(bucket_field(i) for i in near)
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in candidate_ids:
                pipe.hmget(k.story(sid), fields)
            rows = pipe.execute()
        stories = {}
        for sid, raw in zip(candidate_ids, rows):
            if raw[0] is None:
                continue
            r = dict(zip(self._STORY_FIELDS, raw))
            r["canonicals"] = json.loads(r["canonicals"] or "[]")
            buckets = {i: Bucket.from_bytes(b) for i, b in zip(near, raw[len(self._STORY_FIELDS):]) if b}
            state = StoryState(sid, float(r["first_seen"]), float(r["last_updated"]), int(r["originals"]), buckets)
            stories[sid] = (state, r)
        return stories

    # ------------------------------------------------------------------ duplicates
    def _verify_duplicates(self, f: Features, sources: dict[str, str], exact_owner: str | None):
        s = self.settings
        candidates = sorted(sources)
        fields = ("shingle_set", "published_ts", "story", "duplicate_of")
        with self.redis.pipeline(transaction=False) as pipe:
            for c in candidates:
                pipe.hmget(self.keys.article(c), fields)
            rows = pipe.execute()
        checked = []
        for c, (shingle_set, published, story, duplicate_of) in zip(candidates, rows):
            if shingle_set is None or story is None or duplicate_of:
                continue  # not processed yet, or no longer a canonical copy
            other = signatures.shingle_set_from_bytes(shingle_set)
            containment, jaccard, chance = signatures.overlap(f.shingle_set, other)
            exact = c == exact_owner
            verified = exact or (containment >= s.duplicate_containment and chance < CHANCE_LIMIT
                                 and min(len(f.shingle_set), len(other)) >= s.containment_min_shingles)
            checked.append({"article": c, "found_by": sources[c], "story": story.decode(),
                            "published": float(published), "containment": round(containment, 4),
                            "jaccard": round(jaccard, 4), "exact": exact, "duplicate": verified})
        checked.sort(key=lambda r: (-r["exact"], -r["containment"], r["published"], r["article"]))
        verified = [r for r in checked if r["duplicate"]]
        match = min(verified, key=lambda r: (r["published"], r["article"])) if verified else None
        report = {
            "candidates": [{k: r[k] for k in ("article", "found_by", "containment", "jaccard", "exact", "duplicate")}
                           for r in checked[:10]],
            "compared": len(checked),
            "matched": match["article"] if match else None,
            "rule": (f"a copy when the texts are identical, or when at least {s.duplicate_containment:.0%} of "
                     f"the smaller text's {s.shingle_size}-word shingles are in the other "
                     f"(and it has at least {s.containment_min_shingles}); the canonical article is the "
                     "earliest published copy"),
        }
        return report, verified

    def _commit_duplicate(self, article_id, record, f: Features, match: dict, dup_report: dict) -> Outcome:
        story_id = match["story"]
        decision = {"duplicate": dup_report,
                    "story": {"action": "followed_canonical", "story": story_id,
                              "reason": f"a copy shares the story of its canonical article {match['article']}"}}
        # Read under the assignment lock, so no one else changes these before the commit.
        raw = self.redis.hmget(self.keys.story(story_id), _MEMBERSHIP_FIELDS)
        membership = _membership_update(raw, f.published)
        if abs(f.published - match["published"]) > self.settings.story_window_hours * 3600.0:
            # A reprint long after the original is still its copy, but it does
            # not make an old story current again (its times stay as they were).
            membership = (float(raw[0]), float(raw[1])) + membership[2:]

        def writes(pipe):
            self._write_article(pipe, article_id, story_id, match["article"], match["containment"], decision, f)
            self._write_story_membership(pipe, story_id, article_id, record["source"], f.published, *membership)
        self._commit(writes)
        return Outcome(article_id, story_id, match["article"], opened_story=False)

    def _promote_earlier_copy(self, article_id, record, f: Features, olds: list[dict], dup_report: dict) -> Outcome:
        """A copy published before the canonical one(s) arrived after them
        (workers run in parallel, feeds lag): it becomes the canonical article,
        and each old canonical and its copies now point to it. The story keeps
        its vectors: the texts are copies, so nothing new is learnt about it."""
        k = self.keys
        story_id = olds[0]["story"]
        old_ids = [o["article"] for o in olds]
        with self.redis.pipeline(transaction=False) as pipe:
            for old in old_ids:
                pipe.hmget(k.article(old), ("sig", "fingerprint", "title", "body"))
            pipe.hmget(k.story(story_id), _MEMBERSHIP_FIELDS + ("representative", "canonicals"))
            pipe.zrange(k.story_articles(story_id), 0, -1)
            *old_rows, story_raw, members = pipe.execute()
        # The term statistics count each canonical text once. The newcomer takes
        # the first old canonical's place in them; any further ones, now copies
        # too, are taken out again (their terms recomputed from their text).
        uncounted = [self.vectorizer.term_counts(
            content_terms((row[2] or b"").decode(), (row[3] or b"").decode(), self.settings.title_weight,
                          self.settings.entity_weight))[0] for row in old_rows[1:]]
        membership = _membership_update(story_raw, f.published)
        representative = story_raw[-2]
        canonicals = [c for c in json.loads(story_raw[-1] or "[]") if c not in old_ids] + [article_id]
        members = [m.decode() for m in members]
        with self.redis.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.hmget(k.article(m), ("duplicate_of", "fingerprint"))
            copies = [(m, fp) for m, (d, fp) in zip(members, pipe.execute()) if d and d.decode() in old_ids]
        decision = {"duplicate": dict(dup_report, matched=None, promoted_over=old_ids),
                    "story": {"action": "followed_copy", "story": story_id,
                              "reason": f"published before {', '.join(old_ids)}, its copies, so it is now the "
                                        "canonical article"}}

        def writes(pipe):
            self._write_article(pipe, article_id, story_id, None, 1.0, decision, f)
            self._write_story_membership(pipe, story_id, article_id, record["source"], f.published, *membership)
            pipe.hset(k.story(story_id), "canonicals", json.dumps(canonicals[-self.settings.story_duplicate_candidates:]))
            for old, (old_sig, old_fingerprint, _, _) in zip(olds, old_rows):
                pipe.hset(k.article(old["article"]), mapping={"duplicate_of": article_id,
                                                              "similarity": old["containment"]})
                pipe.hdel(k.article(old["article"]), "sig", "shingle_set")  # only canonical articles are compared
                if old_sig:
                    for i, band in enumerate(self.layout.band_hashes(signatures.signature_from_bytes(old_sig))):
                        pipe.srem(k.band(i, band), old["article"])
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
            if representative and representative.decode() in old_ids:
                pipe.hset(k.story(story_id), mapping={"representative": article_id, "headline": record["title"]})
            self._index_canonical(pipe, article_id, f)
        self._commit(writes)
        return Outcome(article_id, story_id, None, opened_story=False)

    def _index_canonical(self, pipe, article_id: str, f: Features) -> None:
        """Make a canonical article findable by its exact fingerprint and its LSH bands."""
        k = self.keys
        pipe.set(k.fingerprint(f.fingerprint), article_id)
        for i, band in enumerate(f.bands):
            pipe.sadd(k.band(i, band), article_id)

    # ------------------------------------------------------------------ stories
    def _assign_story(self, article_id, record, f: Features, vector: SparseVector,
                      stories: dict[str, tuple[StoryState, dict]], scores: list, dup_report: dict) -> Outcome:
        s, k = self.settings, self.keys
        chosen = choose_story(scores, s)
        story_report = {"candidates": [sc.as_dict() for sc in scores[:5]], "threshold": s.story_threshold,
                        "method": (f"mean cosine to the story's members, each weighed by a Gaussian time kernel "
                                   f"(sigma {s.time_sigma_hours:g} h, window {s.story_window_hours:g} h)")}
        day = bucket_index(f.published, s)
        if chosen is None:
            story_id = story_id_for(article_id)
            centroid = vector
            bucket = Bucket.of(vector, f.published)
            story = {"first_seen": f.published, "last_updated": f.published, "article_count": 1, "originals": 1,
                     "headline": record["title"], "representative": article_id, "rep_vec": vector, "names": {},
                     "canonicals": []}
            story_report.update(action="opened", story=story_id)
            similarity = 1.0
        else:
            story_id = chosen.story_id
            state, r = stories[story_id]
            centroid = updated_centroid(SparseVector.from_bytes(r["centroid"]), vector, s)
            current = state.buckets.get(day)
            bucket = current.add(vector, f.published, s.bucket_terms) if current else Bucket.of(vector, f.published)
            story = {"first_seen": min(state.first_seen, f.published),
                     "last_updated": max(state.last_updated, f.published),
                     "article_count": int(r["article_count"]) + 1, "originals": state.originals + 1,
                     "headline": r["headline"].decode(), "representative": r["representative"].decode(),
                     "rep_vec": SparseVector.from_bytes(r["rep_vec"]),
                     "names": {int(a): b for a, b in json.loads(r["term_names"] or "{}").items()},
                     "canonicals": r["canonicals"]}
            # The representative is whichever of the current one and the newcomer
            # is closer to the updated centroid: the headline follows what the
            # story is about as a whole, not its first or latest article.
            if vector.cosine(centroid) > story["rep_vec"].cosine(centroid) + 1e-9:
                story.update(headline=record["title"], representative=article_id, rep_vec=vector)
            story_report.update(action="joined", story=story_id)
            similarity = chosen.score
        canonicals = (story["canonicals"] + [article_id])[-s.story_duplicate_candidates:]
        names = dict(story["names"])
        names.update(f.term_names)
        heaviest = [int(x) for x in centroid.heaviest(s.index_terms)]
        # Terms that no longer index the story stop pointing at it.
        dropped = set(json.loads(stories[story_id][1]["indexed"] or "[]")) - set(heaviest) if chosen else set()
        names = {feature: names[feature] for feature in heaviest if feature in names}
        top_terms = readable_terms([names[feature] for feature in heaviest if feature in names], s.top_terms)
        decision = {"duplicate": dup_report, "story": story_report}

        def writes(pipe):
            for feature in dropped:
                pipe.zrem(k.term(feature), story_id)
            self._write_article(pipe, article_id, story_id, None, similarity, decision, f)
            self._write_story_membership(pipe, story_id, article_id, record["source"], f.published,
                                         story["first_seen"], story["last_updated"], story["article_count"],
                                         heaviest)
            pipe.hset(k.story(story_id), mapping={
                "id": story_id, "headline": story["headline"], "representative": story["representative"],
                "originals": story["originals"], "centroid": centroid.to_bytes(),
                "rep_vec": story["rep_vec"].top(64).to_bytes(), "term_names": json.dumps(names),
                "top_terms": json.dumps(top_terms), "canonicals": json.dumps(canonicals),
                bucket_field(day): bucket.to_bytes()})
            self._index_canonical(pipe, article_id, f)
            if len(f.term_indices):
                counters = pipe.bitfield(k.df)
                for feature in f.term_indices:
                    counters.incrby("u32", f"#{int(feature)}", 1)
                counters.execute()  # queued in the transaction
            pipe.incr(k.df_docs)
        self._commit(writes)
        return Outcome(article_id, story_id, None, opened_story=chosen is None)

    # ------------------------------------------------------------------ writes
    def _write_article(self, pipe, article_id, story_id, duplicate_of, similarity, decision, f: Features):
        k = self.keys
        fields = {"status": "processed", "story": story_id, "duplicate_of": duplicate_of or "",
                  "similarity": round(float(similarity), 4), "decision": json.dumps(decision),
                  "fingerprint": f.fingerprint, "processed_at": iso(time.time())}
        if not duplicate_of:  # only canonical articles are ever compared with newcomers
            fields.update(sig=signatures.signature_to_bytes(f.signature),
                          shingle_set=signatures.shingle_set_to_bytes(f.shingle_set))
        pipe.hset(k.article(article_id), mapping=fields)
        pipe.zrem(k.queued, article_id)

    def _write_story_membership(self, pipe, story_id, article_id, source, published, first_seen, last_updated,
                                article_count, indexed_terms):
        k = self.keys
        pipe.hset(k.story(story_id), mapping={
            "first_seen": first_seen, "last_updated": last_updated, "article_count": article_count,
            "indexed": json.dumps(indexed_terms)})
        pipe.zadd(k.story_articles(story_id), {article_id: published})
        pipe.hincrby(k.story_sources(story_id), source, 1)
        pipe.zadd(k.stories_recent, {story_id: last_updated})
        # Size first, recency as the tie-break: last_updated (< 1e10 s) fits under the count.
        pipe.zadd(k.stories_size, {story_id: article_count * 1e10 + last_updated})
        # The term index finds stories by their newest article, whichever joined last.
        for feature in indexed_terms:
            pipe.zadd(k.term(feature), {story_id: last_updated})

    def _commit(self, writes) -> None:
        """Write a decision only if we still hold the lock it was made under."""
        if self._lock is None:
            raise AssignmentConflict("no assignment lock held")
        self._lock.commit(writes)
