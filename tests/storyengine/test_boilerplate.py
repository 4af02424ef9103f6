"""Boilerplate learnt per outlet from the stream (storyengine.boilerplate), against a real Redis."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from storyengine.articles import new_article_record
from storyengine.boilerplate import COUNT, Boilerplate, Edges, sentence_digest
from storyengine.keys import Keys
from storyengine.decider import Decider
from storyengine.settings import Settings
from storyengine.store import RedisStore
from storyengine.text import without_addresses, words

ITEMS = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "feed_items.jsonl").open()]
ITEMS.sort(key=lambda r: r["published_at"])

# The footer Al Jazeera's video feed put under every item: unrelated videos became one story through it.
LINK_FOOTER = ("Subscribe to our channel http://bit.ly/AJSubscribe\nFollow us on Twitter https://twitter.com/AJEnglish\n"
               "Find us on Facebook https://www.facebook.com/aljazeera\nCheck our website: http://www.aljazeera.com/")
# Furniture without a link: learnt from the outlet's earlier items.
SHARE_FOOTER = ("Share this article on Facebook, Twitter, WhatsApp or by email.\n"
                "Read more about this and other stories on our website.\n"
                "Sign up for our morning newsletter and get the day's headlines delivered to your inbox every day.")
FOOTER_WORDS = {"subscribe", "channel", "twitter", "facebook", "website", "aljazeera", "ajenglish", "com", "https",
                "http", "www", "bit", "ly", "share", "whatsapp", "email", "newsletter", "inbox", "headlines", "read"}


def records(outlet: str, footer: str) -> list[dict]:
    return [new_article_record(source=outlet, url=f"https://{outlet}/{row['id']}", title=row["title"],
                               body=f"{row['body']}\n{footer}", article_id=f"{outlet}-{n}",
                               published_at=datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")))
            for n, row in enumerate(ITEMS)]


def decide(store, recs: list[dict], one_by_one: bool = False) -> list:
    store.accept_articles(recs)
    if one_by_one:
        return [Decider(store).process(r["id"]) for r in recs]  # a fresh process each time: the counts are in Redis
    return Decider(store).process_many([r["id"] for r in recs])


def left_out(store, article_id: str) -> int:
    return (store.get_article(article_id)["decision"].get("text") or {}).get("boilerplate_sentences_left_out", 0)


@pytest.mark.parametrize("footer", [LINK_FOOTER, SHARE_FOOTER], ids=["links", "share-bar"])
@pytest.mark.parametrize("one_by_one", [False, True], ids=["one-batch", "one-at-a-time"])
def test_a_footer_on_every_item_joins_nothing_and_names_nothing(store, footer, one_by_one):
    outcomes = decide(store, records("video-news.example", footer), one_by_one)
    stories = [o.story_id for o in outcomes]
    assert len(set(stories)) == len(ITEMS), "unrelated items were joined through their footer"
    assert not any(o.duplicate_of for o in outcomes), "unrelated items were taken for copies through their footer"
    # An outlet's first item has nothing to be compared with: only its link lines are known to be furniture.
    own_words = {n: set(words(f"{row['title']} {row['body']}")) for n, row in enumerate(ITEMS)}
    named_by_the_footer = [story_id for n, story_id in enumerate(stories)
                           if set(store.get_story(story_id)["top_terms"]) & (FOOTER_WORDS - own_words[n])]
    assert named_by_the_footer == ([] if footer is LINK_FOOTER else stories[:1])


def test_what_is_left_out_is_said_in_the_decision(store):
    recs = records("video-news.example", SHARE_FOOTER)
    decide(store, recs)
    # Seen in an earlier item: from the second item on, the three lines are the outlet's furniture.
    assert [left_out(store, r["id"]) for r in recs] == [0] + [3] * (len(recs) - 1)
    links = records("links.example", LINK_FOOTER)
    decide(store, links)
    # Lines that only point elsewhere are left out from the first item.
    assert all(left_out(store, r["id"]) == 4 for r in links)


def test_the_stored_text_keeps_the_footer(store):
    recs = records("video-news.example", SHARE_FOOTER)[:4]
    store.accept_articles(recs)
    assert "Read more about this" in store.load_article(recs[3]["id"])["body"]


def test_boilerplate_is_per_outlet(store):
    decide(store, records("first.example", SHARE_FOOTER)[:5])
    other = records("second.example", SHARE_FOOTER)[5:6]
    decide(store, other)
    assert left_out(store, other[0]["id"]) == 0  # another outlet's furniture says nothing about this one


def test_the_same_wire_item_under_two_outlets_is_one_article_despite_their_furniture(store):
    # Two outlets run one wire item, each under its own learnt footer: a copy, found through the text alone.
    first = records("first.example", SHARE_FOOTER)
    second = records("second.example", LINK_FOOTER)
    decide(store, first[:6])
    decide(store, second[:3])
    item = ITEMS[8]
    wire = [new_article_record(source=outlet, url=f"https://{outlet}/wire", title=item["title"],
                               body=f"{item['body']}\n{footer}", article_id=f"wire-{n}",
                               published_at=datetime.fromisoformat(item["published_at"].replace("Z", "+00:00")))
            for n, (outlet, footer) in enumerate((("first.example", SHARE_FOOTER), ("second.example", LINK_FOOTER)))]
    outcomes = decide(store, wire)
    assert outcomes[1].duplicate_of == "wire-0" or outcomes[1].duplicate_of == first[8]["id"]


def test_a_repeat_of_an_item_is_judged_whole(store):
    recs = records("video-news.example", "")[:3]
    decide(store, recs)
    again = new_article_record(source="video-news.example", url="https://video-news.example/repeat",
                               title=recs[0]["title"], body=recs[0]["body"], article_id="repeat",
                               published_at=datetime.fromisoformat(recs[0]["published_at"].replace("Z", "+00:00")))
    [outcome] = decide(store, [again])
    assert left_out(store, "repeat") == 0
    assert outcome.duplicate_of == recs[0]["id"]


def test_a_retried_batch_counts_its_items_once(store, redis_client):
    recs = records("video-news.example", SHARE_FOOTER)[:3]
    decide(store, recs)
    key = store.keys.boilerplate("video-news.example")
    before = redis_client.hgetall(key)
    Decider(store).process_many([r["id"] for r in recs])  # delivered again: already decided
    assert redis_client.hgetall(key) == before
    assert sorted(map(int, before.values()))[-3:] == [3, 3, 3]


def test_the_counters_are_bounded_and_keep_what_recurs(store, redis_client):
    settings: Settings = store.settings
    script = redis_client.register_script(COUNT)
    key = store.keys.boilerplate("bounded.example")
    footer = sentence_digest("Follow us for more")
    for n in range(200):
        unique = [sentence_digest(f"news line number {n} part {part}") for part in range(3)]
        script(keys=[key], args=[16, 3600, footer, *unique])
        assert redis_client.hlen(key) <= 16 + 3  # pruned each time it passes the bound
    assert int(redis_client.hget(key, footer)) > 100  # a line on every item survives every pruning
    assert 0 < redis_client.ttl(key) <= 3600
    assert settings.boilerplate_counters < 512  # the compact encoding


def test_only_the_edges_of_a_long_body_are_judged():
    body = "\n".join(f"Sentence number {n} of the article." for n in range(20))
    edges = Edges(body, 3, 20)
    assert sorted(edges.digests) == [0, 1, 2, 17, 18, 19]
    assert len(Edges("One. Two. Three.", 3, 20).digests) == 3
    # Furniture is short: a long sentence is never counted.
    long = "This sentence of the report runs on for " + "many more words " * 8 + "than any footer would."
    assert sorted(Edges(f"Read more.\n{long}", 3, 20).digests) == [0]


def test_a_line_is_the_same_line_whatever_its_case_and_typography():
    assert sentence_digest("Read more \u2014 \u201cclick\u201d") == sentence_digest("READ MORE - \"click\"")
    assert sentence_digest("...") is None


@pytest.mark.parametrize("text,kept", [
    ("Follow us https://twitter.com/x and mail desk@example.org", "Follow us and mail"),
    ("See aljazeera.com or www.example.net/page for more", "See or for more"),
    ("@AJEnglish reports", "reports"),
    ("U.S. stocks rose 3.5 pct", "U.S. stocks rose 3.5 pct"),
])
def test_addresses_never_become_words(text, kept):
    assert without_addresses(text) == kept


SERIES = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "feed_series.jsonl").open()]


def series_records() -> list[dict]:
    return [new_article_record(source=row["source"], url=row["url"], title=row["title"], body=row["body"],
                               article_id=row["id"],
                               published_at=datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")))
            for row in SERIES]


def headline_parts_left_out(store, article_id: str) -> int:
    return (store.get_article(article_id)["decision"].get("text") or {}).get("headline_parts_left_out", 0)


# Every item of the file is a different event from the items before it, but for one re-post.
REPOST = "U.S. Oil Prices Plunge Into Negative Territory: Live Updates"
# These come after their series part was used in two earlier headlines of the outlet.
AFTER_THE_SERIES_IS_LEARNT = ["Stocks in Asia Decline, Following Wall Street: Live Updates",
                              "Coronavirus in US: Live Updates",
                              "The Papers: 'Glimmer of light' but social distancing to continue",
                              "This Day in History: April 23",
                              "Airlines and Automakers Consider Plans to Bring Workers Back: Live Updates",
                              "Coronavirus News: Live Updates"]


def actions(store, recs: list[dict]) -> dict[str, str]:
    return {r["title"]: store.get_article(r["id"])["decision"]["story"]["action"] for r in recs}


def test_a_series_name_in_headlines_joins_nothing_once_learnt(store):
    recs = series_records()
    decide(store, recs, one_by_one=True)
    done = actions(store, recs)
    assert [done[t] for t in AFTER_THE_SERIES_IS_LEARNT] == ["opened"] * len(AFTER_THE_SERIES_IS_LEARNT), \
        "an item joined an earlier event through its outlet's series name"
    # The event's own words stay: the re-post joins the first post.
    assert done[REPOST] == "joined"
    parts = {r["title"]: headline_parts_left_out(store, r["id"]) for r in recs}
    assert [parts[t] for t in AFTER_THE_SERIES_IS_LEARNT] == [1] * len(AFTER_THE_SERIES_IS_LEARNT)
    # Used in fewer than two earlier headlines: kept (a story's own label recurs too, less).
    assert parts["This Day in History: April 21"] == parts["This Day in History: April 22"] == 0


def test_without_the_headline_rule_the_series_joins_events(redis_client, settings):
    # The check above can fail: with headline parts never learnt, these very items join earlier events.
    store = RedisStore(redis_client, settings.replace(boilerplate_min_items_headline=10 ** 6))
    try:
        recs = series_records()
        decide(store, recs, one_by_one=True)
        done = actions(store, recs)
        assert sum(done[t] == "joined" for t in AFTER_THE_SERIES_IS_LEARNT) >= 3
    finally:
        store.clear()


def test_a_headline_that_is_all_series_parts_is_judged_whole(settings):
    # A one-part headline is the item's own, never the outlet's.
    assert Edges("", 4, 20, "Trump's approval rating is down significantly").segment_digests == {}
    learnt = Boilerplate(Keys(settings.key_prefix), settings)
    daily = [{"source": "paper.example", "title": "Coronavirus Briefing: What Happened Today", "body": f"Day {n}."}
             for n in range(4)]
    titles = [learnt.strip(str(n), record).title for n, record in enumerate(daily)]
    assert titles == [record["title"] for record in daily]  # every part seen before: the headline kept whole
    later = {"source": "paper.example", "title": "Oil Prices Plunge: What Happened Today", "body": "Oil."}
    stripped = learnt.strip("later", later)
    assert (stripped.title, stripped.segments_dropped) == ("Oil Prices Plunge", 1)
