"""A story's scores agree with its hash after every kind of write, against a
real Redis: a batch's commit, the promotion of an earlier copy, a repair
merge and retention's deletes all write stories through storyengine.records.

The invariant: the recent index holds the story's last update, the size index
its count then its last update, and every term that indexes it holds
``index_score(last_updated)`` (its last update rounded up to the next step,
never below it), and no term holds a story it does not index.
"""
from __future__ import annotations

from storyengine.records import json_field
from storyengine.repair import Repairer
from storyengine.store import RedisStore
from storyengine.story_writer import index_score, size_score
from tests.newsroom import BANK, DAM, Newsroom, reprint


def assert_scores_agree(store: RedisStore) -> int:
    """Check the invariant for every story; the number of stories checked."""
    k, r = store.keys, store.redis
    stories = {}
    for key in r.scan_iter(match=f"{k.prefix}:story:*", count=1000):
        name = key.decode()[len(f"{k.prefix}:story:"):]
        if ":" in name or r.type(key) != b"hash":
            continue  # a story's member or source list
        raw = r.hgetall(key)
        if b"merged_into" in raw:
            assert r.zscore(k.stories_recent, name) is None and r.zscore(k.stories_size, name) is None
            continue
        stories[name] = raw
    for sid, raw in stories.items():
        last_updated, count = float(raw[b"last_updated"]), int(raw[b"article_count"])
        assert r.zscore(k.stories_recent, sid) == last_updated
        assert r.zscore(k.stories_size, sid) == size_score(count, last_updated)
        for feature in json_field(raw[b"indexed"], []):
            score = r.zscore(k.term(feature), sid)
            assert score == index_score(last_updated) >= last_updated, (sid, feature, score, last_updated)
    for key in r.scan_iter(match=f"{k.prefix}:term:*", count=1000):
        feature = int(key.decode().rsplit(":", 1)[1])
        for member in r.zrange(key, 0, -1):
            assert feature in json_field(stories[member.decode()][b"indexed"], []), (key, member)
    return len(stories)


def test_scores_agree_after_batches_of_joins_and_new_stories(store):
    newsroom = Newsroom(store)
    for hours, text in enumerate(DAM):
        newsroom.post(text, hours * 1.3, f"outlet{hours}.example", join=True)
    newsroom.post(BANK, 2.0, "bank.example", join=True)
    assert assert_scores_agree(store) == 2


def test_scores_agree_after_an_earlier_copy_takes_over_and_a_later_join(store):
    """Promotion used to write the raw last update into the term index; the
    next batch in the same step then skipped the rewrite, leaving scores below it."""
    newsroom = Newsroom(store)
    canonical = newsroom.post(DAM[0], 5.3, "alpha.example", join=True)
    newsroom.post(DAM[1], 5.5, "beta.example", join=True)
    earlier = newsroom.post(reprint(DAM[0]), 1.1, "gamma.example", join=True)
    k = store.keys
    assert store.redis.hget(k.article(canonical.article_id), "duplicate_of").decode() == earlier.article_id
    assert store.redis.hget(k.article(earlier.article_id), "duplicate_of") == b""
    assert_scores_agree(store)
    newsroom.post(DAM[2], 5.8, "delta.example", join=True)  # same 6-hour step as the story's last update
    assert_scores_agree(store)


def test_scores_agree_after_a_merge_and_a_later_join(store):
    newsroom = Newsroom(store)
    for hours, text in enumerate(DAM[:3]):
        newsroom.post(text, hours + 0.4, f"outlet{hours}.example")  # splitting: each opens a story
    report = Repairer(store).run()
    assert report.merges
    assert_scores_agree(store)
    newsroom.post(DAM[3], 2.9, "late.example", join=True)
    assert_scores_agree(store)
