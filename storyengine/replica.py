"""A decider's in-memory replica of what decisions read, kept exactly in
step with Redis through the change log (storyengine.change_log).

It holds some of the records a decision reads, each exactly as Redis holds
it at the replica's sequence number ``seq`` (the change-log entry it applied
last): whole story hashes (or that a story does not exist), the candidate
fields of articles, whole term-index sets, single band slots, fingerprint
owners (or that a fingerprint has none), and the document frequencies. What
it does not hold, the caller reads from Redis and hands to a ``fill_*``
method, in the same round trip as the log tail that brings the replica up to
that moment (storyengine.replicated_state).

Why it is never stale when it decides:

1. Every write to these records is made under the assignment lock, in one
   MULTI/EXEC that also appends the write's commands to the log
   (storyengine.locking.AssignmentLock.commit); admission writes only new
   articles and statuses, which the replica does not hold before a decision.
2. Under the lock, before deciding, the replica reads the log from its own
   entry on and applies every later entry in order, with Redis's semantics
   for each command; a command it cannot apply exactly makes it forget that
   record. So it holds what Redis holds, and nobody writes until it lets go.
3. If its own entry is gone (trimmed: it fell too far behind) or carries
   another token (the store was cleared, or Redis came back from an older
   append-only file), it forgets everything and starts from the newest entry.
   Forgetting is always safe: what is not held is read from Redis.
4. Its own commits are applied from the entry they log, while Redis runs
   the commit, as the entry after its own: the same code path as another
   decider's. If the commit fails, or Redis logged it elsewhere, it forgets
   everything (storyengine.replicated_state).
"""
from __future__ import annotations

import numpy as np

from .change_log import EMPTY_LOG, Entry
from .document_frequencies import apply_delta, fold
from .keys import Keys
from .records import CANDIDATE_FIELDS
from .settings import Settings

MISSING = object()  # not held: read it from Redis
_CANDIDATE = tuple(name.encode() for name in CANDIDATE_FIELDS)


class Replica:
    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys, self.settings = keys, settings
        self.seq, self.token = 0, None
        self.forgot = 0  # times it forgot everything (tests and the bench read it)
        # Bumped by whatever may change what it holds (an entry applied, anything
        # forgotten); not by a fill, which adds what Redis holds at that moment.
        # An answer computed at the same generation is still the answer.
        self.generation = 0
        self._apply_to = {"story": self._story, "article": self._article, "term": self._term, "band": self._band,
                          "fingerprint": self._fingerprint, "df": self._df}
        self.forget_all(counted=False)

    def forget_all(self, counted: bool = True) -> None:
        self.stories: dict[str, dict[str, bytes] | None] = {}
        self.articles: dict[str, dict[bytes, bytes]] = {}
        self.terms: dict[int, dict[str, float]] = {}
        self._term_order: dict[int, list[tuple[float, bytes, str]]] = {}
        self.bands: dict[tuple[str, bytes], str] = {}
        self.fingerprints: dict[str, str | None] = {}
        self.generation += 1
        self.df_counts: np.ndarray | None = None
        self.df_docs = self.df_version = 0
        self.df_delta_bytes = 0  # what {p}:df:deltas holds: when to fold them (storyengine.state)
        self.forgot += counted

    # ------------------------------------------------------------------ the log
    def follow(self, kind: str, entries: list[Entry]) -> None:
        """Apply what the log holds after this replica's own entry
        (storyengine.change_log.FOLLOW): the entries after it, in order
        ("apply"); or, when its entry is gone or holds another token ("lost"),
        forget everything and follow from the newest; or, when it follows none
        yet ("fresh"), follow from the newest (it holds nothing)."""
        if kind == "apply":
            for entry in entries:
                self.apply_entry(entry)
            return
        if kind == "lost":
            self.forget_all()
        self.seq, self.token = (entries[-1].seq, entries[-1].token) if entries else (0, EMPTY_LOG)

    def apply_entry(self, entry: Entry) -> None:
        """Apply the next entry (ours, just committed, or another's); a gap makes it forget everything."""
        self.generation += 1
        if entry.seq != self.seq + 1:
            self.forget_all()
        else:
            self.apply(entry.commands)
        self.seq, self.token = entry.seq, entry.token

    def apply(self, commands: list[list[bytes]]) -> None:
        for command in commands:
            name = command[0]
            if name == b"FORGETALL":
                self.forget_all()
                continue
            if name == b"DFCHANGE":
                self._df_change(command[1], int(command[2]), command[3:] == [b"1"])  # logged before folds: no flag
                continue
            if name == b"DEL":
                for key in command[1:]:
                    self._delete(key)
                continue
            if name == b"BANDS":
                bands = self.bands
                for i in range(1, len(command), 3):
                    bands[(command[i].decode(), command[i + 1])] = command[i + 2].decode()
                continue
            if name == b"INDEX":
                self._index(float(command[1]), command[2].decode(), int(command[3]), command[4:])
                continue
            family, ident = self._parse(command[1])
            if family is None:
                continue
            if not self._apply_to[family](name, ident, command[2:]):
                self._forget(family, ident)

    # ------------------------------------------------------------------ lookups and fills
    def story(self, story_id: str):
        return self.stories.get(story_id, MISSING)

    def fill_story(self, story_id: str, stored: dict) -> None:
        self.stories[story_id] = {f.decode(): v for f, v in stored.items()} if stored else None

    def article(self, article_id: str):
        return self.articles.get(article_id, MISSING)

    def fill_article(self, article_id: str, row: list) -> None:
        if row[2] is not None:  # it exists (an article always has its published time): held
            self.articles[article_id] = {f: v for f, v in zip(_CANDIDATE, row) if v is not None}

    def band(self, slot: tuple[str, bytes]):
        return self.bands.get(slot, MISSING)

    def fill_band(self, slot: tuple[str, bytes], value: str) -> None:
        self.bands[slot] = value

    def fingerprint(self, fp: str):
        return self.fingerprints.get(fp, MISSING)

    def fill_fingerprint(self, fp: str, owner: str | None) -> None:
        self.fingerprints[fp] = owner

    def has_term(self, feature: int) -> bool:
        return feature in self.terms

    def fill_term(self, feature: int, flat: list) -> None:
        self.terms[feature] = {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}
        self._term_order.pop(feature, None)

    def term_hits(self, feature: int, since: float, limit: int) -> list[tuple[str, float]]:
        """As ZREVRANGEBYSCORE +inf since WITHSCORES LIMIT 0 limit: score, then member, both descending."""
        order = self._term_order.get(feature)
        if order is None:
            order = self._term_order[feature] = sorted(
                ((score, sid.encode(), sid) for sid, score in self.terms[feature].items()), reverse=True)
        out = []
        for score, _, sid in order:
            if score < since or len(out) >= limit:
                break
            out.append((sid, score))
        return out

    def fill_df(self, base: bytes | None, deltas: list[bytes], docs, version) -> None:
        self.df_counts = fold(base, deltas, self.settings.hash_features)
        self.df_docs, self.df_version = int(docs or 0), int(version or 0)
        self.df_delta_bytes = sum(len(d) for d in deltas)

    # ------------------------------------------------------------------ applying commands, per kind
    def _parse(self, key: bytes) -> tuple[str | None, object]:
        rest = key[len(self.keys.prefix_bytes):]
        head, _, tail = rest.partition(b":")
        if head == b"story" and b":" not in tail:
            return "story", tail.decode()
        if head == b"article":
            return "article", tail.decode()
        if head == b"term":
            return "term", int(tail)
        if head == b"band":
            return "band", key.decode()
        if head == b"fingerprint":
            return "fingerprint", tail.decode()
        if rest in (b"df", b"df:deltas", b"df:docs", b"df:version"):
            return "df", rest
        return None, None

    def _story(self, name: bytes, story_id: str, args: list[bytes]) -> bool:
        held = self.stories.get(story_id, MISSING)
        if held is MISSING:
            return True  # not held: nothing to keep in step
        # A story that changes is held as a new dict, never changed in place:
        # what was parsed of the one before stands for it while it is the one
        # held (storyengine.replicated_state).
        if name == b"HSET":
            held = {} if held is None else dict(held)
            held.update(zip((f.decode() for f in args[0::2]), args[1::2]))
            self.stories[story_id] = held
            return True
        if name == b"HDEL":
            if held is not None:
                held = dict(held)
                for f in args:
                    held.pop(f.decode(), None)
                self.stories[story_id] = held or None  # Redis deletes an empty hash
            return True
        return False

    def _article(self, name: bytes, article_id: str, args: list[bytes]) -> bool:
        held = self.articles.get(article_id)
        if held is None:
            return True
        if name == b"HSET":
            held.update(zip(args[0::2], args[1::2]))
            return True
        if name == b"HDEL":
            for f in args:
                held.pop(f, None)
            return True
        return False

    def _term(self, name: bytes, feature: int, args: list[bytes]) -> bool:
        held = self.terms.get(feature)
        if held is None:
            return True
        if name == b"ZADD" and len(args) == 2:
            held[args[1].decode()] = float(args[0])
        elif name == b"ZREM":
            for member in args:
                held.pop(member.decode(), None)
        else:
            return False
        self._term_order.pop(feature, None)
        return True

    def _index(self, score: float, story_id: str, leaving: int, keys: list[bytes]) -> None:
        staying = len(keys) - leaving
        for n, key in enumerate(keys):
            feature = int(key[key.rindex(b":") + 1:])
            held = self.terms.get(feature)
            if held is None:
                continue
            if n < staying:
                held[story_id] = score
            else:
                held.pop(story_id, None)
            self._term_order.pop(feature, None)

    def _band(self, name: bytes, key: str, args: list[bytes]) -> bool:
        if name == b"HSET" and len(args) == 2:
            self.bands[(key, args[0])] = args[1].decode()
            return True
        if name == b"HDEL":
            for field in args:
                self.bands[(key, field)] = ""
            return True
        return False

    def _fingerprint(self, name: bytes, fp: str, args: list[bytes]) -> bool:
        if name != b"SET" or not args:
            return False
        options = [a.upper() for a in args[1:]]
        if options == [b"XX"]:  # only if it exists: as held, or unknown
            held = self.fingerprints.get(fp, MISSING)
            if held is not MISSING and held is not None:
                self.fingerprints[fp] = args[0].decode()
            return True
        if options:
            return False
        self.fingerprints[fp] = args[0].decode()
        return True

    def _df(self, name: bytes, which: bytes, args: list[bytes]) -> bool:
        # Every commit changes them with DF_CHANGE (logged as DFCHANGE); anything else, forget them.
        return self.df_counts is None

    def _df_change(self, packed: bytes, docs_change: int, folded: bool) -> None:
        if self.df_counts is None:
            return
        apply_delta(self.df_counts, packed)
        self.df_docs += docs_change
        self.df_version += 1
        self.df_delta_bytes = 0 if folded else self.df_delta_bytes + len(packed)

    def _delete(self, key: bytes) -> None:
        family, ident = self._parse(key)
        if family == "story":
            self.stories[ident] = None
        elif family == "term":
            self.terms[ident] = {}
            self._term_order.pop(ident, None)
        elif family == "fingerprint":
            self.fingerprints[ident] = None
        elif family is not None:
            self._forget(family, ident)

    def _forget(self, family: str, ident) -> None:
        if family == "band":
            for slot in [s for s in self.bands if s[0] == ident]:
                del self.bands[slot]
        elif family == "df":
            self.df_counts = None
        elif family == "term":
            self.terms.pop(ident, None)
            self._term_order.pop(ident, None)
        else:
            {"story": self.stories, "article": self.articles, "fingerprint": self.fingerprints}[family].pop(ident, None)

    def bound(self) -> None:
        """Forget the oldest half of any kind of record past its capacity (dicts
        keep insertion order). Only between batches: a batch's reads count on
        what they found held staying held."""
        s = self.settings
        for held, capacity in ((self.stories, s.replica_stories), (self.articles, s.replica_stories),
                               (self.terms, s.replica_records), (self.bands, s.replica_records),
                               (self.fingerprints, s.replica_records)):
            if len(held) > capacity:
                self.generation += 1
                for key in list(held)[: len(held) // 2]:
                    del held[key]
        if len(self._term_order) > len(self.terms):
            self._term_order = {f: o for f, o in self._term_order.items() if f in self.terms}
