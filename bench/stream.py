"""Section 1, the stream: the dev stream copied to as many articles as asked, evenly retimed."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from evaluation.variants import replicate


def build_stream(rows: list[dict], total: int, rate_per_day: float, end: datetime) -> list[dict]:
    """``total`` articles: copies of ``rows`` (fresh ids, own vocabulary per
    copy), in the replicated order, evenly spaced at ``rate_per_day``, the last
    one published at ``end``.

    Retimed because replicate() stacks copies a day apart, so the number of
    articles inside the 96-hour story window would grow with the number of
    copies. Evenly spaced, the window holds the same number of articles
    (4 days x rate) whether 10,000 or 100,000 are stored, so comparing the cost
    at 10k with the cost at 100k measures the store's size, not the stream's
    density."""
    copies = math.ceil(total / len(rows))
    replicated, _ = replicate(rows, [], copies)
    replicated = replicated[:total]
    spacing = timedelta(days=1) / rate_per_day
    first = end - spacing * (len(replicated) - 1)
    return [dict(row, published_at=(first + spacing * i).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for i, row in enumerate(replicated)]
