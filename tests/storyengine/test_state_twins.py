"""The storage seam (storyengine.state): the same stream decided by the same
run decider on the in-memory twin, in a plain process, and on a real Redis
gives the same decisions, and the twins end holding the same records.

The stream is decided in runs of 50, featurised without the outlets' learnt
boilerplate (learning it happens outside the seam, on Redis alone), so both
sides see exactly the same features; in published order, and shuffled so
that earlier copies arrive late and take over (promotion).
"""
from __future__ import annotations

from pathlib import Path

import random
import zlib

import numpy as np
import pytest

from evaluation.replay import record_of
from evaluation.streams import read_stream
from storyengine.features import Featuriser
from storyengine.locking import AssignmentConflict, AssignmentLock
from storyengine.story_writer import index_score
from storyengine.run_decider import RunDecider
from storyengine.memory_state import MemoryState
from storyengine.state import RedisState
from tests.helpers import pairs
from tests.storyengine.store_state import all_df_counts
from tests.shared_data import DEV_STREAM, require_shared

DATA = Path(__file__).resolve().parent.parent / "data"
RUN = 50


def stream(paths: list[Path], limit: int) -> list[dict]:
    rows = [row for path in paths for row in read_stream(path) if row.get("published_at")]
    records = [record_of(row) for row in rows]
    records.sort(key=lambda r: (r["published_ts"], r["id"]))
    return records[:limit]


def decide_in_memory(records: list[dict], settings) -> tuple[list[tuple], MemoryState]:
    state = MemoryState(settings)
    state.queue([r["id"] for r in records])
    return decide(RunDecider(state, settings), Featuriser(settings), records, None), state


def decide_on_redis(records: list[dict], store) -> tuple[list[tuple], RedisState]:
    settings = store.settings
    ids = [article_id for article_id, created in pairs(store.accept_articles(records)) if created]
    assert len(ids) == len(records)
    stored = store.load_articles(ids)
    state = RedisState(store.redis, store.keys, settings)
    with AssignmentLock(store.redis, store.keys, store.settings.change_log_entries) as lock:
        return decide(RunDecider(state, settings), Featuriser(settings), stored, lock), state


def decide(runs: RunDecider, featuriser: Featuriser, records: list[dict], lock) -> list[tuple]:
    decided = []
    for start in range(0, len(records), RUN):
        chunk = [(r["id"], r, featuriser.featurise(r)) for r in records[start:start + RUN]]
        outcomes = runs.decide(chunk, lock)
        decided += [(o.article_id, o.story_id, o.duplicate_of, o.opened_story) for o in
                    (outcomes[article_id] for article_id, _, _ in chunk)]
    return decided


def assert_same_decisions_and_records(records, store) -> list[tuple]:
    memory_decisions, memory = decide_in_memory(records, store.settings)
    redis_decisions, _ = decide_on_redis(records, store)
    assert memory_decisions == redis_decisions
    assert len({story for _, story, _, _ in memory_decisions}) > 1
    # Both twins hold the same records, compared both ways: what decisions read, and stories' members.
    k, r = store.keys, store.redis

    def hash_of(key):
        return {name.decode(): value for name, value in r.hgetall(key).items()}

    def under(pattern):
        return {key.decode() for key in r.scan_iter(match=f"{k.prefix}:{pattern}", count=1000)}

    stories = {key for key in under("story:*") if key.count(":") == 2}
    assert stories == {k.story(story_id) for story_id in memory.stories}
    for story_id, fields in memory.stories.items():
        assert hash_of(k.story(story_id)) == fields, story_id
        assert dict(r.zrange(k.story_articles(story_id), 0, -1, withscores=True)) == {
            a.encode(): published for a, published in memory.members[story_id].items()}
    assert under("term:*") == {k.term(feature) for feature, stories in memory.terms.items() if stories}
    for feature, stories in memory.terms.items():
        assert {m.decode(): score for m, score in r.zrange(k.term(feature), 0, -1, withscores=True)} == stories
        assert all(score == index_score(score) for score in stories.values())
    for article_id, fields in memory.articles.items():
        stored = hash_of(k.article(article_id))
        assert {name: stored.get(name) for name in fields if name != "processed_ts"} == \
            {name: value for name, value in fields.items() if name != "processed_ts"}, article_id
        assert stored["status"] == memory.statuses[article_id] == b"processed"
    assert {(key, f): v.decode() for key in under("band:*") for f, v in r.hgetall(key).items()} == memory.bands
    assert {key[len(k.fingerprint("")):]: r.get(key).decode() for key in under("fingerprint:*")} == memory.owners
    assert np.array_equal(memory.df_counts, all_df_counts(store))
    assert memory.df_docs == int(r.get(k.df_docs)) and memory.df_version == int(r.get(k.df_version))
    return memory_decisions


@pytest.mark.parametrize("stories_per_term", [None, 2])
def test_the_checked_in_streams_decide_alike_in_memory_and_on_redis(store, stories_per_term):
    """Also with the term index cut to its newest 2 stories per term: the twins must cut alike."""
    if stories_per_term is not None:
        store.settings = store.settings.replace(stories_per_term=stories_per_term)
    records = stream([DATA / "feed_series.jsonl", DATA / "feed_items.jsonl", DATA / "two_events.jsonl",
                      DATA / "dev_smallest_stories.jsonl"], 1000)
    assert len(records) >= 40
    assert_same_decisions_and_records(records, store)


def test_a_dev_stream_with_copies_decides_alike_in_memory_and_on_redis(store):
    decisions = assert_same_decisions_and_records(stream([require_shared(DEV_STREAM)], 600), store)
    assert any(duplicate for _, _, duplicate, _ in decisions), "the stream must hold copies"


def test_a_shuffled_stream_with_earlier_copies_arriving_late_decides_alike(store):
    """Copies decided before their earlier original: the original takes over (promotion) on both twins."""
    records = stream([require_shared(DEV_STREAM)], 400)
    random.Random(17).shuffle(records)
    assert_same_decisions_and_records(records, store)
    k = store.keys
    promoted = [key for key in store.redis.scan_iter(match=f"{k.prefix}:article:*", count=1000)
                if b'"promoted_over"' in (zlib.decompress(store.redis.hget(key, "decision") or zlib.compress(b"")))]
    assert len(promoted) >= 3, "the shuffle must make earlier copies arrive late"


def test_the_memory_twin_runs_without_any_redis(settings):
    """A plain process: the engine's logic alone, nothing listening anywhere."""
    records = stream([DATA / "two_events.jsonl"], 100)
    decisions, state = decide_in_memory(records, settings.replace(key_prefix="nowhere"))
    assert [d[0] for d in decisions] == [r["id"] for r in records]
    assert set(state.statuses.values()) == {b"processed"}


def test_redis_refuses_a_commit_without_the_lock(store):
    records = stream([DATA / "two_events.jsonl"], 3)
    store.accept_articles(records)
    featuriser = Featuriser(store.settings)
    state = RedisState(store.redis, store.keys, store.settings)
    chunk = [(r["id"], r, featuriser.featurise(r)) for r in store.load_articles([r["id"] for r in records])]
    with pytest.raises(AssignmentConflict):
        RunDecider(state, store.settings).decide(chunk, None)


def test_the_term_index_answers_alike_newest_first_ties_by_id_cut_to_the_limit(store):
    settings = store.settings.replace(stories_per_term=3)
    memory, redis_state = MemoryState(settings), RedisState(store.redis, store.keys, settings)
    entries = {"st_a": 100.0, "st_b": 200.0, "st_c": 200.0, "st_d": 300.0, "st_e": 50.0, "st_f": 200.0}
    memory.terms[7] = dict(entries)
    store.redis.zadd(store.keys.term(7), entries)
    for since in (0.0, 100.0, 200.0, 250.0, 400.0):
        assert memory.term_hits([7, 8], since) == redis_state.term_hits([7, 8], since), since
    assert memory.term_hits([7], 0.0) == [[("st_d", 300.0), ("st_f", 200.0), ("st_c", 200.0)]]
