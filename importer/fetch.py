"""A feed's bytes: an http(s) URL downloaded with a size cap and one deadline, or a local file read.

Feeds are fetched through checked_http (only public addresses unless --allow-private-addresses, no proxy) with a
conditional GET when the state file holds the feed's ETag or Last-Modified. Every failure is a FeedError that
names the reason and what to do.
"""
from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from . import USER_AGENT
from .checked_http import ALLOW_PRIVATE_FLAG, AddressRefused, Fetch, IPNetwork, opener
from .errors import FeedError
from .text import SPACE_OR_CONTROL, shorten

ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, "
          "*/*;q=0.1")


@dataclass
class Download:
    content: bytes | None             # None: not modified since the last run
    headers: dict[str, str]
    etag: str | None = None
    modified: str | None = None


def is_url(location: str) -> bool:
    return "://" in location


def check_feed_location(location: str) -> str:
    """An http(s) URL with a host, or a file path; anything else is a usage error."""
    if not location.strip():
        raise ValueError("a FEED is empty; give an http(s) URL or a file path")
    if is_url(location):
        try:
            parts = urlsplit(location)
        except ValueError:
            raise ValueError(f"{location!r} is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"{location!r}: only http:// and https:// feed URLs are read; give a local file "
                             "as a plain path")
        if not parts.hostname or SPACE_OR_CONTROL.search(location):
            raise ValueError(f"{location!r} is not a valid URL (a host is needed, and no spaces)")
        if parts.username is not None or parts.password is not None:
            # They would be printed in progress lines and kept in the state file as the feed's key.
            raise ValueError("a feed URL must not carry a user name or password (user:password@host); "
                             "feeds that need credentials are not supported")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{location!r} has an invalid port") from None
    elif "\x00" in location:
        raise ValueError("a FEED path holds a NUL character")
    else:
        return os.path.abspath(location)  # one key in the state file whatever the working directory
    return location


def _read_capped(read_chunk, max_bytes: int, fetch: Fetch, decoder=None) -> bytes:
    """Read until the end, at most ``max_bytes`` (after decompression) and until the download's deadline."""
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > fetch.deadline:
            raise fetch.overdue()
        chunk = read_chunk()
        if not chunk:
            break
        if decoder is not None:
            chunk = decoder.decompress(chunk, max_bytes - total + 1)
            if decoder.unconsumed_tail:  # more output than the cap allows
                total = max_bytes + 1
        total += len(chunk)
        if total > max_bytes:
            raise FeedError(f"is larger than {max_bytes} bytes; a feed that big is refused (raise "
                            "--max-feed-bytes if it is genuine)")
        chunks.append(chunk)
    if decoder is not None:
        tail = decoder.flush()
        if total + len(tail) > max_bytes:
            raise FeedError(f"is larger than {max_bytes} bytes; a feed that big is refused (raise "
                            "--max-feed-bytes if it is genuine)")
        chunks.append(tail)
    return b"".join(chunks)


def ascii_url(url: str) -> str:
    """An IRI as a URL HTTP can carry: the host in punycode, the rest percent-encoded (``%`` kept as is)."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    netloc = parts.netloc if parts.netloc.isascii() else parts.netloc.encode("idna").decode("ascii")
    safe = "/%:@!$&'()*+,;=?~-._"
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=safe), quote(parts.query, safe=safe),
                       quote(parts.fragment, safe=safe)))


def download(url: str, *, etag: str | None, modified: str | None, timeout: float, max_bytes: int,
             allowed: tuple[IPNetwork, ...] = ()) -> Download:
    """The feed at ``url``, read within ``timeout`` seconds in all; ``allowed``: the non-public networks it may be
    read from (EVERY_ADDRESS with --allow-private-addresses)."""
    fetch = Fetch(timeout, allowed)
    request = urllib.request.Request(ascii_url(url), headers={"User-Agent": USER_AGENT, "Accept": ACCEPT,
                                                   "Accept-Encoding": "gzip, deflate"})
    if etag:
        request.add_header("If-None-Match", etag)
    if modified:
        request.add_header("If-Modified-Since", modified)
    try:
        with opener(fetch).open(request, timeout=timeout) as response:
            fetch.answered = True
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes and not response.headers.get("Content-Encoding"):
                raise FeedError(f"is {declared} bytes, more than {max_bytes}; a feed that big is refused (raise "
                                "--max-feed-bytes if it is genuine)")
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):
                decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, told apart by the header
            elif encoding == "identity":
                decoder = None
            else:
                raise FeedError(f"came with Content-Encoding {encoding!r}, which this importer cannot read")
            try:
                content = _read_capped(lambda: response.read1(65536), max_bytes, fetch, decoder)
            except zlib.error:
                raise FeedError(f"claims Content-Encoding {encoding} but does not decompress; the server is "
                                "sending a corrupt response") from None
            headers = {"content-type": response.headers.get("Content-Type", ""), "content-location": response.url}
            return Download(content, headers, response.headers.get("ETag"), response.headers.get("Last-Modified"))
    except AddressRefused as exc:
        where = f"redirects to {shorten(fetch.redirected_to)}, on" if fetch.redirected_to else "is on"
        raise FeedError(f"{where} {exc.place}; feeds on this machine or a private network are not read unless "
                        f"{ALLOW_PRIVATE_FLAG} is given (make feeds ARGS=\"{ALLOW_PRIVATE_FLAG}\"; give it only "
                        "for feeds you trust there)") from None
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return Download(None, {}, etag, modified)
        hints = {401: "the server wants credentials", 403: "the server refuses access",
                 404: "check the URL", 410: "the feed is gone; remove it", 429: "the server asks to slow down"}
        hint = hints.get(exc.code, "the server is failing; it is tried again next run" if exc.code >= 500
                         else "check the URL")
        raise FeedError(f"answered HTTP {exc.code} {exc.reason}; {hint}") from None
    except TimeoutError:  # every socket operation waits only until the deadline
        raise fetch.overdue() from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise fetch.overdue() from None
        if isinstance(reason, socket.gaierror):
            raise FeedError("names a host that does not resolve; check the URL") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise FeedError(f"cannot be reached ({text}); check the URL, it is tried again next run") from None
    except (http.client.HTTPException, OSError) as exc:  # ConnectionError, ssl.SSLError and the like
        raise FeedError(f"broke off the connection before the feed was complete ({type(exc).__name__}); it is "
                        "tried again next run") from None


def read_file(path: str, max_bytes: int) -> Download:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise FeedError(f"is {size} bytes, more than {max_bytes}; a feed that big is refused (raise "
                                "--max-feed-bytes if it is genuine)")
            content = fh.read(max_bytes + 1)
    except IsADirectoryError:
        raise FeedError("is a directory; give a feed file or an http(s) URL") from None
    except OSError as exc:
        raise FeedError(f"cannot be read ({exc.strerror}); check the path") from None
    if len(content) > max_bytes:
        raise FeedError(f"is larger than {max_bytes} bytes; a feed that big is refused")
    return Download(content, {})
