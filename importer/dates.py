"""Each item's published_at, from its feed and never from this machine's clock, so a replayed archive keeps the
archive's time: the item's own date, else its nearest dated neighbour's, else the channel's, else none."""
from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

import feedparser

# Dates before this are a feed's placeholder (0001-01-01) or a broken clock, not when news was published.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=timezone.utc)


# A feed server whose clock runs a little fast dates its newest item a few minutes ahead: that is "now",
# not a mistake. Anything further ahead is a clock or time-zone error and the date is not used.
CLOCK_SKEW = timedelta(minutes=5)

# Where an item's published_at came from (counted per feed in the progress line).
OWN, NEIGHBOUR, CHANNEL, UNDATED = "own", "neighbour", "channel", "undated"


def _trusted(value: object, fetched_at: datetime) -> datetime | None:
    """A date feedparser parsed, if it can be believed: not a placeholder, not ahead of now."""
    if not value:
        return None
    try:
        when = datetime.fromtimestamp(calendar.timegm(value), timezone.utc)  # type: ignore[arg-type]
    except (OverflowError, ValueError, OSError, TypeError):
        return None
    if when < EARLIEST_DATE or when > fetched_at + CLOCK_SKEW:
        return None
    return min(when, fetched_at)


def _own_date(entry: feedparser.FeedParserDict, fetched_at: datetime) -> datetime | None:
    """The item's own date: published (RSS pubDate, Atom published, dcterms:issued), else updated (Atom
    updated, dc:date, dcterms:modified), else created (dcterms:created), the first that can be believed."""
    try:
        for name in ("published_parsed", "updated_parsed", "created_parsed"):
            when = _trusted(entry.get(name), fetched_at)
            if when is not None:
                return when
    except Exception:  # noqa: BLE001 - an odd value is no date; the item is dated like an undated one
        pass
    return None


def channel_date(parsed: feedparser.FeedParserDict, fetched_at: datetime) -> datetime | None:
    """The feed's own date: RSS pubDate, else lastBuildDate (or Atom's feed-level updated, dc:date)."""
    for name in ("published_parsed", "updated_parsed"):
        when = _trusted(parsed.feed.get(name), fetched_at)
        if when is not None:
            return when
    return None


def feed_dates(parsed: feedparser.FeedParserDict, fetched_at: datetime) -> list[tuple[datetime | None, str]]:
    """Each entry's published_at and where it came from, in document order.

    Never the importing machine's clock: a replayed archive keeps the archive's time. An entry without a
    date it can be believed about (none, a placeholder, one ahead of now) takes the date of the nearest
    dated entry in document order (the preceding one when both are as near): feeds list their items in
    time order (most newest first, a few oldest first), so an undated item sits between its neighbours in
    time, and the nearest one is the closest estimate the feed itself gives. Without any dated entry, the
    channel's own date (pubDate, lastBuildDate, Atom updated): the items were in the feed by then. A feed
    with no date at all gives None: the article is posted without published_at and the API places it at
    its stream's current time (and says the time was assigned)."""
    own = [_own_date(entry, fetched_at) for entry in parsed.entries]
    if not any(when is not None for when in own):
        channel = channel_date(parsed, fetched_at)
        return [(channel, CHANNEL) if channel is not None else (None, UNDATED) for _ in own]
    preceding: list[int | None] = []      # the index of the nearest dated entry before each one
    last = None
    for index, when in enumerate(own):
        preceding.append(last)
        if when is not None:
            last = index
    following: list[int | None] = [None] * len(own)
    last = None
    for index in range(len(own) - 1, -1, -1):
        following[index] = last
        if own[index] is not None:
            last = index
    dates: list[tuple[datetime | None, str]] = []
    for index, when in enumerate(own):
        before, after = preceding[index], following[index]
        if when is not None:
            dates.append((when, OWN))
        elif before is not None and (after is None or index - before <= after - index):
            dates.append((own[before], NEIGHBOUR))
        else:  # some entry is dated, so one of the two is
            dates.append((own[after], NEIGHBOUR))
    return dates

