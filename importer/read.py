"""One feed, read: downloaded or opened, parsed, dated, and its entries turned into the items to post. Whatever
goes wrong with one feed is that feed's error; the other feeds are still read."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import datetime

import feedparser

from .articles import item_key, source_for, to_article
from .checked_http import EVERY_ADDRESS
from .dates import feed_dates
from .errors import FeedError
from .fetch import Download, download, is_url, read_file
from .parse import parse
from .state import FeedState


@dataclass
class Item:
    """An entry to post: its feed, its key in the state file, the article, and when it was published (a
    timestamp; infinity for an undated one, posted last)."""
    feed: str
    key: str
    article: dict
    published_ts: float


@dataclass
class FeedResult:
    """What reading one feed gave: its items, or why it gave none (``error``; a download without content: not
    modified since the last run)."""
    location: str
    download: Download | None = None
    items: list[Item] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    dated: dict[str, int] = field(default_factory=dict)   # items by where their date came from (OWN, ...)
    entry_count: int = 0
    error: str | None = None
    warning: str | None = None


def read_feed(location: str, feed_state: FeedState | None, args: argparse.Namespace,
              fetched_at: datetime) -> FeedResult:
    result = FeedResult(location)
    try:
        if is_url(location):
            result.download = download(location, etag=feed_state.etag if feed_state else None,
                                       modified=feed_state.modified if feed_state else None,
                                       timeout=args.timeout, max_bytes=args.max_feed_bytes,
                                       allowed=EVERY_ADDRESS if args.allow_private_addresses else ())
        else:
            result.download = read_file(location, args.max_feed_bytes)
        if result.download.content is None:
            return result
        parsed, result.warning = parse(result.download.content, result.download.headers, args.lenient)
    except FeedError as exc:
        result.error = str(exc)
        return result
    except (ValueError, UnicodeError) as exc:  # a URL urllib cannot send (non-ASCII, a bad header)
        result.error = f"cannot be requested ({type(exc).__name__}: {exc}); check the URL"
        return result
    try:
        _collect_items(result, parsed, location, fetched_at)
    except Exception as exc:  # noqa: BLE001 - one odd feed must not stop the others; the type says what to report
        result.items, result.error = [], (f"holds an item the importer cannot handle ({type(exc).__name__}); "
                                          "nothing from it was imported; please report it with the feed")
    return result


def _collect_items(result: FeedResult, parsed: feedparser.FeedParserDict, location: str,
                   fetched_at: datetime) -> None:
    source = source_for(parsed, location)
    result.entry_count = len(parsed.entries)
    dates = feed_dates(parsed, fetched_at)
    keys: set[str] = set()
    for entry, (published, origin) in zip(parsed.entries, dates):
        try:
            article = to_article(entry, source, parsed.feed.get("language"), published)
        except Exception as exc:  # noqa: BLE001 - one odd item is skipped with its reason, not its feed
            article = f"an item the importer cannot read ({type(exc).__name__}); please report it with the feed"
        if isinstance(article, str):
            result.skipped[article] = result.skipped.get(article, 0) + 1
            continue
        key = item_key(entry)
        if key in keys:  # the same guid twice in one feed: one article
            continue
        keys.add(key)
        result.dated[origin] = result.dated.get(origin, 0) + 1
        # Undated items sort last: the API places them at its stream's current time, after everything else.
        result.items.append(Item(location, key, article, published.timestamp() if published else float("inf")))
