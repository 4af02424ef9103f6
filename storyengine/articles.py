"""Turning an accepted article into the record the store keeps.

The service calls this after validating a request; the evaluation calls it for
every line of a stream, so both feed the workers exactly the same records.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from .errors import InvalidArticle
from .text import canonical_url, clean_text

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:\-]{0,127}$")


def article_id_for(source: str, url: str) -> str:
    """The id of an article posted without the client's own id: one per
    outlet and canonical URL, so posting it again finds the same article."""
    digest = hashlib.blake2b(f"{source}\x00{canonical_url(url)}".encode("utf-8"), digest_size=10).hexdigest()
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
    if client_id is not None and not CLIENT_ID.match(client_id):
        raise InvalidArticle("id must be 1-128 letters, digits or . _ ~ : - and start with a letter or digit")
    source = source.strip()
    title = clean_text(title)
    body = clean_text(body)
    if not title:
        raise InvalidArticle("title has no text once markup is removed")
    record = {
        "id": article_id or (scoped_id_for(source, client_id) if client_id else article_id_for(source, url)),
        "client_id": client_id or "",
        "source": source,
        "url": url.strip(),
        "canonical_url": canonical_url(url),
        "title": title,
        "body": body,
        "language": language or "",
    }
    if published_at is None:
        record["published_assigned"] = "1"
        return record
    if published_at.tzinfo is None:
        published_at = published_at.replace(tzinfo=timezone.utc)
    published_at = published_at.astimezone(timezone.utc)
    record["published_at"] = published_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    record["published_ts"] = published_at.timestamp()
    return record
