"""Turning an accepted article into the record the store keeps.

The service calls this after validating a request; the evaluation calls it for
every line of a stream, so both feed the workers exactly the same records.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from .errors import InvalidArticle
from .text import canonical_url, clean_text, first_sentence

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:\-]{0,127}$")
# A headline made for an untitled item is its body's first sentence, cut at a
# word to at most this many characters (about what feeds put in a title).
DERIVED_HEADLINE_CHARS = 120


def derived_headline(body: str) -> str:
    """A headline for an item that came without one (RSS allows a description
    alone): the first line's first sentence, cut at a word boundary."""
    sentence = first_sentence(body)
    if len(sentence) <= DERIVED_HEADLINE_CHARS:
        return sentence
    cut = sentence[:DERIVED_HEADLINE_CHARS - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return (cut or sentence[:DERIVED_HEADLINE_CHARS - 1]) + "\u2026"


def article_id_for(source: str, canonical: str) -> str:
    """The id of an article posted without the client's own id: one per
    outlet and canonical URL (text.canonical_url), so posting it again finds the same article."""
    digest = hashlib.blake2b(f"{source}\x00{canonical}".encode("utf-8"), digest_size=10).hexdigest()
    return f"a_{digest}"


def scoped_id_for(source: str, client_id: str) -> str:
    """The id of an article posted with the client's own id: scoped by the
    outlet, so two outlets' CMS id ``1234`` are two articles, and in a space
    of its own (``c_``), so no client can claim an id the service generates."""
    digest = hashlib.blake2b(f"{source}\x00{client_id}".encode("utf-8"), digest_size=10).hexdigest()
    return f"c_{digest}"


def new_article_record(*, source: str, url: str, title: str, body: str, published_at: datetime | None,
                       client_id: str | None = None, language: str | None = None,
                       article_id: str | None = None) -> dict:
    """The record of an accepted article. ``published_at`` None: undated, it
    takes the stream's time when decided (storyengine.clock). ``client_id``
    is a client's own id (scoped, see :func:`scoped_id_for`); ``article_id``
    sets the id itself, for trusted callers that replay labelled streams."""
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        raise InvalidArticle("id must be 1-128 letters, digits or . _ ~ : - and start with a letter or digit")
    source = source.strip()
    title = clean_text(title)
    body = clean_text(body)
    if not title and not body:
        raise InvalidArticle("title and body have no text once markup is removed; send a headline, a body or both")
    canonical = canonical_url(url)
    record = {
        "id": article_id or (scoped_id_for(source, client_id) if client_id else article_id_for(source, canonical)),
        "client_id": client_id or "",
        "source": source,
        "url": url.strip(),
        "canonical_url": canonical,
        # An untitled item shows a headline made from its body; its features
        # come from the body alone (the pipeline skips a derived title).
        "title": title or derived_headline(body),
        "body": body,
        "language": language or "",
    }
    if not title:
        record["title_derived"] = "1"
    if published_at is None:
        record["published_assigned"] = "1"
        return record
    if published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=timezone.utc)
    published_at = published_at.astimezone(timezone.utc)
    record["published_at"] = published_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    record["published_ts"] = published_at.timestamp()
    return record
