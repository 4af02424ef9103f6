"""Every Redis key Storywire uses, made by one helper under one prefix.

``{p}`` is the key prefix in braces, ``{sw}`` by default: a Redis Cluster hash
tag, so every key of one deployment lives in one hash slot and the Lua
scripts and transactions that touch many of them at once work on a Cluster
as on one server. (A Cluster spreads several deployments, each under its own
prefix, over its shards: docs/scaling.md.)

    {p}:article:{id}             hash   the article, its status and the decisions about it; a
                                        canonical article also keeps its shingle set, band slots
                                        and term features
    {p}:article-ref:{digest}     string id of the article with that source + canonical URL
    {p}:queued                   zset   accepted, not yet processed ids -> accepted (or requeued) time
    {p}:failed                   zset   articles that could not be processed -> published time
                                        (so retention removes them on the stream's clock)
    {p}:fingerprint:{hex}        string canonical article with that exact normalised text
    {p}:band:{i}:{bucket}        hash   LSH band i: 4-byte slot of the band's hash -> the newest
                                        canonical articles in it (space-separated, at most 3)
    {p}:story:{id}               hash   headline, representative, times, counts, centroid, member
                                        buckets (b:{n}: summed vectors per time bucket), newest
                                        canonical articles; after a merge only {id, merged_into}
    {p}:story:{id}:sources       hash   outlet -> number of its articles in the story
    {p}:story:{id}:articles      zset   every article in the story (copies too) -> published time
    {p}:stories:recent           zset   story -> newest published time
    {p}:stories:size             zset   story -> article count (ties broken by recency)
    {p}:stories:kept             zset   story -> newest published time of any of its articles (a late
                                        reprint too, which does not move :recent): retention's clock
    {p}:term:{feature}           zset   story -> its last update rounded up to the next 6 hours
                                        (storyengine.story_writer.index_score), for stories it indexes
    {p}:clock                    string the stream clock (storyengine.clock): a watermark of published times
    {p}:clock:times              zset   "n\\0outlet" -> each outlet's n-th newest published time (n <= 2)
    {p}:clock:seen               zset   outlet -> when it last advanced the clock (wall clock): idle outlets leave
    {p}:gone:{day}               hash   tombstones of what retention removed on that (UTC) day: id ->
                                        "kind deleted_at clock detail"; expires tombstone_days later
    {p}:df                       string document frequency per hashed term (u32 counters), as last folded
    {p}:df:deltas                list   changes since (storyengine.document_frequencies)
    {p}:df:docs                  string number of documents counted
    {p}:df:version               string bumped by every change to {p}:df or {p}:df:deltas
    {p}:assign-lock              string the story-assignment lock (storyengine.locking)
    {p}:changes                  stream every write made under the lock, for the deciders'
                                        in-memory replicas (storyengine.change_log), capped
    {p}:metrics                  hash   service counters and the latency histogram (storyengine.metrics)
    {p}:workers                  zset   worker node name -> last heartbeat, epoch seconds (workers.heartbeat)
"""
from __future__ import annotations

import hashlib


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = "{" + prefix + "}"  # the hash tag: see the module's docstring
        self.prefix_bytes = (self.prefix + ":").encode()
        # Band and term keys come from a bounded set (bands x buckets, hashed
        # features) and are made dozens of times per article: made once each.
        self._bands: list[dict[int, str]] = []  # per band: bucket -> key
        self._terms: dict[int, str] = {}

    def _k(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    def article(self, article_id: str) -> str:
        return self._k("article", article_id)

    def article_ref(self, source: str, canonical_url: str) -> str:
        digest = hashlib.blake2b(f"{source}\x00{canonical_url}".encode("utf-8"), digest_size=16).hexdigest()
        return self._k("article-ref", digest)

    @property
    def queued(self) -> str:
        return self._k("queued")

    @property
    def failed(self) -> str:
        return self._k("failed")

    def fingerprint(self, fp: str) -> str:
        return self._k("fingerprint", fp)

    def _band_tables(self, bands: int) -> list[dict[int, str]]:
        if len(self._bands) < bands:
            self._bands.extend({} for _ in range(bands - len(self._bands)))
        return self._bands

    def band(self, index: int, bucket: int) -> str:
        keys = self._band_tables(index + 1)[index]
        key = keys.get(bucket)
        if key is None:
            key = keys[bucket] = self._k("band", index, bucket)
        return key

    def band_slots(self, slots: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        """(key, field) of each band's slot, from a text's (bucket, field) per band."""
        tables = self._band_tables(len(slots))
        try:
            return [(keys[bucket], field) for keys, (bucket, field) in zip(tables, slots)]
        except KeyError:  # a slot's key not made yet
            return [(keys.get(bucket) or self.band(i, bucket), field)
                    for i, (keys, (bucket, field)) in enumerate(zip(tables, slots))]

    def story(self, story_id: str) -> str:
        return self._k("story", story_id)

    def story_sources(self, story_id: str) -> str:
        return self._k("story", story_id, "sources")

    def story_articles(self, story_id: str) -> str:
        return self._k("story", story_id, "articles")

    @property
    def stories_recent(self) -> str:
        return self._k("stories", "recent")

    @property
    def stories_kept(self) -> str:
        return self._k("stories", "kept")

    @property
    def stories_size(self) -> str:
        return self._k("stories", "size")

    def term(self, feature: int) -> str:
        key = self._terms.get(feature)
        if key is None:
            if len(self._terms) > 1_000_000:
                self._terms.clear()
            key = self._terms[feature] = self._k("term", feature)
        return key

    @property
    def clock(self) -> str:
        return self._k("clock")

    @property
    def clock_times(self) -> str:
        return self._k("clock", "times")

    @property
    def clock_seen(self) -> str:
        return self._k("clock", "seen")

    def gone(self, day: int) -> str:
        return self._k("gone", day)

    def boilerplate(self, source: str) -> str:
        """One outlet's boilerplate counts (storyengine.boilerplate)."""
        digest = hashlib.blake2b(source.encode("utf-8"), digest_size=8).hexdigest()
        return self._k("boilerplate", digest)

    @property
    def df(self) -> str:
        return self._k("df")

    @property
    def df_deltas(self) -> str:
        """Document-frequency changes not yet folded into {p}:df (storyengine.document_frequencies)."""
        return self._k("df", "deltas")

    @property
    def df_version(self) -> str:
        return self._k("df", "version")

    @property
    def df_docs(self) -> str:
        return self._k("df", "docs")

    @property
    def assign_lock(self) -> str:
        return self._k("assign-lock")

    @property
    def changes(self) -> str:
        return self._k("changes")

    @property
    def metrics(self) -> str:
        return self._k("metrics")

    @property
    def workers(self) -> str:
        return self._k("workers")

    def all_pattern(self) -> str:
        return self._k("*")
