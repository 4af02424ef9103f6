"""Processing articles end to end in the engine, against a real Redis: duplicates (exact, by
containment, short copies found through their story, promotion of an earlier copy),
story assignment, idempotence, the time window, decisions and stream IDF."""
from __future__ import annotations

import json
import math

import pytest

from storyengine import signatures
from storyengine.errors import InvalidArticle, NotFound
from storyengine.decider import Decider
from storyengine.settings import Settings
from storyengine.store import RedisStore
from storyengine.buckets import Bucket
from storyengine.stories import story_link
from storyengine.text import words
from storyengine.vectors import tfidf
from tests.articles import (BANK, BANK_BODY, BANK_TITLE, BRIDGE, BRIDGE_BODY, BRIDGE_BRIEF, BRIDGE_TITLE, BRIDGE_WIRE,
                            COURIER, FIRE_COURIER_BODY, FIRE_COURIER_TITLE, FIRE_VALLEY_BODY, FIRE_VALLEY_TITLE,
                            FOOTBALL, FOOTBALL_TITLE, REPRINT, TRAWLER, VALLEY, article, shout)
from tests.helpers import article_answer, listed_stories, pairs, snapshot, story_answer
from tests.storyengine.store_state import df_counts, df_counts_of_features, df_docs


@pytest.fixture
def decider(store):
    return Decider(store)


def submit(store: RedisStore, decider: Decider, spec: dict):
    rec = article(**spec)
    assert pairs(store.accept_articles([rec])) == [(rec["id"], True)]
    return decider.process(rec["id"])


def story_buckets(store: RedisStore, story_id: str) -> dict[int, Bucket]:
    """A story's member buckets, read from its hash."""
    raw = store.redis.hgetall(store.keys.story(story_id))
    return {int(k.decode()[2:]): Bucket.from_bytes(v) for k, v in raw.items() if k.decode().startswith("b:")}


def story_canonicals(store: RedisStore, story_id: str) -> list[str]:
    return json.loads(store.redis.hget(store.keys.story(story_id), "canonicals") or "[]")


# ---------------------------------------------------------------- duplicates
def test_reprint_is_a_duplicate_of_the_earliest_copy_and_shares_its_story(store, decider):
    submit(store, decider, BANK)
    original = submit(store, decider, COURIER)
    copy = submit(store, decider, REPRINT)

    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    assert copy.opened_story is False
    reprint = article_answer(store, "fire-reprint")
    assert reprint["status"] == "processed"
    assert reprint["duplicate_of"] == "fire-courier"
    assert reprint["story"] == original.story_id
    assert not article_answer(store, "fire-courier")["duplicate_of"]

    # Why: the truncated copy is mostly contained in the original though its Jaccard is low.
    report = reprint["decision"]["duplicate"]
    assert report["matched"] == "fire-courier"
    (candidate,) = [c for c in report["candidates"] if c["article"] == "fire-courier"]
    assert candidate["duplicate"] is True and candidate["exact"] is False
    assert candidate["jaccard"] < 0.6 and candidate["containment"] >= store.settings.duplicate_containment
    assert candidate["found_by"] == "lsh"  # about the original's length: LSH finds it
    assert reprint["similarity"] == pytest.approx(candidate["containment"])
    assert reprint["decision"]["story"]["action"] == "followed_canonical"

    story = story_answer(store, original.story_id)
    assert story["article_count"] == 2
    assert story["original_count"] == 1
    assert story["source_count"] == 2
    assert sorted(story["sources"]) == ["coastal-herald", "northern-courier"]
    assert story["representative_article"] == "fire-courier"
    assert story["headline"] == FIRE_COURIER_TITLE
    (folded,) = story["articles"]
    assert folded["id"] == "fire-courier"
    assert [d["id"] for d in folded["duplicates"]] == ["fire-reprint"]


def test_exact_copy_with_new_case_and_typography_is_an_exact_duplicate(store, decider):
    original = submit(store, decider, COURIER)
    # Headline and body are fingerprinted together: the copy changes the typography of both.
    copy = submit(store, decider, dict(client_id="fire-shout", title=shout(FIRE_COURIER_TITLE),
                                         body=shout(FIRE_COURIER_BODY), hours=1))
    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    (candidate,) = article_answer(store, "fire-shout")["decision"]["duplicate"]["candidates"]
    assert candidate["exact"] is True and candidate["found_by"] == "exact"
    assert candidate["jaccard"] == 1.0 and candidate["containment"] == 1.0


def test_copy_with_only_a_new_headline_is_a_duplicate_but_not_an_exact_one(store, decider):
    original = submit(store, decider, COURIER)
    copy = submit(store, decider, dict(client_id="fire-shout", title="FIRE!", body=shout(FIRE_COURIER_BODY),
                                         hours=1))
    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    (candidate,) = article_answer(store, "fire-shout")["decision"]["duplicate"]["candidates"]
    # The headline is a few shingles out of a couple of hundred.
    assert candidate["exact"] is False and candidate["duplicate"] is True
    assert candidate["containment"] >= 0.95 and candidate["jaccard"] >= 0.9


def test_different_reports_of_one_event_are_not_duplicates_of_each_other(store, decider):
    submit(store, decider, COURIER)
    outcome = submit(store, decider, VALLEY)
    assert outcome.duplicate_of is None
    assert not article_answer(store, "fire-valley")["duplicate_of"]


# ---------------------------------------------------------------- stories
def test_two_outlets_on_one_event_join_one_story_and_unrelated_events_open_their_own(store, decider):
    bank = submit(store, decider, BANK)
    courier = submit(store, decider, COURIER)
    valley = submit(store, decider, VALLEY)
    football = submit(store, decider, FOOTBALL)  # unrelated, after the fire stories exist

    assert bank.opened_story and courier.opened_story and football.opened_story
    assert valley.opened_story is False
    assert valley.duplicate_of is None
    assert valley.story_id == courier.story_id
    assert len({bank.story_id, football.story_id, courier.story_id}) == 3

    story = story_answer(store, courier.story_id)
    assert story["article_count"] == 2 and story["original_count"] == 2
    assert sorted(story["sources"]) == ["northern-courier", "valley-times"]
    assert [a["id"] for a in story["articles"]] == ["fire-courier", "fire-valley"]
    assert all(a["duplicates"] == [] for a in story["articles"])
    assert {"marrow", "halden", "kessel"} <= set(story["top_terms"])
    assert story_answer(store, bank.story_id)["article_count"] == 1
    assert story_answer(store, football.story_id)["headline"] == FOOTBALL_TITLE


def test_decision_lists_candidate_stories_with_scores(store, decider):
    bank = submit(store, decider, BANK)
    courier = submit(store, decider, COURIER)
    # Valley's TF-IDF vector as the decider will weigh it: with the stream's counts so far.
    valley_features = decider.featuriser.featurise(article(**VALLEY))
    valley_vector = tfidf(valley_features.term_indices, valley_features.term_counts,
                          df_counts_of_features(store, valley_features.term_indices), df_docs(store))
    (member,) = story_buckets(store, courier.story_id).values()  # the courier piece alone
    valley = submit(store, decider, VALLEY)

    decision = article_answer(store, "fire-valley")["decision"]
    story_report = decision["story"]
    assert story_report["action"] == "joined"
    assert story_report["story"] == courier.story_id
    assert "Gaussian" in story_report["method"]
    candidates = story_report["candidates"]
    assert candidates[0]["story"] == courier.story_id
    # Each candidate names the threshold it was held to (it depends on the
    # article's length and the story's size); the joined one's is the record's.
    assert story_report["threshold"] == candidates[0]["threshold"]
    assert candidates[0]["threshold"] >= store.settings.short_text_threshold
    assert all(c["score"] < c["threshold"] for c in candidates[1:])
    for c in candidates:
        assert set(c) == {"story", "score", "members_compared", "shared_words", "threshold"}
    assert candidates[0]["shared_words"] >= store.settings.min_shared_words
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    best = candidates[0]
    assert best["score"] >= best["threshold"]
    assert best["members_compared"] == 1
    # One member three hours earlier: its cosine times the kernel exp(-3**2 / (2 * 36**2)).
    assert member.count == 1
    expected = valley_vector.dot(member.vector) * math.exp(-(3 ** 2) / (2 * 36 ** 2))
    assert best["score"] == pytest.approx(expected, abs=1e-3)
    assert article_answer(store, "fire-valley")["similarity"] == pytest.approx(best["score"], abs=1e-4)
    assert decision["duplicate"]["matched"] is None
    assert valley.story_id == courier.story_id

    # The first article of a stream had nothing to compare with.
    first = article_answer(store, "bank")["decision"]["story"]
    assert first["action"] == "opened" and first["candidates"] == [] and first["story"] == bank.story_id
    # It was compared with no story: no score is reported (1.0 would read as a comparison made).
    assert article_answer(store, "bank")["similarity"] is None


def test_an_article_a_month_after_a_story_does_not_join_it(store, decider, redis_client):
    courier = submit(store, decider, COURIER)
    late = submit(store, decider, dict(VALLEY, hours=30 * 24))
    assert late.opened_story is True
    assert late.story_id != courier.story_id
    report = article_answer(store, "fire-valley")["decision"]["story"]
    assert report["action"] == "opened"
    assert courier.story_id not in [c["story"] for c in report["candidates"]]
    assert story_answer(store, courier.story_id)["article_count"] == 1

    # The control: the very same article three hours after it joins.
    other = RedisStore(redis_client, Settings(key_prefix=store.settings.key_prefix + "-control"))
    try:
        first = submit(other, Decider(other), COURIER)
        in_time = submit(other, Decider(other), VALLEY)
        assert in_time.story_id == first.story_id
    finally:
        other.clear()


def test_a_story_kept_current_by_a_reprint_is_still_found_inside_the_window(store, decider):
    courier = submit(store, decider, COURIER)
    reprint = submit(store, decider, dict(REPRINT, hours=80))  # a syndicated copy three days later
    assert reprint.story_id == courier.story_id
    story = story_answer(store, courier.story_id)
    assert story["last_updated"] == "2024-03-08T16:00:00Z"
    # 110 hours after the original, 30 hours after the story's newest article: the
    # story is inside the 96-hour window as stories.in_window defines it, and the term
    # index (kept current by the copy) finds it as a candidate ...
    late = submit(store, decider, dict(VALLEY, hours=110))
    candidates = article_answer(store, "fire-valley")["decision"]["story"]["candidates"]
    (found,) = [c for c in candidates if c["story"] == courier.story_id]
    # ... but a copy adds no member: average link compares with original articles only,
    # and the one original is 110 hours away, beyond the kernel's window.
    assert {k: found[k] for k in ("story", "score", "members_compared", "shared_words")} == {
        "story": courier.story_id, "score": 0.0, "members_compared": 0, "shared_words": 0}
    assert late.opened_story and late.story_id != courier.story_id


def test_a_follow_up_is_scored_against_original_articles_not_their_copies(store, decider):
    courier = submit(store, decider, COURIER)
    submit(store, decider, dict(REPRINT, hours=20))
    late = submit(store, decider, dict(VALLEY, hours=30))
    (found,) = [c for c in article_answer(store, "fire-valley")["decision"]["story"]["candidates"]
                if c["story"] == courier.story_id]
    assert found["members_compared"] == 1  # the original, not its copy
    assert late.story_id == courier.story_id


def test_article_published_before_a_story_window_does_not_join_it(store, decider):
    courier = submit(store, decider, COURIER)
    early = submit(store, decider, dict(VALLEY, hours=-30 * 24))
    assert early.story_id != courier.story_id


# ---------------------------------------------------------------- idempotence
def test_processing_the_same_article_twice_changes_nothing(store, decider, redis_client, settings):
    submit(store, decider, COURIER)
    first = submit(store, decider, VALLEY)
    submit(store, decider, REPRINT)
    story_before = story_answer(store, first.story_id)
    docs_before = df_docs(store)
    before = snapshot(redis_client, settings.key_prefix)

    for article_id in ("fire-valley", "fire-reprint", "fire-courier"):
        again = decider.process(article_id)
        assert again.already_processed is True
        assert again.story_id == first.story_id
    # A fresh decider (another worker, a redelivered task) agrees.
    again = Decider(store).process("fire-reprint")
    assert again.already_processed and again.duplicate_of == "fire-courier"

    assert story_answer(store, first.story_id)["article_count"] == story_before["article_count"] == 3
    assert df_docs(store) == docs_before == 2
    assert snapshot(redis_client, settings.key_prefix) == before


def test_unknown_article_id_is_not_found(store, decider):
    with pytest.raises(NotFound):
        decider.process("never-accepted")


def test_article_without_words_is_invalid_and_leaves_no_trace(store, decider, redis_client, settings):
    rec = article("empty", title="!!!", body="<p>\u2014 ... \u2014</p><script>var words = 1;</script>")
    store.accept_articles([rec])
    before = snapshot(redis_client, settings.key_prefix)
    with pytest.raises(InvalidArticle, match="no words"):
        decider.process("empty")
    assert article_answer(store, "empty")["status"] == "queued"
    assert snapshot(redis_client, settings.key_prefix) == before


def test_short_article_uses_its_title_too(store, decider):
    outcome = submit(store, decider, dict(client_id="flash", title="Earthquake hits Velmora region",
                                            body="Developing."))
    assert outcome.opened_story
    assert story_answer(store, outcome.story_id)["headline"] == "Earthquake hits Velmora region"


# ---------------------------------------------------------------- stream IDF
def test_document_frequencies_count_originals_only(store, decider):
    assert df_docs(store) == 0
    for spec in (BANK, FOOTBALL, COURIER, REPRINT, VALLEY):
        submit(store, decider, spec)
    # Five articles processed, one of them a copy: four documents.
    assert df_docs(store) == 4
    counts = df_counts(store, ["kessel", "lindenmark", "moy", "advertis", "marrow", "halden"])  # terms are stems
    assert counts == {"kessel": 2, "lindenmark": 1, "moy": 1, "advertis": 0, "marrow": 2, "halden": 2}


def test_document_frequencies_grow_one_article_at_a_time(store, decider):
    submit(store, decider, COURIER)
    assert df_docs(store) == 1
    assert df_counts(store, ["kessel", "lindenmark"]) == {"kessel": 1, "lindenmark": 0}
    submit(store, decider, BANK)
    assert df_docs(store) == 2
    assert df_counts(store, ["kessel", "lindenmark"]) == {"kessel": 1, "lindenmark": 1}


def test_stories_from_the_pipeline_list_by_size_and_recency(store, decider):
    for spec in (BANK, FOOTBALL, COURIER, REPRINT, VALLEY):
        submit(store, decider, spec)
    fire = article_answer(store, "fire-courier")["story"]
    by_size = listed_stories(store, sort="size", limit=10)
    assert [s["id"] for s in by_size][0] == fire
    assert [s["article_count"] for s in by_size] == [3, 1, 1]
    recent = listed_stories(store, sort="recent", limit=10)
    assert [s["id"] for s in recent] == [fire, article_answer(store, "football")["story"],
                                         article_answer(store, "bank")["story"]]
    assert recent[0]["last_updated"] == "2024-03-05T11:00:00Z"  # the Valley Times piece
    assert [s["id"] for s in listed_stories(store, sort="recent", limit=10, min_sources=2)] == [fire]


# ================================================================ copies by containment, average-link stories
FIRE_INQUIRY_TITLE = "Investigators search Marrow solvent store for cause of Port Halden fire"
FIRE_INQUIRY_BODY = (
    "Fire investigators spent Wednesday sifting through the burnt-out solvent store at the Marrow Chemicals "
    "plant in Port Halden, looking for the cause of the blaze that forced hundreds of families from their "
    "homes. Elena Vasquez, the town's fire chief, said a faulty electrical panel was one of several "
    "possibilities. Two workers remain in serious condition at Halden General Hospital. Marrow Chemicals "
    "said it had hired outside engineers to review safety at the site, and the state environment agency "
    "said early samples from the Kessel River showed no dangerous levels of solvent."
)
FIRE_UNION_TITLE = "Union says Marrow workers warned of fire risk at Port Halden plant"
FIRE_UNION_BODY = (
    "Workers at the Marrow Chemicals plant in Port Halden complained about overcrowded solvent storage "
    "months before this week's fire, their union said on Thursday. A letter seen by reporters shows staff "
    "asked managers in January to move drums away from the loading dock. Marrow Chemicals said it was "
    "cooperating fully with investigators and would not comment on the letter while the inquiry led by "
    "fire chief Elena Vasquez continued. Residents near the Kessel River have now returned home."
)
BANK_MORTGAGE_TITLE = "Lindenmark mortgage lenders pass on central bank rate rise"
BANK_MORTGAGE_BODY = (
    "Three of Lindenmark's biggest mortgage lenders said on Friday they would raise their variable rates "
    "from next month, passing on the Bank of Lindenmark's latest increase in full. Nordhavn Savings, the "
    "largest lender, said monthly repayments on a typical home loan would rise by about forty crowns. "
    "Consumer groups urged borrowers to review their budgets, while Governor Tomas Eriksen repeated that "
    "higher borrowing costs were needed to bring inflation back to target."
)
BANK_PARLIAMENT_TITLE = "Eriksen defends rate increase before Lindenmark parliament"
BANK_PARLIAMENT_BODY = (
    "Governor Tomas Eriksen told the Lindenmark parliament's finance committee that the central bank had "
    "no choice but to raise interest rates again, as inflation driven by rents and energy bills was "
    "proving stubborn. Opposition members accused the Bank of Lindenmark of risking a recession and "
    "hurting homeowners. Eriksen said the bank would watch wage growth closely before its next meeting "
    "and did not rule out a further increase. The Lindenmark crown held near its strongest level in two "
    "years against the euro."
)
BANK_CROWN_TITLE = "Lindenmark crown climbs to two-year high after rate rise"
BANK_CROWN_BODY = (
    "The Lindenmark crown rose to its strongest level against the euro in two years on Monday, as traders "
    "bet that the Bank of Lindenmark would keep interest rates high for longer. Analysts at Nordhavn "
    "Savings said the stronger currency would ease import prices and help Governor Tomas Eriksen bring "
    "inflation down, but exporters warned that their goods were becoming more expensive abroad."
)
# Mentions both events: a markets round-up.
MARKETS_TITLE = "Markets: Marrow Chemicals slides after Port Halden fire, Lindenmark banks gain on rate rise"
MARKETS_BODY = (
    "Shares in Marrow Chemicals fell nine percent this week after the fire at its Port Halden plant, as "
    "investors weighed the cost of repairs, lost production and possible fines if the Kessel River is found "
    "to be polluted. Fire chief Elena Vasquez has said the blaze started in a solvent store. Elsewhere, "
    "shares in Lindenmark's largest banks rose after the Bank of Lindenmark raised its main interest rate "
    "to 4.25 percent, and the Lindenmark crown strengthened against the euro. Governor Tomas Eriksen said "
    "inflation was still too high."
)


def candidate_report(store: RedisStore, article_id: str, candidate: str) -> dict:
    (found,) = [c for c in article_answer(store, article_id)["decision"]["duplicate"]["candidates"]
                if c["article"] == candidate]
    return found


def test_reprint_with_a_new_headline_boilerplate_and_edits_is_a_duplicate(store, decider):
    submit(store, decider, BANK)
    original = submit(store, decider, COURIER)
    # Three edits: the typo fixed, a word changed, a number in figures.
    body = (FIRE_COURIER_BODY.replace("controll", "control").replace("about 2,000", "around 2,000")
            .replace("twelve workers", "12 workers"))
    reprint = dict(client_id="fire-syndicated", title="Thousands flee toxic smoke as chemical plant burns",
                   body=("Advertisement - scroll to continue reading\n" + body +
                         "\nSign up for our morning newsletter to get the day's top stories from the region. "
                         "Copyright 2024 Coastal Herald Media. All rights reserved."),
                   hours=5, source="coastal-herald")
    copy = submit(store, decider, reprint)

    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id and copy.opened_story is False
    found = candidate_report(store, "fire-syndicated", "fire-courier")
    assert found["duplicate"] is True and found["exact"] is False
    assert found["containment"] >= store.settings.duplicate_containment
    assert found["jaccard"] < found["containment"]  # the boilerplate and headline are in one text only
    report = article_answer(store, "fire-syndicated")["decision"]["duplicate"]
    assert report["matched"] == "fire-courier" and report["compared"] >= 1
    assert story_answer(store, original.story_id)["original_count"] == 1


def test_short_copy_of_a_long_article_is_found_through_its_story_not_lsh(store, decider):
    for spec in (BANK, FOOTBALL, COURIER):
        submit(store, decider, spec)
    original = submit(store, decider, BRIDGE)
    # MinHash sees a Jaccard far below what LSH is tuned to catch, so its bands do not meet.
    s = store.settings
    full = signatures.shingle_hashes(words(f"{BRIDGE_TITLE}\n{BRIDGE_BODY}"), s.shingle_size)
    brief = signatures.shingle_hashes(words(f"{BRIDGE_BRIEF['title']}\n{BRIDGE_BRIEF['body']}"), s.shingle_size)
    estimate = signatures.jaccard(signatures.minhash(full, s.num_perm), signatures.minhash(brief, s.num_perm))
    assert estimate < s.lsh_threshold / 2

    copy = submit(store, decider, BRIDGE_BRIEF)
    assert copy.duplicate_of == "bridge"
    assert copy.story_id == original.story_id
    found = candidate_report(store, "bridge-brief", "bridge")
    assert found["found_by"] == "story"
    assert found["containment"] == 1.0 and found["jaccard"] < 0.2 and found["duplicate"] is True
    assert article_answer(store, "bridge-brief")["decision"]["story"]["action"] == "followed_canonical"
    assert story_answer(store, original.story_id)["article_count"] == 2


def test_another_outlets_write_up_is_not_a_duplicate_but_joins_the_story(store, decider):
    for spec in (BANK, FOOTBALL, COURIER):
        submit(store, decider, spec)
    original = submit(store, decider, BRIDGE)
    wire = submit(store, decider, BRIDGE_WIRE)

    assert wire.duplicate_of is None
    assert wire.opened_story is False and wire.story_id == original.story_id
    decision = article_answer(store, "bridge-wire")["decision"]
    assert decision["duplicate"]["matched"] is None
    # Compared with the original (its story's canonical article): same names, hardly a shared sentence.
    found = candidate_report(store, "bridge-wire", "bridge")
    assert found["duplicate"] is False and found["containment"] < 0.1
    assert decision["story"]["action"] == "joined" and decision["story"]["story"] == original.story_id
    story = story_answer(store, original.story_id)
    assert story["original_count"] == 2
    assert {"carrowmore", "tamsin", "bridge"} <= set(story["top_terms"])
    assert not any(t.startswith("e:") for t in story["top_terms"])
    assert len(story["top_terms"]) == len(set(story["top_terms"]))
    assert story_canonicals(store, original.story_id) == ["bridge", "bridge-wire"]


def test_top_terms_are_words_as_the_text_splits_them(store, decider):
    for spec in (BANK, FOOTBALL, COURIER, BRIDGE):
        submit(store, decider, spec)
    outcome = submit(store, decider, BRIDGE_WIRE)  # the hospital's name is in both bridge reports
    top_terms = story_answer(store, outcome.story_id)["top_terms"]
    assert "carrowmore" in top_terms
    assert [term for term in top_terms if words(term) != [term]] == []


def test_daily_coverage_keeps_a_developing_story_together_but_not_across_a_month(store, decider, redis_client):
    submit(store, decider, BANK)
    outcomes = [submit(store, decider, spec) for spec in TRAWLER]
    assert outcomes[0].opened_story
    assert {o.story_id for o in outcomes} == {outcomes[0].story_id}
    story = story_answer(store, outcomes[0].story_id)
    assert story["original_count"] == 4
    assert story["first_seen"] == "2024-03-05T08:00:00Z" and story["last_updated"] == "2024-03-08T08:00:00Z"
    # Day three was compared with the three earlier days, one bucket each.
    day3 = article_answer(store, "trawler-day3")["decision"]["story"]["candidates"][0]
    assert day3["story"] == outcomes[0].story_id and day3["members_compared"] == 3
    assert len(story_buckets(store, outcomes[0].story_id)) == 4

    def fresh_stream(tag: str) -> RedisStore:
        return RedisStore(redis_client, Settings(key_prefix=f"{store.settings.key_prefix}-{tag}"))

    # The control: without the days between, day three alone is too far from day zero ...
    alone = fresh_stream("alone")
    try:
        first = submit(alone, Decider(alone), TRAWLER[0])
        skipped = submit(alone, Decider(alone), TRAWLER[3])
        assert skipped.opened_story and skipped.story_id != first.story_id
    finally:
        alone.clear()
    # ... and the same day-three text a month after the coverage opens a story of its own.
    later = fresh_stream("later")
    try:
        covered = [submit(later, Decider(later), spec) for spec in TRAWLER[:3]]
        month = submit(later, Decider(later), dict(TRAWLER[3], hours=24 * 32))
        assert month.opened_story and month.story_id != covered[0].story_id
        report = later.get_article("trawler-day3")["decision"]["story"]
        assert report["action"] == "opened"
        assert covered[0].story_id not in [c["story"] for c in report["candidates"]]
    finally:
        later.clear()


def test_an_article_bridging_two_events_does_not_merge_their_stories(store, decider):
    def spec(client_id, title, body, hours):
        return dict(client_id=client_id, title=title, body=body, hours=hours, source=f"outlet-{client_id}")

    bank = [spec("bank", BANK_TITLE, BANK_BODY, -20),
            spec("bank-mortgage", BANK_MORTGAGE_TITLE, BANK_MORTGAGE_BODY, -12),
            spec("bank-parliament", BANK_PARLIAMENT_TITLE, BANK_PARLIAMENT_BODY, 2)]
    fire = [spec("fire-courier", FIRE_COURIER_TITLE, FIRE_COURIER_BODY, 0),
            spec("fire-valley", FIRE_VALLEY_TITLE, FIRE_VALLEY_BODY, 3),
            spec("fire-inquiry", FIRE_INQUIRY_TITLE, FIRE_INQUIRY_BODY, 6)]
    bank_story = {submit(store, decider, a).story_id for a in bank}
    fire_story = {submit(store, decider, a).story_id for a in fire}
    assert len(bank_story) == 1 and len(fire_story) == 1 and bank_story != fire_story
    (bank_story,), (fire_story,) = bank_story, fire_story

    bridge = submit(store, decider, spec("markets", MARKETS_TITLE, MARKETS_BODY, 8))
    # It scores against both stories; whichever it joins (or none), the other stays apart.
    scored = {c["story"] for c in article_answer(store, "markets")["decision"]["story"]["candidates"]}
    assert {bank_story, fire_story} <= scored
    assert bridge.story_id in (bank_story, fire_story) or bridge.opened_story

    # What comes next about each event still goes to its own story.
    union = submit(store, decider, spec("fire-union", FIRE_UNION_TITLE, FIRE_UNION_BODY, 12))
    crown = submit(store, decider, spec("bank-crown", BANK_CROWN_TITLE, BANK_CROWN_BODY, 14))
    assert union.story_id == fire_story and crown.story_id == bank_story
    counts = {story_answer(store, bank_story)["original_count"], story_answer(store, fire_story)["original_count"]}
    assert counts == ({4} if bridge.opened_story else {4, 5})
    # And the repair pass's measure keeps them apart too.
    link = story_link(story_buckets(store, bank_story), story_buckets(store, fire_story), store.settings)
    assert link < store.settings.merge_threshold


def test_copies_share_their_canonicals_story_and_promotion_updates_the_canonical_list(store, decider):
    submit(store, decider, FOOTBALL)
    # A syndicated copy, published after the original, is processed first ...
    syndicated = submit(store, decider, dict(client_id="bridge-syndicated", title=BRIDGE_TITLE,
                                               body="Advertisement\n" + BRIDGE_BODY, hours=3,
                                               source="regional-news"))
    assert syndicated.opened_story
    story_id = syndicated.story_id
    assert story_canonicals(store, story_id) == ["bridge-syndicated"]

    # ... then the original, published earlier, arrives and takes its place.
    original = submit(store, decider, BRIDGE)
    assert original.duplicate_of is None and original.story_id == story_id
    assert article_answer(store, "bridge")["decision"]["story"]["action"] == "followed_copy"
    assert article_answer(store, "bridge-syndicated")["duplicate_of"] == "bridge"
    assert story_canonicals(store, story_id) == ["bridge"]

    # A short copy is found only through the story's canonical list, and now finds the original.
    brief = submit(store, decider, dict(BRIDGE_BRIEF, hours=5))
    assert brief.duplicate_of == "bridge" and brief.story_id == story_id
    assert candidate_report(store, "bridge-brief", "bridge")["found_by"] == "story"
    assert [c["article"] for c in article_answer(store, "bridge-brief")["decision"]["duplicate"]["candidates"]
            ].count("bridge-syndicated") == 0  # no longer canonical, so never compared

    # An original report joins and is listed after it; the story holds four articles, two canonical.
    wire = submit(store, decider, BRIDGE_WIRE)
    assert wire.story_id == story_id and wire.duplicate_of is None
    assert story_canonicals(store, story_id) == ["bridge", "bridge-wire"]
    story = story_answer(store, story_id)
    assert story["article_count"] == 4 and story["original_count"] == 2
    folded = {a["id"]: [d["id"] for d in a["duplicates"]] for a in story["articles"]}
    assert folded == {"bridge": ["bridge-syndicated", "bridge-brief"], "bridge-wire": []}  # by published time


def test_a_story_lists_only_its_newest_canonical_articles(store):
    capped = Decider(store, store.settings.replace(story_duplicate_candidates=2))
    outcomes = [submit(store, capped, spec) for spec in TRAWLER]
    assert len({o.story_id for o in outcomes}) == 1
    assert story_canonicals(store, outcomes[0].story_id) == ["trawler-day2", "trawler-day3"]


def test_collect_less_freezes_what_exists_and_collects_less_often():
    import gc

    from storyengine.gc_tuning import GC_THRESHOLDS, collect_less

    before = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
