"""An id the store holds nothing for: 404 if it never held it, 410 saying
when and why if retention removed it (read from its tombstone)."""
from __future__ import annotations

import time

from . import tombstones
from .errors import Gone, NotFound
from .keys import Keys
from .settings import Settings
from .timestamps import iso


def missing(client, keys: Keys, settings: Settings, kind: str, item_id: str) -> NotFound:
    """The error for an ``item_id`` of ``kind`` ("article" or "story") that is
    not there: :class:`NotFound` if never held, :class:`Gone` with when and
    why if retention removed it."""
    s = settings
    stone = tombstones.find(client, keys, item_id, time.time(), s.tombstone_days)
    if stone is None:
        return NotFound(f"no {kind} with id {item_id!r}")
    policy = (f"the retention policy (STORYWIRE_RETENTION_DAYS={s.retention_days:g}: a story is removed, with its "
              f"articles, once its newest article is {s.retention_days:g} days older than the stream clock)")
    if stone.kind == "story":
        why = f"its newest article ({iso(float(stone.detail))}) had aged out"
    elif stone.kind == "failed":
        why = "it had failed and its reason had aged out"
    else:
        why = f"its story {stone.detail} had aged out"
    return Gone(f"{kind} {item_id!r} was removed on {iso(stone.deleted_at)} by {policy}: {why} on the stream "
                f"clock {iso(stone.clock)}", stone)
