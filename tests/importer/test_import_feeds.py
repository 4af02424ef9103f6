"""The feed importer against feeds served on localhost and the real API served
over real HTTP (werkzeug in a thread): what is posted, what a second run
leaves alone, broken feeds, bad state files, a wrong key, the API down, and a
real worker deciding what a feed sent."""
from __future__ import annotations

import fcntl
import gzip
import importlib
import io
import ipaddress
import itertools
import json
import os
import pkgutil
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from werkzeug.serving import make_server

import importer.api
import importer.articles
import importer.errors
import importer.fetch
import importer.parse
import importer.state
from embedded_redis.server import free_port
from service.views import article_view
from storyengine.store import RedisStore
from tests.helpers import build_app

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "import_feeds.py"
API_KEY = "feeds-test-key-0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


DATA = ROOT / "tests" / "data"
FLAG_HINT = "feeds on this machine or a private network are not read unless --allow-private-addresses is given"


# ---------------------------------------------------------------- feeds
def _date(when: datetime, rfc822: bool) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT") if rfc822 else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def rss_item(guid: str, title: str, link: str, when: datetime | None, description: str = "",
             content: str | None = None) -> str:
    parts = [f"<item><title>{escape(title)}</title><link>{escape(link)}</link>",
             f"<guid isPermaLink=\"false\">{escape(guid)}</guid>"]
    if when is not None:
        parts.append(f"<pubDate>{_date(when, True)}</pubDate>")
    parts.append(f"<description>{escape(description)}</description>")
    if content is not None:
        parts.append(f"<content:encoded>{escape(content)}</content:encoded>")
    return "".join(parts) + "</item>"


def rss(items: list[str], title: str = "Example News", link: str = "https://www.example-news.test/",
        language: str = "en-GB", prolog: str = "", channel: str = "") -> bytes:
    """An RSS 2.0 feed; ``channel`` is more of the channel's own elements (pubDate, lastBuildDate)."""
    return (f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:dcterms="http://purl.org/dc/terms/" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            f"<title>{escape(title)}</title><link>{escape(link)}</link><language>{escape(language)}</language>"
            + channel + "".join(items) + "</channel></rss>").encode("utf-8")


def atom_entry(entry_id: str, title: str, link: str, when: datetime | None, summary: str = "",
               content: str = "") -> str:
    updated = f"<updated>{_date(when, False)}</updated>" if when is not None else ""
    return (f"<entry><id>{escape(entry_id)}</id><title>{escape(title)}</title><link href=\"{escape(link)}\"/>"
            f"{updated}<summary>{escape(summary)}</summary>"
            f"<content type=\"html\">{escape(content)}</content></entry>")


def atom(entries: list[str], title: str = "Le Monde Test", link: str = "https://atom-outlet.test/",
         updated: datetime | None = NOW) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr">'
            f"<title>{escape(title)}</title><link href=\"{escape(link)}\"/><id>urn:feed</id>"
            + (f"<updated>{_date(updated, False)}</updated>" if updated is not None else "")
            + "".join(entries) + "</feed>").encode("utf-8")


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None            # answer a matching If-None-Match with 304
    delay: float = 0.0                 # seconds before the answer
    drip: float = 0.0                  # seconds between bytes of the body
    drip_head: float = 0.0             # seconds between bytes of a status line and headers that never end
    send_length: bool = True           # False: no Content-Length, the body ends when the connection closes
    gzip: bool = False                 # compress when the client accepts it
    headers: dict = field(default_factory=dict)


class FeedServer:
    """Feeds on a localhost port: each path answers as its Route says; every request is counted."""

    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: a certificate and its key, to serve over HTTPS."""
        self.routes: dict[str, Route] = {}
        self.hits: list[tuple[str, int]] = []   # (path, status answered)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                route = outer.routes.get(self.path)
                if route is None:
                    route = Route(b"<html><body>no such page</body></html>", 404, "text/html")
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    outer.hits.append((self.path, 304))
                    self.send_response(304)
                    self.end_headers()
                    return
                outer.hits.append((self.path, route.status))
                if route.drip_head:
                    self.drip_head_forever(route.drip_head)
                    return
                time.sleep(route.delay)
                body = route.body
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body = gzip.compress(body)
                    self.send_header("Content-Encoding", "gzip")
                if route.etag:
                    self.send_header("ETag", route.etag)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if route.drip:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(route.drip)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def drip_head_forever(self, interval: float) -> None:
                """A status line, then one header whose value never ends, a byte every ``interval`` seconds:
                no read ever waits long, so only a deadline for the whole download stops the client. It gives
                up after 30 s (or once the client has gone)."""
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nX-Slow: "
                stop = time.monotonic() + 30
                self.close_connection = True
                try:
                    for byte in itertools.chain(head, itertools.repeat(ord("a"))):
                        if time.monotonic() > stop:
                            return
                        self.wfile.write(bytes([byte]))
                        time.sleep(interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"{'https' if tls else 'http'}://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def statuses(self, path: str) -> list[int]:
        return [status for p, status in self.hits if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


# ---------------------------------------------------------------- the API over real HTTP
class Recorder:
    """WSGI middleware that keeps every request the API received: the path, the status and the articles."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests: list[dict] = []

    def __call__(self, environ, start_response):
        record = {"method": environ["REQUEST_METHOD"], "path": environ.get("PATH_INFO"), "articles": None}
        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            record["bytes"] = len(body)
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                record["articles"] = json.loads(body)["articles"]
            except (ValueError, KeyError, TypeError):
                pass
        self.requests.append(record)

        def recording_start_response(status, headers, exc_info=None):
            record["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)
        return self.app(environ, recording_start_response)

    @property
    def posts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST"]

    def accepted_articles(self) -> list[dict]:
        return [a for r in self.posts if r.get("status") == 202 for a in r["articles"]]


@dataclass
class Api:
    url: str
    recorder: Recorder


@contextmanager
def serve(app) -> Iterator[Api]:
    recorder = Recorder(app)
    server = make_server("127.0.0.1", 0, recorder, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Api(f"http://127.0.0.1:{server.server_address[1]}", recorder)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api(app, store) -> Iterator[Api]:
    """The API on a free port (articles are stored and queued; no worker consumes this queue)."""
    with serve(app) as served:
        yield served


def stored_articles(store: RedisStore) -> dict[str, dict]:
    """Every article under the test's key prefix: the API's view, with the body a queued article keeps."""
    ids = [key.decode().rsplit(":", 1)[1] for key in store.redis.scan_iter(match=store.keys.article("*"))]
    return {article_id: dict(article_view(store.get_article(article_id), store.settings),
                             body=store.load_article(article_id).get("body", "")) for article_id in ids}


# ---------------------------------------------------------------- running the command
def run_import(*args: str, api: str | None = None, state: Path | None = None, env: dict | None = None,
               cwd: Path = ROOT, timeout: float = 90, allow_private: bool = True) -> subprocess.CompletedProcess:
    """The importer in a process of its own; ``allow_private``: the feeds here are served on loopback."""
    command = [sys.executable, str(SCRIPT)]
    if allow_private:
        command.append("--allow-private-addresses")
    if api is not None:
        command += ["--api", api]
    if state is not None:
        command += ["--state", str(state)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("STORYWIRE_API_KEY", "STORYWIRE_DATA_DIR")}
    full_env.update(env or {})
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)


def feed_states(state: Path, api: str | None = None) -> dict:
    """The state file's feeds for ``api`` (None: the one API the file knows)."""
    apis = json.loads(state.read_text())["apis"]
    if api is None:
        [api] = apis
    return apis[importer.state.api_address(api)]["feeds"]


def state_items(state: Path, feed: str, api: str | None = None) -> dict:
    return feed_states(state, api).get(feed, {}).get("items", {})


def wire_items(prefix: str, count: int, start: datetime) -> list[str]:
    return [rss_item(f"{prefix}-{n}", f"{prefix} headline number {n}", f"https://www.example-news.test/{prefix}/{n}",
                     start + timedelta(hours=n), f"The {prefix} story {n} in a few words.") for n in range(count)]


# ---------------------------------------------------------------- posting once, and only once
@pytest.mark.e2e
def test_rss_and_atom_items_are_posted_once_and_new_items_on_a_later_run(feeds, api, store, tmp_path):
    state = tmp_path / "state.json"
    day = NOW - timedelta(days=2)
    rss_items = [
        rss_item("rss-1", "Storm closes the harbour", "https://www.example-news.test/storm", day,
                 "<p>Short summary</p>",
                 "<p>The <b>storm</b> closed the harbour on Monday.</p><script>alert('x')</script>"),
        rss_item("rss-2", "Council approves budget", "https://www.example-news.test/budget", day + timedelta(hours=5),
                 "The council approved the budget after a long debate."),
        rss_item("rss-3", "Rail strike called off", "https://www.example-news.test/rail", day - timedelta(hours=3),
                 "Unions called off the rail strike."),
    ]
    feeds.routes["/rss.xml"] = Route(rss(rss_items), etag='"v1"')
    atom_entries = [
        atom_entry("urn:1", "Un pont rouvre", "https://atom-outlet.test/pont", day + timedelta(hours=1),
                   "Le pont rouvre.", "<p>Le pont <em>rouvre</em> apr\u00e8s des travaux.</p>"),
        atom_entry("urn:2", "La gr\u00e8ve continue", "https://atom-outlet.test/greve", day + timedelta(hours=2),
                   "La gr\u00e8ve continue."),
    ]
    feeds.routes["/atom.xml"] = Route(atom(atom_entries), content_type="application/atom+xml", gzip=True)

    first = run_import(feeds.url("/rss.xml"), feeds.url("/atom.xml"), api=api.url, state=state)
    assert first.returncode == 0, first.stderr
    posted = api.recorder.accepted_articles()
    assert len(posted) == 5 and len(api.recorder.posts) == 1  # one batch
    # Oldest first across both feeds.
    assert [a["published_at"] for a in posted] == sorted(a["published_at"] for a in posted)
    assert posted[0]["url"] == "https://www.example-news.test/rail"

    articles = {a["url"]: a for a in stored_articles(store).values()}
    assert len(articles) == 5
    storm = articles["https://www.example-news.test/storm"]
    assert storm["source"] == "example-news.test"            # the site's host, www. dropped
    assert storm["title"] == "Storm closes the harbour"
    assert "The storm closed the harbour on Monday." in storm["body"]   # full content, HTML reduced to text
    assert "<" not in storm["body"] and "alert" not in storm["body"] and "Short summary" not in storm["body"]
    assert storm["published_at"] == _date(day, False) and storm["language"] == "en-GB"
    pont = articles["https://atom-outlet.test/pont"]
    assert pont["source"] == "atom-outlet.test" and pont["language"] == "fr"
    assert pont["body"] == "Le pont rouvre apr\u00e8s des travaux."
    assert pont["published_at"] == _date(day + timedelta(hours=1), False)
    # Progress: one line per feed with its counts, then the posting.
    assert f"{feeds.url('/rss.xml')}: 3 items, 3 new" in first.stderr
    assert f"{feeds.url('/atom.xml')}: 2 items, 2 new" in first.stderr
    assert "posted 5/5: 5 sent (5 new, 0 already known), 0 rejected" in first.stderr
    assert "5 sent (5 new, 0 already known), 0 rejected, 0 left for the next run" in first.stdout

    # Second run: the RSS feed answers 304 to the remembered ETag, the Atom feed has nothing new.
    second = run_import(feeds.url("/rss.xml"), feeds.url("/atom.xml"), api=api.url, state=state)
    assert second.returncode == 0, second.stderr
    assert len(api.recorder.posts) == 1
    assert feeds.statuses("/rss.xml") == [200, 304]
    assert f"{feeds.url('/rss.xml')}: not modified" in second.stderr
    assert f"{feeds.url('/atom.xml')}: 2 items, 0 new" in second.stderr
    assert "0 sent" in second.stdout

    # Third run: one new item in each feed, and only those are posted.
    feeds.routes["/rss.xml"] = Route(rss(rss_items + [rss_item("rss-4", "Harbour reopens",
                                                               "https://www.example-news.test/reopen", NOW, "Open.")]),
                                     etag='"v2"')
    feeds.routes["/atom.xml"].body = atom(atom_entries + [atom_entry("urn:3", "Le pont ferme", "https://atom-outlet"
                                                                     ".test/ferme", NOW, "Ferm\u00e9.")])
    third = run_import(feeds.url("/rss.xml"), feeds.url("/atom.xml"), api=api.url, state=state)
    assert third.returncode == 0, third.stderr
    assert [a["url"] for a in api.recorder.posts[-1]["articles"]] in (
        ["https://www.example-news.test/reopen", "https://atom-outlet.test/ferme"],
        ["https://atom-outlet.test/ferme", "https://www.example-news.test/reopen"])
    assert len(api.recorder.posts) == 2 and len(stored_articles(store)) == 7
    # The state names the API's id for every item sent.
    ids = {item["article"] for item in state_items(state, feeds.url("/rss.xml")).values()}
    assert ids <= set(stored_articles(store)) and len(ids) == 4


@pytest.mark.e2e
def test_the_summary_says_how_many_items_the_api_took_as_new_and_how_many_it_knew(api, store, tmp_path):
    """A re-import with a fresh state (a lost state file, another machine) sends every item again: the API answers
    each as known and stores nothing, and the progress and summary say so instead of counting them as news."""
    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss(wire_items("nk", 3, NOW - timedelta(days=1))))
    first = run_import(str(feed), api=api.url, state=tmp_path / "one.json")
    assert first.returncode == 0, first.stderr
    assert "articles: 3 sent (3 new, 0 already known), 0 rejected, 0 left" in first.stdout
    again = run_import(str(feed), api=api.url, state=tmp_path / "another.json")
    assert again.returncode == 0, again.stderr
    assert "posted 3/3: 3 sent (0 new, 3 already known), 0 rejected" in again.stderr
    assert "articles: 3 sent (0 new, 3 already known), 0 rejected, 0 left" in again.stdout
    assert len(stored_articles(store)) == 3


@pytest.mark.e2e
def test_an_answer_that_says_neither_new_nor_known_is_counted_apart(fake_api, tmp_path):
    def silent(articles: list[dict]) -> tuple[int, dict, dict]:
        return 202, {"results": [{"index": i, "id": f"a_{i}"} for i in range(len(articles))]}, {}
    fake_api.respond = silent
    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss(wire_items("ns", 2, NOW - timedelta(days=1))))
    result = run_import(str(feed), api=fake_api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    assert "articles: 2 sent (0 new, 0 already known, 2 not said which), 0 rejected" in result.stdout


@pytest.mark.e2e
def test_a_feed_file_is_read_and_keyed_by_its_absolute_path(api, store, tmp_path):
    feed = tmp_path / "feeds" / "local.xml"
    feed.parent.mkdir()
    feed.write_bytes(atom([
        atom_entry("urn:a", "Local one", "https://local.test/1", NOW - timedelta(hours=2), "One."),
        atom_entry("urn:b", "Relative link", "/2", NOW - timedelta(hours=1), "A file has no base URL."),
    ], link="https://local.test/"))
    state = tmp_path / "state.json"
    first = run_import("feeds/local.xml", api=api.url, state=state, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 items, 1 new to this state file, 1 skipped (no http(s) link)" in first.stderr
    assert [a["url"] for a in api.recorder.accepted_articles()] == ["https://local.test/1"]
    # The same file named by its absolute path is the same feed: nothing is sent again.
    second = run_import(str(feed), api=api.url, state=state)
    assert second.returncode == 0, second.stderr
    assert len(api.recorder.posts) == 1 and "1 skipped" in second.stdout
    assert list(feed_states(state)) == [str(feed)]


@pytest.mark.e2e
def test_a_feed_url_with_non_ascii_characters_is_requested_percent_encoded(feeds, api, store, tmp_path):
    feeds.routes["/actualit%C3%A9s.xml"] = Route(rss(wire_items("iri", 2, NOW - timedelta(days=1))))
    result = run_import(feeds.url("/actualit\u00e9s.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    assert len(stored_articles(store)) == 2


@pytest.mark.e2e
def test_the_default_state_file_is_under_the_data_directory(feeds, api, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("d", 2, NOW - timedelta(days=1))))
    data = tmp_path / "data"
    result = run_import(feeds.url("/f.xml"), api=api.url, env={"STORYWIRE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert len(state_items(data / "feeds-state.json", feeds.url("/f.xml"))) == 2
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


@pytest.mark.e2e
def test_items_gone_from_their_feed_for_90_days_are_forgotten(feeds, api, store, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("p", 2, NOW - timedelta(days=1))))
    state = tmp_path / "state.json"
    assert run_import(feeds.url("/f.xml"), api=api.url, state=state).returncode == 0
    document = json.loads(state.read_text())
    items = document["apis"][api.url]["feeds"][feeds.url("/f.xml")]["items"]
    in_feed = set(items)
    old = {"status": "sent", "seen": _date(NOW - timedelta(days=91), False), "article": "a_old"}
    recent = {"status": "rejected", "seen": _date(NOW - timedelta(days=80), False), "problem": "x"}
    ancient_in_feed = next(iter(in_feed))
    items.update({"gone-long-ago": old, "gone-lately": recent})
    items[ancient_in_feed]["seen"] = _date(NOW - timedelta(days=400), False)
    state.write_text(json.dumps(document))
    result = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert result.returncode == 0, result.stderr
    kept = state_items(state, feeds.url("/f.xml"))
    assert set(kept) == in_feed | {"gone-lately"}   # still in the feed, or gone less than 90 days
    assert kept[ancient_in_feed]["seen"] != items[ancient_in_feed]["seen"]  # seen again on this run
    assert len(api.recorder.posts) == 1


# ---------------------------------------------------------------- what an item becomes
@pytest.mark.e2e
def test_hostile_and_odd_entries(feeds, api, store, tmp_path):
    long_guid = "g" * 20_000
    items = [
        rss_item("js", "Script link", "javascript:alert(1)", NOW, "x"),
        rss_item("bracket", "Broken host", "http://[not-an-address/x", NOW, "x"),
        rss_item("port", "Broken port", "https://www.example-news.test:99999/x", NOW, "x"),
        rss_item("untitled", "", "https://www.example-news.test/untitled", NOW, "No title here. Only a description."),
        rss_item("empty", "", "https://www.example-news.test/empty", NOW, ""),
        rss_item("relative", "Relative link", "/story/relative", NOW - timedelta(hours=3), "Resolved."),
        rss_item("future", "From the future", "https://www.example-news.test/future",
                 datetime(2100, 1, 1, tzinfo=timezone.utc), "A clock mistake."),
        rss_item("undated", "No date", "https://www.example-news.test/undated", None, "Undated."),
        rss_item("twice", "Same guid", "https://www.example-news.test/twice", NOW - timedelta(hours=2), "Once."),
        rss_item("twice", "Same guid again", "https://www.example-news.test/twice-2", NOW, "Twice."),
        rss_item(long_guid, "Long guid", "https://www.example-news.test/long", NOW - timedelta(hours=1), "Long."),
        # Placeholder and broken dates: taken as undated, never the feed's end.
        "<item><title>Year one</title><link>https://www.example-news.test/year-1</link><guid>year-1</guid>"
        "<pubDate>Mon, 01 Jan 0001 00:00:00 GMT</pubDate><description>Old.</description></item>",
        "<item><title>Year 99</title><link>https://www.example-news.test/year-99</link><guid>year-99</guid>"
        "<pubDate>Thu, 01 Jan 0099 00:00:00 GMT</pubDate><description>Old.</description></item>",
        "<item><title>Entity &xxe; here</title><link>https://www.example-news.test/xxe</link><guid>xxe</guid>"
        f"<pubDate>{_date(NOW - timedelta(hours=4), True)}</pubDate><description>&xxe;</description></item>",
    ]
    body = rss(items, language="English", prolog='<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>')
    feeds.routes["/hostile.xml"] = Route(body, content_type="text/plain; charset=utf-8")  # a feed all the same
    feeds.routes["/moved"] = Route(status=301, headers={"Location": "/hostile.xml"})
    state = tmp_path / "state.json"
    result = run_import(feeds.url("/moved"), api=api.url, state=state)
    assert result.returncode == 0, result.stderr
    assert "3 skipped (no http(s) link)" in result.stderr and "skipped (no title or description)" in result.stderr
    articles = {a["url"]: a for a in stored_articles(store).values()}
    # The relative link resolves against where the feed was finally served from.
    # An item with a description and no title is posted; the API makes its headline from the body.
    assert articles["https://www.example-news.test/untitled"]["title"] == "No title here."
    assert articles["https://www.example-news.test/untitled"]["title_derived"] is True
    assert set(articles) - {"https://www.example-news.test/untitled"} == {
                             feeds.url("/story/relative"), "https://www.example-news.test/future",
                             "https://www.example-news.test/undated", "https://www.example-news.test/twice",
                             "https://www.example-news.test/long", "https://www.example-news.test/xxe",
                             "https://www.example-news.test/year-1", "https://www.example-news.test/year-99"}
    # A date ahead of now, none, or a placeholder: the nearest dated item's in the feed (skipped ones count,
    # their dates are the feed's all the same), the preceding one when both are as near; never the fetch time.
    assert {url: articles[url]["published_at"] for url in (
        "https://www.example-news.test/future", "https://www.example-news.test/undated",
        "https://www.example-news.test/year-1", "https://www.example-news.test/year-99")} == {
        "https://www.example-news.test/future": _date(NOW - timedelta(hours=3), False),    # relative, just above
        "https://www.example-news.test/undated": _date(NOW - timedelta(hours=2), False),   # twice, just below
        "https://www.example-news.test/year-1": _date(NOW - timedelta(hours=1), False),    # long, just above
        "https://www.example-news.test/year-99": _date(NOW - timedelta(hours=4), False)}   # xxe, just below
    assert "items without a usable date of their own: 4 dated from a neighbouring item" in result.stderr
    xxe = articles["https://www.example-news.test/xxe"]
    assert "root:" not in xxe["title"] + xxe["body"]  # an external entity is never read
    assert all(a["language"] in ("", None) for a in articles.values())  # "English" is not a language tag
    assert state.stat().st_size < 5_000  # item keys are hashed: a 20 kB guid does not grow the state


@pytest.mark.e2e
def test_the_outlet_is_the_site_the_items_link_to_when_the_channel_link_points_elsewhere(api, store, tmp_path):
    """feed_import_video_channel.xml is shaped like a news outlet's video feed: its channel link is the outlet's
    YouTube page, its items link to the outlet's own site (one to a YouTube video). All are the outlet's items."""
    result = run_import(str(DATA / "feed_import_video_channel.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    articles = list(stored_articles(store).values())
    assert len(articles) == 5 and {a["source"] for a in articles} == {"aljazeera.com"}


def _linking(host: str) -> list[str]:
    return [rss_item(f"{host}-{n}", f"Story {n}", f"https://{host}/news/{n}" if host else "", NOW, "Text.")
            for n in range(3)]


OUTLETS: dict[str, tuple[bytes, str, str]] = {
    # (the feed, where it was read from, the outlet)
    "the channel link points elsewhere": (rss(_linking("www.outlet.test"), link="https://www.youtube.com/c/outlet"),
                                          "https://feeds.outlet.test/video.xml", "outlet.test"),
    "the channel link is a subdomain of the items' site": (rss(_linking("www.outlet.test"),
                                                               link="https://edition.outlet.test/"),
                                                           "/saved/feed.xml", "outlet.test"),
    "the items are on a subdomain of the channel's site": (rss(_linking("money.outlet.test"),
                                                               link="https://www.outlet.test/"),
                                                           "/saved/feed.xml", "outlet.test"),
    "no channel link, the feed on a feed host": (rss(_linking("www.outlet.test"), link=""),
                                                 "https://feeds.feedhost.test/outlet", "outlet.test"),
    "no item links": (rss(_linking(""), link="https://www.outlet.test/"), "https://feeds.feedhost.test/o",
                      "outlet.test"),
    "no links at all": (rss(_linking(""), title="Outlet Daily", link=""), "/saved/feed.xml", "Outlet Daily"),
}


@pytest.mark.parametrize("kind", list(OUTLETS))
def test_the_outlet_is_named_by_the_site_its_items_link_to(kind):
    content, location, outlet = OUTLETS[kind]
    parsed, _ = importer.parse.parse(content, {}, lenient=False)
    assert importer.articles.source_for(parsed, location) == outlet


# ---------------------------------------------------------------- dates: a feed keeps its own time
ARCHIVE = datetime(2021, 3, 5, 12, 0, tzinfo=timezone.utc)   # a replayed archive: years before the fetch


def raw_item(guid: str, dates: str = "") -> str:
    """An RSS item with its date elements written out (``dates``: pubDate, dc:date, atom:updated...)."""
    return (f"<item><title>Archive story {guid}</title><link>https://www.example-news.test/{guid}</link>"
            f"<guid isPermaLink=\"false\">{guid}</guid>{dates}<description>Story {guid}.</description></item>")


def pub(when: datetime) -> str:
    return f"<pubDate>{_date(when, True)}</pubDate>"


def posted(api: Api) -> dict[str, dict]:
    """What the importer posted (whatever the API answered), by the item's path."""
    return {a["url"].rsplit("/", 1)[1]: a for r in api.recorder.posts for a in r["articles"]}


@pytest.mark.e2e
def test_an_undated_item_takes_the_date_of_its_nearest_dated_neighbour(feeds, api, tmp_path):
    # Newest first, as feeds list their items: an undated item sits between its neighbours in time.
    feeds.routes["/f.xml"] = Route(rss([
        raw_item("a", pub(ARCHIVE)),
        raw_item("b"),                                          # a and c as near: the preceding one
        raw_item("c", pub(ARCHIVE - timedelta(hours=3))),
        raw_item("d", pub(ARCHIVE - timedelta(hours=4))),
        raw_item("e"),                                          # d nearer than g
        raw_item("f"),                                          # g nearer than d
        raw_item("g", pub(ARCHIVE - timedelta(hours=10))),
    ]))
    result = run_import(feeds.url("/f.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    dates = {name: article["published_at"] for name, article in posted(api).items()}
    assert dates == {"a": _date(ARCHIVE, False), "b": _date(ARCHIVE, False),
                     "c": _date(ARCHIVE - timedelta(hours=3), False), "d": _date(ARCHIVE - timedelta(hours=4), False),
                     "e": _date(ARCHIVE - timedelta(hours=4), False), "f": _date(ARCHIVE - timedelta(hours=10), False),
                     "g": _date(ARCHIVE - timedelta(hours=10), False)}
    assert (f"{feeds.url('/f.xml')}: items without a usable date of their own: 3 dated from a neighbouring item"
            in result.stderr)


CHANNEL_DATED: dict[str, tuple[Callable[[list[str]], bytes], datetime]] = {
    # The channel's pubDate first, then its lastBuildDate (RSS); Atom's feed-level <updated>.
    "RSS pubDate and lastBuildDate": (lambda items: rss(items, channel=f"{pub(ARCHIVE)}<lastBuildDate>"
                                                        f"{_date(ARCHIVE + timedelta(days=1), True)}</lastBuildDate>"),
                                      ARCHIVE),
    "RSS lastBuildDate only": (lambda items: rss(items, channel=f"<lastBuildDate>{_date(ARCHIVE, True)}"
                                                                "</lastBuildDate>"), ARCHIVE),
    "RSS pubDate ahead of now, lastBuildDate": (
        lambda items: rss(items, channel=pub(datetime(2100, 1, 1, tzinfo=timezone.utc))
                          + f"<lastBuildDate>{_date(ARCHIVE, True)}</lastBuildDate>"), ARCHIVE),
    "Atom feed updated": (lambda _: atom([atom_entry(f"urn:{n}", f"Archive story {n}",
                                                     f"https://atom-outlet.test/{n}", None) for n in "xy"],
                                         updated=ARCHIVE), ARCHIVE),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(CHANNEL_DATED))
def test_a_feed_dated_only_by_its_channel_dates_its_items_from_it(kind, feeds, api, tmp_path):
    make_feed, expected = CHANNEL_DATED[kind]
    feeds.routes["/f.xml"] = Route(make_feed([raw_item("x"), raw_item("y")]))
    result = run_import(feeds.url("/f.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    articles = posted(api)
    assert sorted(articles) == ["x", "y"]
    assert {a["published_at"] for a in articles.values()} == {_date(expected, False)}
    assert "2 dated from the feed's own date" in result.stderr


@pytest.mark.e2e
def test_an_item_dated_only_by_updated_dc_date_or_created_uses_that_date(feeds, api, tmp_path):
    # Each item's date is its own and differs from its neighbours': a field not read would show.
    future = pub(datetime(2100, 1, 1, tzinfo=timezone.utc))
    feeds.routes["/f.xml"] = Route(rss([
        raw_item("dc", f"<dc:date>{_date(ARCHIVE, False)}</dc:date>"),
        raw_item("atom-updated", f"<atom:updated>{_date(ARCHIVE - timedelta(hours=1), False)}</atom:updated>"),
        raw_item("created", f"<dcterms:created>{_date(ARCHIVE - timedelta(hours=2), False)}</dcterms:created>"),
        # A pubDate ahead of now is a mistake: the item's own other date is used, not the fetch time.
        raw_item("future", future + f"<dc:date>{_date(ARCHIVE - timedelta(hours=3), False)}</dc:date>"),
        raw_item("pub", pub(ARCHIVE - timedelta(hours=4))),
    ]))
    feeds.routes["/a.xml"] = Route(atom([
        atom_entry("urn:u", "Atom updated only", "https://atom-outlet.test/updated", ARCHIVE - timedelta(hours=5)),
        atom_entry("urn:o", "Atom dated", "https://atom-outlet.test/other", ARCHIVE - timedelta(hours=9)),
    ], updated=ARCHIVE), content_type="application/atom+xml")
    result = run_import(feeds.url("/f.xml"), feeds.url("/a.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    dates = {name: article["published_at"] for name, article in posted(api).items()}
    assert dates == {name: _date(ARCHIVE - timedelta(hours=hours), False) for name, hours in (
        ("dc", 0), ("atom-updated", 1), ("created", 2), ("future", 3), ("pub", 4), ("updated", 5), ("other", 9))}
    assert "items without a usable date" not in result.stderr


@pytest.mark.e2e
def test_a_feed_without_any_date_posts_its_items_without_published_at(feeds, api, tmp_path):
    feeds.routes["/undated.xml"] = Route(rss([raw_item("u1"), raw_item("u2")]))
    feeds.routes["/undated-atom.xml"] = Route(atom([atom_entry("urn:v", "No date", "https://atom-outlet.test/v", None)],
                                                   updated=None), content_type="application/atom+xml")
    feeds.routes["/dated.xml"] = Route(rss([raw_item("d1", pub(NOW - timedelta(hours=2))),
                                            raw_item("d2", pub(NOW - timedelta(hours=3)))],
                                           link="https://dated.test/"))
    state = tmp_path / "state.json"
    result = run_import(feeds.url("/undated.xml"), feeds.url("/undated-atom.xml"), feeds.url("/dated.xml"),
                        api=api.url, state=state)
    assert result.returncode == 0, result.stderr
    articles = [a for r in api.recorder.posts for a in r["articles"]]
    # Never the fetch time: no published_at at all, the API assigns its stream's current time. Posted last,
    # after the dated items, since that is where the API places them.
    assert [a["url"].rsplit("/", 1)[1] for a in articles] == ["d2", "d1", "u1", "u2", "v"]
    assert [("published_at" in a) for a in articles] == [True, True, False, False, False]
    assert (f"{feeds.url('/undated.xml')}: items without a usable date of their own: 2 undated (posted without "
            "published_at" in result.stderr)
    assert f"{feeds.url('/undated-atom.xml')}: items without a usable date of their own: 1 undated" in result.stderr
    assert all(i["status"] == "sent" for i in state_items(state, feeds.url("/undated.xml")).values())


@pytest.mark.e2e
def test_an_old_feed_with_one_undated_item_never_gets_todays_date(feeds, api, tmp_path):
    """The replayed 2021 archive: its undated newest item once took the fetch time, moved the stream's clock
    to today, and retention then deleted the whole archive."""
    feeds.routes["/archive.xml"] = Route(rss([
        raw_item("newest"),                                                         # no date: the item below
        raw_item("n1", pub(ARCHIVE)),
        raw_item("n2", pub(datetime(2100, 1, 1, tzinfo=timezone.utc))),           # a mistake: n1, as near as n3
        raw_item("n3", pub(ARCHIVE - timedelta(days=1))),
    ], channel=f"<lastBuildDate>{_date(ARCHIVE, True)}</lastBuildDate>"))
    result = run_import(feeds.url("/archive.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    dates = {name: article["published_at"] for name, article in posted(api).items()}
    assert dates == {"newest": _date(ARCHIVE, False), "n1": _date(ARCHIVE, False), "n2": _date(ARCHIVE, False),
                     "n3": _date(ARCHIVE - timedelta(days=1), False)}
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert all(when.startswith("2021-") and not when.startswith(today) for when in dates.values())
    assert "2 dated from a neighbouring item" in result.stderr


@pytest.mark.e2e
def test_a_redirect_is_followed_only_to_http(feeds, api, store, tmp_path):
    feeds.routes["/good.xml"] = Route(rss(wire_items("r", 2, NOW - timedelta(hours=5))))
    feeds.routes["/to-ftp"] = Route(status=302, headers={"Location": "ftp://127.0.0.1/feed.xml"})
    feeds.routes["/to-file"] = Route(status=301, headers={"Location": "file:///etc/passwd"})
    feeds.routes["/to-credentials"] = Route(status=302, headers={"Location": "http://u:secret@127.0.0.1:1/x"})
    result = run_import(feeds.url("/to-ftp"), feeds.url("/to-file"), feeds.url("/to-credentials"),
                        feeds.url("/good.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 1
    assert f"error: {feeds.url('/to-ftp')} redirects to a ftp: URL; only http(s) feeds are read" in result.stderr
    assert f"error: {feeds.url('/to-file')} answered HTTP 301" in result.stderr  # urllib itself refuses file:
    assert "redirects to a URL with a user name or password" in result.stderr
    assert "secret" not in result.stderr + result.stdout and "root:" not in result.stderr + result.stdout
    assert len(stored_articles(store)) == 2


@pytest.mark.e2e
def test_a_feed_on_this_machine_is_refused_without_allow_private_addresses(feeds, api, store, tmp_path):
    """By default a feed is read from public addresses only: a feed URL (or its redirect) could otherwise make the
    importer read a service of this machine or its network and post it. A local file is read as before, and the
    API, the user's own service (here on loopback too), is posted to."""
    feeds.routes["/f.xml"] = Route(rss(wire_items("lo", 2, NOW - timedelta(days=1))))
    by_name = feeds.url("/f.xml").replace("127.0.0.1", "localhost")
    local = tmp_path / "saved.xml"
    local.write_bytes(rss(wire_items("file", 2, NOW - timedelta(days=1))))
    result = run_import(feeds.url("/f.xml"), by_name, str(local), api=api.url, state=tmp_path / "state.json",
                        allow_private=False)
    assert result.returncode == 1
    assert f"error: {feeds.url('/f.xml')} is on 127.0.0.1, a loopback address; {FLAG_HINT}" in result.stderr
    assert re.search(rf"error: {re.escape(by_name)} is on localhost \((127\.0\.0\.1|::1), a loopback address\); "
                     + re.escape(FLAG_HINT), result.stderr), result.stderr
    assert not feeds.hits
    assert sorted(a["url"] for a in stored_articles(store).values()) == [
        "https://www.example-news.test/file/0", "https://www.example-news.test/file/1"]


_WATCHES: list[list] = []     # the open connections() blocks' records, innermost last
_AUDITING = False


def _stop_connections_off_loopback(event: str, args: tuple) -> None:
    if event != "socket.connect" or not _WATCHES:
        return
    address = args[1]
    _WATCHES[-1].append(address)
    try:
        loopback = ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        loopback = False
    if not loopback:
        raise PermissionError(f"the test stopped a connection to {address} before it left this machine")


@contextmanager
def connections() -> Iterator[list]:
    """The addresses this process connects to inside the block. One off loopback is stopped before a packet
    leaves (PermissionError), so a test of refusals sends nothing to 169.254.169.254 even if the importer
    regressed."""
    global _AUDITING
    if not _AUDITING:
        sys.addaudithook(_stop_connections_off_loopback)  # for the rest of the process; idle outside a block
        _AUDITING = True
    seen: list = []
    _WATCHES.append(seen)
    try:
        yield seen
    finally:
        _WATCHES.remove(seen)


# Where a redirect leads (given the port of a feed server on 127.0.0.2), and the kind of address it is.
NON_PUBLIC_TARGETS: dict[str, Callable[[int], tuple[str, str]]] = {
    "another loopback address": lambda port: (f"http://127.0.0.2:{port}/f.xml", "a loopback address"),
    "loopback written as a number": lambda port: (f"http://2130706434:{port}/f.xml", "a loopback address"),
    "loopback as an IPv4-mapped IPv6 address": lambda port: (f"http://[::ffff:127.0.0.2]:{port}/f.xml",
                                                             "a loopback address"),
    "the unspecified address": lambda port: (f"http://0.0.0.0:{port}/f.xml", "an unspecified address"),
    "a cloud metadata service": lambda _: ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
    "a private network": lambda _: ("http://10.11.12.13/feed.xml", "a private address"),
}


@pytest.mark.parametrize("kind", list(NON_PUBLIC_TARGETS))
def test_a_redirect_to_a_non_public_address_is_refused_before_connecting(kind, feeds):
    """The first hop must be allowed for its redirect to be tested on one machine: the importer's download is
    called with 127.0.0.1 alone allowed (as --allow-private-addresses allows every address). A second server on
    127.0.0.2 stands where the redirect would lead."""
    inside = FeedServer("127.0.0.2")
    try:
        inside.routes["/f.xml"] = Route(rss(wire_items("inside", 1, NOW)))
        target, what = NON_PUBLIC_TARGETS[kind](inside.server.server_address[1])
        feeds.routes["/moved"] = Route(status=302, headers={"Location": target})
        with connections() as seen, pytest.raises(importer.errors.FeedError) as refused:
            importer.fetch.download(feeds.url("/moved"), etag=None, modified=None, timeout=5, max_bytes=100_000,
                                    allowed=(ipaddress.ip_network("127.0.0.1/32"),))
    finally:
        inside.close()
    message = str(refused.value)
    assert message.startswith(f"redirects to {target}, on ") and f", {what}" in message, message
    assert message.endswith(FLAG_HINT + " (make feeds ARGS=\"--allow-private-addresses\"; give it only for feeds you "
                            "trust there)")
    assert seen == [("127.0.0.1", feeds.server.server_address[1])]   # the redirect's target was never connected to
    assert not inside.hits


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["feed", "api"])
def test_credentials_in_a_url_are_refused_and_never_printed(feeds, api, tmp_path, where):
    state = tmp_path / "state.json"
    if where == "feed":
        host = feeds.url("/f.xml").split("://", 1)[1]
        result = run_import(f"http://user:s3cret-word@{host}", api=api.url, state=state)
        assert "a feed URL must not carry a user name or password" in result.stderr
    else:
        result = run_import(feeds.url("/f.xml"), api=api.url.replace("://", "://user:s3cret-word@"), state=state)
        assert "--api must not carry a user name or password" in result.stderr
    assert result.returncode == 2
    assert "s3cret-word" not in result.stderr + result.stdout and not state.exists()


def test_an_items_problems_are_its_own():
    details = [{"field": "articles.1.url", "problem": "bad url"}, {"field": "articles.10.title", "problem": "empty"},
               {"field": "articles.1", "problem": "not an object"}, {"field": "articles.11.body", "problem": "long"}]
    assert importer.api.Api._problems(details, 1) == "articles.1.url: bad url; articles.1: not an object"
    assert importer.api.Api._problems(details, 10) == "articles.10.title: empty"
    assert importer.api.Api._problems(details, 2) == ""


@pytest.mark.e2e
def test_an_item_the_api_rejects_is_reported_once_and_not_sent_again(feeds, api, store, tmp_path):
    items = wire_items("ok", 2, NOW - timedelta(days=1)) + [
        rss_item("too-long", "T" * 1500, "https://www.example-news.test/too-long", NOW, "Body.")]
    feeds.routes["/f.xml"] = Route(rss(items), etag='"e"')
    state = tmp_path / "state.json"
    first = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert first.returncode == 1
    assert "rejected by the API: https://www.example-news.test/too-long" in first.stderr
    assert "title" in first.stderr and "1000" in first.stderr
    assert "2 sent (2 new, 0 already known), 1 rejected, 0 left" in first.stdout and len(stored_articles(store)) == 2
    rejected = [i for i in state_items(state, feeds.url("/f.xml")).values() if i["status"] == "rejected"]
    assert len(rejected) == 1 and "title" in rejected[0]["problem"]
    feeds.routes["/f.xml"].etag = '"e2"'  # a full answer, so the item is seen again
    second = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert second.returncode == 0, second.stderr
    assert len(api.recorder.posts) == 1 and "3 items, 0 new" in second.stderr


# ---------------------------------------------------------------- the API's answers: refused, or not now
class FakeApi:
    """A batch endpoint on a localhost port that answers as ``respond(articles)`` says: (status, JSON, headers).
    It stands for the API's answers this importer must handle whatever the service in the tree says today."""

    def __init__(self, respond: Callable[[list[dict]], tuple[int, dict, dict]]) -> None:
        self.respond = respond
        self.posts: list[list[dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                articles = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))["articles"]
                outer.posts.append(articles)
                status, answer, headers = outer.respond(articles)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    server = FakeApi(lambda articles: (202, accept_all(articles), {}))
    yield server
    server.close()


def accept_all(articles: list[dict]) -> dict:
    return {"accepted": len(articles), "rejected": 0,
            "results": [{"index": i, "id": f"a_{a['url'].rsplit('/', 1)[1]}", "status": "queued", "created": True}
                        for i, a in enumerate(articles)]}


def api_error(status: int, code: str, message: str) -> dict:
    return {"error": {"status": status, "code": code, "message": message}}


TOO_OLD = api_error(422, "too_old", "published_at 2021-03-05T12:00:00Z is more than 30 days before the stream's "
                                    "clock 2026-11-30T09:00:00Z")
CONFLICT = api_error(409, "id_conflict", "the id names another article (another source and URL)")
QUEUE_FULL = api_error(503, "queue_full", "5000 articles are waiting to be decided; retry after Retry-After seconds")


def refusing(whole: bool) -> Callable[[list[dict]], tuple[int, dict, dict]]:
    """Items whose path starts with "old" are too old, with "conflict" an id conflict: answered per item, or
    (``whole``) as the whole request's answer when the batch holds one."""
    def respond(articles: list[dict]) -> tuple[int, dict, dict]:
        names = [a["url"].rsplit("/", 1)[1] for a in articles]
        if whole and any(n.startswith(("old", "conflict")) for n in names):
            return (422, TOO_OLD, {}) if any(n.startswith("old") for n in names) else (409, CONFLICT, {})
        results = accept_all(articles)["results"]
        for index, name in enumerate(names):
            if name.startswith("old"):  # a refusal may name the article it concerns: it is still no success
                results[index] = {"index": index, "id": f"a_{name}", "error": TOO_OLD["error"]}
            elif name.startswith("conflict"):
                results[index] = {"index": index, "error": CONFLICT["error"]}
        return 202, {"results": results}, {}
    return respond


@pytest.mark.e2e
@pytest.mark.parametrize("whole", [False, True], ids=["per item", "whole request"])
def test_too_old_and_id_conflict_are_refusals_reported_with_their_reason_and_never_retried(whole, feeds, fake_api,
                                                                                           tmp_path):
    fake_api.respond = refusing(whole)
    feeds.routes["/f.xml"] = Route(rss([raw_item("fresh", pub(NOW - timedelta(hours=1))),
                                        raw_item("old", pub(ARCHIVE)),
                                        raw_item("conflict", pub(NOW - timedelta(hours=2)))]), etag='"e"')
    state = tmp_path / "state.json"
    first = run_import(feeds.url("/f.xml"), api=fake_api.url, state=state)
    assert first.returncode == 1  # a rejected item
    assert ("rejected by the API: https://www.example-news.test/old from "
            f"{feeds.url('/f.xml')}: too_old (older than the service's retention window" in first.stderr)
    assert "more than 30 days before the stream's clock" in first.stderr
    assert "rejected by the API: https://www.example-news.test/conflict" in first.stderr
    assert "id_conflict (its id belongs to another article)" in first.stderr
    assert ("1 sent (1 new, 0 already known), 2 rejected, 0 left for the next run, 0 skipped; rejected: "
            "1 id_conflict (its id belongs to another article), 1 too_old (older than the service's retention "
            "window on its stream's clock)" in first.stdout)
    items = list(state_items(state, feeds.url("/f.xml")).values())
    assert [i["article"] for i in items if i["status"] == "sent"] == ["a_fresh"]
    problems = sorted(i["problem"] for i in items if i["status"] == "rejected")
    assert len(problems) == 2 and problems[0].startswith("id_conflict") and problems[1].startswith("too_old")
    if whole:  # refused whole: the batch was halved until each refused item stood alone
        assert len(fake_api.posts[0]) == 3
        assert sorted(p[0]["url"].rsplit("/", 1)[1] for p in fake_api.posts if len(p) == 1) == ["conflict", "fresh",
                                                                                                 "old"]
    # Refused, not retried: the next full read of the feed posts nothing.
    feeds.routes["/f.xml"].etag = '"e2"'
    posts = len(fake_api.posts)
    second = run_import(feeds.url("/f.xml"), api=fake_api.url, state=state)
    assert second.returncode == 0, second.stderr
    assert len(fake_api.posts) == posts and "3 items, 0 new" in second.stderr


@pytest.mark.e2e
def test_the_api_refuses_an_item_older_than_its_retention_window_and_it_is_not_sent_again(feeds, api, store,
                                                                                         tmp_path):
    """The real service: its stream clock is today (as its workers would have set it), so a 2021 item is
    older than its retention window. Refused with the reason, recorded, never posted again."""
    store.redis.set(store.keys.clock, NOW.timestamp())
    today, old = raw_item("today", pub(NOW - timedelta(hours=1))), raw_item("old2021", pub(ARCHIVE))
    feeds.routes["/f.xml"] = Route(rss([today, old]), etag='"e1"')
    state = tmp_path / "state.json"
    first = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert first.returncode == 1
    assert "rejected by the API: https://www.example-news.test/old2021" in first.stderr and "too_old" in first.stderr
    assert ("1 sent (1 new, 0 already known), 1 rejected, 0 left for the next run, 0 skipped; rejected: "
            "1 too_old (older than the service's retention window" in first.stdout)
    # A batch of old items only: the API answers each item with its code (too_old); refused with the
    # reason, not left for the next run.
    feeds.routes["/f.xml"] = Route(rss([today, old, raw_item("old2020", pub(ARCHIVE - timedelta(days=365)))]),
                                   etag='"e2"')
    second = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert second.returncode == 1
    assert "rejected by the API: https://www.example-news.test/old2020" in second.stderr
    assert "0 sent (0 new, 0 already known), 1 rejected, 0 left for the next run, 0 skipped; rejected: " \
        "1 too_old (older than the service's retention window" in second.stdout
    feeds.routes["/f.xml"].etag = '"e3"'
    posts = len(api.recorder.posts)
    third = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert third.returncode == 0, third.stderr
    assert len(api.recorder.posts) == posts and "3 items, 0 new" in third.stderr
    assert [a["url"] for a in stored_articles(store).values()] == ["https://www.example-news.test/today"]


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["whole request", "per item"])
def test_a_full_queue_leaves_the_items_for_the_next_run(where, feeds, fake_api, tmp_path):
    def busy(articles: list[dict]) -> tuple[int, dict, dict]:
        if where == "whole request":
            return 503, QUEUE_FULL, {"Retry-After": "7"}
        answer = accept_all(articles)
        answer["results"][-1] = {"index": len(articles) - 1, "error": QUEUE_FULL["error"]}
        return 202, answer, {"Retry-After": "7"}
    fake_api.respond = busy
    feeds.routes["/f.xml"] = Route(rss([raw_item(f"q{n}", pub(NOW - timedelta(hours=n))) for n in range(3)]),
                                   etag='"same"')
    state = tmp_path / "state.json"
    first = run_import("--batch-size", "2", feeds.url("/f.xml"), api=fake_api.url, state=state)
    assert first.returncode == 1
    assert "Retry-After: 7" in first.stderr and "rejected by the API" not in first.stderr
    if where == "whole request":
        assert "error: the API's queue is full (HTTP 503 queue_full: 5000 articles are waiting" in first.stderr
        assert "the items stay unsent and are posted next run" in first.stderr
        assert "0 sent (0 new, 0 already known), 0 rejected, 3 left for the next run" in first.stdout
        assert not state_items(state, feeds.url("/f.xml"))
    else:
        # The oldest two went in one batch; the API took one and could not take the other now: posting stops
        # (backpressure), the item it did not take and the one not yet sent wait for the next run.
        assert len(fake_api.posts) == 1
        assert "error: the API could not take 1 item now (queue_full: 5000 articles" in first.stderr
        assert "they and the 1 not yet sent stay unsent and are posted next run" in first.stderr
        assert "1 sent (1 new, 0 already known), 0 rejected, 2 left for the next run" in first.stdout
        assert [i["article"] for i in state_items(state, feeds.url("/f.xml")).values()] == ["a_q2"]
    assert feed_states(state)[feeds.url("/f.xml")]["etag"] is None  # no 304 hides them
    fake_api.respond = lambda articles: (202, accept_all(articles), {})
    later = run_import(feeds.url("/f.xml"), api=fake_api.url, state=state)
    assert later.returncode == 0, later.stderr
    assert feeds.statuses("/f.xml") == [200, 200]
    assert sorted(i["article"] for i in state_items(state, feeds.url("/f.xml")).values()) == ["a_q0", "a_q1", "a_q2"]
    assert all(i["status"] == "sent" for i in state_items(state, feeds.url("/f.xml")).values())


@pytest.mark.e2e
def test_batches_follow_batch_size_and_a_too_large_batch_is_split(feeds, redis_url, settings, store, tmp_path):
    items = [rss_item(f"b{n}", f"Batch item {n}", f"https://www.example-news.test/b{n}", NOW - timedelta(hours=n),
                      f"Item {n}. " + "word " * 240) for n in range(6)]
    items.append(rss_item("huge", "Huge item", "https://www.example-news.test/huge", NOW, "word " * 1200))
    feeds.routes["/f.xml"] = Route(rss(items))
    app = build_app(redis_url, settings, MAX_CONTENT_LENGTH=4000)
    with serve(app) as small_api:
        result = run_import("--batch-size", "4", feeds.url("/f.xml"), api=small_api.url, state=tmp_path / "s.json")
    assert result.returncode == 1  # the huge item alone is too large for this API
    assert "rejected by the API: https://www.example-news.test/huge" in result.stderr
    assert "4000 bytes" in result.stderr
    posts = small_api.recorder.posts
    assert [len(p["articles"]) for p in posts if p["status"] == 413][0] == 4    # halved after a 413
    assert max(len(p["articles"]) for p in posts if p["status"] == 202) <= 2
    assert len(stored_articles(store)) == 6 and "6 sent (6 new, 0 already known), 1 rejected" in result.stdout


@pytest.mark.e2e
def test_large_articles_go_in_requests_of_at_most_4_mib(feeds, api, store, tmp_path):
    items = [rss_item(f"big{n}", f"Long read {n}", f"https://www.example-news.test/long/{n}",
                      NOW - timedelta(hours=n), f"Part {n}. " + "text " * 39_000) for n in range(25)]
    feeds.routes["/f.xml"] = Route(rss(items))
    result = run_import(feeds.url("/f.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    posts = api.recorder.posts
    assert len(posts) == 2 and all(p["status"] == 202 for p in posts)   # 25 items, under 100 a batch
    assert max(p["bytes"] for p in posts) <= 4 * 1024 * 1024 < sum(p["bytes"] for p in posts)
    assert len(stored_articles(store)) == 25


# ---------------------------------------------------------------- broken feeds
def _bomb_route(_: Path) -> Route:
    return Route(b"<rss>" + b" " * 3_000_000, gzip=True)


def _path_route(tmp_path: Path) -> Route:
    """A body that is the path of a good feed on this machine: it must be parsed, never opened."""
    local = tmp_path / "local-feed.xml"
    local.write_bytes(rss(wire_items("local", 2, NOW)))
    return Route(str(local).encode(), content_type="text/plain")


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
                  + "".join(f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">' for n in range(8))
                  + ']><rss version="2.0"><channel><title>x</title><item><title>&i;</title>'
                  '<link>https://bomb.test/1</link></item></channel></rss>').encode()
HTML_PAGE = b"<!DOCTYPE html><html><body><p>News!</p></body></html>"
NOT_A_FEED = b'<?xml version="1.0"?><note><to>you</to></note>'

BROKEN_ROUTES: dict[str, tuple[Callable[[Path], Route], str]] = {
    "malformed XML": (lambda _: Route(rss(wire_items("m", 3, NOW))[:-40]),
                      "ends before its root element closes (line 1"),
    "HTTP 404": (lambda _: Route(b"gone", 404, "text/plain"), "answered HTTP 404 Not Found; check the URL"),
    "HTTP 500": (lambda _: Route(b"oops", 500, "text/plain"), "answered HTTP 500"),
    "an HTML page": (lambda _: Route(HTML_PAGE, content_type="text/html"), "is an HTML page, not an RSS or Atom"),
    "an empty answer": (lambda _: Route(b""), "is empty"),
    "XML that is not a feed": (lambda _: Route(NOT_A_FEED, content_type="text/xml"), "is not an RSS or Atom feed"),
    "JSON": (lambda _: Route(b'{"items": []}', content_type="application/json"), "is not well-formed XML"),
    "a local path as the body": (_path_route, "is not well-formed XML"),
    "too large, declared": (lambda _: Route(rss(wire_items("big", 400, NOW))), "bytes, more than 20000; a feed"),
    "too large, undeclared": (lambda _: Route(rss(wire_items("big", 400, NOW)), send_length=False),
                              "is larger than 20000 bytes"),
    "a gzip bomb": (_bomb_route, "is larger than 20000 bytes"),
    "an entity bomb": (lambda _: Route(BILLION_LAUGHS), "declares XML entities and is not well-formed"),
    "no answer in time": (lambda _: Route(rss(wire_items("slow", 2, NOW)), delay=6), "did not answer within 2 s"),
    "a server that drips": (lambda _: Route(rss(wire_items("drip", 3, NOW)), drip=0.05),
                            "took longer than 2 s to download"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(BROKEN_ROUTES))
def test_a_broken_feed_fails_alone_and_is_read_once_repaired(kind, feeds, api, store, tmp_path):
    make_route, message = BROKEN_ROUTES[kind]
    feeds.routes["/good.xml"] = Route(rss(wire_items("good", 3, NOW - timedelta(days=1))))
    feeds.routes["/broken.xml"] = make_route(tmp_path)
    state = tmp_path / "state.json"
    result = run_import("--timeout", "2", "--max-feed-bytes", "20000", feeds.url("/good.xml"),
                        feeds.url("/broken.xml"), api=api.url, state=state)
    assert result.returncode == 1, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("[") and "error:" in line]
    assert f"] error: {feeds.url('/broken.xml')} " in error and message in error, result.stderr
    assert "1 feed could not be read" in result.stderr and "1 read, 1 failed; articles: 3 sent" in result.stdout
    assert len(stored_articles(store)) == 3  # the good feed's items went through
    assert not state_items(state, feeds.url("/broken.xml"))
    # Once the server serves a proper feed again, its items are imported.
    feeds.routes["/broken.xml"] = Route(rss(wire_items("fixed", 2, NOW - timedelta(hours=5))))
    again = run_import(feeds.url("/good.xml"), feeds.url("/broken.xml"), api=api.url, state=state)
    assert again.returncode == 0, again.stderr
    assert len(stored_articles(store)) == 5


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["a missing file", "a directory", "a refused connection"])
def test_an_unreadable_feed_location_fails_alone(kind, feeds, api, store, tmp_path):
    feeds.routes["/good.xml"] = Route(rss(wire_items("good", 2, NOW - timedelta(days=1))))
    location, message = {
        "a missing file": (str(tmp_path / "missing.xml"), "cannot be read (No such file or directory)"),
        "a directory": (str(tmp_path), "is a directory"),
        "a refused connection": (f"http://127.0.0.1:{free_port()}/feed.xml", "cannot be reached (Connection refused)"),
    }[kind]
    result = run_import(feeds.url("/good.xml"), location, api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 1
    assert f"error: {location} {message}" in result.stderr
    assert len(stored_articles(store)) == 2


@pytest.mark.parametrize(("where", "message"), [("headers", "did not answer within 1 s; it is tried again next run"),
                                                ("body", "took longer than 1 s to download")])
@pytest.mark.e2e
def test_a_server_that_drips_a_byte_at_a_time_is_given_up_on_at_the_timeout(where, message, feeds, api, store,
                                                                            tmp_path):
    """A byte every 0.1 s never trips a per-read timeout: the whole download (connect, headers, body) has one
    deadline, so the run, and the state file's lock it holds, ends on time."""
    feeds.routes["/good.xml"] = Route(rss(wire_items("good", 2, NOW - timedelta(days=1))))
    feeds.routes["/drip.xml"] = (Route(drip_head=0.1) if where == "headers"
                                 else Route(b"<rss>" + b" " * 300, drip=0.1, send_length=False))
    started = time.monotonic()
    result = run_import("--timeout", "1", feeds.url("/good.xml"), feeds.url("/drip.xml"), api=api.url,
                        state=tmp_path / "state.json", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"] error: {feeds.url('/drip.xml')} {message}" in result.stderr, result.stderr
    assert elapsed < 15, f"the run took {elapsed:.0f} s"   # generous: an interpreter's start, then 1 s
    assert len(stored_articles(store)) == 2


@pytest.fixture
def tls_feeds(tmp_path) -> Iterator[tuple[FeedServer, Path]]:
    """Feeds over HTTPS on localhost, and the certificate the importer must trust (its SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server = FeedServer(tls=(cert, key))
    yield server, cert
    server.close()


@pytest.mark.e2e
def test_a_feed_over_https_is_read_and_kept_to_the_deadline(tls_feeds, api, store, tmp_path):
    feeds, cert = tls_feeds
    feeds.routes["/f.xml"] = Route(rss(wire_items("tls", 2, NOW - timedelta(days=1))))
    feeds.routes["/drip.xml"] = Route(drip_head=0.1)
    started = time.monotonic()
    result = run_import("--timeout", "1", feeds.url("/f.xml"), feeds.url("/drip.xml"), api=api.url,
                        state=tmp_path / "state.json", env={"SSL_CERT_FILE": str(cert)}, timeout=60)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert f"] error: {feeds.url('/drip.xml')} did not answer within 1 s" in result.stderr, result.stderr
    assert len(stored_articles(store)) == 2


# feedparser's forgiving parser reads a bare "&T" as an entity reference and closes it: what it recovers.
@pytest.mark.e2e
@pytest.mark.parametrize(("entity", "title"), [(b"&nbsp;", "n headline\xa0zero"), (b" AT&T ", "n headline AT&T; zero")])
def test_a_complete_feed_that_is_not_well_formed_is_imported_with_a_warning(feeds, api, store, tmp_path, entity,
                                                                               title):
    body = rss(wire_items("n", 2, NOW - timedelta(hours=4))).replace(b"headline number 0",
                                                                     b"headline" + entity + b"zero")
    feeds.routes["/nbsp.xml"] = Route(body)
    result = run_import(feeds.url("/nbsp.xml"), api=api.url, state=tmp_path / "state.json")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "imported what the lenient parser recovered" in result.stderr
    titles = sorted(a["title"] for a in stored_articles(store).values())
    assert titles == sorted(["n headline number 1", title])


@pytest.mark.e2e
def test_lenient_imports_what_a_forgiving_parser_recovers_from_a_cut_off_feed(feeds, api, store, tmp_path):
    body = rss(wire_items("c", 3, NOW - timedelta(hours=4)))
    feeds.routes["/cut.xml"] = Route(body[:body.rindex(b"</item>") + len(b"</item>")])
    state = tmp_path / "state.json"
    strict = run_import(feeds.url("/cut.xml"), api=api.url, state=state)
    assert strict.returncode == 1 and "ends before its root element closes" in strict.stderr
    assert "--lenient" in strict.stderr and not stored_articles(store)
    lenient = run_import("--lenient", feeds.url("/cut.xml"), api=api.url, state=state)
    assert lenient.returncode == 0, lenient.stderr
    assert "warning:" in lenient.stderr
    assert len(stored_articles(store)) == 3


# ---------------------------------------------------------------- the state file
BAD_STATES: dict[str, bytes] = {
    "not JSON": b"{not json",
    "empty": b"",
    "not UTF-8": b"\xff\xfe\x00\x81garbage",
    "a list": b"[]",
    "another version": b'{"version": 3, "apis": {}}',
    "version 2 laid out as version 1": b'{"version": 2, "feeds": {}}',
    "apis not an object": b'{"version": 2, "apis": ["http://127.0.0.1:8000"]}',
    "a bad item under an API": b'{"version": 2, "apis": {"http://127.0.0.1:8000": {"feeds": {"http://x.test/f": '
                               b'{"items": {"k": {"status": "maybe", "seen": "2026-01-01T00:00:00Z"}}}}}}}',
    "a bad item": b'{"version": 1, "feeds": {"http://x.test/f": {"items": {"k": {"status": "maybe", '
                  b'"seen": "2026-01-01T00:00:00Z"}}}}}',
    "a bad date": b'{"version": 1, "feeds": {"http://x.test/f": {"items": {"k": {"status": "sent", '
                  b'"seen": "yesterday"}}}}}',
    "a date without a zone": b'{"version": 1, "feeds": {"http://x.test/f": {"items": {"k": {"status": "sent", '
                             b'"seen": "2026-01-01T00:00:00"}}}}}',
    "feeds not an object": b'{"version": 1, "feeds": ["http://x.test/f"]}',
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(BAD_STATES))
def test_a_bad_state_file_stops_before_anything_is_fetched_and_is_kept(kind, feeds, api, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("s", 2, NOW)))
    state = tmp_path / "state.json"
    state.write_bytes(BAD_STATES[kind])
    result = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert result.returncode == 2
    assert f"error: the state file {state} is not a feed import state" in result.stderr
    assert "move it away to start afresh" in result.stderr
    assert state.read_bytes() == BAD_STATES[kind]
    assert not feeds.hits and not api.recorder.requests


@pytest.mark.e2e
def test_another_api_gets_a_state_of_its_own_in_the_same_file(feeds, api, fake_api, tmp_path):
    """What was sent is kept per API: pointed at another service, the importer sends it every item (and says
    why), and back at the first it sends nothing again."""
    feeds.routes["/f.xml"] = Route(rss(wire_items("two", 2, NOW - timedelta(days=1))))
    state = tmp_path / "state.json"
    first = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert first.returncode == 0 and len(api.recorder.accepted_articles()) == 2, first.stderr
    other = run_import(feeds.url("/f.xml"), api=fake_api.url, state=state)
    assert other.returncode == 0, other.stderr
    assert [len(batch) for batch in fake_api.posts] == [2] and "articles: 2 sent" in other.stdout
    assert (f"the state file {state} has no record of the API at {fake_api.url}: every item is new to it (what "
            f"was sent to {api.url} is kept apart)") in other.stderr
    back = run_import(feeds.url("/f.xml"), api=api.url + "/", state=state)   # the same API, a trailing slash
    assert back.returncode == 0, back.stderr
    assert "no record" not in back.stderr and "articles: 0 sent" in back.stdout and len(api.recorder.posts) == 1
    assert sorted(json.loads(state.read_text())["apis"]) == sorted([api.url, fake_api.url])
    assert len(state_items(state, feeds.url("/f.xml"), api.url)) == 2
    assert len(state_items(state, feeds.url("/f.xml"), fake_api.url)) == 2


@pytest.mark.e2e
def test_a_state_file_written_before_states_were_kept_per_api_is_the_runs_apis(feeds, api, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("v1", 2, NOW - timedelta(days=1))))
    state = tmp_path / "state.json"
    assert run_import(feeds.url("/f.xml"), api=api.url, state=state).returncode == 0
    state.write_text(json.dumps({"version": 1, "feeds": feed_states(state)}))  # as the earlier importer wrote it
    result = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert result.returncode == 0, result.stderr
    assert (f"the state file {state} names no API (it was written by an earlier importer): what it records is "
            f"taken as sent to {api.url}") in result.stderr
    assert len(api.recorder.posts) == 1 and "articles: 0 sent" in result.stdout
    assert json.loads(state.read_text())["version"] == 2 and len(state_items(state, feeds.url("/f.xml"))) == 2


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["a directory", "under a file"])
def test_an_unusable_state_path_stops_before_anything_is_fetched(kind, feeds, api, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("s", 2, NOW)))
    if kind == "a directory":
        state, message = tmp_path, "is a directory; pass --state with a file's path"
    else:
        (tmp_path / "plain").write_text("x")
        state, message = tmp_path / "plain" / "state.json", "pass --state with a path in a writable directory"
    result = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert result.returncode == 2 and message in result.stderr
    assert not feeds.hits and not api.recorder.requests


@pytest.mark.e2e
def test_a_second_import_with_the_same_state_waits_its_turn(feeds, api, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("l", 2, NOW)))
    state = tmp_path / "state.json"
    with open(tmp_path / "state.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        blocked = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert blocked.returncode == 2 and "another import is running" in blocked.stderr
    assert not feeds.hits and not state.exists()
    free = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert free.returncode == 0, free.stderr


# ---------------------------------------------------------------- the API refusing or away
@pytest.mark.e2e
def test_a_missing_or_wrong_key_leaves_the_items_for_the_next_run(feeds, redis_url, settings, store, tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("k", 3, NOW - timedelta(days=1))), etag='"same"')
    state = tmp_path / "state.json"
    wrong = "wrong-key-0123456789abcdefgh"
    with serve(build_app(redis_url, settings, STORYWIRE_API_KEY=API_KEY)) as keyed:
        missing = run_import(feeds.url("/f.xml"), api=keyed.url, state=state)
        refused = run_import("--api-key", wrong, feeds.url("/f.xml"), api=keyed.url, state=state)
        for result in (missing, refused):
            assert result.returncode == 1
            assert "the API refused the key (HTTP 401" in result.stderr and "STORYWIRE_API_KEY" in result.stderr
            assert "0 sent (0 new, 0 already known), 0 rejected, 3 left for the next run" in result.stdout
        assert wrong not in refused.stderr + refused.stdout
        assert not stored_articles(store) and not state_items(state, feeds.url("/f.xml"))
        assert feed_states(state)[feeds.url("/f.xml")]["etag"] is None
        accepted = run_import(feeds.url("/f.xml"), api=keyed.url, state=state, env={"STORYWIRE_API_KEY": API_KEY})
    assert accepted.returncode == 0, accepted.stderr
    assert feeds.statuses("/f.xml") == [200, 200, 200]  # no ETag was kept while items waited
    assert len(stored_articles(store)) == 3 and API_KEY not in accepted.stderr + accepted.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_the_api_key_is_never_sent_where_an_api_redirect_points(code, feeds, api, fake_api, tmp_path):
    """The importer posts to --api only. A redirect from it, here to the real API on another port (another
    origin), is reported with where it points and not followed, so the key never reaches that host."""
    target = f"{api.url}/v1/articles/batch"
    fake_api.respond = lambda articles: (code, {}, {"Location": target})
    feeds.routes["/f.xml"] = Route(rss(wire_items("rd", 2, NOW - timedelta(days=1))))
    state = tmp_path / "state.json"
    result = run_import(feeds.url("/f.xml"), api=fake_api.url, state=state, env={"STORYWIRE_API_KEY": API_KEY})
    assert result.returncode == 1
    assert (f"error: the API at {fake_api.url} answered HTTP {code}, a redirect to {target}; it is not followed, so "
            "the key is sent only to --api: if the service has moved there, pass that address as --api; the items "
            "stay unsent and are posted next run") in result.stderr
    assert "2 left for the next run" in result.stdout and API_KEY not in result.stderr + result.stdout
    assert not api.recorder.requests    # nothing reached the other origin: no key, no articles
    assert len(fake_api.posts) == 1 and not state_items(state, feeds.url("/f.xml"))


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["nothing listening", "its Redis down", "a wrong path"])
def test_an_unavailable_api_leaves_the_items_for_the_next_run(kind, feeds, api, redis_url, settings, store,
                                                               tmp_path):
    feeds.routes["/f.xml"] = Route(rss(wire_items("u", 3, NOW - timedelta(days=1))), etag='"same"')
    state = tmp_path / "state.json"
    if kind == "nothing listening":
        result = run_import(feeds.url("/f.xml"), api=f"http://127.0.0.1:{free_port()}", state=state)
        message = "cannot reach the API at"
    elif kind == "its Redis down":
        with serve(build_app(f"redis://127.0.0.1:{free_port()}/0", settings)) as broken:
            result = run_import(feeds.url("/f.xml"), api=broken.url, state=state)
        message = "the API answered HTTP 503: The store is unavailable"
    else:
        result = run_import(feeds.url("/f.xml"), api=api.url + "/nowhere", state=state)
        message = "there is no Storywire batch endpoint at"
    assert result.returncode == 1
    assert message in result.stderr and "the items stay unsent and are posted next run" in result.stderr
    assert "3 left for the next run" in result.stdout
    assert not stored_articles(store) and not state_items(state, feeds.url("/f.xml"))
    later = run_import(feeds.url("/f.xml"), api=api.url, state=state)
    assert later.returncode == 0, later.stderr
    assert len(stored_articles(store)) == 3


# ---------------------------------------------------------------- the command line
BAD_COMMAND_LINES: dict[str, tuple[list[str], str]] = {
    "no feed": ([], "the following arguments are required: FEED"),
    "an ftp feed": (["ftp://feeds.test/f.xml"], "only http:// and https:// feed URLs"),
    "a URL without a host": (["http:///f.xml"], "is not a valid URL"),
    "a URL with a space": (["http://feeds.test/a feed.xml"], "is not a valid URL"),
    "a bad port": (["http://feeds.test:99999/f.xml"], "has an invalid port"),
    "a broken IPv6 host": (["http://[::1/f.xml"], "is not a valid URL"),
    "an API with a broken host": (["--api", "http://[::1", "f.xml"], "--api must be"),
    "an empty feed": ([""], "a FEED is empty"),
    "an ftp API": (["--api", "ftp://127.0.0.1/", "f.xml"], "--api must be the service's http(s) base URL"),
    "an API with a query": (["--api", "http://127.0.0.1:8000/?x=1", "f.xml"], "--api must be"),
    "batch size 0": (["--batch-size", "0", "f.xml"], "--batch-size must be more than 0 and at most 500"),
    "batch size 501": (["--batch-size", "501", "f.xml"], "--batch-size must be more than 0 and at most 500"),
    "batch size not a number": (["--batch-size", "many", "f.xml"], "--batch-size must be a number"),
    "timeout 0": (["--timeout", "0", "f.xml"], "--timeout must be more than 0"),
    "timeout NaN": (["--timeout", "nan", "f.xml"], "--timeout must be more than 0"),
    "timeout negative": (["--timeout=-1", "f.xml"], "--timeout must be more than 0"),
    "max bytes 0": (["--max-feed-bytes", "0", "f.xml"], "--max-feed-bytes must be more than 0"),
    "an empty key": (["--api-key", "", "f.xml"], "--api-key is empty"),
    "a key with a space": (["--api-key", "secret key-0123456789", "f.xml"], "the API key holds spaces"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(BAD_COMMAND_LINES))
def test_a_bad_command_line_is_refused_before_anything_runs(kind, tmp_path):
    args, message = BAD_COMMAND_LINES[kind]
    result = run_import(*args, state=tmp_path / "state.json", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "secret key" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no state, no lock file


@pytest.mark.e2e
def test_a_key_with_a_newline_in_the_environment_is_refused(tmp_path):
    result = run_import("f.xml", state=tmp_path / "s.json", env={"STORYWIRE_API_KEY": "abc\r\nX-Evil: 1"})
    assert result.returncode == 2 and "the API key holds spaces, control" in result.stderr
    assert "X-Evil" not in result.stderr


# ---------------------------------------------------------------- end to end, with a real worker
@pytest.mark.e2e
def test_a_worker_decides_what_two_feeds_sent(feeds, e2e_app, tmp_path):
    """Two outlets carry the same wire report: the worker folds the later copy under the earlier one."""
    wire = ("Firefighters contained a large wildfire near the northern town of Arden on Tuesday after three days, "
            "officials said, and about two thousand residents were allowed to return to their homes. The fire "
            "burned across twelve thousand acres of forest and destroyed fourteen buildings, according to the "
            "regional fire service, which said cooler weather and rain helped crews hold the line overnight.")
    feeds.routes["/a.xml"] = Route(rss([rss_item("a1", "Wildfire near Arden contained", "https://outlet-a.test/fire",
                                                 NOW - timedelta(hours=6), wire)], link="https://outlet-a.test/"))
    feeds.routes["/b.xml"] = Route(atom([atom_entry("b1", "Arden fire under control", "https://outlet-b.test/fire",
                                                    NOW - timedelta(hours=5), content=f"<p>{wire}</p>")],
                                        link="https://outlet-b.test/"), content_type="application/atom+xml")
    state = tmp_path / "state.json"
    with serve(e2e_app) as served:
        result = run_import(feeds.url("/a.xml"), feeds.url("/b.xml"), api=served.url, state=state)
    assert result.returncode == 0, result.stderr
    first = next(iter(state_items(state, feeds.url("/a.xml")).values()))["article"]
    copy = next(iter(state_items(state, feeds.url("/b.xml")).values()))["article"]
    store = e2e_app.extensions["storywire"].store
    deadline = time.monotonic() + 60
    while {store.get_article(i)["status"] for i in (first, copy)} != {"processed"}:
        assert time.monotonic() < deadline, "the worker did not process the feed's articles in 60 s"
        time.sleep(0.2)
    copy_article = store.get_article(copy)
    assert copy_article["duplicate_of"] == first
    assert copy_article["story"] == store.get_article(first)["story"]


# ---------------------------------------------------------------- the patterns run in linear time
# The worst inputs that can be built for each pattern of the importer: long runs that almost match, so a
# backtracking engine with nested or overlapping quantifiers would retry every start and every split of them.
LONG = 200_000
WORST_INPUTS: dict[str, list] = {
    "_LANGUAGE": ["a" * LONG, "ab" + "-abcdefgh" * (LONG // 9) + "!", "ab" + "-abcdefghi" * (LONG // 10),
                  "ab" + "-a" * (LONG // 2), "ab-" * (LONG // 3)],
    "_CONTROL": ["\x01" * LONG, "a" * LONG],
    "SPACE_OR_CONTROL": [" " * LONG, "a" * LONG],
    "_COMPLETE": [b"</" + b"a" * LONG, b"</" * (LONG // 2), b"</a:" * (LONG // 4), b"</rss" + b" " * LONG + b"x",
                  b"</rss>" + b" " * LONG + b"x", (b"</" + b"a." * 50) * (LONG // 102), b"</rss>" * (LONG // 6) + b"x",
                  b"</" + b"rss" * (LONG // 3)],
}


def test_every_pattern_runs_in_linear_time_on_its_worst_inputs():
    modules = [importlib.import_module(f"importer.{m.name}") for m in pkgutil.iter_modules(importer.__path__)]
    patterns = {name: value for module in modules for name, value in vars(module).items()
                if isinstance(value, re.Pattern)}
    assert set(patterns) == set(WORST_INPUTS), "give each pattern of the importer its worst inputs here"
    for name, inputs in WORST_INPUTS.items():
        pattern = patterns[name]
        for text in inputs:
            started = time.perf_counter()
            pattern.search(text)
            pattern.match(text)
            pattern.findall(text)
            took = time.perf_counter() - started
            assert took < 1.0, f"{name} took {took:.1f} s on {text[:12]!r}... ({len(text)} characters)"
