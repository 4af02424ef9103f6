"""Copies in feeds: one wire item under two outlets, and a snippet of a full article already held."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from storyengine.articles import new_article_record
from storyengine.decider import Decider

DATA = Path(__file__).parent.parent / "data"
FULL = [json.loads(line) for line in (DATA / "two_events.jsonl").open()]
ITEMS = [json.loads(line) for line in (DATA / "feed_items.jsonl").open()]


def post(store, article_id: str, source: str, title: str, body: str, when: str, hours: float = 0.0):
    published = datetime.fromisoformat(when.replace("Z", "+00:00")) + timedelta(hours=hours)
    record = new_article_record(source=source, url=f"https://{source}/{article_id}", title=title, body=body,
                                published_at=published, article_id=article_id)
    store.accept_articles([record])
    return Decider(store).process(article_id)


def test_one_wire_item_under_two_outlets_is_folded(store):
    item = ITEMS[0]
    post(store, "first", "outlet-a.example", item["title"], item["body"], item["published_at"])
    copy = post(store, "second", "outlet-b.example", item["title"], item["body"], item["published_at"], hours=1)
    assert copy.duplicate_of == "first"


def test_a_cut_of_a_wire_item_is_folded(store):
    item = ITEMS[1]
    post(store, "whole", "outlet-a.example", item["title"], item["body"], item["published_at"])
    cut = " ".join(item["body"].split()[:12])
    copy = post(store, "cut", "outlet-b.example", item["title"], cut, item["published_at"], hours=1)
    assert copy.duplicate_of == "whole"


def test_a_snippet_of_a_full_article_held_is_its_copy(store):
    article = FULL[0]
    post(store, "full", "wire.example", article["title"], article["body"], article["published_at"])
    snippet = " ".join(article["body"].split()[:30]) + "..."
    copy = post(store, "snippet", "feed.example", article["title"], snippet, article["published_at"], hours=2)
    assert copy.duplicate_of == "full"
    assert store.get_article("snippet")["decision"]["duplicate"]["matched"] == "full"


def test_a_snippet_that_only_shares_the_topic_is_not_a_copy(store):
    # Two earthquakes' coverage: another outlet's own write-up of the same event is not a copy either.
    quake, other = FULL[0], next(r for r in FULL[1:] if r["gold"]["story"] == FULL[0]["gold"]["story"]
                                 and not r["gold"]["duplicate_of"])
    post(store, "full", "wire.example", quake["title"], quake["body"], quake["published_at"])
    snippet = " ".join(other["body"].split()[:30])
    outcome = post(store, "own", "feed.example", other["title"], snippet, other["published_at"], hours=2)
    assert outcome.duplicate_of is None


def test_a_headline_alone_is_no_copy_of_an_article_that_merely_shares_words(store):
    article = FULL[0]
    post(store, "full", "wire.example", article["title"], article["body"], article["published_at"])
    outcome = post(store, "headline", "feed.example", "Powerful earthquakes shake Indonesia's Papua province", "",
                   article["published_at"], hours=1)
    assert outcome.duplicate_of is None
