"""The change log: every write made under the assignment lock, as the
commands Redis ran, for the deciders' in-memory replicas (storyengine.replica).

Every write to what a decision reads (stories, candidate articles, the term
index, band slots, fingerprints, document frequencies) is made under the
assignment lock, through :meth:`AssignmentLock.commit
<storyengine.locking.AssignmentLock.commit>`: a batch's commit, a promotion,
retention's deletes, a repair merge. That one place turns the commands
queued on a pipeline into bytes (:func:`wire`), keeps those a replica
applies (:class:`Recorder`), and sends both to one script
(storyengine.commit_script) that runs the commands and appends what was
kept to ``{p}:changes`` (a stream) as entry ``<seq>-0`` with a random token.
A script runs alone, so Redis applies a commit's writes and logs them
together, in the order they were made, and a replica that applies the log
in order holds what Redis holds.

What the recorder does not understand about a record a replica keeps (an
unknown command or script on one of its keys) it logs as ``FORGET`` of that
key: a replica drops it and reads it afresh. Forgetting is always safe.

The stream is capped (``change_log_entries``, trimmed approximately); a
replica that finds the entry it last applied gone, or holding another token
(Redis restarted from an older append-only file, the store was cleared),
forgets everything it holds and reads afresh.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import msgpack
from redis.connection import Encoder

from .keys import Keys
from .records import CANDIDATE_FIELDS
from .redis_scripts import BAND_WRITE, DF_CHANGE, DROP_TEXT
from .story_writer import INDEX_STORY

# What a replica at entry ARGV[1] with token ARGV[2] ('' when it follows
# none yet) must apply, checked here so the entry it already has is not sent
# again (entry 0 is an empty log's place: ARGV[1] = '0' asks for all of it):
# {3, id, token, commands, ...} for the entries after its own; or, when
# its entry is gone or holds another token, {2, newest id, newest token}
# ({2} for an empty log): it forgets all and follows from the newest; or,
# when it follows none yet, {1, newest id, newest token} ({1} for an empty log).
FOLLOW = """
local function newest(code)
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 then return {code} end
  return {code, last[1][1], last[1][2][2]}
end
if ARGV[2] == '' then return newest(1) end
local rows, first
if ARGV[1] == '0' then  -- it followed an empty log: every entry since is new to it
  rows, first = redis.call('XRANGE', KEYS[1], '-', '+'), 1
  if #rows > 0 and rows[1][1] ~= '1-0' then return newest(2) end
else
  rows, first = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', '+'), 2
  if #rows == 0 or rows[1][1] ~= ARGV[1] .. '-0' or rows[1][2][2] ~= ARGV[2] then return newest(2) end
end
local out = {3}
for i = first, #rows do
  out[#out + 1] = rows[i][1]; out[#out + 1] = rows[i][2][2]; out[#out + 1] = rows[i][2][4]
end
return out
"""

_encode = Encoder("utf-8", "strict", False).encode  # as redis-py sends a value, so as Redis stores it
_CANDIDATE_FIELDS = frozenset(name.encode() for name in CANDIDATE_FIELDS)


@dataclass
class Entry:
    """One logged transaction: its sequence number, token and commands (lists of bytes)."""
    seq: int
    token: bytes
    commands: list[list[bytes]]


def kept_family(keys: Keys, key: bytes) -> str | None:
    """Which kind of record a replica keeps ``key`` as, or None if it keeps none."""
    prefix = keys.prefix_bytes
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    head, _, tail = rest.partition(b":")
    if head == b"story":
        return "story" if b":" not in tail else None  # not :sources or :articles
    if head in (b"article", b"term", b"band", b"fingerprint"):
        return head.decode()
    if rest in (b"df", b"df:deltas", b"df:docs", b"df:version"):
        return "df"
    return None


class Recorder:
    """Turns a transaction's queued commands into the commands a replica applies."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._scripts = {sha(BAND_WRITE): self._band_write, sha(INDEX_STORY): self._index_story,
                         sha(DF_CHANGE): self._df_change, sha(DROP_TEXT): self._drop_text}

    def record(self, commands: list[list[bytes]]) -> list[list[bytes]]:
        """The commands (as :func:`wire` makes them) a replica applies."""
        out: list[list[bytes]] = []
        kept_family = self._kept_family
        for args in commands:
            name = args[0].upper()
            if name == b"EVALSHA":
                numkeys = int(args[2])
                keys, argv = args[3:3 + numkeys], args[3 + numkeys:]
                if not any(kept_family(k) for k in keys):
                    continue
                translate = self._scripts.get(args[1])
                out.extend(translate(keys, argv) if translate else
                           [[b"FORGET", k] for k in keys if kept_family(k)])
            elif name in (b"DEL", b"UNLINK"):
                kept = [k for k in args[1:] if kept_family(k)]
                if kept:
                    out.append([b"DEL", *kept])
            elif len(args) > 1 and kept_family(args[1]):
                command = self._command(name, args)
                if command:
                    out.append(command)
        return out

    def _kept_family(self, key: bytes) -> str | None:
        return kept_family(self.keys, key)

    def _command(self, name: bytes, args: list[bytes]) -> list[bytes] | None:
        key = args[1]
        if name == b"HSET" and kept_family(self.keys, key) == "article":
            # Only what a candidate article is read for: the rest of its hash is never decided on.
            pairs = [(f, v) for f, v in zip(args[2::2], args[3::2]) if f in _CANDIDATE_FIELDS]
            return [b"HSET", key, *[x for pair in pairs for x in pair]] if pairs else None
        if name in (b"HSET", b"HDEL", b"SET", b"ZADD", b"ZREM", b"INCR", b"INCRBY", b"DECRBY"):
            return [name, *args[1:]]
        return [b"FORGET", key]

    # A script's effects as one command of the log's own (a batch writes
    # thousands of band slots and term entries: one command each would cost
    # the replicas more to apply than the rest of the batch).
    @staticmethod
    def _band_write(keys: list[bytes], argv: list[bytes]) -> list[list[bytes]]:
        """BANDS key field value ...: each slot set to the value ('' empties it)."""
        return [[b"BANDS", *[x for i, key in enumerate(keys) for x in (key, argv[2 * i], argv[2 * i + 1])]]]

    @staticmethod
    def _index_story(keys: list[bytes], argv: list[bytes]) -> list[list[bytes]]:
        """INDEX score story leaving key ...: the story gets the score in each
        term key but the last ``leaving``, and leaves those."""
        return [[b"INDEX", argv[0], argv[1], argv[2], *keys]]

    @staticmethod
    def _drop_text(keys: list[bytes], argv: list[bytes]) -> list[list[bytes]]:
        """Nothing: an article's text is not a field a replica keeps (records.CANDIDATE_FIELDS)."""
        return []

    @staticmethod
    def _df_change(keys: list[bytes], argv: list[bytes]) -> list[list[bytes]]:
        """DFCHANGE delta documents folded: the change, and whether the commit folded the deltas (b"1") or appended it."""
        return [[b"DFCHANGE", argv[0], argv[1], b"1" if argv[2] else b"0"]]


def wire(stack: list) -> list[list[bytes]]:
    """A pipeline's queued commands, every argument as the bytes redis-py
    would send (so the commit script and the replicas see what Redis would)."""
    out = []
    for args, _options in stack:
        command = []
        for a in args:
            kind = type(a)
            if kind is bytes:
                command.append(a)
            elif kind is str:
                command.append(a.encode())
            elif kind is int or kind is float:
                command.append(repr(a).encode())
            else:
                command.append(_encode(a))  # anything else exactly as redis-py encodes it
        out.append(command)
    return out


def sha(script: str) -> bytes:
    """The SHA1 a script is called by (EVALSHA), as redis-py computes it."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


# The token of "entry 0": where a replica that found the log empty follows from.
EMPTY_LOG = b"0"


def new_token() -> bytes:
    return os.urandom(8)


def pack(commands: list[list[bytes]]) -> bytes:
    # Bytes as msgpack's raw strings: Redis's Lua (cmsgpack) reads no bin type.
    return msgpack.packb(commands, use_bin_type=False)


def unpack(payload: bytes) -> list[list[bytes]]:
    return msgpack.unpackb(payload, raw=True)


def followed(reply: list) -> tuple[str, list[Entry]]:
    """A FOLLOW reply: ("apply", the entries after the replica's own), ("lost",
    [the newest, without commands]) or ("fresh", [the newest, without commands]);
    no entry when the log is empty."""
    code, rest = int(reply[0]), reply[1:]
    kind = {1: "fresh", 2: "lost", 3: "apply"}[code]
    if kind != "apply":
        return kind, [Entry(_seq(rest[0]), rest[1], [])] if rest else []
    return kind, [Entry(_seq(rest[i]), rest[i + 1], unpack(rest[i + 2])) for i in range(0, len(rest), 3)]


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


FORGET_EVERYTHING = pack([[b"FORGETALL"]])  # the entry that makes every replica forget what it holds
