"""How the articles of one call are cut into runs, each decided under one
hold of the assignment lock, on one position of the stream clock."""
from __future__ import annotations

from collections.abc import Iterator

from .settings import Settings

# Decisions per hold of the assignment lock: enough to spread the round trips
# thin, few enough that a waiting worker never waits long.
BATCH_LIMIT = 200


def runs(pending: list, settings: Settings) -> Iterator[list]:
    """``pending`` (article id, record, Features) in order, in runs of at most
    BATCH_LIMIT. A run also ends before its published times would span more
    than the retention window less the story window: the clock a run moves
    to must not age out a story its first articles could still join (an
    archive of years posted in one batch)."""
    s = settings
    span = max(0.0, s.retention_days * 86400.0 - s.story_window_hours * 3600.0)
    run: list = []
    low = high = None
    for item in pending:
        f = item[2]
        if f.dated:
            lo, hi = (f.published, f.published) if low is None else (min(low, f.published), max(high, f.published))
            if run and hi - lo > span:
                yield run
                run, (lo, hi) = [], (f.published, f.published)
            low, high = lo, hi
        run.append(item)
        if len(run) == BATCH_LIMIT:
            yield run
            run, low, high = [], None, None
    if run:
        yield run
