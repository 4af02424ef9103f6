"""A feed entry to the article posted to the API (``source``, ``url``, ``title``, ``body``, ``published_at``,
``language``), or the reason it is skipped, and the key the state file remembers it by."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser

from .fetch import is_url
from .text import SPACE_OR_CONTROL, clean

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _http_url(value: object) -> str | None:
    url = clean(value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:  # a bracketed host that is not an IPv6 address, a port out of range
        return None
    if parts.scheme.lower() in ("http", "https") and parts.hostname and not SPACE_OR_CONTROL.search(url):
        return url
    return None


def _site(value: object) -> str | None:
    """The host of an http(s) URL, ``www.`` dropped; None for anything else."""
    url = _http_url(value)
    if url is None:
        return None
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") and len(host) > 4 else host


def _same_site(one: str, other: str) -> bool:
    return one == other or one.endswith("." + other) or other.endswith("." + one)


def source_for(parsed: feedparser.FeedParserDict, location: str) -> str:
    """The outlet: the site the items link to (the host most of them share), named by the feed's site link or
    URL when that is the same site or its parent domain, so an outlet's feeds on feeds.outlet.test and
    edition.outlet.test are all one outlet, outlet.test. A site link that points elsewhere (an outlet's video
    feed whose channel link is its YouTube page) does not name the outlet. Without item links: the site link's
    host, else the feed URL's, else the feed's title."""
    linked = Counter(site for site in (_site(entry.get("link")) for entry in parsed.entries) if site)
    named = [site for site in (_site(parsed.feed.get("link")), _site(location) if is_url(location) else None)
             if site]
    if linked:
        common = linked.most_common(1)[0][0]   # on a tie, the first in the feed
        return next((min(site, common, key=len) for site in named if _same_site(site, common)), common)
    if named:
        return named[0]
    return clean(parsed.feed.get("title"), 200) or Path(location).stem or "feed"


def _language(*candidates: object) -> str | None:
    for candidate in candidates:
        tag = clean(candidate)
        if tag and len(tag) <= 20 and _LANGUAGE.match(tag):
            return tag
    return None



def _body(entry: feedparser.FeedParserDict) -> str:
    contents = [c.get("value") for c in entry.get("content") or []
                if isinstance(c.get("value"), str) and c.get("value").strip()]
    if contents:
        return max(contents, key=len)
    summary = entry.get("summary")
    return summary if isinstance(summary, str) else ""


def item_key(entry: feedparser.FeedParserDict) -> str:
    """The item's guid, else its link, else its text: hashed, so a hostile guid cannot bloat the state."""
    raw = clean(entry.get("id")) or clean(entry.get("link")) or f"{entry.get('title')}\x00{_body(entry)}"
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def to_article(entry: feedparser.FeedParserDict, source: str, feed_language: object,
               published: datetime | None) -> dict | str:
    """The article to post, or why the entry is skipped. Without ``published`` (the feed carries no date at
    all) the article has no published_at: the API assigns its stream's current time, never this machine's."""
    url = _http_url(entry.get("link"))
    if url is None:
        return "no http(s) link"
    title, body = clean(entry.get("title")), _body(entry)
    if not title and not body.strip():
        return "no title or description"
    # RSS allows an item with a description and no title: the API makes its headline from the body.
    article = {"source": source, "url": url, "title": title, "body": body}
    if published is not None:
        article["published_at"] = published.isoformat().replace("+00:00", "Z")
    title_language = (entry.get("title_detail") or {}).get("language")
    language = _language(title_language, feed_language)
    if language:
        article["language"] = language
    return article
