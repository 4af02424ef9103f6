"""End to end: articles posted over HTTP, processed by a real Celery worker
process against a real Redis, stories and duplicate links read back over HTTP."""
from __future__ import annotations

import time

import pytest

from tests.helpers import served_id, stream_ids
from tests.workers.posts_and_waits import load_articles, wait_processed

pytestmark = pytest.mark.e2e


def test_two_events_with_reprints_become_two_stories(e2e_app):
    client = e2e_app.test_client()
    rows = load_articles()
    gold = {r["id"]: r.pop("gold") for r in rows}  # never sent; keyed by the stream's ids
    for row in rows:
        answer = client.post("/v1/articles", json=row)
        assert answer.status_code == 202, answer.get_json()
        # The client's id, scoped by its outlet, is the id the article is served under.
        assert (answer.get_json()["id"], answer.get_json()["client_id"]) == (served_id(row), row["id"])
    stream_id = stream_ids(rows)  # served id -> the stream's id
    assert len(stream_id) == len(rows)
    by_served = wait_processed(client, list(stream_id))
    articles = {stream_id[a]: view for a, view in by_served.items()}  # by the stream's ids, as gold is
    assert {a["status"] for a in articles.values()} == {"processed"}
    assert {a: v["client_id"] for a, v in articles.items()} == {a: a for a in gold}

    # Duplicate links: each reprint names its canonical copy, originals name none.
    for article_id, g in gold.items():
        duplicate_of = articles[article_id].get("duplicate_of")
        assert stream_id.get(duplicate_of, duplicate_of) == g["duplicate_of"], article_id
        decision = articles[article_id]["decision"]
        assert "duplicate" in decision and "story" in decision

    # Stories: one per event, each reprint in its canonical's story.
    by_gold: dict[str, set] = {}
    for article_id, g in gold.items():
        by_gold.setdefault(g["story"], set()).add(articles[article_id]["story"])
    assert all(len(stories) == 1 for stories in by_gold.values()), by_gold
    story_ids = {next(iter(s)) for s in by_gold.values()}
    assert len(story_ids) == 2

    listing = client.get("/v1/stories").get_json()
    assert {s["id"] for s in listing["stories"]} == story_ids
    for summary in listing["stories"]:
        assert summary["article_count"] == 5
        assert summary["source_count"] == 5  # four outlets and the reprinting one
        assert summary["top_terms"]
        story = client.get(f"/v1/stories/{summary['id']}").get_json()
        assert len(story["articles"]) == 4  # the reprint is folded under its canonical
        folded = [a for a in story["articles"] if a["duplicates"]]
        assert len(folded) == 1 and len(folded[0]["duplicates"]) == 1
        assert folded[0]["duplicates"][0]["duplicate_of"] == folded[0]["id"]
        # Its members, by the stream's ids, are exactly one gold story's articles.
        members = {stream_id.get(m["id"], m["id"]) for a in story["articles"] for m in (a, *a["duplicates"])}
        assert members in [{a for a, g in gold.items() if g["story"] == s} for s in by_gold], members


def test_posting_again_processes_nothing_twice(e2e_app):
    client = e2e_app.test_client()
    rows = load_articles()[:3]
    for row in rows:
        row.pop("gold")
        assert client.post("/v1/articles", json=row).status_code == 202
    wait_processed(client, [served_id(r) for r in rows])
    before = client.get("/v1/stories").get_json()
    for row in rows:
        again = client.post("/v1/articles", json=row)
        assert again.status_code == 200 and again.get_json()["created"] is False
        assert (again.get_json()["id"], again.get_json()["client_id"]) == (served_id(row), row["id"])
    time.sleep(1.0)  # any (wrongly) enqueued task would have run by now
    after = client.get("/v1/stories").get_json()
    assert after == before


def test_failed_article_says_why(e2e_app):
    client = e2e_app.test_client()
    # Passes the schema (a title is present) but has no words to work with.
    answer = client.post("/v1/articles", json={"source": "x", "url": "https://x.example/1", "title": "!!! ???"})
    assert answer.status_code == 202
    article = wait_processed(client, [answer.get_json()["id"]])[answer.get_json()["id"]]
    assert article["status"] == "failed"
    assert "no words" in article["error"]
