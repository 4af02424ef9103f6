"""Server-Timing on every API response (service/timing.py):

    Server-Timing: app;dur=<ms>, redis;desc="<n> round trips"

``dur`` is the time spent in the app; ``n`` counts the writes to the Redis
connection (a command, a pipeline or a transaction is one), per request. As
timing.py documents, the handshake of a new connection is not counted, so
the first request on a fresh app reports what every later one does.

Stories are made as the workers make them (accept, then Decider), on the
same key prefix the ``app`` fixture reads.
"""
from __future__ import annotations

import time

import pytest

from service import create_app
from embedded_redis.server import free_port
from storyengine.decider import Decider
from storyengine.repair import Repairer
from tests.articles import BANK, BRIDGE, COURIER, FOOTBALL, REPRINT, TRAWLER, VALLEY, article
from tests.newsroom import DAM, Newsroom
from tests.service.timing_header import timing
from workers import heartbeat


@pytest.fixture
def stories(store) -> dict[str, str]:
    """Five stories (one with two outlets' reports and a reprint); returns article id -> story id."""
    records = [article(**spec) for spec in (BANK, FOOTBALL, COURIER, REPRINT, VALLEY, BRIDGE, TRAWLER[0])]
    store.accept_articles(records)
    decider = Decider(store)
    outcomes = {rec["id"]: decider.process(rec["id"]).story_id for rec in records}
    assert len(set(outcomes.values())) == 5
    return outcomes


def get(client, path: str, **kwargs):
    """A GET with its wall time (ms) as the test client saw it."""
    started = time.perf_counter()
    resp = client.get(path, **kwargs)
    return resp, (time.perf_counter() - started) * 1000.0


# ---------------------------------------------------------------- the reads
@pytest.mark.parametrize("path", ["/v1/stories", "/v1/stories?sort=size", "/v1/stories?limit=2",
                                  "/v1/stories?min_sources=2", "story"])
def test_story_reads_take_at_most_two_round_trips(app, stories, path):
    """GET /v1/stories (any order, a short page, a filter) and GET /v1/stories/{id}
    cost at most two Redis round trips, from the very first request on a fresh
    app (its connection's handshake is not counted) to the later ones."""
    if path == "story":
        path = f"/v1/stories/{stories['fire-courier']}"
    client = app.test_client()
    answers = [get(client, path) for _ in range(3)]
    for resp, wall_ms in answers:
        assert resp.status_code == 200, resp.get_json()
        dur, trips = timing(resp)
        assert 1 <= trips <= 2, resp.headers["Server-Timing"]
        assert dur <= wall_ms  # the app's share of what the client waited
    assert len({timing(resp)[1] for resp, _ in answers}) == 1, [r.headers["Server-Timing"] for r, _ in answers]


def test_the_first_request_on_a_new_connection_counts_no_handshake(redis_url, settings, stories):
    """A fresh app (a fresh connection pool) reports for its first request the
    same round trips as for the next: CLIENT SETINFO, SELECT and the like sent
    while connecting are not the request's."""
    for db_url in (redis_url, redis_url.rsplit("/", 1)[0] + "/1"):  # database 1 adds a SELECT to the handshake
        app = create_app({"REDIS_URL": db_url, "CELERY_BROKER_URL": db_url, "ENGINE_SETTINGS": settings,
                          "TESTING": True})
        client = app.test_client()
        first, second = (timing(client.get("/v1/stories"))[1] for _ in range(2))
        assert first == second, db_url
        assert second >= 1


@pytest.mark.parametrize("sort", ["recent", "size"])
def test_every_page_of_a_listing_takes_at_most_two_round_trips(client, stories, sort):
    """Following next_cursor page by page costs at most two round trips per page, like the first."""
    resp = client.get("/v1/stories", query_string={"sort": sort, "limit": 2})
    pages = [timing(resp)[1]]
    cursor = resp.get_json()["next_cursor"]
    while cursor:
        resp = client.get("/v1/stories", query_string={"sort": sort, "limit": 2, "cursor": cursor})
        assert resp.status_code == 200
        pages.append(timing(resp)[1])
        cursor = resp.get_json()["next_cursor"]
    assert len(pages) == 3  # five stories, two a page
    assert max(pages) <= 2, pages


def test_a_merged_storys_redirect_carries_it_too(app, store):
    """A 301 for a story the repair pass merged away: one hop to resolve, still two round trips."""
    newsroom = Newsroom(store)
    kept = newsroom.post(DAM[0], 0, "alpha.example")
    merged = newsroom.post(DAM[1], 2, "beta.example")
    assert Repairer(store).run().merges
    client = app.test_client()
    client.get("/v1/stories")  # the connection is open: only the request's own trips below
    resp = client.get(f"/v1/stories/{merged.story_id}")
    assert resp.status_code == 301 and resp.headers["Location"].endswith(kept.story_id)
    assert 1 <= timing(resp)[1] <= 2


# ---------------------------------------------------------------- every other answer too
def test_writes_and_health_checks_carry_it(client, store):
    """A 202 for a posted article, and the health endpoints."""
    resp = client.post("/v1/articles", json={"source": "timing.example", "url": "https://timing.example/1",
                                             "title": "Timing headers on every answer"})
    assert resp.status_code == 202
    assert timing(resp)[1] >= 1  # accepting the article is a Redis write
    resp = client.get(resp.get_json()["status_url"])
    assert resp.status_code == 200 and timing(resp)[1] == 1
    assert timing(client.get("/healthz"))[1] == 0  # the process is up: Redis is not asked
    heartbeat.record(store.redis, store.keys, "storywire-0a1b2c@test")  # a worker heard from (workers/heartbeat.py)
    resp = client.get("/readyz")
    assert resp.status_code == 200 and timing(resp)[1] >= 1


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/v1/stories/st_0000000000000000", None, 404),     # well-formed id, no such story
    ("GET", "/v1/stories/not-a-story-id", None, 404),          # refused before Redis is asked
    ("GET", "/v1/articles/no-such-article", None, 404),
    ("GET", "/v1/nowhere", None, 404),                         # no such route
    ("POST", "/v1/articles", {"source": "x"}, 422),            # url and title missing
    ("POST", "/v1/articles/batch", {"articles": []}, 422),
    ("POST", "/v1/articles", "not json", 400),
    ("GET", "/v1/stories?limit=0", None, 400),
    ("GET", "/v1/stories?cursor=bogus", None, 400),
    ("DELETE", "/v1/stories", None, 405),
])
def test_error_responses_carry_it(client, method, path, body, status):
    """Errors (404, 422, 400, 405) carry Server-Timing too; one refused before
    any Redis read reports zero round trips (the count is per request, not
    left over from an earlier one)."""
    client.get("/v1/stories")  # an earlier request that did talk to Redis
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body, "content_type": "application/json"} \
        if body is not None else {}
    resp = client.open(path, method=method, **kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)
    _, trips = timing(resp)
    if path == "/v1/stories/st_0000000000000000" or path.startswith("/v1/articles/no-such"):
        assert trips == 2  # the read, then the tombstones (410 for what retention removed, else 404)
    else:
        assert trips == 0


def test_unauthorised_and_unavailable_answers_carry_it(redis_url, settings):
    """A 401 (a key is configured and none was sent) and a 503 (Redis is not there)."""
    keyed = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                        "TESTING": True, "STORYWIRE_API_KEY": "k" * 32}).test_client()
    resp = keyed.post("/v1/articles", json={"source": "x", "url": "https://x.example/1", "title": "Hello"})
    assert resp.status_code == 401
    assert timing(resp)[1] == 0

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = create_app({"REDIS_URL": nowhere, "CELERY_BROKER_URL": nowhere, "ENGINE_SETTINGS": settings,
                       "TESTING": True}).test_client()
    resp = down.get("/v1/stories")
    assert resp.status_code == 503
    timing(resp)
