"""A poisoned article fails alone, through the real worker process, against a real Redis.

The poison is what a damaged store makes: the stored shingles of a canonical
article cut to an odd length, so deciding an exact copy of it raises. The
copy is posted in one batch with three other articles: they are decided,
the copy is tried max_attempts times and failed with the reason, and
/metrics counts it.
"""
from __future__ import annotations

import pytest

from tests.workers.posts_and_waits import wait_processed

pytestmark = pytest.mark.e2e


def item(n: int, title: str, body: str, source: str) -> dict:
    return {"source": source, "url": f"https://{source}/poison/{n}", "title": title, "body": body,
            "published_at": "2024-03-05T08:00:00Z"}


BANK = ("Lindenmark central bank raises interest rates to curb inflation",
        "The central bank of Lindenmark raised its main interest rate by half a point on Tuesday, the third "
        "increase this year, saying inflation had stayed above its target for too long.")
OTHERS = [("Storm closes the northern ferry routes for two days",
           "Ferry operators cancelled every northern sailing as a storm with gusts above ninety kilometres an "
           "hour swept the coast, the harbour office said."),
          ("City council approves the new tram line after a long debate",
           "The council voted twenty-one to fourteen for the eastern tram line, whose construction is to start "
           "next spring and last three years."),
          ("Museum returns a bronze statue to the island where it was found",
           "The national museum handed back a bronze statue found by fishermen in 1932, after a request from "
           "the island's elders that took ten years.")]


def test_a_poisoned_article_fails_alone_through_the_worker(e2e_app):
    client = e2e_app.test_client()
    store = e2e_app.extensions["storywire"].store
    original = client.post("/v1/articles", json=item(0, *BANK, "finance-daily.example")).get_json()["id"]
    wait_processed(client, [original])
    store.redis.hset(store.keys.article(original), "shingle_set", b"\x01\x02\x03")  # the damage
    failed_before = int(store.redis.hget(store.keys.metrics, "articles_failed") or 0)

    batch = [item(1, *OTHERS[0], "coast-radio.example"), item(2, *BANK, "copy-desk.example"),
             item(3, *OTHERS[1], "city-news.example"), item(4, *OTHERS[2], "island-post.example")]
    answer = client.post("/v1/articles/batch", json={"articles": batch}).get_json()
    ids = [r["id"] for r in answer["results"]]
    seen = wait_processed(client, ids)

    copy = seen.pop(ids[1])
    assert copy["status"] == "failed"
    assert "internal error while deciding: ValueError" in copy["error"] and "after 3 tries" in copy["error"]
    assert {a["status"] for a in seen.values()} == {"processed"}
    assert int(store.redis.hget(store.keys.article(ids[1]), "attempts")) == 3
    assert int(store.redis.hget(store.keys.metrics, "articles_failed") or 0) == failed_before + 1
