"""GET /, the aggregator page, through Flask's test client against a real Redis.

Stories are made the way the workers make them (the store accepts records, the
engine's Decider decides them), and the HTML is read back with a real HTML5
parser (selectolax), so each check is about what a browser would get: which
stories, in which order, with which headline, outlets, counts and time, and
that article text stays text. The page takes the API's list query and must
answer a bad one exactly as ``GET /v1/stories`` does.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from service.page import CONTENT_SECURITY_POLICY, OUTLETS_SHOWN, ago
from storyengine.articles import new_article_record
from storyengine.decider import Decider
from tests.articles import HOSTILE_BODY, HOSTILE_SOURCE, HOSTILE_TITLE
from tests.helpers import build_app, snapshot
from tests.service.envelope import assert_error

# topic -> (headline, body, hours ago of the original, [(hours ago, outlet) of each reprint])
STORIES = {
    "volcano": ("Volcano erupts near Iceland fishing village",
                "Lava fountains burst from a fissure on the Reykjanes peninsula overnight, forcing the evacuation "
                "of Grindavik. Seismologists recorded thousands of tremors before the eruption, and geologists "
                "warned that magma was still pooling beneath the town's harbour.",
                10, [(9, "beta.example"), (8, "gamma.example")]),
    "election": ("Parliamentary election ends in hung chamber",
                 "Voters delivered no majority in the parliamentary ballot, leaving party leaders to negotiate a "
                 "coalition. Turnout reached a record high, and the incumbent chancellor conceded several "
                 "constituencies to challengers campaigning on pensions and housing.",
                 6, [(5, "beta.example")]),
    "football": ("Underdogs lift the cup after penalty shootout",
                 "The second-division club won the cup final on penalties after a goalless draw, their goalkeeper "
                 "saving three spot kicks. Supporters flooded the stadium pitch as the captain raised the trophy in "
                 "front of the travelling fans.",
                 1, []),
    "satellite": ("Weather satellite reaches geostationary orbit",
                  "A rocket carried the weather satellite into geostationary orbit, where its imaging instruments "
                  "will track hurricanes and monsoon clouds. Engineers unfolded the solar arrays and the spacecraft "
                  "began transmitting telemetry to the ground station.",
                  20, []),
}
NEWEST_FIRST = ["football", "election", "volcano", "satellite"]
LARGEST_FIRST = ["volcano", "election", "football", "satellite"]

# create_app also reads os.environ: keep the developer's shell out of these tests.
pytestmark = pytest.mark.usefixtures("no_auth_in_environment")


@pytest.fixture
def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def make_stories(store, now: datetime, layout: dict) -> dict[str, str]:
    """Accept and decide every article of ``layout``; returns topic -> story id."""
    records, topic_of = [], {}
    for topic, (headline, body, hours, reprints) in layout.items():
        original = new_article_record(source="alpha.example", url=f"https://alpha.example/{topic}", title=headline,
                                      body=body, published_at=now - timedelta(hours=hours))
        records.append(original)
        topic_of[original["id"]] = topic
        for n, (reprint_hours, outlet) in enumerate(reprints):
            copy = new_article_record(source=outlet, url=f"https://{n}.example/{topic}", title=f"Copy {n}: {headline}",
                                      body=body, published_at=now - timedelta(hours=reprint_hours))
            records.append(copy)
            topic_of[copy["id"]] = topic
    store.accept_articles(records)
    outcomes = Decider(store).process_many([r["id"] for r in records])
    story_of: dict[str, set] = {}
    for record, outcome in zip(records, outcomes):
        assert outcome.error is None, outcome.error
        story_of.setdefault(topic_of[record["id"]], set()).add(outcome.story_id)
    assert all(len(ids) == 1 for ids in story_of.values()), story_of
    ids = {topic: ids.pop() for topic, ids in story_of.items()}
    assert len(set(ids.values())) == len(layout), "each topic must be a story of its own"
    return ids


@pytest.fixture
def stories(store, now) -> dict[str, str]:
    return make_stories(store, now, STORIES)


def page(client, query: str = "") -> HTMLParser:
    resp = client.get("/" + (f"?{query}" if query else ""))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/html"
    return HTMLParser(resp.get_data(as_text=True))


def story_ids(tree: HTMLParser) -> list[str]:
    return [node.attributes["id"] for node in tree.css("li.story")]


def api_stories(client, query: str = "") -> dict:
    resp = client.get("/v1/stories" + (f"?{query}" if query else ""))
    assert resp.status_code == 200
    return resp.get_json()


def card(tree: HTMLParser, story_id: str):
    [node] = [n for n in tree.css("li.story") if n.attributes["id"] == story_id]
    return node


# ============================================================ what the page shows
def test_no_stories_says_how_to_get_some(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    tree = HTMLParser(resp.get_data(as_text=True))
    assert story_ids(tree) == []
    assert "No stories yet" in tree.css_first("p.empty").text() and "/v1/articles" in tree.css_first("p.empty").text()
    assert tree.css_first("a.next") is None and tree.css_first("a.first") is None


def test_stories_newest_first_as_the_api_lists_them(client, stories):
    tree = page(client)
    assert story_ids(tree) == [stories[t] for t in NEWEST_FIRST]
    assert story_ids(tree) == [s["id"] for s in api_stories(client)["stories"]]


def test_each_story_shows_headline_outlets_counts_and_time(client, stories, now):
    tree = page(client)
    by_id = {s["id"]: s for s in api_stories(client)["stories"]}
    for topic, (headline, _, hours, reprints) in STORIES.items():
        node = card(tree, stories[topic])
        assert node.css_first("h2.headline").text() == headline == by_id[stories[topic]]["headline"]
        outlets = [o.text() for o in node.css(".outlet")]
        assert outlets == by_id[stories[topic]]["sources"]
        assert sorted(outlets) == sorted({"alpha.example", *(outlet for _, outlet in reprints)})
        assert node.css_first(".outlets").text(strip=True).startswith(
            f"{len(outlets)} outlet{'s' if len(outlets) != 1 else ''}:")
        copies = len(reprints)
        expected = "1 article" + (f", {copies} cop{'ies' if copies != 1 else 'y'}" if copies else "")
        assert node.css_first(".counts").text() == expected
        assert f"{1 + copies} received" in node.css_first(".counts").attributes["title"]
        newest = min([hours] + [h for h, _ in reprints])
        updated = node.css_first("time.updated")
        assert updated.attributes["datetime"] == (now - timedelta(hours=newest)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert updated.text() == f"updated {newest} h ago"


def test_each_story_opens_onto_its_articles_in_the_api(client, stories):
    tree = page(client)
    for story_id in stories.values():
        details = card(tree, story_id).css_first("details")
        assert "open" not in details.attributes, "stories start closed"
        url = details.attributes["data-story-url"]
        assert url == f"/v1/stories/{story_id}"
        assert details.css_first(".articles a").attributes["href"] == url  # the way in without JavaScript
        assert client.get(url).get_json()["id"] == story_id


def test_many_outlets_are_cut_short_with_a_count(client, store, now):
    outlets = [(1 + n / 10, f"outlet-{n}.example") for n in range(OUTLETS_SHOWN + 2)]
    headline, body, _, _ = STORIES["volcano"]
    [story_id] = make_stories(store, now, {"volcano": (headline, body, 3, outlets)}).values()
    node = card(page(client), story_id)
    assert len(node.css(".outlet")) == OUTLETS_SHOWN
    assert node.css_first(".outlets").text(strip=True).startswith(f"{OUTLETS_SHOWN + 3} outlets:")
    assert node.css_first(".outlets").text(strip=True).endswith("and 3 more")
    assert node.css_first(".counts").text() == f"1 article, {len(outlets)} copies"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "just now"), (59, "just now"), (60, "1 min ago"), (3599, "59 min ago"), (3600, "1 h ago"),
    (86400 * 2 + 5, "2 days ago"), (86400, "1 day ago"), (86400 * 45, "1 month ago"), (86400 * 800, "2 years ago"),
    (-3 * 3600, "in 3 h"), (-30, "just now"),
])
def test_relative_times(seconds, text):
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert ago(now - timedelta(seconds=seconds), now) == text


# ============================================================ hostile text stays text
def test_hostile_headline_and_outlet_render_as_text(client, store, now):
    record = new_article_record(source=HOSTILE_SOURCE, url='https://x.example/a"><script>alert(3)</script>',
                                title=HOSTILE_TITLE, body=HOSTILE_BODY, published_at=now - timedelta(hours=1))
    store.accept_articles([record])
    [outcome] = Decider(store).process_many([record["id"]])
    assert record["title"] == HOSTILE_TITLE, "clean_text changed the title: pick another hostile title"
    resp = client.get("/")
    html = resp.get_data(as_text=True)
    tree = HTMLParser(html)
    # The only script is the page's own file, and no element carries an event handler.
    assert [s.attributes.get("src") for s in tree.css("script")] == ["/static/page.js"]
    assert tree.css("img") == [] and not any(k.startswith("on") for n in tree.css("*") for k in n.attributes)
    node = card(tree, outcome.story_id)
    assert node.css_first("h2.headline").text() == HOSTILE_TITLE
    assert [o.text() for o in node.css(".outlet")] == [HOSTILE_SOURCE]
    assert "{{ 7*7 }}" in node.css_first("h2.headline").text(), "template syntax in data must not be evaluated"
    assert "&amp;lt;script&amp;gt;" in html and "&lt;script&gt;document.title" in html
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY


def test_page_loads_nothing_from_other_hosts(client, stories):
    """No CDN: every script, style, icon and link on the page is this service's own."""
    tree = page(client)
    refs = [n.attributes.get("src") or n.attributes.get("href") for n in tree.css("script, link, a")]
    assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    for asset, mimetype in (("page.js", "text/javascript"), ("page.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        resp = client.get(f"/static/{asset}")
        assert resp.status_code == 200 and resp.mimetype == mimetype and resp.data


# ============================================================ the query, as the API takes it
def test_paging_follows_the_api_cursor_to_the_end(client, stories):
    seen, query = [], "limit=1"
    for _ in range(10):
        tree = page(client, query)
        seen += story_ids(tree)
        assert (tree.css_first("a.first") is not None) == (len(seen) > 1), "later pages link back to the first"
        nxt = tree.css_first("a.next")
        if nxt is None:
            break
        assert nxt.attributes["rel"] == "next"
        query = urlsplit(nxt.attributes["href"]).query
        assert parse_qs(query)["limit"] == ["1"] and parse_qs(query)["cursor"]
    assert seen == [stories[t] for t in NEWEST_FIRST]


def test_sort_and_filters_are_the_api_ones(client, stories):
    tree = page(client, "sort=size")
    assert story_ids(tree) == [stories[t] for t in LARGEST_FIRST]
    [current] = tree.css('nav.order a[aria-current="page"]')
    assert current.text() == "Largest"
    newest = next(a for a in tree.css("nav.order a") if a.text() == "Newest")
    assert story_ids(page(client, urlsplit(newest.attributes["href"]).query)) == [stories[t] for t in NEWEST_FIRST]
    assert story_ids(page(client, "min_sources=2")) == [stories["election"], stories["volcano"]]
    from_api = api_stories(client, "min_sources=2")["stories"]
    assert story_ids(page(client, "min_sources=2")) == [s["id"] for s in from_api]


def test_sort_links_keep_the_filters_and_drop_the_cursor(client, stories):
    first = page(client, "limit=1&min_sources=2")
    later = page(client, urlsplit(first.css_first("a.next").attributes["href"]).query)
    for link in later.css("nav.order a"):
        query = parse_qs(urlsplit(link.attributes["href"]).query)
        assert query["limit"] == ["1"] and query["min_sources"] == ["2"] and "cursor" not in query


@pytest.mark.parametrize("query", [
    "sort=oldest", "sort=", "limit=0", "limit=-3", "limit=101", "limit=abc", "limit=1.5", "limit=" + "9" * 5000,
    "min_sources=0", "min_sources=x", "since=yesterday", "until=2026-13-45T00:00:00Z",
    "since=9999-12-31T23:00:00-05:00",
    "since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z", "cursor=not-a-cursor", "cursor=" + "A" * 600,
    "page=2", "sort=recent&sort=size", "sort=%ff%fe", "sort=recent%00", "cursor=%3Cscript%3Ealert(1)%3C/script%3E",
    "limit=%F0%9F%92%A5", "x" * 3000 + "=1",
])
def test_bad_query_is_refused_as_the_api_refuses_it(client, stories, redis_client, settings, query):
    before = snapshot(redis_client, settings.key_prefix)
    from_page, from_api = client.get(f"/?{query}"), client.get(f"/v1/stories?{query}")
    err = assert_error(from_page, 400)
    assert err["code"] in ("invalid_query", "invalid_cursor")
    assert (from_page.status_code, from_page.get_json()) == (from_api.status_code, from_api.get_json())
    assert snapshot(redis_client, settings.key_prefix) == before, "a refused read must change nothing"


def test_cursor_from_the_other_order_is_refused(client, stories):
    cursor = api_stories(client, "sort=size&limit=1")["next_cursor"]
    err = assert_error(client.get("/", query_string={"cursor": cursor}), 400, "invalid_cursor")
    assert "sort=size" in err["message"]


def test_page_costs_the_same_redis_round_trips_as_the_api_list(client, stories):
    def trips(path: str) -> int:
        timing = client.get(path).headers["Server-Timing"]
        return int(timing.split('redis;desc="')[1].split(" ")[0])
    assert trips("/") == trips("/v1/stories") <= 2
    assert trips("/?sort=size&limit=2") == trips("/v1/stories?sort=size&limit=2") <= 2


# ============================================================ methods, keys, a dead store
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused(client, method):
    resp = client.open("/", method=method)
    assert_error(resp, 405)
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_head_answers_without_a_body(client, stories):
    resp = client.head("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html" and resp.data == b""


KEY = "sw-page-7f3a9c2e41b8d6f0a5"


def test_page_is_public_when_reads_are(redis_url, settings, stories):
    keyed = build_app(redis_url, settings, STORYWIRE_API_KEY=KEY).test_client()
    assert story_ids(page(keyed)) == [stories[t] for t in NEWEST_FIRST]
    assert keyed.get("/static/page.js").status_code == 200


def test_page_needs_the_key_when_reads_are_private(redis_url, settings, stories):
    private = build_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS="false").test_client()
    resp = private.get("/")
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert KEY not in resp.get_data(as_text=True)
    assert_error(private.get("/", headers={"Authorization": "Bearer sw-fake-ffffffffffffffffffff"}), 401)
    ok = private.get("/", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and stories["football"] in ok.get_data(as_text=True)


def test_unreachable_store_gives_503_with_retry_after(settings, closed_port):
    url = f"redis://127.0.0.1:{closed_port}/0"
    dead = build_app(url, settings).test_client()
    resp = dead.get("/")
    assert_error(resp, 503, "unavailable")
    assert int(resp.headers["Retry-After"]) > 0
