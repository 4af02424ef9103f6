"""Property-based tests of the request schemas through the HTTP layer, on a real Redis.

For arbitrary JSON, arbitrary article-shaped objects, random strings in every
field, random query strings and random article ids:

- the API never answers 5xx;
- every 4xx is the one JSON error envelope with an actionable message;
- a refused write stores nothing and enqueues nothing;
- every accepted article (202, or 200 when already known) can be read back by its id;
- markup is stored as text: a script in a title or body never survives into a
  stored field or a response.
"""
from __future__ import annotations

import base64
import json
import os
import re
import string
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis.control import currently_in_test_context
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from storyengine.articles import new_article_record
from storyengine.decider import Decider
from storyengine.text import looks_like_html
from tests.helpers import snapshot
from tests.service.envelope import assert_error
from workers import names

# Deterministic and quick by default (the file runs in a few seconds); for a longer,
# random hunt: STORYWIRE_PROPERTY_EXAMPLES=2000 pytest tests/service/test_schema_properties.py
_HUNT = int(os.environ.get("STORYWIRE_PROPERTY_EXAMPLES", "0"))
PROPERTY = hsettings(max_examples=_HUNT or 60, deadline=None, derandomize=not _HUNT, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = hsettings(PROPERTY, max_examples=_HUNT or 30)

FIELDS = ("source", "url", "title", "body", "published_at", "id", "language")
PAYLOAD = "<script>alert(1)</script>"

# ---------------------------------------------------------------- strategies
# Characters JSON can carry, biased towards the awkward ones: control
# characters, lone surrogates (legal as \\uXXXX escapes), separators, BOM.
AWKWARD = ["\x00", "\x01", "\x08", "\t", "\n", "\r", "\x0b", "\x1b", "\x1f", "\x7f", "\x85", "\u00a0", "\u2028",
           "\u200b", "\ufeff", "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "<", ">", "&", '"', "\\", "/",
           "%", "?", "#", " "]
any_char = st.one_of(st.characters(exclude_categories=[]), st.sampled_from(AWKWARD))
any_text = st.text(alphabet=any_char, max_size=40)
# What can travel in a URL (no lone surrogates: they cannot be UTF-8 encoded).
url_char = st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from([c for c in AWKWARD
                                                                                if not "\ud800" <= c <= "\udfff"]))
url_text = st.text(alphabet=url_char, max_size=40)

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                        st.floats(), any_text)
json_value = st.recursive(json_scalar, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)), max_leaves=12)

offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(min_value=-1439, max_value=1439))
datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                         timezones=st.one_of(st.none(), offsets))
timestamps = st.one_of(
    datetimes.map(lambda d: d.isoformat()),
    datetimes.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z"),
    st.sampled_from(["", " ", "Z", "now", "2024-02-30T00:00:00Z", "2024-01-01", "2024-01-01T25:00:00Z",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1899-12-31T23:59:59Z",
                     "2024-01-01T00:00:00ZZ", "2024-01-01T00:00:00+99:00", "1e10", "-1", "2024-01-01T00:00:00z"]),
    url_text)

PLAUSIBLE = {
    "source": st.one_of(st.sampled_from(["reuters.com", "ap.org", " bbc.co.uk ", "x" * 200, "x" * 201]),
                        st.text(min_size=1, max_size=30)),
    "url": st.one_of(
        st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
                  st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript", "", "http:"]),
                  st.one_of(st.from_regex(r"[a-z0-9\-\.]{1,20}(:[0-9]{0,6})?", fullmatch=True),
                            st.sampled_from(["[::1]", "[::1", "user:pw@h.example", "h.example:99999", "", "h_x"])),
                  url_text),
        st.sampled_from(["https://e.example/" + "a" * 2040, "https://e.example/" + "a" * 2050, "javascript:alert(1)",
                         "//e.example/x", "https://e.example/a b", "https://e.example/\x00"])),
    "title": st.one_of(st.text(max_size=40), st.sampled_from(["<b></b>", "<p> </p>", "  ", "t" * 1000, "t" * 1001,
                                                              "<em>Harbour</em> reopens"])),
    "body": st.one_of(st.text(max_size=80), st.sampled_from(["<html><body><p>x</p></body></html>", "x<y and y>z"])),
    "published_at": timestamps,
    "id": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~:\-]{0,20}", fullmatch=True),
                    st.sampled_from(["", "-lead", ".hidden", "a" * 128, "a" * 129, "a/b", "a b", "*", "a?b"])),
    "language": st.one_of(st.from_regex(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True),
                          st.sampled_from(["", "e", "english", "en_US", "en-", "pt-BR"])),
}


def field_value(name: str):
    return st.one_of(PLAUSIBLE[name], any_text, json_value)


def valid_article(slug: str) -> dict:
    return {"source": "props.example", "url": f"https://props.example/n/{slug}",
            "title": f"Ferry service resumes after the storm {slug}",
            "body": "The ferry service resumed on Wednesday after the storm passed, the operator said.",
            "published_at": "2024-05-01T09:30:00Z"}


@st.composite
def articles(draw):
    """Mostly a valid article with some fields replaced, removed or added to."""
    article = valid_article(draw(st.uuids()).hex[:12])
    if draw(st.booleans()):
        article.pop("published_at")
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            article.pop(name, None)
        else:
            article[name] = draw(field_value(name))
    extra = draw(st.dictionaries(any_text, json_value, max_size=2)) if draw(st.integers(0, 4)) == 0 else {}
    article.update(extra)
    return article


@st.composite
def known_key_dicts(draw):
    """Dicts whose keys are a random mix of the known fields and random names,
    with arbitrary JSON values."""
    keys = draw(st.lists(st.one_of(st.sampled_from(FIELDS), any_text), max_size=9, unique=True))
    return {k: draw(json_value) for k in keys}


def encode(value, mode: str) -> bytes:
    if mode == "ascii":
        return json.dumps(value).encode()
    # Raw UTF-8: a lone surrogate cannot be encoded, so it goes out as invalid bytes.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- checks
class Api:
    def __init__(self, client, redis_client, settings):
        self.client, self.redis, self.prefix = client, redis_client, settings.key_prefix

    def state(self):
        return snapshot(self.redis, self.prefix), self.redis.llen(names.QUEUE)

    def post(self, path: str, data: bytes, content_type: str = "application/json"):
        before = self.state()
        resp = self.client.post(path, data=data, content_type=content_type)
        if currently_in_test_context():
            event(f"POST {path} -> {resp.status_code}")  # see --hypothesis-show-statistics
        assert resp.status_code < 500, resp.get_data(as_text=True)
        if 400 <= resp.status_code < 500:
            assert_error(resp, resp.status_code)
            assert self.state() == before, f"a {resp.status_code} answer stored or enqueued something"
        else:
            assert resp.status_code in (200, 202), resp.status_code
            body = resp.get_json()
            results = body["results"] if path.endswith("/batch") else [body]
            accepted = [r for r in results if "id" in r]
            if path.endswith("/batch"):
                assert body["accepted"] == len(accepted) and body["rejected"] == len(results) - len(accepted)
                assert [r["index"] for r in results] == list(range(len(results)))
                for r in results:
                    if "id" not in r:
                        assert set(r["error"]) == {"status", "code", "message", "details"}
                        assert 400 <= r["error"]["status"] < 500 and r["error"]["message"]
            for r in accepted:
                self.assert_readable(r["id"])
        return resp

    def assert_readable(self, article_id: str):
        got = self.client.get(f"/v1/articles/{quote(article_id, safe='')}")
        assert got.status_code == 200, (article_id, got.get_data(as_text=True))
        assert got.get_json()["id"] == article_id

    def get(self, url: str):
        resp = self.client.get(url)
        route = url.split("?")[0]
        event(f"GET {'/v1/articles/<id>' if route.startswith('/v1/articles/') else route} -> {resp.status_code}")
        assert resp.status_code < 500, (url, resp.get_data(as_text=True))
        if 400 <= resp.status_code < 500:
            assert_error(resp, resp.status_code)
        return resp


@pytest.fixture
def api(client, redis_client, settings, store):  # store: clears the prefix afterwards
    return Api(client, redis_client, settings)


# ---------------------------------------------------------------- POST /v1/articles
@PROPERTY
@given(value=json_value, mode=st.sampled_from(["ascii", "utf8"]))
@example(value={"source": "a", "url": "https://a.example/\ud800", "title": "t"}, mode="ascii")
@example(value={"source": "a", "url": "https://a.example/\ud800", "title": "t"}, mode="utf8")
@example(value=float("nan"), mode="ascii")
@example(value=[[[[[]]]]], mode="ascii")
def test_arbitrary_json_never_breaks_a_post(api, value, mode):
    data = encode(value, mode)
    api.post("/v1/articles", data)
    api.post("/v1/articles/batch", data)


@PROPERTY
@given(value=known_key_dicts(), mode=st.sampled_from(["ascii", "utf8"]))
def test_dicts_with_random_and_known_keys(api, value, mode):
    api.post("/v1/articles", encode(value, mode))


@PROPERTY
@given(article=articles())
@example(article=dict(valid_article("sur"), title="Storm \ud800"))
@example(article=dict(valid_article("ctl"), source="wire\x00"))
@example(article=dict(valid_article("fut"), published_at="9999-12-31T23:59:59-14:00"))
@example(article=dict(valid_article("old"), published_at="0001-01-01T00:00:00+14:00"))
@example(article=dict(valid_article("ipv6"), url="https://[::1]:8443/x"))
@example(article=dict(valid_article("port"), url="https://e.example:99999/x"))
@example(article=dict(valid_article("ftp"), url="ftp://e.example/x"))
@example(article=dict(valid_article("js"), url="javascript:alert(1)"))
@example(article=dict(valid_article("space"), url="https://e.example/a b"))
@example(article=dict(valid_article("nohost"), url="https:///x"))
@example(article=dict(valid_article("lang"), language="english"))
@example(article=dict(valid_article("src"), source="s" * 201))
@example(article=dict(valid_article("when"), published_at="1899-12-31T23:59:59Z"))
def test_random_strings_in_each_field(api, article):
    resp = api.post("/v1/articles", encode(article, "ascii"))
    if resp.status_code == 202:
        view = api.client.get(resp.get_json()["status_url"]).get_json()
        assert view["status"] == "queued"
        assert view["source"] == article["source"].strip()
        assert_accepted_article_is_valid(view)


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def assert_accepted_article_is_valid(view: dict) -> None:
    """What the schema promises about anything it lets through, checked on the read-back view."""
    parts = urlsplit(view["url"])
    assert parts.scheme in ("http", "https") and parts.hostname, view["url"]
    assert not re.search(r"\s", view["url"]) and not CONTROL.search(view["url"]), view["url"]
    assert 1 <= len(view["source"]) <= 200 and view["source"] == view["source"].strip(), view["source"]
    assert view["title"] and not CONTROL.search(view["title"] + view["source"]), view["title"]
    assert view["language"] is None or re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", view["language"])
    if view["published_at"] is None:  # undated: it takes the stream's time when decided
        assert view["published_assigned"] is True and view["status"] == "queued"
    else:
        published = datetime.strptime(view["published_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert datetime(1900, 1, 1, tzinfo=timezone.utc) <= published <= datetime.now(timezone.utc) + timedelta(days=1)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._~:\-]{0,127}", view["id"]), view["id"]


@PROPERTY
@given(client_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~:\-]{0,127}", fullmatch=True))
@example(client_id="Feed-42:Item.7_x~Y")
@example(client_id="A" * 128)
def test_any_valid_client_id_round_trips(api, client_id):
    # A fresh URL each time: the same source and URL would be the same article, whatever its id.
    resp = api.post("/v1/articles", encode(dict(valid_article(uuid.uuid4().hex), id=client_id), "ascii"))
    assert resp.status_code in (200, 202), resp.get_data(as_text=True)
    body = resp.get_json()
    # Scoped by the outlet (c_…), and the client's own id comes back as sent (Api.post read it back by the id).
    assert body["id"].startswith("c_") and body["client_id"] == client_id


@FEW
@given(items=st.lists(st.one_of(articles(), json_value), min_size=1, max_size=6),
       wrap=st.sampled_from(["object", "list"]))
def test_batches_of_random_articles(api, items, wrap):
    payload = {"articles": items} if wrap == "object" else items
    api.post("/v1/articles/batch", encode(payload, "ascii"))


@FEW
@given(raw=st.one_of(st.binary(max_size=60), url_text.map(lambda t: t.encode())),
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                     "application/x-www-form-urlencoded", "", "application/JSON"]))
@example(raw=b"\xef\xbb\xbf{}", content_type="application/json")
@example(raw=b"1" * 5000, content_type="application/json")
@example(raw=b"[" * 5000, content_type="application/json")
def test_raw_bodies(api, raw, content_type):
    api.post("/v1/articles", raw, content_type)
    api.post("/v1/articles/batch", raw, content_type)


# ---------------------------------------------------------------- GET /v1/stories
STORY_PARAMS = ["sort", "limit", "since", "until", "min_sources", "cursor"]


@pytest.fixture
def seeded(api, store):
    """Three stories, so listings, filters and cursors have something to page."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    topics = [("Volcano erupts near fishing village", "Lava fountains burst from a fissure overnight and "
               "seismologists recorded thousands of tremors before the eruption near the harbour."),
              ("Cup final ends in penalty shootout", "The second-division club won the cup on penalties after "
               "a goalless draw as the goalkeeper saved three spot kicks in the stadium."),
              ("Regulator approves malaria vaccine", "The medicines regulator approved a malaria vaccine for "
               "infants after trials showed it cut hospital admissions by half across clinics.")]
    records = [new_article_record(source="seed.example", url=f"https://seed.example/{i}", title=t, body=b,
                                  published_at=now - timedelta(hours=i + 1)) for i, (t, b) in enumerate(topics)]
    store.accept_articles(records)
    decider = Decider(store)
    story_ids = [decider.process(r["id"]).story_id for r in records]
    return api, story_ids


def cursor_for(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


story_id_like = st.one_of(st.from_regex(r"st_[0-9a-f]{16}", fullmatch=True), st.text(max_size=20))
cursors = st.one_of(
    url_text,
    st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.builds(lambda o, s, i: cursor_for({"o": o, "s": s, "i": i}),
              st.one_of(st.sampled_from(["recent", "size"]), json_value),
              st.one_of(st.floats(), st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 310),
                        json_value),
              st.one_of(story_id_like, json_value)),
    json_value.map(cursor_for),
)
param_values = {
    "sort": st.one_of(st.sampled_from(["recent", "size", "RECENT", "", "size "]), url_text),
    "limit": st.one_of(st.integers(-5, 200).map(str), st.sampled_from(["", "1e3", "0x10", "10.0", "9" * 30]), url_text),
    "min_sources": st.one_of(st.integers(-5, 20000).map(str), st.sampled_from(["", "1.5", "9" * 30]), url_text),
    "since": timestamps,
    "until": timestamps,
    "cursor": cursors,
}
sane_times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                          timezones=st.one_of(st.none(), offsets)).map(lambda d: d.isoformat())
sane_values = {
    "sort": st.sampled_from(["recent", "size"]),
    "limit": st.integers(1, 100).map(str),
    "min_sources": st.integers(1, 4).map(str),
    "since": sane_times,
    "until": sane_times,
    "cursor": st.builds(lambda o, s, i: cursor_for({"o": o, "s": s, "i": i}), st.sampled_from(["recent", "size"]),
                        st.floats(allow_nan=False), st.from_regex(r"st_[0-9a-f]{16}", fullmatch=True)),
}
query_pairs = st.one_of(
    # well-formed queries: each known parameter at most once, with a plausible value
    st.lists(st.sampled_from(STORY_PARAMS), max_size=6, unique=True).flatmap(
        lambda ks: st.tuples(*[st.tuples(st.just(k), sane_values[k]) for k in ks]).map(list)),
    # anything: repeated, unknown and badly valued parameters
    st.lists(st.one_of(st.sampled_from(STORY_PARAMS).flatmap(lambda k: st.tuples(st.just(k), param_values[k])),
                       st.tuples(url_text, url_text)), max_size=6),
)


@PROPERTY
@given(pairs=query_pairs)
@example(pairs=[("cursor", cursor_for({"o": "recent", "s": float("inf"), "i": "st_0123456789abcdef"}))])
@example(pairs=[("cursor", cursor_for({"o": "recent", "s": float("-inf"), "i": "st_0123456789abcdef"}))])
@example(pairs=[("cursor", cursor_for({"o": "size", "s": 10 ** 309, "i": "st_0123456789abcdef"})),
                ("sort", "size")])
@example(pairs=[("since", "0001-01-01T00:00:00+14:00")])
@example(pairs=[("until", "9999-12-31T23:59:59-14:00"), ("since", "1900-01-01T00:00:00Z")])
@example(pairs=[("limit", "100"), ("limit", "1")])
def test_random_story_queries(seeded, pairs):
    api, _ = seeded
    resp = api.get("/v1/stories?" + urlencode(pairs))
    if resp.status_code == 200:
        body = resp.get_json()
        assert set(body) == {"stories", "next_cursor"}
        assert isinstance(body["stories"], list)
        assert body["next_cursor"] is None or isinstance(body["next_cursor"], str)
    else:
        assert resp.status_code == 400, resp.status_code


@FEW
@given(raw=st.one_of(st.binary(max_size=60).map(lambda b: quote(b, safe="=&")),
                     st.text(alphabet=string.printable.replace("#", ""), max_size=60)))
@example(raw="%")
@example(raw="%zz=1&%ff=%fe")
@example(raw="sort=%00&limit=%ED%A0%80")
@example(raw="cursor=%FF%FE")
def test_raw_story_query_strings(seeded, raw):
    api, _ = seeded
    assert api.get("/v1/stories?" + raw).status_code in (200, 400)


@FEW
@given(sort=st.sampled_from(["recent", "size"]), limit=st.integers(1, 3))
def test_issued_cursors_page_without_errors(seeded, sort, limit):
    api, story_ids = seeded
    seen, cursor = [], None
    for _ in range(10):
        url = f"/v1/stories?sort={sort}&limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else "")
        resp = api.get(url)
        assert resp.status_code == 200
        page = resp.get_json()
        seen += [s["id"] for s in page["stories"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(set(story_ids))


# ---------------------------------------------------------------- GET /v1/articles/{id}
@PROPERTY
@given(article_id=st.one_of(url_text, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~:\-]{0,140}", fullmatch=True)),
       raw_bytes=st.binary(max_size=10))
@example(article_id="batch", raw_bytes=b"")
@example(article_id="/0", raw_bytes=b"")
@example(article_id="..", raw_bytes=b"")
@example(article_id="a" * 129, raw_bytes=b"")
@example(article_id="", raw_bytes=b"\xed\xa0\x80")
def test_random_article_ids(api, article_id, raw_bytes):
    for path in (f"/v1/articles/{quote(article_id, safe='')}", f"/v1/articles/{quote(article_id)}",
                 f"/v1/articles/{quote(raw_bytes, safe='')}"):
        resp = api.get(path)
        # No article was ever stored under this prefix, so nothing can be found;
        # an encoded "/" can make an empty segment, which Werkzeug redirects away.
        assert 400 <= resp.status_code < 500 or resp.status_code == 308, (path, resp.status_code)
        if resp.status_code == 308:
            assert "//" in path.replace("%2F", "/") and resp.headers["Location"]


# ---------------------------------------------------------------- markup stays out
def assert_no_markup(api, resp, article_id):
    """The script is gone from the answer, the stored record and the read-back view."""
    stored = api.client.application.extensions["storywire"].store.load_article(article_id)
    view = api.client.get(f"/v1/articles/{quote(article_id, safe='')}")
    texts = {"response": resp.get_data(as_text=True), "view": view.get_data(as_text=True),
             **{f"stored {k}": v for k, v in stored.items() if isinstance(v, str)}}
    for where, text in texts.items():
        assert PAYLOAD not in text, f"{where}: {text!r}"
    for name in ("title", "body"):
        for value in (stored[name], view.get_json().get(name) or ""):
            assert "<script" not in value.lower(), f"{name}: {value!r}"
            assert not looks_like_html(value), f"{name} still holds markup: {value!r}"


# Safe filler: words and punctuation, and whole ordinary HTML snippets (never a bare
# "<", so no element can form by accident).
ORDINARY_SNIPPETS = ["<p>", "</p>", "<b>", "</b>", "<div class=\"lead\">", "</div>", "<br>", "<br/>", "<em>",
                     "</em>", "<span>", "</span>", "<a href=\"https://e.example/\">", "</a>", "<h1>", "</h1>",
                     "<li>", "<ul>", "</ul>", "<!-- note -->", "<style>p {color: red}</style>",
                     "<noscript>x</noscript>", "<html>", "<body>", "</body>", "<head><title>t</title></head>", "<SCRIPT>x()</SCRIPT>"]
filler = st.lists(st.one_of(st.text(alphabet=string.ascii_letters + string.digits + " .,;:!?'\"()-", max_size=12),
                            st.sampled_from(ORDINARY_SNIPPETS)), max_size=6).map("".join)


@PROPERTY
@given(before=filler, after=filler, where=st.sampled_from(["title", "body", "both"]),
       payload=st.sampled_from([PAYLOAD, "<SCRIPT>alert(1)</SCRIPT>", "<script type=\"text/javascript\">alert(1)"
                                "</script>", "<script src=\"https://evil.example/x.js\"></script>" + PAYLOAD]))
@example(before="Harbour", after="reopens", where="both", payload=PAYLOAD)
@example(before="<p>", after="</p>", where="title", payload=PAYLOAD)
def test_scripts_in_ordinary_html_are_stored_as_text(api, before, after, where, payload):
    article = valid_article(uuid.uuid4().hex[:12])
    if where in ("title", "both"):
        article["title"] = f"{before}{payload}{after} Ferry news"
    if where in ("body", "both"):
        article["body"] = f"{before}{payload}{after} The ferry resumed."
    resp = api.post("/v1/articles", encode(article, "ascii"))
    assert resp.status_code in (202, 422), resp.get_data(as_text=True)
    if resp.status_code == 202:
        assert_no_markup(api, resp, resp.get_json()["id"])


def post_body(api, body: str):
    article = dict(valid_article(uuid.uuid4().hex[:12]), body=body)
    resp = api.post("/v1/articles", encode(article, "ascii"))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp


CONTROL_SMUGGLED = {
    "script": "<script\x00>alert(1)</script\x00>",
    "img onerror": "<img\x00src=x onerror=alert(1)>",
    "svg onload": "<svg\x01onload=alert(1)>",
}


@pytest.mark.parametrize("name", sorted(CONTROL_SMUGGLED))
def test_control_characters_cannot_smuggle_a_tag_into_the_body(api, name):
    resp = post_body(api, CONTROL_SMUGGLED[name])
    assert_no_markup(api, resp, resp.get_json()["id"])


@pytest.mark.parametrize("opener", ["<textarea>", "<xmp>", "<plaintext>", "<noembed>"])
def test_raw_text_elements_cannot_smuggle_a_tag_into_the_body(api, opener):
    resp = post_body(api, f"<p>Ferry</p>{opener}{PAYLOAD}")
    assert_no_markup(api, resp, resp.get_json()["id"])


def test_entity_escaped_script_is_not_stored_as_a_tag(api):
    resp = post_body(api, "<p>Ferry</p>&lt;script&gt;alert(1)&lt;/script&gt;")
    assert_no_markup(api, resp, resp.get_json()["id"])


@PROPERTY
@given(before=st.lists(st.one_of(filler, st.sampled_from(["\x00", "\x01", "\x1f", "<textarea>", "<xmp>",
                                                          "<plaintext>", "<noembed>", "&lt;", "&gt;", "<title>"])),
                       max_size=4).map("".join),
       after=filler)
@example(before="<p>x</p><textarea>", after="")
def test_no_markup_survives_in_a_stored_body(api, before, after):
    resp = post_body(api, f"{before}{PAYLOAD}{after} The ferry resumed.")
    assert_no_markup(api, resp, resp.get_json()["id"])
