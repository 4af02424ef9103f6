"""Metrics end to end: articles posted over HTTP, decided by the session's real
Celery worker (tests/conftest.py ``celery_worker``), counted in Redis by the
API and the worker, and read back from GET /metrics with prometheus_client's
parser. What the counters must say is worked out from the articles
themselves (their duplicate links and stories over the API, their received
and processed times in the store), not written into the test.
"""
from __future__ import annotations

import math
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from storyengine.metrics import latency_bucket
from storyengine.phases import PHASES
from tests.helpers import served_id
from tests.articles import BANK, COURIER, REPRINT, T0, as_post
from tests.newsroom import BANK as NEWSROOM_BANK
from tests.newsroom import DAM, Newsroom
from tests.workers.posts_and_waits import WORDLESS, load_articles, wait_merged, wait_processed
from workers import names

pytestmark = pytest.mark.e2e


class Scrape:
    """One GET /metrics, parsed."""

    def __init__(self, client) -> None:
        resp = client.get("/metrics")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        self.families = {f.name: f for f in text_string_to_metric_families(resp.get_data(as_text=True))}

    def counter(self, name: str) -> float:
        [sample] = [s for s in self.families[f"storywire_{name}"].samples if s.name.endswith("_total")]
        return sample.value

    def counters(self) -> dict[str, float]:
        return {name: self.counter(name) for name in ("articles_accepted", "articles_decided", "duplicates",
                                                      "stories_opened", "stories_merged", "articles_failed")}

    def engine_seconds(self) -> dict[str, float]:
        return {s.labels["phase"]: s.value for s in self.families["storywire_engine_seconds"].samples
                if s.name.endswith("_total")}

    def gauge(self, name: str) -> float:
        [sample] = self.families[name].samples
        return sample.value

    def histogram(self) -> tuple[list[tuple[float, float]], float, float]:
        """(cumulative buckets by upper bound, count, sum) of the latency histogram."""
        samples = self.families["storywire_processing_latency_seconds"].samples
        buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
        [count] = [s.value for s in samples if s.name.endswith("_count")]
        [total] = [s.value for s in samples if s.name.endswith("_sum")]
        return buckets, count, total


def sentinel_post(n: int) -> dict:
    """An unrelated article published near the others (so it moves the stream's
    clock too little to age anything out): posted last, decided last by the
    one worker process, so once it is processed every task sent before it has run."""
    return {"id": f"sentinel-{n}", "source": "harbour.example", "url": f"https://harbour.example/{n}",
            "title": f"Harbour dredging resumes at berth {n}",
            "body": f"Dredging of berth {n} in the harbour resumed on Monday after a pause for the winter storms.",
            "published_at": (T0 + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_counts_and_latencies_follow_what_the_worker_decided(e2e_app, celery_worker):
    client = e2e_app.test_client()
    store = e2e_app.extensions["storywire"].store
    rows = load_articles()
    for row in rows:
        row.pop("gold")
    # Dated inside the stream: once the worker has decided the first articles,
    # WORDLESS's own date (two years earlier) is older than the retention
    # window on the stream clock, and the batch would refuse it (too_old).
    wordless_post = dict(WORDLESS, published_at=max(r["published_at"] for r in rows))
    for row in rows[:6]:
        assert client.post("/v1/articles", json=row).status_code == 202
    batch = client.post("/v1/articles/batch", json={"articles": rows[6:] + [wordless_post]})
    assert batch.status_code == 202 and batch.get_json()["accepted"] == 5, batch.get_json()
    decided_ids = [served_id(r) for r in rows]
    wordless = served_id(wordless_post)
    articles = wait_processed(client, decided_ids + [wordless])
    assert {articles[a]["status"] for a in decided_ids} == {"processed"}
    assert articles[wordless]["status"] == "failed"

    scrape = Scrape(client)
    stories = {articles[a]["story"] for a in decided_ids}
    assert scrape.counters() == {
        "articles_accepted": len(rows) + 1,
        "articles_decided": len(rows),
        "duplicates": sum(1 for a in decided_ids if articles[a]["duplicate_of"]),
        "stories_opened": len(stories),  # no repair pass ran: every story here was opened by one of them
        "stories_merged": 0,
        "articles_failed": 1,
    }
    assert scrape.counter("duplicates") == 2 and len(stories) == 2  # the data set's answer, as a sanity check
    assert scrape.gauge("storywire_articles_queued") == 0
    assert scrape.gauge("storywire_queue_messages") == 0

    buckets, count, total = scrape.histogram()
    assert count == scrape.counter("articles_decided") == buckets[-1][1] and math.isinf(buckets[-1][0])
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)  # cumulative: never decreasing
    latencies = [max(0.0, p - r) for r, p in store.processing_times(decided_ids)]
    expected = [sum(1 for s in latencies if latency_bucket(s) <= bound) for bound, _ in buckets]
    assert [c for _, c in buckets] == expected
    assert total == pytest.approx(sum(latencies), abs=1e-3) and total > 0

    # Where the worker's time went: every phase of deciding these articles
    # took some (retention only when it was due), and all of it together is
    # less than the time the worker had them (received to the last processed).
    spent = scrape.engine_seconds()
    assert set(spent) == set(PHASES)
    assert all(spent[phase] > 0 for phase in PHASES if phase != "retention"), spent
    received = [r for r, _ in store.processing_times(decided_ids)]
    assert sum(spent.values()) < max(p for _, p in store.processing_times(decided_ids)) - min(received)


def test_a_task_sent_again_counts_nothing(e2e_app, celery_worker):
    """Redelivered or requeued tasks (the same articles sent again, one by one
    and as a batch, a failed one too) decide nothing new, so count nothing."""
    client = e2e_app.test_client()
    celery = e2e_app.extensions["storywire"].celery
    posts = [as_post(COURIER), as_post(REPRINT), as_post(BANK), WORDLESS]
    ids = [served_id(p) for p in posts]
    assert client.post("/v1/articles/batch", json={"articles": posts}).status_code == 202
    wait_processed(client, ids)
    before = Scrape(client)
    assert before.counters() == {"articles_accepted": 4, "articles_decided": 3, "duplicates": 1,
                                 "stories_opened": 2, "stories_merged": 0, "articles_failed": 1}

    celery.send_task(names.PROCESS_ARTICLES, args=[ids], queue=names.QUEUE, retry=False)
    for article_id in ids:
        celery.send_task(names.PROCESS_ARTICLE, args=[article_id], queue=names.QUEUE, retry=False)
    sentinel = sentinel_post(1)
    assert client.post("/v1/articles", json=sentinel).status_code == 202
    [view] = wait_processed(client, [served_id(sentinel)]).values()
    assert view["duplicate_of"] is None and view["decision"]["story"]["action"] == "opened"

    after = Scrape(client)
    expected = dict(before.counters())
    for name in ("articles_accepted", "articles_decided", "stories_opened"):
        expected[name] += 1  # the sentinel, and nothing else
    assert after.counters() == expected
    assert after.histogram()[1] == before.histogram()[1] + 1
    # The resent tasks decided nothing, but the time they took still counts.
    assert after.engine_seconds()["load"] > before.engine_seconds()["load"]


def test_the_repair_pass_counts_the_stories_it_merged(e2e_app, celery_worker):
    store = e2e_app.extensions["storywire"].store
    client = e2e_app.test_client()
    newsroom = Newsroom(store)  # decided here, in this process: two stories of one event
    kept = newsroom.post(DAM[0], 0, "alpha.example")
    gone = newsroom.post(DAM[1], 1, "beta.example")
    newsroom.post(NEWSROOM_BANK, 2, "delta.example")
    celery = e2e_app.extensions["storywire"].celery

    celery.send_task(names.REPAIR_STORIES, queue=names.QUEUE, retry=False)
    assert wait_merged(store, gone.story_id) == kept.story_id
    # Again: nothing left to merge, nothing counted.
    celery.send_task(names.REPAIR_STORIES, queue=names.QUEUE, retry=False)
    sentinel = sentinel_post(2)
    assert client.post("/v1/articles", json=sentinel).status_code == 202
    wait_processed(client, [served_id(sentinel)])

    scrape = Scrape(client)
    assert scrape.counter("stories_merged") == 1
    # Decided articles are counted in the commit that decides them, wherever it runs: the three
    # decided in this process and the worker's sentinel.
    assert scrape.counter("articles_decided") == 4
