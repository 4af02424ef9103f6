"""Import RSS and Atom feeds into Storywire.

    python scripts/import_feeds.py [--api URL] [--api-key KEY] [--state PATH]
                                   [--allow-private-addresses] FEED [FEED ...]

FEED is an http(s) URL or a local file. Each feed is read with a size cap and
a timeout (one deadline for all of it: name lookup, connection, headers and
body, so a server that drips bytes cannot hold the run) and parsed by
feedparser; its items are posted, oldest first across all feeds, through the
API's batch form (``POST /v1/articles/batch``).

A feed URL, and every redirect it answers with, must lead to public addresses:
the host name is resolved, every address it resolves to is checked, and the
connection goes to one of those checked addresses (no second lookup that DNS
could answer differently). Loopback, private, link-local (169.254.169.254, a
cloud's metadata service), unspecified, multicast, reserved and other
non-public addresses are refused unless ``--allow-private-addresses`` is
given, so a feed cannot make the importer read this machine's or its network's
services and post them. Feeds are fetched directly (proxy variables are not
used: a proxy would connect to an address not checked). Local files are read
as always, and the API (``--api``, the user's own service) is not restricted.
The API's redirects are never followed: urllib would send the key to wherever
they point, and a redirected POST posts nothing; the error names the Location.

What was sent is remembered in a state file (``var/feeds-state.json`` by
default, under ``STORYWIRE_DATA_DIR`` when set), kept apart for each API
(named by its base URL: another ``--api`` starts with nothing sent, and the
run says so), then keyed by feed and by item id (the guid, else the link), so
a second run posts nothing already sent. A state file from before states were
kept per API is taken as the run's API's. An item
that could not be posted (the API down, a wrong key, a 5xx) is not recorded and
is tried again next run; a feed's ETag and Last-Modified are kept for the
next conditional GET only once none of its items are left unsent, or a 304
would hide them. The state file is written atomically after every batch
(a temporary file, then ``os.replace``) under a lock, so a crash or a second
import running at once never leaves it half-written.

How an item becomes an article:

- ``source``: the site the feed's items link to (the host most of them share,
  ``www.`` dropped), named by the feed's site link or URL when that is the
  same site or its parent domain (feeds.outlet.test and edition.outlet.test
  are outlet.test); a site link that points elsewhere (a video feed whose
  channel link is the outlet's YouTube page) does not name the outlet. Without
  item links: the site link's host, else the feed URL's, else the feed's
  title. The API counts a story's outlets by source, and one outlet's several
  feeds are one outlet.
- ``url`` and ``title``: the item's link and title; an item without an
  http(s) link, or with neither a title nor a description, is skipped
  (reported, not an error). An untitled item is posted without a title: the
  API makes its headline from the body.
- ``body``: the item's full content if it has one, else its summary; HTML is
  fine, the API reduces it to text.
- ``published_at``: the item's own date, published (pubDate, Atom published),
  else updated (Atom updated, dc:date), else created. An item without one (or
  dated ahead of now: a feed's clock or time-zone mistake, not trusted; a few
  minutes ahead is a fast clock and means now) is dated from its feed, never
  from this machine's clock, so a replayed archive keeps the archive's time:
  the nearest dated item before or after it in the feed (feeds list items in
  time order, so it sits between its neighbours in time), else the channel's
  own date (pubDate, lastBuildDate, Atom updated). Only in a feed that carries
  no date at all is ``published_at`` left out; the API then assigns the
  stream's current time and marks it as assigned. The progress line counts
  each feed's items dated from a neighbour, from the channel, or left undated.
- ``language``: the item's or the feed's, when it is a valid BCP 47 tag.

A feed that is not well-formed XML but ends with its root element closed
(an ``&nbsp;`` or a bare ``&`` somewhere: common in the wild) is imported as
feedparser's forgiving parser reads it, with a warning. One that stops before
its end is refused whole, since a cut-off download would post cut-off items;
``--lenient`` imports what the parser recovers from that too.

The API's answer for each item: sent, and then either new (stored now) or
already known (posted before, nothing stored again: the progress and summary
count the two apart, so a re-import that the API already had says so);
refused (invalid, too large, ``too_old``:
older than the service's retention window on its stream's clock,
``id_conflict``), which is reported with the reason (and counted by it in the
summary), remembered and never sent again; or not taken now (``queue_full`` with a Retry-After, the queue or store
unavailable), which like a 503 for the whole request stops the posting: those
items and the rest stay unsent and are posted next run.

Exit status: 0 when every feed was read and every new item sent; 1 when a feed
could not be read (it is named with the reason; the other feeds are still
imported), an item was rejected by the API (reported, remembered, not sent
again) or items were left unsent for the next run; 2 for a bad command line or
an unusable state file (nothing is fetched or sent).
"""
from __future__ import annotations

import argparse
import calendar
import contextlib
import fcntl
import functools
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xml.sax
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import feedparser
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_FEED_BYTES = 10 * 1024 * 1024
DEFAULT_BATCH = 100
MAX_BATCH = 500                       # the API's default MAX_BATCH_ARTICLES
FETCH_THREADS = 4                     # feeds are read in parallel: waiting on the network, not the CPU
FORGET_AFTER = timedelta(days=90)     # an item gone from its feed this long is forgotten
MAX_API_ANSWER_BYTES = 16 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024   # half the API's default MAX_CONTENT_LENGTH; a 413 halves a batch further
USER_AGENT = "Storywire-feed-importer/1"
ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, "
          "*/*;q=0.1")
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# feedparser flags these but parses the document anyway; a feed served as text/plain is still a feed.
_HARMLESS = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
# The root element's end tag, last thing in the document: the feed was not cut off.
_COMPLETE = re.compile(rb"</(?:[\w.-]+:)?(?:rss|feed|rdf)\s*>\s*$", re.IGNORECASE)


class FeedError(Exception):
    """A feed could not be read; the message says why and what to do."""


class StateError(Exception):
    """The state file cannot be used; nothing is fetched or sent."""


class ApiStop(Exception):
    """The API cannot take items now (down, wrong key, wrong URL): the rest wait for the next run."""


# ---------------------------------------------------------------- the state file
class ItemState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    status: Literal["sent", "rejected"]
    seen: AwareDatetime               # the last run that found it in its feed
    article: str | None = None        # the API's id, for sent items
    problem: str | None = None        # the API's reason, for rejected items


class FeedState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    etag: str | None = None
    modified: str | None = None
    items: dict[str, ItemState] = Field(default_factory=dict)


class ApiState(BaseModel):
    """What was sent to one API, by feed: another API has none of it, so it gets every item."""
    model_config = ConfigDict(extra="forbid", strict=True)
    feeds: dict[str, FeedState] = Field(default_factory=dict)


class State(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[2] = 2
    apis: dict[str, ApiState] = Field(default_factory=dict)   # by api_address()


class StateVersion1(BaseModel):
    """The format before what was sent was kept per API; it is read as the state of the API of the run."""
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1]
    feeds: dict[str, FeedState] = Field(default_factory=dict)


def default_state_path() -> Path:
    return Path(os.environ.get("STORYWIRE_DATA_DIR") or ROOT / "var") / "feeds-state.json"


def api_address(url: str) -> str:
    """The API's base URL as the state file names it: scheme and host in lower case, without the default
    port or a trailing slash, so ``http://LOCALHOST:80/`` and ``http://localhost`` share one state."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = "" if parts.port in (None, {"http": 80, "https": 443}.get(scheme)) else f":{parts.port}"
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


class StateFile:
    """The state file, locked for the whole run so two imports never interleave their writes. It keeps what
    was sent apart for each API (``api``: the run's, as api_address() names it)."""

    def __init__(self, path: Path, api: str) -> None:
        self.path = path
        self.api = api
        self.state = State()
        self.adopted_version_1 = False   # the file was in the format before states were kept per API
        self._lock: io.TextIOWrapper | None = None

    def __enter__(self) -> StateFile:
        if self.path.is_dir():
            raise StateError(f"the state file {self.path} is a directory; pass --state with a file's path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path} ({exc.strerror}); pass --state with a "
                             "path in a writable directory") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StateError(f"another import is running with the state file {self.path}; wait for it to "
                             "finish, or pass a different --state") from None
        try:
            self.state = self._load()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the lock
            self._lock = None

    def _load(self) -> State:
        fix = ("fix it, or move it away to start afresh (items still in their feeds are then posted again, "
               "and the API answers those it already has as known)")
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path} ({exc.strerror})") from None
        try:
            document = json.loads(raw)
        except ValueError:  # not JSON, not UTF-8: the validation below says so
            document = None
        model = StateVersion1 if isinstance(document, dict) and document.get("version") == 1 else State
        try:
            state = model.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the document"
            raise StateError(f"the state file {self.path} is not a feed import state ({where}: {first['msg']}); "
                             f"{fix}") from None
        if isinstance(state, StateVersion1):
            # It names no API: the importer then posted to one API only, most likely the one it posts to now.
            self.adopted_version_1 = True
            return State(apis={self.api: ApiState(feeds=state.feeds)})
        return state

    @property
    def feeds(self) -> dict[str, FeedState]:
        """The run's API's feeds (an API the file has not seen starts with none)."""
        return self.state.apis.setdefault(self.api, ApiState()).feeds

    def save(self) -> None:
        """Write atomically: a reader or a crash sees the old file or the new one, never a mix."""
        data = self.state.model_dump_json(indent=1).encode("utf-8")
        tmp_name = None
        try:
            with tempfile.NamedTemporaryFile("wb", dir=self.path.parent, prefix=f".{self.path.name}.",
                                             suffix=".tmp", delete=False) as tmp:
                tmp_name = tmp.name
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except OSError as exc:
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
            raise StateError(f"cannot write the state file {self.path} ({exc.strerror}); the previous state is "
                             "kept, and items sent since are answered as known when posted again") from None


# ---------------------------------------------------------------- reading feeds
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
        if not parts.hostname or _SPACE_OR_CONTROL.search(location):
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


# A feed, or a redirect it answers with, must not make the importer read this machine (127.0.0.1), its network
# (10.x, 192.168.x) or a cloud's metadata service (169.254.169.254) and post what it finds to the API: such
# addresses are refused unless --allow-private-addresses allows every address (EVERY_ADDRESS).
ALLOW_PRIVATE_FLAG = "--allow-private-addresses"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
EVERY_ADDRESS: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def non_public_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "link-local", ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    for kind, matches in (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
                          ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                          ("private", address.is_private), ("reserved", address.is_reserved),
                          ("non-public", not address.is_global)):
        if matches:
            return kind
    return None


class AddressRefused(FeedError):
    """A connection would go to a non-public address the run does not allow; ``place`` names it."""

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
        self.place = f"{address}, {what}" if host == str(address) else f"{host} ({address}, {what})"
        super().__init__(self.place)


class _Fetch:
    """One feed's download. Every connection it makes, the first and each redirect's, goes to an address checked
    here; and all of it (name lookup, connect, TLS, headers, body) ends by one wall-clock deadline, since a
    server that drips its headers or body a byte at a time never trips a per-read timeout."""

    def __init__(self, timeout: float, allowed: tuple[IPNetwork, ...]) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.allowed = allowed
        self.answered = False                     # the final response's headers have arrived
        self.redirected_to: str | None = None     # the URL of the last redirect followed

    def time_left(self) -> float:
        """The timeout of the next socket operation: the time left before the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the download's deadline has passed")
        return left

    def overdue(self) -> FeedError:
        if self.answered:
            return FeedError(f"took longer than {self.timeout:g} s to download; the server is too slow (raise "
                             "--timeout if the feed is large)")
        return FeedError(f"did not answer within {self.timeout:g} s; it is tried again next run")

    def _resolve(self, host: str, port: int) -> list[tuple]:
        """getaddrinfo, waited for until the deadline (a name lookup takes no timeout, so it runs in a thread
        that is abandoned if it hangs)."""
        answers: list = []

        def look_up() -> None:
            try:
                answers.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:
                answers.append(exc)
        lookup = threading.Thread(target=look_up, name="feed-name-lookup", daemon=True)
        lookup.start()
        lookup.join(self.time_left())
        if not answers:
            raise TimeoutError(f"looking up {host} took too long")
        if isinstance(answers[0], OSError):
            raise answers[0]
        return answers[0]

    def connect(self, address: tuple[str, int], _timeout: object = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """http.client's socket.create_connection, checked: every address the host resolves to must be allowed,
        and the socket connects to one of those very addresses, so a second DNS answer (rebinding) cannot slip
        in between the check and the connection. (The connection's timeout is not used: every operation waits
        until the deadline.)"""
        host, port = address
        found = self._resolve(host, port)
        for *_, sockaddr in found:
            ip = ipaddress.ip_address(sockaddr[0])
            kind = non_public_kind(ip)
            if kind and not any(ip in network for network in self.allowed):
                raise AddressRefused(host, ip, kind)
        error: OSError = OSError(f"{host} resolves to no address")
        for family, sock_type, proto, _, sockaddr in found:
            sock = _DeadlineSocket(family, sock_type, proto)
            sock.fetch = self
            try:
                if source_address:
                    sock.bind(source_address)
                sock.settimeout(self.time_left())
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error


class _DeadlineMixin:
    """A socket each of whose reads and writes waits at most until its download's deadline."""
    fetch: _Fetch | None = None

    def _until_deadline(self) -> None:
        if self.fetch is not None:
            self.settimeout(self.fetch.time_left())  # type: ignore[attr-defined]

    def recv(self, *args, **kwargs):
        self._until_deadline()
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def recv_into(self, *args, **kwargs):
        self._until_deadline()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def send(self, *args, **kwargs):
        self._until_deadline()
        return super().send(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args, **kwargs):
        self._until_deadline()
        return super().sendall(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """urllib's default TLS settings, with sockets that keep the deadline."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, fetch: _Fetch, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = fetch.connect


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, fetch: _Fetch, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = fetch.connect
        self._fetch = fetch

    def connect(self) -> None:
        super().connect()  # the handshake is bounded by the socket's timeout: the time left when it connected
        self.sock.fetch = self._fetch


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, fetch: _Fetch) -> None:
        super().__init__()
        self.fetch = fetch

    def http_open(self, req):
        return self.do_open(_CheckedHTTPConnection, req, fetch=self.fetch)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, fetch: _Fetch) -> None:
        super().__init__()
        self.fetch = fetch

    def https_open(self, req):
        return self.do_open(_CheckedHTTPSConnection, req, context=_tls_context(), fetch=self.fetch)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects are followed (at most 5) to http(s) URLs only: a feed cannot send the importer to ftp:// or
    file://. The address a redirect leads to is checked when connecting, as the first URL's is."""
    max_redirections = 5

    def __init__(self, fetch: _Fetch) -> None:
        super().__init__()
        self.fetch = fetch

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urlsplit(newurl)
        if target.scheme.lower() not in ("http", "https"):
            raise FeedError(f"redirects to a {target.scheme or 'relative'}: URL; only http(s) feeds are read")
        if target.username is not None or target.password is not None:
            raise FeedError("redirects to a URL with a user name or password; it is not followed")
        self.fetch.redirected_to = newurl
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(fetch: _Fetch) -> urllib.request.OpenerDirector:
    # No proxy, whatever the environment says: a proxy would connect for the importer, to an address not checked.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedHTTPHandler(fetch),
                                       _CheckedHTTPSHandler(fetch), _HttpRedirectsOnly(fetch))


def _read_capped(read_chunk, max_bytes: int, fetch: _Fetch, decoder=None) -> bytes:
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
    fetch = _Fetch(timeout, allowed)
    request = urllib.request.Request(ascii_url(url), headers={"User-Agent": USER_AGENT, "Accept": ACCEPT,
                                                   "Accept-Encoding": "gzip, deflate"})
    if etag:
        request.add_header("If-None-Match", etag)
    if modified:
        request.add_header("If-Modified-Since", modified)
    try:
        with _opener(fetch).open(request, timeout=timeout) as response:
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
        where = f"redirects to {_label(fetch.redirected_to)}, on" if fetch.redirected_to else "is on"
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


# ---------------------------------------------------------------- items to articles
@dataclass
class Item:
    feed: str
    key: str
    article: dict
    published_ts: float


@dataclass
class FeedResult:
    location: str
    download: Download | None = None
    items: list[Item] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    dated: dict[str, int] = field(default_factory=dict)   # items by where their date came from (OWN, ...)
    entry_count: int = 0
    error: str | None = None
    warning: str | None = None


def _clean(value: object, limit: int | None = None) -> str:
    text = _CONTROL.sub(" ", value).strip() if isinstance(value, str) else ""
    return text[:limit] if limit else text


def _http_url(value: object) -> str | None:
    url = _clean(value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:  # a bracketed host that is not an IPv6 address, a port out of range
        return None
    if parts.scheme.lower() in ("http", "https") and parts.hostname and not _SPACE_OR_CONTROL.search(url):
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
    return _clean(parsed.feed.get("title"), 200) or Path(location).stem or "feed"


def _language(*candidates: object) -> str | None:
    for candidate in candidates:
        tag = _clean(candidate)
        if tag and len(tag) <= 20 and _LANGUAGE.match(tag):
            return tag
    return None


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


def _body(entry: feedparser.FeedParserDict) -> str:
    contents = [c.get("value") for c in entry.get("content") or []
                if isinstance(c.get("value"), str) and c.get("value").strip()]
    if contents:
        return max(contents, key=len)
    summary = entry.get("summary")
    return summary if isinstance(summary, str) else ""


def item_key(entry: feedparser.FeedParserDict) -> str:
    """The item's guid, else its link, else its text: hashed, so a hostile guid cannot bloat the state."""
    raw = _clean(entry.get("id")) or _clean(entry.get("link")) or f"{entry.get('title')}\x00{_body(entry)}"
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def to_article(entry: feedparser.FeedParserDict, source: str, feed_language: object,
               published: datetime | None) -> dict | str:
    """The article to post, or why the entry is skipped. Without ``published`` (the feed carries no date at
    all) the article has no published_at: the API assigns its stream's current time, never this machine's."""
    url = _http_url(entry.get("link"))
    if url is None:
        return "no http(s) link"
    title, body = _clean(entry.get("title")), _body(entry)
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


# ---------------------------------------------------------------- posting
# The API's refusals of an item that sending it again cannot change, named in the summary with their reason.
# Any other refusal (invalid_article, body_too_large) is recorded and not retried too.
REFUSAL_REASONS = {
    "too_old": "older than the service's retention window on its stream's clock",
    "id_conflict": "its id belongs to another article",
}
# The API could not take an item now (backpressure, its store or queue down): left unsent, posted next run.
BUSY_CODES = frozenset({"queue_full", "queue_unavailable", "unavailable"})


@dataclass
class Outcome:
    status: Literal["sent", "rejected", "unsent"]   # unsent: not recorded, posted again next run
    article: str | None = None
    problem: str | None = None
    code: str | None = None           # the API's error code, for a rejected or unsent item
    reason: str | None = None         # what the summary says about the code, when more than the code is known
    created: bool | None = None       # for a sent item: stored by this request (new) or already known; None: not said

    @property
    def label(self) -> str:
        """How the summary counts a rejection: the code, and the reason when there is one."""
        code = self.code or "rejected"
        return f"{code} ({self.reason})" if self.reason else code


def _busy(status: int, code: str) -> bool:
    return code in BUSY_CODES or status == 429 or status >= 500


def _refusal(code: str, text: str) -> str:
    reason = REFUSAL_REASONS.get(code)
    head = f"{code} ({reason})" if reason else code
    return _clean(f"{head}: {text}" if head and text else head or text or "rejected", 2000)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API's redirects are never followed: urllib would send the key along to wherever it points (another
    host), and a 301-303 turns the POST into a GET that posts nothing. The 3xx is answered as an error."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_API_OPENER = urllib.request.build_opener(_NoRedirects)


class Api:
    def __init__(self, base: str, key: str | None, timeout: float) -> None:
        self.base, self.key, self.timeout = base.rstrip("/"), key, timeout
        self.batch_url = f"{self.base}/v1/articles/batch"

    def _post(self, articles: list[dict]) -> tuple[int, object, str]:
        """The status, the JSON answer (None if not JSON) and the Retry-After header ("" if none)."""
        data = json.dumps({"articles": articles}).encode("utf-8")
        request = urllib.request.Request(self.batch_url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        unsent = "the items stay unsent and are posted next run"
        try:
            with _API_OPENER.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read(MAX_API_ANSWER_BYTES)
                retry_after = response.headers.get("Retry-After") or ""
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = (exc.headers.get("Retry-After") if exc.headers is not None else None) or ""
            location = (exc.headers.get("Location") if exc.headers is not None else None) or ""
            try:
                raw = exc.read(MAX_API_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            if 300 <= status < 400:
                target = urlsplit(urljoin(self.batch_url, _clean(location)))
                shown = urlunsplit(target._replace(netloc=target.netloc.rpartition("@")[2]))  # no credentials
                raise ApiStop(f"the API at {self.base} answered HTTP {status}, a redirect to {_label(shown)}; it is "
                              "not followed, so the key is sent only to --api: if the service has moved there, "
                              f"pass that address as --api; {unsent}")
        except (TimeoutError, socket.timeout):
            raise ApiStop(f"the API at {self.base} did not answer within {self.timeout:g} s; {unsent}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise ApiStop(f"cannot reach the API at {self.base} ({reason}); start it or check --api; "
                          f"{unsent}") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise ApiStop(f"the API at {self.base} broke off the connection ({type(exc).__name__}); "
                          f"{unsent}") from None
        retry_after = _clean(retry_after, 64)
        try:
            return status, json.loads(raw), retry_after
        except ValueError:
            return status, None, retry_after

    def post(self, articles: list[dict]) -> list[Outcome]:
        """One outcome per article, in order. A batch the API finds too large is halved until it fits, and so
        is one it refuses whole for a reason that belongs to one item (too_old, id_conflict)."""
        status, answer, retry_after = self._post(articles)
        error = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), dict) else {}
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        code = error.get("code") if isinstance(error.get("code"), str) else ""
        details = error.get("details") if isinstance(error.get("details"), list) else []
        wait = f" (Retry-After: {retry_after})" if retry_after else ""
        unsent = "the items stay unsent and are posted next run"
        if status in (200, 202):
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(articles):
                raise ApiStop(f"the API at {self.base} answered with something that is not Storywire's batch "
                              f"answer; check --api; {unsent}")
            outcomes = [self._outcome(result) for result in results]
            for outcome in outcomes:
                if outcome.status == "unsent" and wait:
                    outcome.problem = f"{outcome.problem}{wait}"
            return outcomes
        if status == 413 or (status in (409, 422) and code in REFUSAL_REASONS and not details):
            if len(articles) == 1:
                if status == 413:
                    code, message = code or "body_too_large", message or "the API finds this article too large"
                return [Outcome("rejected", problem=_refusal(code, message), code=code,
                                reason=REFUSAL_REASONS.get(code))]
            middle = len(articles) // 2
            return self.post(articles[:middle]) + self.post(articles[middle:])
        if status == 422 and details:
            # No item in the batch was taken (invalid, or each refused: too old, an id conflict): each is
            # rejected with the problems listed for it. This answer has no code per item, so the summary
            # counts them under the batch's code with their problems.
            outcomes = []
            for index in range(len(articles)):
                problems = self._problems(details, index, relative=True)
                outcomes.append(Outcome("rejected", problem=_refusal(code, problems or message), code=code or None,
                                        reason=REFUSAL_REASONS.get(code) or _clean(problems, 200) or None))
            return outcomes
        if status in (401, 403):
            raise ApiStop(f"the API refused the key (HTTP {status}: {message or 'unauthorized'}); set "
                          f"STORYWIRE_API_KEY or pass --api-key with a key the service accepts; {unsent}")
        if status in (404, 405):
            raise ApiStop(f"there is no Storywire batch endpoint at {self.batch_url} (HTTP {status}); check "
                          f"--api; {unsent}")
        if code == "queue_full":
            raise ApiStop(f"the API's queue is full (HTTP {status} queue_full{': ' + message if message else ''})"
                          f"{wait}; it is shedding load: {unsent}")
        raise ApiStop(f"the API answered HTTP {status}{': ' + message if message else ''}{wait}; {unsent}")

    @staticmethod
    def _outcome(result: object) -> Outcome:
        # The error first: a refusal may name the id it concerns (too_old, id_conflict) and is still no success.
        error = result.get("error") if isinstance(result, dict) else None
        if not isinstance(error, dict) and isinstance(result, dict) and isinstance(result.get("id"), str):
            created = result.get("created")
            if not isinstance(created, bool):  # created is the API's word; its status says the same
                created = {"queued": True, "known": False}.get(result.get("status"))  # type: ignore[arg-type]
            return Outcome("sent", article=result["id"], created=created)
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else ""
            status = error.get("status") if isinstance(error.get("status"), int) else 0
            message = str(error.get("message") or "")
            details = error.get("details") if isinstance(error.get("details"), list) else []
            problems = "; ".join(f"{d.get('field')}: {d.get('problem')}" for d in details if isinstance(d, dict))
            if _busy(status, code):  # the API could not take it now (queue_full): not recorded, sent next run
                return Outcome("unsent", problem=_refusal(code, message or f"HTTP {status}"), code=code or None)
            if code in REFUSAL_REASONS:  # the message says why with the dates or ids concerned
                return Outcome("rejected", problem=_refusal(code, message or problems), code=code,
                               reason=REFUSAL_REASONS[code])
            return Outcome("rejected", problem=_refusal(code, problems or message), code=code or None)
        raise ApiStop("the API answered an item with neither an id nor an error; check --api")

    @staticmethod
    def _problems(details: list, index: int, relative: bool = False) -> str:
        """The problems the API listed for item ``index``; ``relative``: fields named within the item
        (``published_at``, not ``articles.3.published_at``)."""
        prefix = f"articles.{index}"
        found = []
        for d in details:
            name = str(d.get("field", "")) if isinstance(d, dict) else ""
            if name == prefix or name.startswith(prefix + "."):
                found.append(f"{name[len(prefix) + 1:] or 'article' if relative else name}: {d.get('problem')}")
        return "; ".join(found)


def batches(items: list[Item], size: int, max_bytes: int) -> Iterator[list[Item]]:
    """Up to ``size`` items a request, and (unless one item alone is bigger) at most ``max_bytes`` of JSON:
    a server that refuses a large body may close the connection before the client has sent it all."""
    batch: list[Item] = []
    batch_bytes = 0
    for item in items:
        item_bytes = len(json.dumps(item.article).encode("utf-8")) + 2
        if batch and (len(batch) == size or batch_bytes + item_bytes > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(item)
        batch_bytes += item_bytes
    if batch:
        yield batch


# ---------------------------------------------------------------- the run
def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _label(location: str) -> str:
    return location if len(location) <= 100 else location[:97] + "..."


def _forget_old(feed_state: FeedState, current: set[str], now: datetime) -> None:
    for key in [k for k, item in feed_state.items.items() if k not in current and now - item.seen > FORGET_AFTER]:
        del feed_state.items[key]


@dataclass
class Tally:
    """What the API made of the items posted this run."""
    new: int = 0          # stored by this run's requests
    known: int = 0        # the API had them already: nothing was stored again
    unsaid: int = 0       # sent, the answer said neither (an API that does not say)
    rejected: int = 0

    @property
    def sent(self) -> int:
        return self.new + self.known + self.unsaid

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "rejected":
            self.rejected += 1
        elif outcome.created is None:
            self.unsaid += 1
        elif outcome.created:
            self.new += 1
        else:
            self.known += 1

    def __str__(self) -> str:
        unsaid = f", {self.unsaid} not said which" if self.unsaid else ""
        return f"{self.sent} sent ({self.new} new, {self.known} already known{unsaid}), {self.rejected} rejected"


def run(args: argparse.Namespace, state_file: StateFile) -> int:
    others = [api for api in state_file.state.apis if api != state_file.api]
    if state_file.adopted_version_1:
        say(f"the state file {state_file.path} names no API (it was written by an earlier importer): what it "
            f"records is taken as sent to {state_file.api}")
    elif state_file.api not in state_file.state.apis and others:
        say(f"the state file {state_file.path} has no record of the API at {state_file.api}: every item is new to "
            f"it (what was sent to {', '.join(map(_label, others))} is kept apart)")
    feed_states = state_file.feeds   # what was sent to this run's API, by feed
    fetched_at = datetime.now(timezone.utc).replace(microsecond=0)
    feeds = list(dict.fromkeys(args.feeds))  # each feed once, in the order given
    say(f"reading {len(feeds)} feed{'s' * (len(feeds) != 1)}")
    results: dict[str, FeedResult] = {}
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(feeds))) as pool:
        futures = {pool.submit(read_feed, loc, feed_states.get(loc), args, fetched_at): loc for loc in feeds}
        for done, future in enumerate(as_completed(futures), 1):
            result = future.result()
            results[result.location] = result
            prefix = f"[{done}/{len(feeds)}] {_label(result.location)}"
            if result.error:
                say(f"[{done}/{len(feeds)}] error: {_label(result.location)} {result.error}")
                continue
            if result.download is None or result.download.content is None:
                say(f"{prefix}: not modified since the last run")
                continue
            known = feed_states.get(result.location, FeedState()).items
            new = sum(1 for item in result.items if item.key not in known)
            skipped = "".join(f", {n} skipped ({why})" for why, n in sorted(result.skipped.items()))
            say(f"{prefix}: {result.entry_count} items, {new} new to this state file{skipped}")
            borrowed = ", ".join(f"{result.dated[origin]} {what}" for origin, what in (
                (NEIGHBOUR, "dated from a neighbouring item"), (CHANNEL, "dated from the feed's own date"),
                (UNDATED, "undated (posted without published_at: the API assigns its stream's time)"))
                if result.dated.get(origin))
            if borrowed:
                say(f"{prefix}: items without a usable date of their own: {borrowed}")
            if result.warning:
                say(f"{prefix}: warning: {result.warning}")

    pending: list[Item] = []
    for location in feeds:
        result = results[location]
        if result.error or result.download is None or result.download.content is None:
            continue
        feed_state = feed_states.setdefault(location, FeedState())
        for item in result.items:
            known = feed_state.items.get(item.key)
            if known is not None:
                known.seen = fetched_at
            else:
                pending.append(item)
    # Oldest first across all feeds: the engine's stories come out best in publication order (items posted
    # without a date last: the API places them at its stream's current time).
    pending.sort(key=lambda item: item.published_ts)

    api = Api(args.api, args.api_key, args.timeout)
    tally = Tally()
    refusals: dict[str, int] = {}     # rejected items by the API's code
    unsent_feeds: set[str] = set()
    started = time.monotonic()
    start = 0
    for batch in batches(pending, args.batch_size, MAX_REQUEST_BYTES):
        try:
            outcomes = api.post([item.article for item in batch])
        except ApiStop as exc:
            unsent_feeds.update(item.feed for item in pending[start:])
            say(f"error: {exc}")
            break
        busy: list[Outcome] = []
        for item, outcome in zip(batch, outcomes):
            if outcome.status == "unsent":  # the API could not take it now (queue_full): next run
                busy.append(outcome)
                unsent_feeds.add(item.feed)
                continue
            feed_states[item.feed].items[item.key] = ItemState(status=outcome.status, seen=fetched_at,
                                                               article=outcome.article, problem=outcome.problem)
            tally.count(outcome)
            if outcome.status == "rejected":
                refusals[outcome.label] = refusals.get(outcome.label, 0) + 1
                say(f"rejected by the API: {item.article['url']} from {_label(item.feed)}: {outcome.problem}")
        state_file.save()
        rate = (start + len(batch)) / max(time.monotonic() - started, 1e-9)
        waiting = f", {len(busy)} not taken" if busy else ""
        say(f"posted {start + len(batch)}/{len(pending)}: {tally}{waiting}, {rate:.0f}/s")
        start += len(batch)
        if busy:
            # Backpressure: as with a 503 for the whole request, nothing more is sent this run.
            unsent_feeds.update(item.feed for item in pending[start:])
            rest = f" and the {len(pending) - start} not yet sent" if len(pending) > start else ""
            say(f"error: the API could not take {len(busy)} item{'s' * (len(busy) != 1)} now ({busy[0].problem}); "
                f"they{rest} stay unsent and are posted next run")
            break

    for location in feeds:
        result = results[location]
        if result.error or result.download is None:
            continue
        feed_state = feed_states.setdefault(location, FeedState())
        if location not in unsent_feeds:  # a 304 next time must not hide items still waiting to be sent
            feed_state.etag, feed_state.modified = result.download.etag, result.download.modified
        if result.download.content is not None:
            _forget_old(feed_state, {item.key for item in result.items}, fetched_at)
    state_file.save()

    failed = [loc for loc in feeds if results[loc].error]
    left = len(pending) - tally.sent - tally.rejected
    common = sorted(refusals.items(), key=lambda pair: (-pair[1], pair[0]))
    why = ", ".join(f"{n} {label}" for label, n in common[:6])
    if len(common) > 6:
        why += f", {sum(n for _, n in common[6:])} for {len(common) - 6} other reasons"
    print(f"feeds: {len(feeds) - len(failed)} read, {len(failed)} failed; articles: {tally}, {left} left for the "
          f"next run, {sum(sum(r.skipped.values()) for r in results.values())} skipped"
          f"{'; rejected: ' + why if why else ''}")
    if failed:
        say(f"{len(failed)} feed{'s' * (len(failed) != 1)} could not be read: {', '.join(map(_label, failed))}; "
            "see the errors above")
    return EXIT_INCOMPLETE if failed or tally.rejected or left else EXIT_OK


# ---------------------------------------------------------------- the command line
def _positive(kind: type, name: str, ceiling: float | None = None):
    def convert(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {raw!r}") from None
        if not value > 0 or value != value or (ceiling is not None and value > ceiling):
            limit = f" and at most {ceiling:g}" if ceiling is not None else ""
            raise argparse.ArgumentTypeError(f"{name} must be more than 0{limit}, got {raw!r}")
        return value
    return convert


def _api_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = urlsplit("")
    if "@" in parts.netloc:
        raise argparse.ArgumentTypeError("--api must not carry a user name or password; the API key goes in "
                                         "STORYWIRE_API_KEY or --api-key")
    if parts.scheme not in ("http", "https") or not parts.hostname or _SPACE_OR_CONTROL.search(raw) \
            or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"--api must be the service's http(s) base URL, such as {DEFAULT_API}; "
                                         f"got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"--api has an invalid port: {raw!r}") from None
    return raw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post the items of RSS and Atom feeds to Storywire; items already sent are not sent again.",
        epilog="Exit status: 0 all read and sent; 1 a feed could not be read or items were rejected or left "
               "for the next run; 2 a bad command line or state file.")
    parser.add_argument("feeds", nargs="+", metavar="FEED", help="an http(s) feed URL or a local feed file")
    parser.add_argument("--api", type=_api_url, default=DEFAULT_API, help=f"the service (default {DEFAULT_API})")
    parser.add_argument("--api-key", default=None,
                        help="the API key (default: STORYWIRE_API_KEY; prefer the variable, a command line is "
                             "visible to other users)")
    parser.add_argument("--state", type=Path, default=None,
                        help="where to remember what was sent, to each API apart (default: var/feeds-state.json, under "
                             "STORYWIRE_DATA_DIR when set)")
    parser.add_argument("--batch-size", type=_positive(int, "--batch-size", MAX_BATCH), default=DEFAULT_BATCH,
                        help=f"articles per request (default {DEFAULT_BATCH}, at most {MAX_BATCH})")
    parser.add_argument("--timeout", type=_positive(float, "--timeout", 3600), default=DEFAULT_TIMEOUT,
                        help="seconds for the whole of one feed's download (name lookup, connection, headers and "
                             f"body) or for one API request (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--max-feed-bytes", type=_positive(int, "--max-feed-bytes"), default=DEFAULT_MAX_FEED_BYTES,
                        help=f"refuse a feed larger than this (default {DEFAULT_MAX_FEED_BYTES})")
    parser.add_argument("--lenient", action="store_true",
                        help="import what a forgiving parser recovers even from a feed that ends before its root "
                             "element closes (a feed that is complete but not well-formed is imported anyway, "
                             "with a warning)")
    parser.add_argument(ALLOW_PRIVATE_FLAG, action="store_true",
                        help="read feed URLs (and follow redirects) that lead to this machine or a private network "
                             "(loopback, private, link-local and other non-public addresses), refused by default "
                             "so that a feed cannot make the importer reach services there; --api is never "
                             "restricted")
    args = parser.parse_args(argv)
    try:
        args.feeds = [check_feed_location(location) for location in args.feeds]
    except ValueError as exc:
        parser.error(str(exc))
    if args.api_key is None:
        args.api_key = os.environ.get("STORYWIRE_API_KEY", "").strip() or None
    elif not args.api_key.strip():
        parser.error("--api-key is empty; give the key, or leave the option out when the API needs none")
    if args.api_key is not None and (_SPACE_OR_CONTROL.search(args.api_key) or not args.api_key.isascii()):
        # The key itself is never echoed: it may be a real one with a typo.
        parser.error("the API key holds spaces, control or non-ASCII characters; an API key is one printable "
                     "ASCII word")
    args.state = args.state or default_state_path()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with StateFile(args.state, api_address(args.api)) as state_file:
            return run(args, state_file)
    except StateError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted; what was sent before is recorded in the state file")
        return 130


if __name__ == "__main__":
    sys.exit(main())
