"""urllib for feeds, guarded: every connection, the first and each redirect's, goes to an address checked
against the non-public ones (the SSRF guard), proxies are not used (a proxy would connect to an address not
checked), and one deadline ends a whole download. What users see of it: docs/importer.md.
"""
from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.request
from urllib.parse import urlsplit

from .errors import FeedError

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


class Fetch:
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
    fetch: Fetch | None = None

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
    def __init__(self, *args, fetch: Fetch, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = fetch.connect


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, fetch: Fetch, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = fetch.connect
        self._fetch = fetch

    def connect(self) -> None:
        super().connect()  # the handshake is bounded by the socket's timeout: the time left when it connected
        self.sock.fetch = self._fetch


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, fetch: Fetch) -> None:
        super().__init__()
        self.fetch = fetch

    def http_open(self, req):
        return self.do_open(_CheckedHTTPConnection, req, fetch=self.fetch)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, fetch: Fetch) -> None:
        super().__init__()
        self.fetch = fetch

    def https_open(self, req):
        return self.do_open(_CheckedHTTPSConnection, req, context=_tls_context(), fetch=self.fetch)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects are followed (at most 5) to http(s) URLs only: a feed cannot send the importer to ftp:// or
    file://. The address a redirect leads to is checked when connecting, as the first URL's is."""
    max_redirections = 5

    def __init__(self, fetch: Fetch) -> None:
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


def opener(fetch: Fetch) -> urllib.request.OpenerDirector:
    # No proxy, whatever the environment says: a proxy would connect for the importer, to an address not checked.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedHTTPHandler(fetch),
                                       _CheckedHTTPSHandler(fetch), _HttpRedirectsOnly(fetch))

