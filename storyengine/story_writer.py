"""The only code that writes a story: its hash, its member and outlet lists,
and the four indexes that must agree with it: recent (score: last update),
size (article count, then last update), kept (the newest member's time, for
retention) and the term index (one sorted set per heavy term, scored by the
last update rounded up to the next ``INDEX_STEP``). A batch's commit, the
promotion of an earlier copy, a repair merge and retention's deletes all
write stories through :class:`StoryWriter`, so those scores are computed in
one place. The story hash's fields and their encoding: storyengine.records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .keys import Keys

# A story's place in the term index: the story ARGV[2] gets score ARGV[1] in
# every term key of KEYS but the last ARGV[3], and leaves those last ones.
INDEX_STORY = """
local leaving = tonumber(ARGV[3])
for i = 1, #KEYS - leaving do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2]) end
for i = #KEYS - leaving + 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return #KEYS
"""

INDEX_STEP = 6 * 3600.0


def index_score(last_updated: float) -> float:
    """A story's score in the term index: its last update, rounded up to the
    next 6-hour step. The index finds stories updated since a time, so a score
    at or after the true last update is enough (the story's own times decide
    the rest), and the index is rewritten only when the step changes."""
    return math.ceil(last_updated / INDEX_STEP) * INDEX_STEP


def size_score(article_count: int, last_updated: float) -> float:
    # Size first, recency as the tie-break: last_updated (< 1e10 s) fits under the count.
    return article_count * 1e10 + last_updated


@dataclass
class StoryUpdate:
    """One story's writes: ``fields`` (encode_story_fields) and what its scores
    derive from; the ``*_before`` values are what the store held (None: unknown
    or new), so the term index is rewritten only when it must be."""
    story_id: str
    fields: dict
    last_updated: float
    article_count: int
    indexed: list[int]
    indexed_before: list[int] | None = None
    last_updated_before: float | None = None
    kept: float | None = None  # its newest member's time, when one joined


class StoryWriter:
    """Queues stories' writes on a pipeline: their hash fields and every score
    that derives from them (registering its script costs no round trip)."""

    def __init__(self, redis_client, keys: Keys) -> None:
        self.keys = keys
        self._index_story = redis_client.register_script(INDEX_STORY)

    def write(self, pipe, updates: list[StoryUpdate]) -> None:
        if not updates:
            return
        k = self.keys
        for u in updates:
            if u.fields:
                pipe.hset(k.story(u.story_id), mapping=u.fields)
            score = index_score(u.last_updated)
            # Rewritten when what indexes the story changed, or the step its last update falls in.
            if (u.indexed_before is None or u.last_updated_before is None or u.indexed != u.indexed_before
                    or score != index_score(u.last_updated_before)):
                leaving = sorted(set(u.indexed_before or ()) - set(u.indexed))
                self._index_story(keys=[k.term(x) for x in u.indexed + leaving],
                                  args=[score, u.story_id, len(leaving)], client=pipe)
        pipe.zadd(k.stories_recent, {u.story_id: u.last_updated for u in updates})
        pipe.zadd(k.stories_size, {u.story_id: size_score(u.article_count, u.last_updated) for u in updates})
        kept = {u.story_id: u.kept for u in updates if u.kept is not None}
        if kept:
            # A story is kept while any of its articles is inside retention (GT: only ever later).
            pipe.zadd(k.stories_kept, kept, gt=True)

    def add_members(self, pipe, story_id: str, members: dict[str, float], sources: dict[str, int]) -> None:
        """Articles (id: published time) join a story's member list, and its outlets' counts grow."""
        k = self.keys
        if members:
            pipe.zadd(k.story_articles(story_id), members)
        for source, count in sources.items():
            pipe.hincrby(k.story_sources(story_id), source, int(count))

    def delete(self, pipe, stories: dict[str, tuple[list[int], list[str]]]) -> None:
        """Delete stories (id: the terms indexing it, and the ids that redirect
        to it) with their member and source lists and their place in every index."""
        k = self.keys
        for story_id, (indexed, redirects) in stories.items():
            for feature in indexed:
                pipe.zrem(k.term(feature), story_id)
            pipe.delete(k.story(story_id), k.story_articles(story_id), k.story_sources(story_id),
                        *[k.story(m) for m in redirects])
        self._drop_scores(pipe, list(stories))

    def redirect(self, pipe, story_id: str, indexed: list[int], into: str, merged_at: str, link: float) -> None:
        """Turn a story merged into another into a redirect to it: its hash keeps only where it went."""
        self.delete(pipe, {story_id: (indexed, [])})
        pipe.hset(self.keys.story(story_id), mapping={"id": story_id, "merged_into": into, "merged_at": merged_at,
                                                      "merge_link": round(link, 4)})

    def _drop_scores(self, pipe, story_ids: list[str]) -> None:
        k = self.keys
        if story_ids:
            pipe.zrem(k.stories_recent, *story_ids)
            pipe.zrem(k.stories_size, *story_ids)
            pipe.zrem(k.stories_kept, *story_ids)
