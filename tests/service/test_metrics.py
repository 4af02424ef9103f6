"""GET /metrics (service/metrics.py) against a real Redis, with no worker consuming.

The API fixtures enqueue to database 0 of the test Redis, where no worker
runs, so whatever the API accepts stays queued: the queue gauges must show
it. Articles accepted are counted by the API itself. The exposition is read
back with prometheus_client's own parsers (text format and OpenMetrics).
"""
from __future__ import annotations

import logging
import time
import uuid

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import broker_queue_keys
from embedded_redis.server import EmbeddedRedis, free_port
from storyengine.phases import PHASES
from storyengine.store import connect
from tests.helpers import build_app as make_app
from tests.service.envelope import assert_error
from workers import names

KEY = "sw-metrics-5c0ffee5c0ffee5c0ffee"
COUNTERS = ("articles_accepted", "articles_decided", "duplicates", "stories_opened", "stories_merged",
            "articles_failed")


# create_app also reads os.environ: keep the developer's shell out of these tests.
pytestmark = pytest.mark.usefixtures("no_auth_in_environment")


def article(**changes) -> dict:
    slug = uuid.uuid4().hex[:12]
    return {"source": "metrics.example", "url": f"https://metrics.example/{slug}",
            "title": f"Harbour authority reopens the north quay {slug}",
            "body": "The harbour authority reopened the north quay on Monday after repairs.", **changes}


def scrape(client, **headers) -> dict[str, dict]:
    """family name -> {(sample name, sorted labels): value} from a text-format scrape."""
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def counter(families: dict, name: str) -> float:
    return families[f"storywire_{name}"][(f"storywire_{name}_total", ())]


def broker_length(redis_url: str) -> int:
    client = connect(redis_url)
    try:
        return sum(client.llen(key) for key in broker_queue_keys())
    finally:
        client.close()


# ====================================================================== the exposition
def test_a_fresh_deployment_exposes_every_metric_at_zero(client):
    families = scrape(client)
    for name in COUNTERS:
        assert counter(families, name) == 0
    histogram = families["storywire_processing_latency_seconds"]
    buckets = [(labels, v) for (sample, labels), v in histogram.items() if sample.endswith("_bucket")]
    assert len(buckets) == 16 and dict(buckets[-1][0])["le"] == "+Inf"
    assert all(v == 0 for _, v in buckets)
    assert histogram[("storywire_processing_latency_seconds_count", ())] == 0
    assert histogram[("storywire_processing_latency_seconds_sum", ())] == 0
    assert families["storywire_articles_queued"][("storywire_articles_queued", ())] == 0
    assert families["storywire_engine_seconds"] == {
        ("storywire_engine_seconds_total", (("phase", phase),)): 0 for phase in PHASES}
    assert ("storywire_queue_messages", (("queue", names.QUEUE),)) in families["storywire_queue_messages"]
    # Per-process collectors are left out: a scrape lands on any gunicorn process.
    assert not [name for name in families if name.startswith(("process_", "python_"))]


def test_accepted_and_queued_count_what_the_api_stored_and_nothing_else(client, redis_url):
    messages_before = broker_length(redis_url)
    first, second = article(), article()
    assert client.post("/v1/articles", json=first).status_code == 202
    assert client.post("/v1/articles", json=second).status_code == 202
    # A resend stores nothing: answered 200, not counted (and, a moment after its task went out, no task).
    assert client.post("/v1/articles", json=first).status_code == 200
    # A batch: two new, one known, one invalid: two counted, one task.
    batch = client.post("/v1/articles/batch", json={"articles": [article(), second, article(), {"title": ""}]})
    assert batch.status_code == 202
    assert [r.get("created") for r in batch.get_json()["results"]] == [True, False, True, None]
    # Invalid posts count nothing.
    assert client.post("/v1/articles", json={"source": "x"}).status_code == 422
    assert client.post("/v1/articles/batch", json={"articles": [{"title": ""}]}).status_code == 422

    families = scrape(client)
    assert counter(families, "articles_accepted") == 4
    assert families["storywire_articles_queued"][("storywire_articles_queued", ())] == 4
    assert families["storywire_queue_messages"][("storywire_queue_messages", (("queue", names.QUEUE),))] \
        == messages_before + 3 == broker_length(redis_url)
    for name in COUNTERS[1:]:
        assert counter(families, name) == 0  # nothing consumes database 0: nothing decided


def test_an_accept_undone_because_the_queue_is_down_is_not_counted(redis_url, settings):
    """The broker on a closed port: the post answers 503 and its article is
    removed again, so it was never accepted."""
    app = make_app(redis_url, settings, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    assert_error(client.post("/v1/articles", json=article()), 503, "queue_unavailable")
    families = scrape(client)
    assert counter(families, "articles_accepted") == 0
    assert families["storywire_articles_queued"][("storywire_articles_queued", ())] == 0
    assert families["storywire_engine_seconds"] == {
        ("storywire_engine_seconds_total", (("phase", phase),)): 0 for phase in PHASES}
    # The counts live in the store, which answers: they are served, without the broker's queue length.
    assert "storywire_queue_messages" not in families


def test_every_api_process_reports_the_same_counts(redis_url, settings):
    """Two apps (two gunicorn processes, say) over one Redis: a post through
    one shows in the other's scrape, which a per-process counter would miss."""
    one, two = make_app(redis_url, settings).test_client(), make_app(redis_url, settings).test_client()
    for _ in range(3):
        assert one.post("/v1/articles", json=article()).status_code == 202
    assert counter(scrape(two), "articles_accepted") == counter(scrape(one), "articles_accepted") == 3


@pytest.mark.e2e
def test_a_broker_on_another_server_is_read_there(redis_url, settings, tmp_path):
    broker = EmbeddedRedis(tmp_path / "broker", appendonly=False).start()
    try:
        broker_url = f"redis://127.0.0.1:{broker.port}/0"
        client = make_app(redis_url, settings, CELERY_BROKER_URL=broker_url).test_client()
        for _ in range(2):
            assert client.post("/v1/articles", json=article()).status_code == 202
        assert client.post("/v1/articles/batch", json={"articles": [article(), article()]}).status_code == 202
        families = scrape(client)
        assert families["storywire_queue_messages"][("storywire_queue_messages", (("queue", names.QUEUE),))] == 3
        assert families["storywire_articles_queued"][("storywire_articles_queued", ())] == 4
    finally:
        broker.stop()


def test_a_broker_that_is_not_redis_has_no_queue_gauge_and_the_rest_still_works(redis_url, settings):
    client = make_app(redis_url, settings, CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//").test_client()
    families = scrape(client)
    assert "storywire_queue_messages" not in families
    assert counter(families, "articles_accepted") == 0


def test_openmetrics_is_served_when_asked_for(client):
    assert client.post("/v1/articles", json=article()).status_code == 202
    resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = resp.get_data(as_text=True)
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}  # the strict parser: +Inf bucket == count, and so on
    [accepted] = [s for s in families["storywire_articles_accepted"].samples if s.name.endswith("_total")]
    assert accepted.value == 1
    assert families["storywire_processing_latency_seconds"].type == "histogram"


@pytest.mark.parametrize("accept", ["", "*/*", "text/html", ";;;,,,", "application/openmetrics-text; version=0.0.1",
                                    "application/json, text/plain", "x" * 100_000])
def test_any_other_accept_header_gets_the_text_format(client, accept):
    families = scrape(client, Accept=accept)
    assert "storywire_articles_accepted" in families


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=abc",
                                    "application/openmetrics-text;version=1.x.0", "text/plain; version=zz"])
def test_an_openmetrics_version_that_cannot_be_read_is_a_406_that_says_what_to_send(client, accept):
    err = assert_error(client.get("/metrics", headers={"Accept": accept}), 406, "not_acceptable")
    assert "text/plain" in err["message"]
    assert accept not in err["message"]


def test_a_query_string_is_ignored_and_never_echoed(client):
    hostile = "name[]=%3Cscript%3E&%ff%fe=" + "A" * 20_000
    resp = client.get(f"/metrics?{hostile}")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert "<script>" not in body and "A" * 100 not in body
    assert "storywire_articles_accepted_total 0.0" in body


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_other_methods_get_a_405_envelope(client, method):
    resp = getattr(client, method)("/metrics", json={"reset": True})
    assert_error(resp, 405)
    assert "GET" in resp.headers["Allow"]


def test_head_answers_without_a_body(client):
    resp = client.head("/metrics")
    assert resp.status_code == 200 and resp.get_data() == b""


# ====================================================================== access
def test_metrics_are_public_while_reads_are(redis_url, settings):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=KEY).test_client()
    assert client.get("/metrics").status_code == 200


def test_metrics_need_the_key_when_reads_do(redis_url, settings):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS="false").test_client()
    for headers in ({}, {"Authorization": "Bearer sw-wrong-000000000000000000"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": "Bearer " + "k" * 10_000}):
        resp = client.get("/metrics", headers=headers)
        assert_error(resp, 401, "unauthorized")
        assert KEY not in resp.get_data(as_text=True)
    assert "storywire_articles_accepted" in scrape(client, Authorization=f"Bearer {KEY}")


# ====================================================================== when Redis misbehaves
def test_redis_down_is_a_503_envelope_not_a_page_of_zeros(settings):
    url = f"redis://127.0.0.1:{free_port()}/0"
    resp = make_app(url, settings).test_client().get("/metrics")
    assert_error(resp, 503, "unavailable")
    assert resp.headers["Retry-After"]


def test_a_counter_write_failing_after_an_accept_leaves_the_post_standing(redis_url, settings, store, caplog):
    """Counting never refuses an article: the metrics hash made the wrong type
    (as a hand-made mistake would) is left alone, and the post still answers 202."""
    app = make_app(redis_url, settings)
    store.redis.set(store.keys.metrics, "not a hash")
    resp = app.test_client().post("/v1/articles", json=article())
    assert resp.status_code == 202
    assert store.redis.get(store.keys.metrics) == b"not a hash"
    assert store.redis.zcard(store.keys.queued) == 1


def test_a_field_that_is_not_a_number_is_skipped_and_the_rest_served(client, store, caplog):
    store.redis.hset(store.keys.metrics, mapping={"articles_decided": "7", "duplicates": "lots",
                                                  "latency:0.1": "\xff\x00", "junk\nfield": "1"})
    with caplog.at_level(logging.WARNING, logger="storywire.metrics"):
        families = scrape(client)
    assert counter(families, "articles_decided") == 7
    assert counter(families, "duplicates") == 0
    assert families["storywire_processing_latency_seconds"][("storywire_processing_latency_seconds_count", ())] == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "duplicates" in warned and "latency:0.1" in warned


def test_a_waiting_article_whose_record_is_not_a_hash_is_aged_by_its_queued_score(client, store):
    """The oldest-article read (a script, cluster-safe) takes a record of the
    wrong type (a hand-made mistake) as one without a receipt time."""
    waiting = client.post("/v1/articles", json=article()).get_json()["id"]
    store.redis.delete(store.keys.article(waiting))
    store.redis.set(store.keys.article(waiting), "not a hash")
    store.redis.zadd(store.keys.queued, {waiting: time.time() - 60})
    families = scrape(client)
    assert 59 <= families["storywire_oldest_queued_age_seconds"][("storywire_oldest_queued_age_seconds", ())] < 70
