"""Deciding articles in batches (Decider.process_many, storyengine.batch), against a real Redis.

A batch is decided under one lock hold with an in-batch view of the store, and
must decide exactly as the same articles processed one at a time, in the same
order: the same stories (whose ids derive from their founding articles), the
same duplicate links, the same stored decisions, the same term statistics.

Two runs are compared on two fresh key prefixes of the same Redis, key by key
and byte by byte. All that may differ between them is the wall-clock times
stamped on articles and how often {p}:df:version was bumped (once per commit).
"""
from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import pytest

from evaluation.streams import read_stream, without_gold
from storyengine import signatures
from storyengine.articles import new_article_record
from storyengine.batch import Batch, Story
from storyengine.buckets import Bucket
from storyengine.features import Featuriser
from storyengine.records import (STORY_FIELDS, bucket_field, canonical_article_fields, decided_article_fields,
                                 decompress_features, encode_story_fields)
from storyengine.errors import InvalidArticle, NotFound
from storyengine.decider import Decider
from storyengine.decisions import Outcome
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect
from storyengine.vectors import SparseVector
from tests.articles import (BANK, BRIDGE, BRIDGE_BODY, BRIDGE_BRIEF, BRIDGE_TITLE, BRIDGE_WIRE, COURIER,
                            FIRE_COURIER_BODY, FOOTBALL, HALVIK, REPRINT, T0, VALLEY, article, shout)
from tests.helpers import accept, article_answer, story_answer
from tests.shared_data import DEV_STREAM, require_shared
from tests.storyengine.store_state import all_df_counts, df_counts, df_docs, state

DEV_PREFIX = 400  # articles of the dev stream compared batch against one at a time


# ---------------------------------------------------------------- helpers
def dev_records(limit: int) -> list[dict]:
    """The first ``limit`` articles of the dev stream as the service stores them
    (as scripts/evaluate.py run_engine builds them; the gold answers are dropped)."""
    records = []
    for row in read_stream(require_shared(DEV_STREAM))[:limit]:
        a = without_gold(row)
        records.append(new_article_record(
            source=a["source"], url=a["url"], title=a["title"], body=a.get("body", ""),
            published_at=datetime.fromisoformat(a["published_at"].replace("Z", "+00:00")),
            article_id=a.get("id"), language=a.get("language")))
    return records


def one_at_a_time(store: RedisStore, records: list[dict], decider: Decider | None = None) -> list[Outcome]:
    decider = decider or Decider(store)
    return [decider.process(article_id) for article_id in accept(store, records)]


def in_batches(store: RedisStore, records: list[dict], size: int, decider: Decider | None = None
               ) -> list[Outcome]:
    decider = decider or Decider(store)
    ids = accept(store, records)
    out = []
    for start in range(0, len(ids), size):
        out += decider.process_many(ids[start:start + size])
    return out


def decided(outcomes: list[Outcome]) -> list[tuple]:
    """What was decided about each article, in order."""
    return [(o.article_id, o.story_id, o.duplicate_of, o.opened_story, o.already_processed,
             type(o.error).__name__ if o.error else None) for o in outcomes]


def partition(outcomes: list[Outcome]) -> set[frozenset]:
    """Stories as sets of article ids (independent of how stories are named)."""
    members: dict[str, set] = {}
    for o in outcomes:
        members.setdefault(o.story_id, set()).add(o.article_id)
    return {frozenset(m) for m in members.values()}


def assert_same_state(one: RedisStore, other: RedisStore) -> None:
    """The two stores hold the same keys with the same values, byte for byte
    (story vectors included: a batch keeps them at stored precision)."""
    a, b = state(one), state(other)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))[:10]
    differing = []
    for name in sorted(a):
        x, y = a[name], b[name]
        if x != y:
            differing.append((name, sorted(f for f in set(x) | set(y) if x.get(f) != y.get(f)))
                             if isinstance(x, dict) and isinstance(y, dict) else name)
    assert differing == [], differing[:10]


# ---------------------------------------------------------------- (a) the dev stream
@pytest.fixture(scope="module")
def dev_prefix() -> list[dict]:
    return dev_records(DEV_PREFIX)


@pytest.fixture(scope="module")
def dev_one_at_a_time(redis_url, dev_prefix):
    """The dev prefix decided one article at a time (once for the module)."""
    client = connect(redis_url)
    store = RedisStore(client, Settings(key_prefix=f"sw-test-{uuid.uuid4().hex[:10]}-one"))
    try:
        yield store, one_at_a_time(store, dev_prefix)
    finally:
        store.clear()
        client.close()


@pytest.mark.parametrize("size", [50, 100])
def test_dev_stream_in_batches_decides_as_one_at_a_time(fresh_store, dev_prefix, dev_one_at_a_time, size):
    """The first 400 dev-stream articles in batches of 50 or 100: every article
    gets the same story (as a partition, and by id), the same duplicate link,
    and the store ends up holding the same decisions and statistics."""
    single_store, single = dev_one_at_a_time
    batch_store = fresh_store(f"batch{size}")
    batched = in_batches(batch_store, dev_prefix, size)

    assert len(batched) == len(single) == len(dev_prefix)
    assert all(o.error is None for o in single)
    # The comparison is not vacuous: the prefix has joins and copies.
    assert sum(o.duplicate_of is not None for o in single) > 50
    assert len(partition(single)) < len(single) - 100
    assert partition(batched) == partition(single)
    assert decided(batched) == decided(single)
    # Each story's representative article and headline: inside a batch the newcomer
    # must be compared with the representative as stored (its 64 heaviest terms, at stored
    # precision), not its full vector (at 924a49c it was: 12 of 42 stories here got another headline).
    assert representatives(batch_store) == representatives(single_store)
    # The stored decisions, stories, band slots, fingerprints, term index and counts too.
    assert_same_state(batch_store, single_store)


def representatives(store: RedisStore) -> dict[str, tuple]:
    """story id -> (representative article, headline)."""
    out = {}
    for sid in store.redis.zrange(store.keys.stories_recent, 0, -1):
        rep, headline = store.redis.hmget(store.keys.story(sid.decode()), ("representative", "headline"))
        out[sid.decode()] = (rep.decode(), headline.decode())
    return out


# ---------------------------------------------------------------- (b) copies inside a batch
def test_a_reprint_in_the_same_batch_as_its_original_is_its_copy(store):
    """The original and its reprint in one batch: the reprint is decided as a
    copy of the article decided just before it, which Redis does not hold yet."""
    records = [article(**spec) for spec in (BANK, COURIER, REPRINT, VALLEY)]
    outcomes = Decider(store).process_many(accept(store, records))
    bank, courier, reprint, valley = outcomes
    assert courier.opened_story and courier.duplicate_of is None
    assert reprint.duplicate_of == "fire-courier" and reprint.story_id == courier.story_id
    assert not reprint.opened_story
    assert valley.story_id == courier.story_id and valley.duplicate_of is None
    assert bank.story_id != courier.story_id
    stored = article_answer(store, "fire-reprint")
    assert stored["duplicate_of"] == "fire-courier" and stored["status"] == "processed"
    assert stored["decision"]["duplicate"]["matched"] == "fire-courier"
    assert stored["decision"]["story"]["action"] == "followed_canonical"
    story = story_answer(store, courier.story_id)
    assert story["article_count"] == 3 and story["original_count"] == 2


def test_an_exact_copy_in_the_same_batch_is_found_by_its_fingerprint(store, fresh_store):
    """Identical text twice in one batch: the second is an exact copy of the first,
    as one at a time."""
    specs = [COURIER, dict(client_id="fire-shout", title=shout(COURIER["title"]), body=shout(FIRE_COURIER_BODY),
                           hours=1)]
    outcomes = Decider(store).process_many(accept(store, [article(**s) for s in specs]))
    assert outcomes[1].duplicate_of == "fire-courier"
    (candidate,) = article_answer(store, "fire-shout")["decision"]["duplicate"]["candidates"]
    assert candidate["exact"] is True and candidate["found_by"] == "exact"
    control = fresh_store("control")
    assert decided(one_at_a_time(control, [article(**s) for s in specs])) == decided(outcomes)
    assert_same_state(store, control)


# ---------------------------------------------------------------- (c) promotion inside a batch
SYNDICATED = dict(client_id="bridge-syndicated", title=BRIDGE_TITLE, body="Advertisement\n" + BRIDGE_BODY, hours=3,
                  source="regional-news")
PROMOTIONS = {
    # A later copy first, then its earlier original, then a short copy and another outlet's report.
    "bridge": [FOOTBALL, SYNDICATED, BRIDGE, dict(BRIDGE_BRIEF, hours=5), BRIDGE_WIRE, BANK],
    # Two cuts of one wire story (not copies of each other), then the whole, published first:
    # it takes over from both, and the second is taken out of the term statistics.
    "halvik": [BANK, dict(client_id="cut-a", title=HALVIK[0], body=" ".join(HALVIK[1][0:11]), hours=2),
               dict(client_id="cut-b", title=HALVIK[0], body=" ".join(HALVIK[1][5:16]), hours=3),
               dict(client_id="full", title=HALVIK[0], body=" ".join(HALVIK[1]), hours=1), VALLEY],
}


@pytest.mark.parametrize("case", sorted(PROMOTIONS))
def test_an_earlier_copy_after_its_canonical_in_one_batch_is_promoted_as_one_at_a_time(store, fresh_store, case):
    """A batch holding a canonical article and, after it, an earlier-published
    copy: the copy becomes the canonical one (the old one now points to it),
    and the articles after it in the batch are decided as one at a time."""
    specs = PROMOTIONS[case]
    batched = Decider(store).process_many(accept(store, [article(**s) for s in specs]))
    control = fresh_store("control")
    single = one_at_a_time(control, [article(**s) for s in specs])

    assert decided(batched) == decided(single)
    assert_same_state(store, control)
    assert df_docs(store) == df_docs(control)
    # The promotion did happen.
    winner, losers = {"bridge": ("bridge", ["bridge-syndicated"]), "halvik": ("full", ["cut-a", "cut-b"])}[case]
    assert article_answer(store, winner)["decision"]["story"]["action"] == "followed_copy"
    assert article_answer(store, winner)["duplicate_of"] is None
    for loser in losers:
        assert article_answer(store, loser)["duplicate_of"] == winner
        assert store.redis.hmget(store.keys.article(loser), ("bands", "shingle_set", "terms")) == [None] * 3


# ---------------------------------------------------------------- (d) repeats, missing and invalid ids
def test_the_same_id_twice_in_a_batch_is_decided_once(store):
    """An id listed twice gets one decision (both places in the answer report it),
    and is counted once in its story and in the term statistics."""
    ids = accept(store, [article(**COURIER), article(**BANK)])
    outcomes = Decider(store).process_many(["fire-courier", "bank", "fire-courier"])
    assert [o.article_id for o in outcomes] == ["fire-courier", "bank", "fire-courier"]
    assert outcomes[0] == outcomes[2] and outcomes[0].already_processed is False and outcomes[0].opened_story
    assert story_answer(store, outcomes[0].story_id)["article_count"] == 1
    assert df_docs(store) == 2
    assert store.redis.zcard(store.keys.story_articles(outcomes[0].story_id)) == 1
    assert ids == ["fire-courier", "bank"]
    # And once more later: already processed, nothing changes.
    again = Decider(store).process_many(["fire-courier", "fire-courier"])
    assert all(o.already_processed and o.story_id == outcomes[0].story_id for o in again)
    assert df_docs(store) == 2


def test_missing_and_invalid_articles_in_a_batch_fail_alone(store, fresh_store):
    """A batch with an unknown id and an article without words: those two get
    Outcome.error (NotFound, InvalidArticle) and stay as they were; the others
    are decided exactly as without them."""
    good = [article(**s) for s in (BANK, COURIER, REPRINT, VALLEY)]
    empty = article("empty", title="!!!", body="<p>\u2014 ... \u2014</p>")
    accept(store, good[:2] + [empty] + good[2:])
    batch = ["bank", "never-accepted", "fire-courier", "empty", "fire-reprint", "fire-valley"]
    outcomes = Decider(store).process_many(batch)

    assert [o.article_id for o in outcomes] == batch
    errors = {o.article_id: o.error for o in outcomes if o.error is not None}
    assert set(errors) == {"never-accepted", "empty"}
    assert isinstance(errors["never-accepted"], NotFound)
    assert isinstance(errors["empty"], InvalidArticle) and "no words" in str(errors["empty"])
    assert article_answer(store, "empty")["status"] == "queued"  # the worker marks it failed, not the engine
    assert not store.redis.exists(store.keys.article("never-accepted"))

    control = fresh_store("control")
    expected = one_at_a_time(control, good)
    assert decided([o for o in outcomes if o.error is None]) == decided(expected)
    assert outcomes[4].duplicate_of == "fire-courier"
    # With process(), the same errors are raised.
    with pytest.raises(NotFound):
        Decider(store).process("never-accepted")
    with pytest.raises(InvalidArticle):
        Decider(store).process("empty")


def test_a_batch_of_only_bad_ids_decides_nothing(store):
    """Nothing to decide: every id gets its error and no key is written."""
    accept(store, [article("empty", title="!!!", body="")])
    before = state(store)
    outcomes = Decider(store).process_many(["empty", "nope"])
    assert [type(o.error) for o in outcomes] == [InvalidArticle, NotFound]
    assert state(store) == before


# ---------------------------------------------------------------- (e) what is stored per article
def test_processed_articles_keep_no_body_and_only_canonicals_keep_what_comparing_needs(store):
    """After processing (storyengine/keys.py, RedisStore.load_articles): the body
    is not kept (neither ``body`` nor a compressed ``body_z``), no MinHash ``sig``
    either; a canonical article keeps its ``shingle_set``, its ``bands`` (6 bytes
    per LSH band: its own slots) and its term features ``terms`` (for a promotion
    to take it out of the statistics); a copy keeps none of the three. Queued
    articles keep their body until decided."""
    specs = (BANK, COURIER, REPRINT, VALLEY)
    records = {spec["client_id"]: article(**spec) for spec in specs}
    accept(store, list(records.values()))
    assert store.load_article("fire-courier")["body"] == records["fire-courier"]["body"]  # still queued
    decider = Decider(store)
    outcomes = decider.process_many(list(records))
    assert [o.duplicate_of for o in outcomes] == [None, None, "fire-courier", None]
    bands = decider.featuriser.layout.bands
    for article_id, record in records.items():
        raw = store.redis.hgetall(store.keys.article(article_id))
        assert raw[b"status"] == b"processed"
        assert not {b"body", b"body_z", b"sig"} & set(raw), sorted(raw)
        if article_id == "fire-reprint":
            assert not {b"shingle_set", b"bands", b"terms"} & set(raw)
            continue
        features = decider.featuriser.featurise(record)
        assert len(raw[b"bands"]) == 6 * bands
        assert signatures.BandLayout.slots_from_bytes(raw[b"bands"]) == features.bands
        assert raw[b"shingle_set"] == signatures.shingle_set_to_bytes(features.shingle_set)
        assert decompress_features(raw[b"terms"]).tolist() == sorted(features.term_indices.tolist())
        loaded = store.load_article(article_id)
        assert "body" not in loaded and loaded["title"] == record["title"]


def assert_stored_as_if_written_afresh(store: RedisStore, key: str) -> None:
    """The hash at ``key`` takes what the same fields written anew under it take."""
    r = store.redis
    encoding, used, fields = r.object("encoding", key), r.memory_usage(key, samples=0), r.hgetall(key)
    r.delete(key)
    r.hset(key, mapping=fields)
    assert r.object("encoding", key) != b"hashtable"  # small enough to be compact at all
    assert (encoding, used) == (r.object("encoding", key), r.memory_usage(key, samples=0))


def test_an_article_that_held_a_long_text_is_stored_compactly_once_decided_or_failed(store):
    """A hash that held a long text (over the server's compact-hash value
    limit) stays in Redis's large encoding when that field goes: Redis never
    converts a hash back. A decided or failed article's hash is written
    again without its text, so it takes what its fields take (about half)."""
    limit = int(store.redis.config_get("hash-max-*-value").popitem()[1])
    long_body = " ".join([BANK["body"]] * (limit // len(BANK["body"]) + 2))
    decided = article(**dict(BANK, body=long_body))
    failed = article(**dict(VALLEY, client_id="valley-failed", body=long_body))
    accept(store, [decided, failed])
    for article_id in ("bank", "valley-failed"):
        assert store.redis.object("encoding", store.keys.article(article_id)) == b"hashtable"
    [outcome] = Decider(store).process_many(["bank"])
    assert outcome.story_id and store.mark_failed("valley-failed", "a test's failure")
    for article_id in ("bank", "valley-failed"):
        key = store.keys.article(article_id)
        assert not store.redis.hexists(key, "body")
        assert_stored_as_if_written_afresh(store, key)
    assert store.load_article("bank")["status"] == "processed"
    assert store.load_article("valley-failed")["status"] == "failed"


def test_promoted_over_canonicals_drop_what_only_canonicals_keep(store):
    """When an earlier copy takes over, the old canonical articles become copies
    and lose their shingles, band slots and term features (and leave the band slots)."""
    specs = PROMOTIONS["halvik"]
    Decider(store).process_many(accept(store, [article(**s) for s in specs]))
    for old in ("cut-a", "cut-b"):
        assert store.redis.hmget(store.keys.article(old), ("shingle_set", "bands", "terms")) == [None] * 3
    slot_ids = {i for key in store.redis.scan_iter(match=f"{store.keys.prefix}:band:*", count=1000)
                for v in store.redis.hvals(key) for i in v.decode().split(" ")}
    assert "full" in slot_ids and not {"cut-a", "cut-b"} & slot_ids


# ---------------------------------------------------------------- (f) the document-frequency cache
def test_two_deciders_alternating_batches_count_terms_as_one(fresh_store):
    """Two Decider objects (two workers) on one store take turns, batch by batch,
    including a promotion that takes a text out of the statistics: each must see
    the other's counts (its cache is checked against {p}:df:version), so the
    stored document frequencies and every decision equal one decider's."""
    records = dev_records(240)
    # The Halvik cuts and whole at the stream's own time (a 2024 article would be past retention here).
    base = datetime.fromisoformat(records[119]["published_at"].replace("Z", "+00:00"))
    offset = (base - T0).total_seconds() / 3600.0
    halvik = [article(**dict(s, hours=s["hours"] + offset)) for s in PROMOTIONS["halvik"][1:4]]
    stream = records[:120] + halvik[:2] + records[120:180] + halvik[2:] + records[180:]
    sizes = [40, 40, 40, 2, 30, 30, 1, 60]  # the two cuts, later the whole, each in a batch of its own
    assert sum(sizes) == len(stream)

    one, two = fresh_store("one"), fresh_store("two")
    single = Decider(one)
    alternating = (Decider(two), Decider(two))
    ids_one, ids_two = accept(one, stream), accept(two, stream)
    outcomes_one, outcomes_two, start = [], [], 0
    for n, size in enumerate(sizes):
        outcomes_one += single.process_many(ids_one[start:start + size])
        outcomes_two += alternating[n % 2].process_many(ids_two[start:start + size])
        start += size
        # After every batch, not only at the end.
        assert np.array_equal(all_df_counts(one), all_df_counts(two)), f"after batch {n}"
        assert df_docs(one) == df_docs(two)

    assert decided(outcomes_two) == decided(outcomes_one)
    assert {"cut-a": "full", "cut-b": "full"} == {a: two.get_article(a)["duplicate_of"] for a in ("cut-a", "cut-b")}
    terms = ["halvik", "storm", "surge", "president", "earthquake", "police"]
    assert df_counts(two, terms) == df_counts(one, terms)
    assert df_counts(two, ["halvik"])["halvik"] == 1  # the whole story alone: the cuts are its copies
    canonical = sum(two.get_article(a)["duplicate_of"] is None for a in ids_two)
    assert df_docs(one) == df_docs(two) == canonical
    assert_same_state(two, one)


def test_a_decider_sees_counts_another_wrote_since_its_last_batch(store, fresh_store):
    """The second decider's batch changes the counts; the first decider's next
    batch weighs terms with them: it decides and scores exactly as one decider
    that made all three batches."""
    specs = (BANK, COURIER, VALLEY)
    first, second = Decider(store), Decider(store)
    accept(store, [article(**s) for s in specs])
    first.process_many(["bank"])
    second.process_many(["fire-courier"])
    first.process_many(["fire-valley"])

    control = fresh_store("control")
    only = Decider(control)
    accept(control, [article(**s) for s in specs])
    for article_id in ("bank", "fire-courier", "fire-valley"):
        only.process_many([article_id])

    valley, expected = store.get_article("fire-valley"), control.get_article("fire-valley")
    assert valley["story"] == store.get_article("fire-courier")["story"]
    assert valley["similarity"] == expected["similarity"]
    assert valley["decision"] == expected["decision"]
    assert df_counts(store, ["kessel", "lindenmark"]) == {"kessel": 2, "lindenmark": 1}
    assert_same_state(store, control)


# ---------------------------------------------------------------- (f) where the time goes
@pytest.mark.parametrize("case", ["dev", "promotion"])
def test_a_batch_accounts_for_its_time_by_phase(store, case):
    """Decider.phase_seconds splits a call's time into the phases of
    storyengine.phases.PHASES: each that ran has its share, the shares never add up to
    more than the call took (no time counted twice, the promotion's path
    included), and they cover nearly all of it."""
    import time

    from storyengine.phases import PHASES
    records = dev_records(80) if case == "dev" else [article(**s) for s in PROMOTIONS["halvik"]]
    ids = accept(store, records)
    decider = Decider(store)
    began = time.perf_counter()
    outcomes = decider.process_many(ids)
    took = time.perf_counter() - began
    assert all(o.error is None for o in outcomes)
    seconds = dict(decider.phase_seconds)
    assert set(seconds) == set(PHASES), seconds
    for phase in ("load", "featurise", "lock", "reads", "decide", "commit"):
        assert seconds[phase] > 0, (phase, seconds)
    assert sum(seconds.values()) <= took
    assert sum(seconds.values()) >= 0.5 * took, (seconds, took)
    # A second call adds to the same counters.
    decider.process_many(ids)
    assert decider.phase_seconds["load"] > seconds["load"]


def test_stories_for_terms_finds_a_touched_story_by_what_it_is_indexed_under_now():
    batch = Batch(Settings())
    now = T0.timestamp()
    one = Story("s1", now, now, 1, 1, {}, indexed=[1, 2, 3])
    batch.touch(one)
    assert batch.stories_for_terms([2], now - 1) == {"s1"}
    one.indexed = [7, 8]
    batch.touch(one)
    assert batch.stories_for_terms([2], now - 1) == set()
    assert batch.stories_for_terms([8, 9], now - 1) == {"s1"}
    assert batch.stories_for_terms([8], now + 1) == set()  # its newest article is before ``since``
    # Over the limit, those sharing the most weight (a touched story by what it is indexed under
    # now, not by the index it was read with), ties by id.
    batch.term_hits = {8: [("s2", now), ("s1", now)], 9: [("s3", now)], 7: [("s3", now)]}
    assert batch.stories_for_terms([8, 9, 7], now - 1, [0.5, 0.3, 0.1], limit=2) == {"s1", "s2"}
    assert batch.stories_for_terms([8, 9, 7], now - 1, [0.5, 0.3, 0.1], limit=3) == {"s1", "s2", "s3"}


def test_what_only_a_canonical_keeps_is_the_same_made_before_the_lock():
    """RunDecider.prepare encodes a canonical article's shingles, bands and terms before the
    lock; the fields a decision writes are the same, in the same order, as made under it."""
    f = Featuriser(Settings()).featurise({"id": "a1", "title": BRIDGE_TITLE, "body": BRIDGE_BODY,
                                          "published_ts": "1700000000"})
    decision = {"duplicate": {"candidates": [], "compared": 0, "matched": None}, "story": {"action": "opened"}}
    made_before = decided_article_fields(f, "st_1", None, None, decision, canonical_article_fields(f))
    assert list(made_before.items()) == list(decided_article_fields(f, "st_1", None, None, decision).items())
    assert set(canonical_article_fields(f)) <= set(made_before)


def test_a_story_read_again_unchanged_is_a_fresh_copy_equal_to_a_first_parse():
    """A story parsed once is kept and each batch given a copy (replicated_state's reads): each copy
    is the story as stored, whatever a batch did to one given before it."""
    vector = SparseVector(np.array([3, 9]), np.array([0.6, 0.8])).stored()
    stored = encode_story_fields(first_seen=1.5, last_updated=2.5, article_count=3, originals=2, indexed=[9, 3],
                                 canonicals=["a1", "a2"], headline="h", representative="a1", centroid=vector,
                                 rep_vec=vector, term_names={"9": "bridge"}, buckets={7: Bucket.of(vector, 2.0)})
    encoded = {name: str(value).encode() if not isinstance(value, bytes) else value for name, value in stored.items()}
    row = [encoded.get(name) for name in STORY_FIELDS + (bucket_field(7), bucket_field(8))]
    kept = Story.from_row("s_cached", list(row), [7, 8])
    first = kept.copy()
    fields = (first.first_seen, first.last_updated, first.article_count, first.originals, list(first.indexed),
              list(first.indexed_at_start), list(first.canonicals), dict(first.buckets),
              first.load_details()["headline"])
    assert fields[:7] == (1.5, 2.5, 3, 2, [9, 3], [9, 3], ["a1", "a2"]) and list(fields[7]) == [7]
    # What a batch does to a story it read: in place, and by replacing its parts.
    first.first_seen = 0.0
    first.buckets[8] = Bucket.of(vector, 2.0)
    first.indexed.append(1)
    first.canonicals.append("a3")
    first.indexed_at_start.clear()
    first.load_details()["headline"] = "changed"
    first.dirty_buckets.add(8)
    again = kept.copy()
    assert again is not first
    assert (again.first_seen, again.last_updated, again.article_count, again.originals, again.indexed,
            again.indexed_at_start, again.canonicals, dict(again.buckets), again.load_details()["headline"]) == fields
    assert again.dirty_buckets == set() and not again.details_changed
    assert Story.from_row("s_cached", [None] * len(row), [7, 8]) is None
