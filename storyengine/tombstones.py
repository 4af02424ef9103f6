"""Tombstones: what retention removed answers 410 Gone, saying when and why.

When retention deletes a story, its articles, the ids of stories merged into
it, or failed articles, it leaves one tombstone per id in a hash for the (UTC,
wall-clock) day of the deletion, ``{p}:gone:{day}``. The hash expires by
itself ``tombstone_days`` after its day ends, so tombstones cost memory only
for that long: one short field per id (about 120 bytes in Redis, counted in the
bench's bytes per article). Asking about an id reads that many days' hashes
in one round trip, and only after the id was not found.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DAY = 86400


@dataclass(frozen=True)
class Tombstone:
    kind: str          # "story", "article" or "failed"
    deleted_at: float  # wall-clock epoch seconds
    clock: float       # the stream clock retention ran on
    detail: str        # article: its story; story: its newest published time; failed: ""


def _day(ts: float) -> int:
    return int(ts // DAY)


def leave(pipe, keys, entries, clock: float, now: float, tombstone_days: float) -> None:
    """Queue tombstones for ``entries`` ((id, kind, detail) triples) on ``pipe``."""
    if not entries:
        return
    day = _day(now)
    key = keys.gone(day)
    pipe.hset(key, mapping={i: f"{kind} {int(now)} {int(clock)} {detail}".rstrip()
                            for i, kind, detail in entries})
    pipe.expireat(key, (day + 1) * DAY + math.ceil(tombstone_days * DAY))


def find(client, keys, item_id: str, now: float, tombstone_days: float) -> Tombstone | None:
    """The tombstone of ``item_id``, if retention removed it within ``tombstone_days``."""
    today = _day(now)
    days = range(today, today - math.ceil(tombstone_days) - 1, -1)
    with client.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hget(keys.gone(day), item_id)
        found = pipe.execute()
    for value in found:
        if value:
            kind, deleted_at, clock, *detail = value.decode("utf-8").split(" ")
            return Tombstone(kind, float(deleted_at), float(clock), " ".join(detail))
    return None
