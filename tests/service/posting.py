"""What the API tests post (one numbered article as a client sends it) and
the tasks a post leaves on the broker."""
from __future__ import annotations

from datetime import datetime, timezone

from service.metrics import broker_queue_keys

WHEN = datetime(2021, 6, 17, 9, 0, tzinfo=timezone.utc)


def article(n: int, source: str = "bbc.co.uk", when: datetime | None = WHEN, **changes) -> dict:
    body = {"source": source, "url": f"https://{source}/news/{n}",
            "title": f"Ferry services resume across the strait after the storm ({n})",
            "body": "Ferry operators resumed sailings across the strait on Thursday after a storm that "
                    f"closed the ports for two days, the harbour office said (item {n}).",
            "published_at": when.isoformat().replace("+00:00", "Z") if when else None}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def broker_length(store) -> int:
    return sum(store.redis.llen(key) for key in broker_queue_keys())
