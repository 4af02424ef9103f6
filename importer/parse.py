"""A feed's bytes parsed by feedparser, refusing what is not a complete RSS or Atom document.

A feed that is not well-formed XML but ends with its root element closed (an ``&nbsp;`` or a bare ``&``
somewhere: common in the wild) is taken as feedparser's forgiving parser reads it, with a warning. One that stops
before its end is refused whole, since a cut-off download would post cut-off items, unless ``--lenient``.
"""
from __future__ import annotations

import io
import re
import xml.sax

import feedparser

from .errors import FeedError

# feedparser flags these but parses the document anyway; a feed served as text/plain is still a feed.
_HARMLESS = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
# The root element's end tag, last thing in the document: the feed was not cut off.
_COMPLETE = re.compile(rb"</(?:[\w.-]+:)?(?:rss|feed|rdf)\s*>\s*$", re.IGNORECASE)


def _looks_like_html(content: bytes) -> bool:
    head = content.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return True
    return b"<html" in head and not any(root in head for root in (b"<rss", b"<feed", b"<rdf"))


def _describe(problem: Exception) -> str:
    if isinstance(problem, xml.sax.SAXParseException):
        return f"line {problem.getLineNumber()}, column {problem.getColumnNumber()}: {problem.getMessage()}"
    return str(problem) or type(problem).__name__


def parse(content: bytes, headers: dict[str, str], lenient: bool) -> tuple[feedparser.FeedParserDict, str | None]:
    """The parsed feed and, for a feed only the lenient parser could read, a warning."""
    if not content.strip():
        raise FeedError("is empty; it holds no RSS or Atom document")
    if _looks_like_html(content):
        raise FeedError("is an HTML page, not an RSS or Atom feed; give the feed's own URL (the page's "
                        "<link rel=\"alternate\" type=\"application/rss+xml\"> names it)")
    # A stream, never bytes: feedparser treats a bytes argument naming a path as a file to open.
    try:
        parsed = feedparser.parse(io.BytesIO(content), response_headers=headers)
    except Exception as exc:  # noqa: BLE001 - hostile input must fail this feed alone, never the run
        raise FeedError(f"could not be parsed ({type(exc).__name__}); nothing from it was imported") from None
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    warning = None
    if problem is not None and not isinstance(problem, _HARMLESS):
        if b"<!ENTITY" in content[:65536]:  # an entity bomb, or an entity that reaches outside: never recovered
            raise FeedError(f"declares XML entities and is not well-formed ({_describe(problem)}); nothing from it "
                            "was imported")
        complete = _COMPLETE.search(content[-256:]) is not None
        if not parsed.get("version") or not (lenient or complete):
            raise FeedError(f"is not well-formed XML and ends before its root element closes "
                            f"({_describe(problem)}); nothing from it was imported (a cut-off download? "
                            "--lenient imports what a forgiving parser recovers)")
        warning = f"is not well-formed XML ({_describe(problem)}); imported what the lenient parser recovered"
    if not parsed.get("version"):
        raise FeedError("is not an RSS or Atom feed (no <rss>, <feed> or <rdf:RDF> document); check the URL")
    return parsed, warning
