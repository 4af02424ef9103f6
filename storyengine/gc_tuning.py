"""Garbage-collector tuning for a process that decides articles (a worker
process, the bench's in-process engine)."""
from __future__ import annotations

import gc

# Python's collector runs a young-generation pass every 700 allocations and
# a full pass once enough objects survive; a deciding process allocates
# hundreds of small objects per article and keeps large caches, so the full
# passes re-scan those caches over and over. Fewer, larger passes took 5 %
# off the cost per article at 10,000 stored and 10 % at 20,000 (side by side
# on the bench's stream); the cycles an article makes are few, so memory
# stays bounded.
GC_THRESHOLDS = (20_000, 20, 50)


def collect_less() -> None:
    """What exists now (modules, models, settings) is never scanned again,
    and collections run less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
