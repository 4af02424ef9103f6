"""GET /v1/stories and GET /v1/stories/{id}, over stories the engine builds in a real Redis.

Stories are made the way the workers make them: a record per article, accepted by
the store, then processed by ``storyengine.decider.Decider``. Reprints (same
body, new headline, another outlet) join their original's story as duplicates, so
story sizes and outlet counts are known exactly.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from service import create_app
from storyengine.articles import new_article_record
from storyengine.decider import Decider
from storyengine.story_reads import LIST_SCAN_ROWS
from tests.service.envelope import ACTION_WORDS, assert_error  # noqa: F401
from tests.service.timing_header import timing
from tests.storyengine.raw_stories import MOST_TRIPS_OF_A_CAPPED_LISTING, put_many_stories


TOPICS = {
    "volcano": ("Volcano erupts near Iceland fishing village",
                "Lava fountains burst from a fissure on the Reykjanes peninsula overnight, forcing the "
                "evacuation of Grindavik. Seismologists recorded thousands of tremors before the eruption, "
                "and geologists warned that magma was still pooling beneath the town's harbour."),
    "election": ("Parliamentary election ends in hung chamber",
                 "Voters delivered no majority in the parliamentary ballot, leaving party leaders to negotiate "
                 "a coalition. Turnout reached a record high, and the incumbent chancellor conceded several "
                 "constituencies to challengers campaigning on pensions and housing."),
    "football": ("Underdogs lift the cup after penalty shootout",
                 "The second-division club won the cup final on penalties after a goalless draw, their "
                 "goalkeeper saving three spot kicks. Supporters flooded the stadium pitch as the captain "
                 "raised the trophy in front of the travelling fans."),
    "vaccine": ("Regulator approves malaria vaccine for infants",
                "The medicines regulator approved a malaria vaccine for infants after trials showed it cut "
                "hospital admissions by half. Clinics across the tropics expect the first doses next spring, "
                "and epidemiologists praised the immunisation results."),
    "satellite": ("Weather satellite reaches geostationary orbit",
                  "A rocket carried the weather satellite into geostationary orbit, where its imaging "
                  "instruments will track hurricanes and monsoon clouds. Engineers unfolded the solar arrays "
                  "and the spacecraft began transmitting telemetry to the ground station."),
    "wildfire": ("Wildfire forces thousands from canyon homes",
                 "Firefighters battled a wildfire driven by dry canyon winds as flames jumped a highway and "
                 "destroyed ranches. Air tankers dropped retardant on the ridge while sheriffs ordered "
                 "residents of the foothill suburbs to leave."),
}

# topic -> (hours ago of the original, [(hours ago, outlet) of each reprint])
LAYOUT = {
    "volcano": (10, [(9, "beta.example"), (8, "gamma.example")]),
    "election": (6, [(5, "beta.example")]),
    "football": (1, []),
    "vaccine": (3, []),
    "satellite": (12, []),
    "wildfire": (20, []),
}
RECENT_ORDER = ["football", "vaccine", "election", "volcano", "satellite", "wildfire"]
SIZE_ORDER = ["volcano", "election", "football", "vaccine", "satellite", "wildfire"]



def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def stories(store, now) -> dict[str, str]:
    """Six stories of distinct topics; returns topic -> story id."""
    records, founders = [], {}
    for topic, (hours, reprints) in LAYOUT.items():
        title, body = TOPICS[topic]
        original = new_article_record(source="alpha.example", url=f"https://alpha.example/{topic}", title=title,
                                      body=body, published_at=now - timedelta(hours=hours))
        records.append(original)
        founders[topic] = original["id"]
        for n, (reprint_hours, outlet) in enumerate(reprints):
            records.append(new_article_record(source=outlet, url=f"https://{outlet}/{topic}-{n}",
                                              title=f"Reprint {n}: {title.lower()}", body=body,
                                              published_at=now - timedelta(hours=reprint_hours)))
    store.accept_articles(records)
    decider = Decider(store)
    by_topic = {}
    for record in records:
        outcome = decider.process(record["id"])
        by_topic.setdefault(next(t for t in TOPICS if t in record["url"]), set()).add(outcome.story_id)
    assert all(len(ids) == 1 for ids in by_topic.values()), by_topic
    ids = {topic: next(iter(s)) for topic, s in by_topic.items()}
    assert len(set(ids.values())) == len(TOPICS), "each topic must be its own story"
    return ids


def listing(client, **params) -> dict:
    resp = client.get("/v1/stories", query_string=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def topics_of(page: dict, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[s["id"]] for s in page["stories"]]


def walk(client, **params) -> list[str]:
    """Every story id, following next_cursor until it is null."""
    seen, cursor = [], None
    for _ in range(50):
        page = listing(client, **params, **({"cursor": cursor} if cursor else {}))
        seen += [s["id"] for s in page["stories"]]
        assert len(page["stories"]) <= params.get("limit", 20)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination never ended")


# ============================================================ listing
def test_empty_listing(client):
    assert listing(client) == {"stories": [], "next_cursor": None}


def test_default_sort_is_newest_first(client, stories, now):
    page = listing(client)
    assert topics_of(page, stories) == RECENT_ORDER
    assert page["next_cursor"] is None
    football = page["stories"][0]
    assert football["last_updated"] == iso(now - timedelta(hours=1))
    assert football["headline"] == TOPICS["football"][0]
    assert set(football) >= {"id", "headline", "representative_article", "article_count", "source_count",
                             "sources", "first_seen", "last_updated", "top_terms"}


def test_story_counts_and_times(client, stories, now):
    volcano = next(s for s in listing(client)["stories"] if s["id"] == stories["volcano"])
    assert volcano["article_count"] == 3
    assert volcano["original_count"] == 1
    assert volcano["source_count"] == 3
    assert sorted(volcano["sources"]) == ["alpha.example", "beta.example", "gamma.example"]
    assert volcano["first_seen"] == iso(now - timedelta(hours=10))
    assert volcano["last_updated"] == iso(now - timedelta(hours=8))
    assert volcano["headline"] == TOPICS["volcano"][0]


def test_sort_by_size(client, stories):
    page = listing(client, sort="size")
    assert topics_of(page, stories) == SIZE_ORDER
    assert [s["article_count"] for s in page["stories"]] == [3, 2, 1, 1, 1, 1]


def test_explicit_sort_recent(client, stories):
    assert topics_of(listing(client, sort="recent"), stories) == RECENT_ORDER


def test_since(client, stories, now):
    page = listing(client, since=iso(now - timedelta(hours=5, minutes=30)))
    assert topics_of(page, stories) == ["football", "vaccine", "election"]


def test_until(client, stories, now):
    page = listing(client, until=iso(now - timedelta(hours=4)))
    assert topics_of(page, stories) == ["election", "volcano", "satellite", "wildfire"]


def test_since_and_until_window(client, stories, now):
    page = listing(client, since=iso(now - timedelta(hours=9)), until=iso(now - timedelta(hours=2)))
    assert topics_of(page, stories) == ["vaccine", "election", "volcano"]


def test_since_with_offset_timezone(client, stories, now):
    since = (now - timedelta(hours=5, minutes=30)).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert topics_of(listing(client, since=since), stories) == ["football", "vaccine", "election"]


def test_window_with_sort_by_size(client, stories, now):
    page = listing(client, sort="size", since=iso(now - timedelta(hours=9)), until=iso(now - timedelta(hours=2)))
    assert topics_of(page, stories) == ["volcano", "election", "vaccine"]


def test_min_sources(client, stories):
    assert topics_of(listing(client, min_sources=2), stories) == ["election", "volcano"]
    assert topics_of(listing(client, min_sources=3), stories) == ["volcano"]
    assert listing(client, min_sources=4) == {"stories": [], "next_cursor": None}
    assert topics_of(listing(client, min_sources=2, sort="size"), stories) == ["volcano", "election"]


@pytest.mark.parametrize("sort,order", [("recent", RECENT_ORDER), ("size", SIZE_ORDER)])
@pytest.mark.parametrize("limit", [1, 2, 4, 6])
def test_pagination_visits_every_story_once(client, stories, sort, order, limit):
    seen = walk(client, sort=sort, limit=limit)
    assert seen == [stories[t] for t in order]


def test_limit_returns_a_cursor(client, stories):
    page = listing(client, limit=2)
    assert topics_of(page, stories) == RECENT_ORDER[:2]
    assert isinstance(page["next_cursor"], str) and page["next_cursor"]
    second = listing(client, limit=2, cursor=page["next_cursor"])
    assert topics_of(second, stories) == RECENT_ORDER[2:4]


@pytest.mark.parametrize("params,order", [
    ({"min_sources": 2}, ["election", "volcano"]),
    ({"min_sources": 2, "sort": "size"}, ["volcano", "election"]),
    ({"since": "H-9", "until": "H-2"}, ["vaccine", "election", "volcano"]),
    ({"since": "H-11", "sort": "size"}, ["volcano", "election", "football", "vaccine"]),
])
def test_pagination_with_filters(client, stories, now, params, order):
    params = {k: iso(now - timedelta(hours=int(v[2:]))) if str(v).startswith("H-") else v for k, v in params.items()}
    assert walk(client, limit=1, **params) == [stories[t] for t in order]


@pytest.fixture
def many_single_outlet_stories(store, now) -> dict:
    """25 one-outlet stories, hour by hour, and one more story with two outlets at the oldest end."""
    records = []
    for i in range(25):
        body = " ".join(f"subject{i}term{j}" for j in range(40))
        records.append(new_article_record(source="solo.example", url=f"https://solo.example/{i}",
                                          title=f"Bulletin subject{i} headline{i}", body=body,
                                          published_at=now - timedelta(hours=i + 1)))
    records.append(new_article_record(source="echo.example", url="https://echo.example/r", title="Echo of 24",
                                      body=records[-1]["body"], published_at=now - timedelta(hours=24, minutes=30)))
    store.accept_articles(records)
    decider = Decider(store)
    outcomes = [decider.process(r["id"]) for r in records]
    assert len({o.story_id for o in outcomes}) == 25
    return {"two_outlets": outcomes[-1].story_id}


def test_pagination_over_many_stories(client, many_single_outlet_stories):
    for sort in ("recent", "size"):
        seen = walk(client, sort=sort, limit=7)
        assert len(seen) == len(set(seen)) == 25


def test_filtered_page_after_a_cursor_reaches_stories_beyond_the_first_chunk(client, many_single_outlet_stories):
    cursor = listing(client, limit=1)["next_cursor"]
    page = listing(client, limit=1, min_sources=2, cursor=cursor)
    assert [s["id"] for s in page["stories"]] == [many_single_outlet_stories["two_outlets"]]


# ============================================================ bounded work per request
# A filter the index cannot answer (min_sources, or since/until with sort=size) is applied to the
# stories read: one public request for a filter nothing matches once read the whole index. Now it
# reads at most LIST_SCAN_ROWS of it and answers a short page with a cursor to go on from.
CAPPED_MANY = 3 * LIST_SCAN_ROWS


def story_id(i: int) -> str:
    return f"st_{i:016x}"


@pytest.fixture
def many_stories(store) -> list[str]:
    """3,000 one-outlet stories (the story numbered 1,500 has two outlets), newest first."""
    return put_many_stories(store, CAPPED_MANY, two_outlets=(1500,), story_id=story_id)


@pytest.mark.parametrize("path", ["/v1/stories", "/"])
def test_a_filter_nothing_matches_costs_a_bounded_number_of_round_trips(client, many_stories, path):
    resp = client.get(path, query_string={"sort": "size", "min_sources": 10_000, "limit": 1})
    assert resp.status_code == 200
    assert timing(resp)[1] <= MOST_TRIPS_OF_A_CAPPED_LISTING  # before the cap: 300 at 3,000 stories
    if path == "/":
        html = resp.get_data(as_text=True)
        assert 'rel="next"' in html  # the page links on, from the cursor
        assert "No stories matched among those read" in html and "No stories yet" not in html
    else:
        page = resp.get_json()
        assert page["stories"] == [] and page["next_cursor"]  # short, and not the end


def test_following_next_cursor_through_capped_pages_finds_the_match_once(client, many_stories):
    pages = []
    cursor = None
    while len(pages) < 10:
        resp = client.get("/v1/stories", query_string={"min_sources": 2, "limit": 5,
                                                       **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200 and timing(resp)[1] <= MOST_TRIPS_OF_A_CAPPED_LISTING
        pages.append([s["id"] for s in resp.get_json()["stories"]])
        cursor = resp.get_json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [[], [many_stories[1500]], []]  # LIST_SCAN_ROWS a request, then the index ends


def test_common_listings_of_many_stories_still_take_two_round_trips(client, many_stories):
    for query in ({}, {"sort": "size"}, {"limit": 100}, {"min_sources": 1}):
        resp = client.get("/v1/stories", query_string=query)
        assert resp.status_code == 200 and timing(resp)[1] == 2, query


# ============================================================ bad queries
@pytest.mark.parametrize("query", [
    "sort=bogus", "sort=", "sort=RECENT", "limit=0", "limit=-1", "limit=1000", "limit=101", "limit=abc", "limit=2.5",
    "limit=", "min_sources=0", "min_sources=-2", "min_sources=abc", "min_sources=100000", "since=garbage",
    "until=garbage", "since=2024-02-30T00:00:00Z", "since=1800-01-01T00:00:00Z", "since=",
    "since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z", "page=2", "offset=10", "Sort=recent",
    "sort=recent&sort=size", "limit=5&limit=6", "cursor=" + "a" * 600,
])
def test_bad_query_values(client, stories, query):
    err = assert_error(client.get(f"/v1/stories?{query}"), 400, "invalid_query")
    assert err["message"]


def test_bad_query_lists_the_field(client):
    err = assert_error(client.get("/v1/stories?limit=abc&bogus=1"), 400, "invalid_query")
    assert sorted(d["field"] for d in err["details"]) == ["bogus", "limit"]
    assert "limit" in err["message"] and "bogus" in err["message"]


def test_since_later_than_until(client):
    err = assert_error(client.get("/v1/stories?since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z"),
                       400, "invalid_query")
    assert "since" in err["message"] and "until" in err["message"]


def test_since_that_overflows_on_conversion_to_utc(client):
    assert_error(client.get("/v1/stories?since=9999-12-31T23:00:00-05:00"), 400, "invalid_query")


def b64(data) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not-a-cursor", "!!!!", "%%%", "abc", "\u00e9t\u00e9", b64({"a": 1}), b64([1, 2, 3]), b64("recent"), b64(12),
    b64({"o": "recent", "s": "x", "i": "st_0123456789abcdef"}),
    b64({"o": "recent", "s": 1.0, "i": "../../etc"}), b64({"o": "recent", "s": 1.0, "i": 7}),
    b64({"o": "recent", "s": 1.0}), b64({"o": "recent", "s": None, "i": "st_0123456789abcdef"}),
    b64(b'{"o":"recent","s":NaN,"i":"st_0123456789abcdef"}'), b64(b"\xff\xfe\x00garbage"),
    b64({"o": "size", "s": 1.0, "i": "st_0123456789abcdef"}), b64({"o": ["recent"], "s": 1.0, "i": "st_0123456789abcdef"}),
], ids=lambda c: c[:24])
def test_tampered_cursor(client, stories, cursor):
    err = assert_error(client.get("/v1/stories", query_string={"cursor": cursor}), 400, "invalid_cursor")
    assert "cursor" in err["message"]


def test_cursor_from_sort_size_used_with_sort_recent(client, stories):
    cursor = listing(client, sort="size", limit=2)["next_cursor"]
    assert cursor
    err = assert_error(client.get("/v1/stories", query_string={"sort": "recent", "cursor": cursor}),
                       400, "invalid_cursor")
    assert "sort=size" in err["message"]
    # ... and the other way round.
    cursor = listing(client, sort="recent", limit=2)["next_cursor"]
    assert_error(client.get("/v1/stories", query_string={"sort": "size", "cursor": cursor}), 400, "invalid_cursor")


def test_cursor_with_a_changed_character(client, stories):
    cursor = listing(client, limit=2)["next_cursor"]
    tampered = cursor[:-6] + ("A" if cursor[-6] != "A" else "B") + cursor[-5:]
    resp = client.get("/v1/stories", query_string={"cursor": tampered, "limit": 2})
    # Either it still decodes to a well-formed cursor (a different position) or it is refused; never a 500.
    assert resp.status_code in (200, 400)
    if resp.status_code == 400:
        assert_error(resp, 400, "invalid_cursor")


def test_cursor_with_a_huge_integer_score(client):
    cursor = b64(b'{"o":"recent","s":1' + b"0" * 320 + b',"i":"st_0123456789abcdef"}')
    assert len(cursor) <= 512
    assert_error(client.get("/v1/stories", query_string={"cursor": cursor}), 400, "invalid_cursor")


# ============================================================ one story
def post(client, **article):
    resp = client.post("/v1/articles", json=article)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()["id"]


def test_story_folds_a_reprint_under_its_canonical_article(client, store, now):
    title, body = TOPICS["satellite"]
    original = post(client, source="alpha.example", url="https://alpha.example/sat", title=title, body=body,
                    published_at=iso(now - timedelta(hours=3)))
    reprint = post(client, source="beta.example", url="https://beta.example/space/123",
                   title="Forecasters cheer as new eye in the sky arrives", body=body,
                   published_at=iso(now - timedelta(hours=2)))
    vt, vb = TOPICS["vaccine"]
    other = post(client, source="gamma.example", url="https://gamma.example/health", title=vt, body=vb,
                 published_at=iso(now - timedelta(hours=1)))
    decider = Decider(store)
    for article_id in (original, reprint, other):
        decider.process(article_id)

    reprint_view = client.get(f"/v1/articles/{reprint}").get_json()
    assert reprint_view["status"] == "processed"
    assert reprint_view["duplicate_of"] == original
    story_id = reprint_view["story"]
    assert client.get(f"/v1/articles/{original}").get_json()["story"] == story_id
    assert client.get(f"/v1/articles/{other}").get_json()["story"] != story_id

    resp = client.get(f"/v1/stories/{story_id}")
    assert resp.status_code == 200
    story = resp.get_json()
    assert story["id"] == story_id
    assert story["headline"] == title
    assert story["representative_article"] == original
    assert story["article_count"] == 2
    assert story["original_count"] == 1
    assert story["source_count"] == 2
    assert [a["id"] for a in story["articles"]] == [original]
    canonical = story["articles"][0]
    assert canonical["title"] == title
    assert canonical["source"] == "alpha.example"
    assert [d["id"] for d in canonical["duplicates"]] == [reprint]
    assert canonical["duplicates"][0]["duplicate_of"] == original
    assert canonical["duplicates"][0]["source"] == "beta.example"


def test_story_lists_its_articles(client, stories):
    story = client.get(f"/v1/stories/{stories['volcano']}").get_json()
    assert len(story["articles"]) == 1
    assert len(story["articles"][0]["duplicates"]) == 2
    assert story["articles"][0]["source"] == "alpha.example"


def test_story_article_list_is_capped(redis_url, settings, stories):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_STORY_ARTICLES": 2})
    story = app.test_client().get(f"/v1/stories/{stories['volcano']}").get_json()
    assert story["article_count"] == 3
    assert sum(1 + len(a["duplicates"]) for a in story["articles"]) == 2


@pytest.mark.parametrize("story_id", ["st_0000000000000000", "st_00", "bogus", "st_0123456789ABCDEF", "x" * 300,
                                      "st_0123456789abcdef%0A"])
def test_unknown_story(client, stories, story_id):
    err = assert_error(client.get(f"/v1/stories/{story_id}"), 404, "not_found")
    assert "check the id" in err["message"]


@pytest.mark.parametrize("path", ["/v1/stories/../x", "/v1/stories/..%2Fx", "/v1/stories/a/b"])
def test_weird_story_paths(client, path):
    assert_error(client.get(path), 404)
