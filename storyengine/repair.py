"""The repair pass: merge stories that converged.

Online assignment decides each article once, with what it knew then. Two
stories can open for one event (its first articles had little in common)
and later fill in until they clearly are one. The pass, run periodically
(a Celery beat task in the service, every few hundred articles in the
evaluation), compares every story updated inside the window with the others
that share an index term, and merges a pair when their average link (the
mean time-weighted cosine over all pairs of members, the same measure an
article is assigned by) reaches ``merge_threshold``.

A merge keeps the older story (earlier ``first_seen``) and turns the other
into a redirect: its hash keeps only ``merged_into``, so the API answers its
id with the new home, and its articles now name the surviving story. The
pass takes the assignment lock and writes each merge in one transaction
that checks the lock (see :mod:`storyengine.locking`), so it never
interleaves with an article being assigned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from . import records
from .batch import Story
from .story_writer import StoryUpdate, StoryWriter
from .errors import StoreUnavailable
from .locking import AssignmentLock
from .assignment import readable_terms
from .settings import Settings
from .store import RedisStore
from .timestamps import iso
from .stories import short_share, story_link, story_words, threshold_for
from .vectors import SparseVector

_MAX_MERGES_PER_RUN = 200


def members_in_window(story: Story) -> int:
    """Members in the window's buckets (what the link is over)."""
    return sum(b.count for b in story.buckets.values())


@dataclass
class Merge:
    kept: str
    merged: str
    link: float

    def as_dict(self) -> dict:
        return {"kept": self.kept, "merged": self.merged, "link": round(self.link, 4)}


@dataclass
class RepairReport:
    stories_checked: int = 0
    pairs_compared: int = 0
    merges: list[Merge] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"stories_checked": self.stories_checked, "pairs_compared": self.pairs_compared,
                "merges": [m.as_dict() for m in self.merges]}


class Repairer:
    def __init__(self, store: RedisStore, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or store.settings
        self.keys = store.keys
        self.redis = store.redis
        self._stories = StoryWriter(store.redis, store.keys)

    def run(self) -> RepairReport:
        try:
            with AssignmentLock(self.redis, self.keys, self.settings.change_log_entries) as lock:
                return self._run(lock)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ reads
    def _recent_stories(self) -> dict[str, Story]:
        """Stories whose newest article is inside the window of the stream's
        own clock (the newest published time seen), not the wall clock."""
        k, s = self.keys, self.settings
        newest = self.redis.zrevrange(k.stories_recent, 0, 0, withscores=True)
        if not newest:
            return {}
        since = newest[0][1] - s.story_window_hours * 3600.0
        ids = [m.decode() for m in self.redis.zrangebyscore(k.stories_recent, since, "+inf")]
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(k.story(sid))
            rows = pipe.execute()
        return {sid: Story.from_hash(sid, raw) for sid, raw in zip(ids, rows) if raw and b"merged_into" not in raw}

    # ------------------------------------------------------------------ the pass
    def _run(self, lock: AssignmentLock) -> RepairReport:
        s = self.settings
        report = RepairReport()
        stories = self._recent_stories()
        report.stories_checked = len(stories)
        by_term: dict[int, set[str]] = {}
        for st in stories.values():
            for feature in st.indexed:
                by_term.setdefault(feature, set()).add(st.story_id)
        links: list[tuple[float, str, str]] = []
        seen = set()
        for st in stories.values():
            partners = set().union(*(by_term.get(f, set()) for f in st.indexed)) if st.indexed else set()
            for other in partners:
                pair = tuple(sorted((st.story_id, other)))
                if other == st.story_id or pair in seen:
                    continue
                seen.add(pair)
                report.pairs_compared += 1
                # Stories of short texts are linked by their centroids, of full
                # texts by average link, as an article is scored (stories.rank_stories).
                words = max(story_words(st.buckets, s), story_words(stories[other].buckets, s))
                short = short_share(words, s)
                link = story_link(st.buckets, stories[other].buckets, s, short)
                smaller = min(members_in_window(st), members_in_window(stories[other]))
                floor = short * s.short_merge_threshold + (1.0 - short) * s.merge_threshold
                if link >= threshold_for(smaller, floor, s, words):
                    links.append((link, *pair))
        # Best pair first; a story merged away this run is not merged again
        # (its survivor is compared afresh on the next run).
        links.sort(key=lambda x: (-x[0], x[1], x[2]))
        touched: set[str] = set()
        for link, a, b in links:
            if a in touched or b in touched or len(report.merges) >= _MAX_MERGES_PER_RUN:
                continue
            kept, merged = sorted((stories[a], stories[b]), key=lambda st: (st.first_seen, st.story_id))
            self._merge(lock, kept, merged, link)
            touched.update((a, b))
            report.merges.append(Merge(kept.story_id, merged.story_id, link))
        return report

    # ------------------------------------------------------------------ a merge
    def _merge(self, lock: AssignmentLock, kept: Story, merged: Story, link: float) -> None:
        s, k = self.settings, self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(k.story_articles(merged.story_id), 0, -1, withscores=True)
            pipe.hgetall(k.story_sources(merged.story_id))
            pipe.zscore(k.stories_kept, merged.story_id)
            members, sources, merged_kept = pipe.execute()
        a, b = kept.raw, merged.raw
        centroid = SparseVector.from_bytes(a.get("centroid")).add(
            SparseVector.from_bytes(b.get("centroid"))).top(s.centroid_terms)
        buckets = dict(kept.buckets)
        for index, bucket in merged.buckets.items():
            buckets[index] = buckets[index].merge(bucket, s.bucket_terms) if index in buckets else bucket
        names = {int(x): y for x, y in records.json_field(b.get("term_names"), {}).items()}
        names.update({int(x): y for x, y in records.json_field(a.get("term_names"), {}).items()})
        heaviest = [int(x) for x in centroid.heaviest(s.index_terms)]
        names = {f: names[f] for f in heaviest if f in names}
        top_terms = readable_terms([names[f] for f in heaviest if f in names], s.top_terms)
        # The representative stays the one closer to the merged centroid.
        rep_a, rep_b = SparseVector.from_bytes(a.get("rep_vec")), SparseVector.from_bytes(b.get("rep_vec"))
        rep_from = merged.raw if rep_b.cosine(centroid) > rep_a.cosine(centroid) + 1e-9 else kept.raw
        first_seen = min(kept.first_seen, merged.first_seen)
        last_updated = max(kept.last_updated, merged.last_updated)
        article_count = kept.article_count + merged.article_count
        originals = kept.originals + merged.originals
        canonicals = (kept.canonicals + merged.canonicals)[-s.story_duplicate_candidates:]
        # Ids that redirected to the merged story now redirect (through it) here too.
        merged_from = (records.json_field(a.get("merged_from"), []) + records.json_field(b.get("merged_from"), [])
                       + [merged.story_id])

        def writes(pipe):
            kid, mid = kept.story_id, merged.story_id
            fields = records.encode_story_fields(
                first_seen=first_seen, last_updated=last_updated, article_count=article_count, originals=originals,
                centroid=centroid, term_names=names, top_terms=top_terms, indexed=heaviest, canonicals=canonicals,
                merged_from=merged_from, headline=rep_from["headline"], representative=rep_from["representative"],
                rep_vec=rep_from["rep_vec"], buckets=buckets)
            self._stories.write(pipe, [StoryUpdate(
                kid, fields, last_updated, article_count, heaviest, kept.indexed, kept.last_updated,
                kept=max(last_updated, merged_kept or 0.0))])
            self._stories.add_members(pipe, kid, {member.decode(): published for member, published in members},
                                      {source.decode(): int(count) for source, count in sources.items()})
            for member, _ in members:
                pipe.hset(k.article(member.decode()), "story", kid)
            self._stories.redirect(pipe, mid, merged.indexed, kid, iso(time.time()), link)
        lock.commit(writes)
