"""Boilerplate learnt from the stream, per outlet.

Feeds wrap their items in the outlet's own furniture: a footer on every item
("Follow us on Twitter…"), share bars, "Read more", copyright lines,
newsletter pitches. Such a line belongs to the outlet, not to the event: left
in, it links an outlet's unrelated items to each other (13 unrelated videos
of one feed became one story whose top terms were its footer's) and makes
short items of one outlet look like copies of each other.

The rule: a sentence or line of a body that the same outlet has already used,
word for word, in at least ``boilerplate_min_items`` earlier items is
boilerplate. It is left out of the article's story terms, its duplicate
shingles and so its story's top terms; the stored text keeps it. News
sentences are rewritten as a story develops, and one outlet's different items
do not repeat each other's sentences; its templates do. An item whose every
sentence was seen before is a repeat of an item, not furniture, and is judged
whole. There is no list of outlets or phrases: only what the stream has shown.

The first item of an outlet has nothing to be compared with; of its
furniture, the lines that point elsewhere ("Follow us on Twitter:
https://...", a URL with at most ``boilerplate_link_words`` other words) are
left out all the same: a link is where to read on, not what happened.

Only the first and last ``boilerplate_edge_sentences`` sentences of a body,
of at most ``boilerplate_max_words`` words, are counted and can be
boilerplate: furniture sits at the edges of an item and is short, and a full
article's middle is never a template.

State: one hash per outlet, ``{p}:boilerplate:<outlet digest>``, from an
4-byte digest of a sentence's words to how many items used it. Items are
counted in the commit that decides them (so a retried batch counts once).
The hash is bounded: past ``boilerplate_counters`` fields (500, under
Redis's compact-encoding limit, so about 10 KB an outlet at most) every count
is lowered by one and the zeros dropped (the Misra-Gries frequent-items
summary: a line on every item, or most, always survives; one on a few items
in a hundred may be forgotten), and it expires after ``retention_days``
(wall clock) without a new item from the outlet.
A batch reads the counts of its articles' sentences in one round trip before
it takes the assignment lock, and counts its own articles in order as it
goes, so an item is judged by the items before it, in the batch too.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import NamedTuple

from .keys import Keys
from .settings import Settings
from .text import addresses_in, headline_segments, sentences, texts_sentences, words

# Set apart a headline segment's digest from a body line's with the same words.
_HEADLINE_MARK = "\x00headline"

# Counts one outlet's items: each field of ARGV[3..] is a sentence digest
# used by one item. ARGV[1] is the bound on fields, ARGV[2] the expiry.
COUNT = """
for i = 3, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[1]) then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local left = tonumber(all[i + 1]) - 1
    if left <= 0 then redis.call('HDEL', KEYS[1], all[i]) else redis.call('HSET', KEYS[1], all[i], left) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HLEN', KEYS[1])
"""


def sentence_digest(sentence: str) -> bytes | None:
    """What two uses of one line share: its words, case and typography
    folded, hashed to 4 bytes (None for a line without words). An outlet
    holds at most 500, so a new line matches an unrelated one about once in
    eight million."""
    ws = words(sentence)
    return _digest(ws) if ws else None


def _digest(ws: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(ws).encode("utf-8"), digest_size=4).digest()


class Edges:
    """A body's sentences, and the digest of each one at its edges; a
    headline's segments, and the digest of each one when it has several."""

    __slots__ = ("sentences", "digests", "segments", "segment_digests")

    def __init__(self, body: str, edge: int, max_words: int, title: str = "",
                 body_sentences: list[str] | None = None) -> None:
        self.sentences = sentences(body) if body_sentences is None else body_sentences
        n = len(self.sentences)
        positions = range(n) if n <= 2 * edge else [*range(edge), *range(n - edge, n)]
        self.digests: dict[int, bytes] = {}
        for i in positions:
            ws = words(self.sentences[i])
            if 0 < len(ws) <= max_words:
                self.digests[i] = _digest(ws)
        # A headline of one segment is the item's own: only a part of a
        # headline ("…: Live Updates", "The Papers: …") can be the outlet's.
        self.segments = headline_segments(title)
        self.segment_digests: dict[int, bytes] = {}
        if len(self.segments) > 1:
            for i, segment in enumerate(self.segments):
                ws = words(segment)
                if 0 < len(ws) <= max_words:
                    self.segment_digests[i] = _digest([_HEADLINE_MARK, *ws])

    def distinct(self) -> list[bytes]:
        return list(dict.fromkeys([*self.digests.values(), *self.segment_digests.values()]))


class Stripped(NamedTuple):
    """An item with its outlet's boilerplate left out (see :meth:`Boilerplate.strip`)."""
    title: str            # the headline for story terms
    body: str             # the body for story terms
    copy_body: str        # the body copies are compared on
    digests: list[bytes]  # what this item counts for, at the commit
    sentences_dropped: int
    segments_dropped: int


class Boilerplate:
    """What one batch knows of its outlets' boilerplate: the stored counts of
    its articles' edge sentences, plus the articles of the batch judged so far."""

    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys, self.settings = keys, settings
        self.counts: dict[str, dict[bytes, int]] = defaultdict(dict)
        self._edges: dict[str, Edges] = {}

    def read(self, redis, records: list[tuple[str, dict]]) -> None:
        """Read the counts of every edge sentence of ``records`` ((id, record)
        pairs), one HMGET per outlet, in one round trip."""
        wanted: dict[str, list[bytes]] = defaultdict(list)
        bodies = texts_sentences([record.get("body", "") for _, record in records])  # all at once
        for (article_id, record), body_sentences in zip(records, bodies):
            edges = self._edges[article_id] = self._edges_of(record, body_sentences)
            wanted[record.get("source", "")].extend(edges.distinct())
        asked = [(source, list(dict.fromkeys(ds))) for source, ds in wanted.items() if ds]
        if not asked:
            return
        with redis.pipeline(transaction=False) as pipe:
            for source, digests in asked:
                pipe.hmget(self.keys.boilerplate(source), digests)
            replies = pipe.execute()
        for (source, digests), values in zip(asked, replies):
            self.counts[source].update((d, int(v)) for d, v in zip(digests, values) if v)

    def _edges_of(self, record: dict, body_sentences: list[str] | None = None) -> Edges:
        s = self.settings
        # An untitled item's headline is made from its body: its sentences are counted there.
        title = "" if record.get("title_derived") == "1" else record.get("title", "")
        return Edges(record.get("body", ""), s.boilerplate_edge_sentences, s.boilerplate_max_words, title,
                     body_sentences)

    def strip(self, article_id: str, record: dict) -> Stripped:
        """The item with its outlet's boilerplate left out of the story terms
        and of the text copies are compared on. The item itself then counts
        for the ones after it in the batch."""
        title, body = record.get("title", ""), record.get("body", "")
        s = self.settings
        edges = self._edges.get(article_id) or self._edges_of(record)
        counts = self.counts[record.get("source", "")]
        seen = {i: counts.get(d, 0) for i, d in edges.digests.items()}
        links = {i for i in edges.digests if _link_line(edges.sentences[i], s)}
        for_terms = links | {i for i, n in seen.items() if n >= s.boilerplate_min_items}
        for_copies = links | {i for i, n in seen.items() if n >= s.boilerplate_min_items_copies}
        segments = {i for i, d in edges.segment_digests.items() if counts.get(d, 0) >= s.boilerplate_min_items_headline}
        digests = edges.distinct()
        for digest in digests:
            counts[digest] = counts.get(digest, 0) + 1
        if len(segments) == len(edges.segments):
            segments = set()  # every part of the headline seen before: a repeated headline, judged whole
        elif segments:
            title = "\n".join(x for i, x in enumerate(edges.segments) if i not in segments)
        if len(for_terms) == len(edges.sentences):
            # every sentence seen before: a repeat of an item, judged whole
            return Stripped(title, body, body, digests, 0, len(segments))
        return Stripped(title, _without(edges, for_terms, body), _without(edges, for_copies, body), digests,
                        len(for_terms), len(segments))


def _without(edges: Edges, dropped: set[int], body: str) -> str:
    if not dropped:
        return body
    # Sentences are joined by line breaks: words and names never span one.
    return "\n".join(s for i, s in enumerate(edges.sentences) if i not in dropped)


def _link_line(sentence: str, settings: Settings) -> bool:
    found, others = addresses_in(sentence)
    return found > 0 and others <= settings.boilerplate_link_words


def queue_counts(pipe, script, keys: Keys, settings: Settings, seen: dict[str, Counter]) -> None:
    """Count the decided items' edge sentences (``seen``: outlet -> digest ->
    items), one script call per outlet, in the commit's transaction."""
    ttl = max(1, int(settings.retention_days * 86400))
    for source, digests in seen.items():
        if not digests:
            continue
        args = [settings.boilerplate_counters, ttl]
        for digest, items in digests.items():
            args.extend([digest] * items)
        script(keys=[keys.boilerplate(source)], args=args, client=pipe)
