"""What POST admits and what it refuses, against a real Redis (no worker: the
articles are decided in this process where a test needs them decided).

- client ids are scoped by outlet; an id naming another article is a 409;
- an article older than the retention window on the stream clock is a 422
  (in a batch, that item alone), and nothing of it is stored;
- past the waiting limit a post is a 503 with Retry-After, and stores nothing;
- a retry of an article still waiting sends its task again;
- an undated article is accepted and takes the stream's time when decided;
- what retention removed answers 410 Gone, saying when and why.
"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest

from storyengine.admission import RESEND_AFTER_SECONDS
from storyengine.decider import Decider
from tests.helpers import build_app, snapshot
from tests.service.envelope import assert_error
from tests.service.posting import WHEN, article, broker_length


def decide_all(client, store) -> None:
    """Decide every waiting article here, as a worker would."""
    ids = [i.decode() for i in store.redis.zrange(store.keys.queued, 0, -1)]
    Decider(store).process_many(ids)


def set_the_clock(client, store) -> None:
    """Three outlets' articles of the 2021 day, decided: the clock is there."""
    for n, outlet in enumerate(("bbc.co.uk", "cnn.com", "wsj.com")):
        assert client.post("/v1/articles", json=article(n, outlet)).status_code == 202
    decide_all(client, store)


# ---------------------------------------------------------------- ids
def test_two_outlets_equal_ids_are_two_articles(client):
    a = client.post("/v1/articles", json=article(1, "bbc.co.uk", id="1234"))
    b = client.post("/v1/articles", json=article(1, "cnn.com", id="1234"))
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"]
    assert a.get_json()["client_id"] == b.get_json()["client_id"] == "1234"
    assert client.get(b.get_json()["status_url"]).get_json()["source"] == "cnn.com"


def test_an_id_naming_another_article_of_the_outlet_is_a_409_saying_what_differs(client, redis_client, settings):
    assert client.post("/v1/articles", json=article(1, id="cms-7")).status_code == 202
    before = snapshot(redis_client, settings.key_prefix)
    resp = client.post("/v1/articles", json=article(2, id="cms-7"))
    err = assert_error(resp, 409, "id_conflict")
    assert "https://bbc.co.uk/news/1" in err["message"] and err["details"][0]["field"] == "url"
    assert snapshot(redis_client, settings.key_prefix) == before


def test_a_client_cannot_claim_a_generated_id(client):
    generated = client.post("/v1/articles", json=article(1)).get_json()["id"]
    assert generated.startswith("a_")
    other = client.post("/v1/articles", json=article(2, "cnn.com", id=generated))
    assert other.status_code == 202 and other.get_json()["id"] != generated


# ---------------------------------------------------------------- the window
def test_an_article_older_than_the_window_is_a_422_naming_the_window(client, store, redis_client, settings):
    set_the_clock(client, store)
    before = snapshot(redis_client, settings.key_prefix)
    resp = client.post("/v1/articles", json=article(9, when=WHEN - timedelta(days=45)))
    err = assert_error(resp, 422, "too_old")
    assert "30 days" in err["message"] and "STORYWIRE_RETENTION_DAYS" in err["message"]
    assert snapshot(redis_client, settings.key_prefix) == before


def test_in_a_batch_the_old_item_alone_is_refused(client, store):
    set_the_clock(client, store)
    resp = client.post("/v1/articles/batch", json={"articles": [
        article(10), article(11, when=WHEN - timedelta(days=400)), article(12)]})
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][1]["error"]["code"] == "too_old"
    assert [r.get("created") for r in body["results"]] == [True, None, True]


# ---------------------------------------------------------------- backpressure
def test_past_the_waiting_limit_a_post_is_a_503_and_stores_nothing(redis_url, settings, redis_client):
    app = build_app(redis_url, settings.replace(max_waiting=3))
    client = app.test_client()
    ok = client.post("/v1/articles/batch", json={"articles": [article(n) for n in range(2)]})
    assert ok.status_code == 202
    before = snapshot(redis_client, settings.key_prefix)
    resp = client.post("/v1/articles/batch", json={"articles": [article(n) for n in range(2, 4)]})
    err = assert_error(resp, 503, "queue_full")
    assert int(resp.headers["Retry-After"]) > 0 and "STORYWIRE_MAX_WAITING" in err["message"]
    assert snapshot(redis_client, settings.key_prefix) == before  # not one of the two
    # A resend of what is already waiting is still answered: it adds nothing.
    assert client.post("/v1/articles", json=article(0)).status_code == 200
    assert client.post("/v1/articles", json=article(2)).status_code == 202  # one place left


# ---------------------------------------------------------------- retries
def test_a_retry_of_an_article_still_waiting_sends_its_task_again(client, store):
    """Once its task went out more than RESEND_AFTER_SECONDS ago (the API may
    have died before sending it); a retry sooner than that sends nothing more."""
    first = client.post("/v1/articles", json=article(1))
    article_id = first.get_json()["id"]
    sent = broker_length(store)
    soon = client.post("/v1/articles", json=article(1))
    assert soon.status_code == 200 and soon.get_json()["status"] == "known"
    assert broker_length(store) == sent  # a retry in a loop does not multiply tasks
    store.redis.zadd(store.keys.queued, {article_id: time.time() - RESEND_AFTER_SECONDS - 1})  # a while later
    again = client.post("/v1/articles", json=article(1))
    assert again.status_code == 200 and again.get_json()["status"] == "known"
    assert broker_length(store) == sent + 1
    decide_all(client, store)
    client.post("/v1/articles", json=article(1))  # decided: nothing to send
    assert broker_length(store) == sent + 1
    assert first.get_json()["id"] == again.get_json()["id"]


def test_the_accepted_counter_moves_with_the_articles(client, store):
    client.post("/v1/articles/batch", json={"articles": [article(1), article(1), article(2)]})
    client.post("/v1/articles", json=article(2))
    assert store.redis.hget(store.keys.metrics, "articles_accepted") == b"2"


# ---------------------------------------------------------------- undated
def test_an_undated_article_is_accepted_and_takes_the_streams_time(client, store):
    set_the_clock(client, store)
    resp = client.post("/v1/articles", json=article(20, "cnn.com", when=None))
    assert resp.status_code == 202
    waiting = client.get(resp.get_json()["status_url"]).get_json()
    assert waiting["published_at"] is None and waiting["published_assigned"] is True
    decide_all(client, store)
    decided = client.get(resp.get_json()["status_url"]).get_json()
    assert decided["status"] == "processed"
    assert decided["published_at"].startswith("2021-06-17")  # the replay's time, not today's
    assert decided["published_assigned"] is True


# ---------------------------------------------------------------- aged out
def test_what_retention_removed_answers_410_with_when_and_why(client, store):
    set_the_clock(client, store)
    old = client.post("/v1/articles", json=article(
        30, "latimes.com", when=WHEN - timedelta(days=20), title="Wildfire crews contain the canyon blaze",
        body="Firefighters contained the canyon wildfire after three days, the county said.")).get_json()
    decide_all(client, store)
    story = client.get(old["status_url"]).get_json()["story"]
    for n, outlet in enumerate(("bbc.co.uk", "cnn.com", "wsj.com")):
        client.post("/v1/articles", json=article(40 + n, outlet, when=WHEN + timedelta(days=15),
                                                 title=f"Council elections counted in the north ({n})",
                                                 body="Votes were counted overnight in the northern council "
                                                      f"elections, officials said ({n})."))
    decide_all(client, store)
    for path in (old["status_url"], f"/v1/stories/{story}"):
        err = assert_error(client.get(path), 410, "gone")
        assert "retention policy" in err["message"] and "STORYWIRE_RETENTION_DAYS=30" in err["message"]
    assert_error(client.get("/v1/articles/a_00000000000000000000"), 404, "not_found")


@pytest.fixture
def client(app, store):  # store: clears the prefix afterwards
    return app.test_client()


def test_a_batch_of_valid_items_all_refused_answers_each_with_its_code(client, store):
    set_the_clock(client, store)
    resp = client.post("/v1/articles/batch", json={"articles": [
        article(50, when=WHEN - timedelta(days=400)), article(51, when=WHEN - timedelta(days=300))]})
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert [r["error"]["code"] for r in body["results"]] == ["too_old", "too_old"]


# ---------------------------------------------------------------- Redis out of memory
@pytest.mark.e2e
def test_redis_out_of_memory_is_a_503_saying_so_and_readyz_says_why(tmp_path, settings):
    """Its own Redis, given a maxmemory below what it holds (noeviction, as
    shipped): writes are refused, so a post is a 503 store_full with
    Retry-After, nothing is stored, and /readyz is 503 naming the cause."""
    from embedded_redis.server import EmbeddedRedis
    from storyengine.store import connect
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        client = connect(server.url)
        app = build_app(server.url, settings)
        api = app.test_client()
        client.zadd(f"{{{settings.key_prefix}}}:workers", {"storywire-test@host": time.time()})
        client.set("ballast", "x" * 2_000_000)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1mb")
        before = sorted(client.scan_iter(match=f"{{{settings.key_prefix}}}:*"))
        resp = api.post("/v1/articles", json=article(1))
        err = assert_error(resp, 503, "store_full")
        assert int(resp.headers["Retry-After"]) > 0 and "out of memory" in err["message"]
        assert sorted(client.scan_iter(match=f"{{{settings.key_prefix}}}:*")) == before
        ready = assert_error(api.get("/readyz"), 503, "not_ready")
        assert "out of memory" in ready["message"]
        client.config_set("maxmemory", "0")
        assert api.post("/v1/articles", json=article(1)).status_code == 202
        assert api.get("/readyz").status_code == 200
        client.close()
