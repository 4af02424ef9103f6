"""Processing articles end to end in the engine, against a real Redis: duplicates,
story assignment, idempotence, the time window, decisions and stream IDF."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from storyengine.articles import new_article_record
from storyengine.errors import InvalidArticle, NotFound
from storyengine.pipeline import Processor
from storyengine.settings import Settings
from storyengine.store import RedisStore
from storyengine.vectors import Vectorizer
from tests.conftest import snapshot

T0 = datetime(2024, 3, 5, 8, 0, tzinfo=timezone.utc)

# ---------------------------------------------------------------- the articles
# Event 1, outlet 1 (with a typo, "controll", that a reprint fixes).
FIRE_COURIER_TITLE = "Fire at Marrow Chemicals plant in Port Halden forces evacuation"
FIRE_COURIER_BODY = (
    "A large fire broke out early on Tuesday at the Marrow Chemicals plant in Port Halden, sending a column "
    "of black smoke over the Kessel River and forcing the evacuation of about 2,000 residents from nearby "
    "streets. Fire chief Elena Vasquez said twelve workers were taken to Halden General Hospital with "
    "breathing problems, two of them in serious condition. The blaze started in a storage hall where "
    "solvents were kept and spread to a loading dock before crews brought it under controll shortly after "
    "noon. Marrow Chemicals said in a statement that production had been halted and that it was "
    "cooperating with investigators. Environmental officials were testing water from the Kessel River for "
    "signs of contamination and asked people living downstream not to fish until the results were known. "
    "Residents were told they could return home on Wednesday morning, once air quality readings had "
    "returned to normal levels across the district."
)
# Event 1, outlet 2: its own wording, the same people, places and facts.
FIRE_VALLEY_TITLE = "Port Halden chemical blaze sends twelve Marrow workers to hospital"
FIRE_VALLEY_BODY = (
    "Twelve employees of Marrow Chemicals were treated at Halden General Hospital after flames tore through "
    "a solvent warehouse at the company's Port Halden site on Tuesday, officials said. Elena Vasquez, who "
    "leads the Port Halden fire service, told reporters that firefighters battled the blaze for more than "
    "six hours and that two of the injured workers remained in serious condition. Police evacuated homes "
    "within a kilometre of the plant as thick smoke drifted across the Kessel River. Marrow Chemicals "
    "suspended production and promised a full investigation into the cause of the fire. State "
    "environmental inspectors collected samples from the Kessel River and warned anglers downstream to stay "
    "away while tests continue. Evacuated families were expected back in their homes by Wednesday, "
    "according to the city council."
)
# Event 2, unrelated.
BANK_TITLE = "Lindenmark central bank raises interest rates to curb inflation"
BANK_BODY = (
    "The Bank of Lindenmark raised its benchmark interest rate by a quarter of a percentage point on "
    "Thursday, the third increase this year, as policymakers tried to cool inflation that has stayed above "
    "target for eighteen months. Governor Tomas Eriksen said consumer prices were still rising too quickly, "
    "driven by rents, energy bills and food, and that the bank was prepared to act again if needed. The "
    "decision lifts the main lending rate to 4.25 percent, its highest level in more than a decade. "
    "Economists had been divided ahead of the meeting, with several warning that higher borrowing costs "
    "could push the economy into recession. Mortgage lenders are expected to pass the increase on to "
    "homeowners within weeks. The Lindenmark crown strengthened against the euro after the announcement, "
    "and shares in the country's largest banks rose in afternoon trading."
)
# Event 3, unrelated, about the same size.
FOOTBALL_TITLE = "Ostbury Rovers sack manager Declan Moyes after cup exit"
FOOTBALL_BODY = (
    "Ostbury Rovers dismissed manager Declan Moyes on Sunday, a day after the club was knocked out of the "
    "national cup by second-tier Fenwick Athletic. The board said results had fallen short of expectations "
    "and thanked Moyes for his work over three seasons, during which Rovers won promotion and reached a "
    "European final. Assistant coach Marta Lindqvist will take charge of training until a replacement is "
    "found. Supporters had protested outside Kingsmead Stadium after a run of seven games without a win, "
    "and several senior players were reported to have questioned the tactics in private. Bookmakers made "
    "former Rovers captain Ivan Petrak the early favourite for the job. The club sits fourteenth in the "
    "league, six points above the relegation places, with eleven matches left to play."
)


def reprint_of(body: str, keep: float = 0.6) -> str:
    """A syndicated copy: boilerplate prepended, the typo fixed, the tail cut."""
    words = body.split()
    kept = " ".join(words[: int(len(words) * keep)])
    return "Advertisement\n" + kept.replace("controll", "control")


def article(client_id: str, title: str, body: str, hours: float = 0.0, source: str | None = None) -> dict:
    return new_article_record(source=source or f"outlet-{client_id}", url=f"https://news.example/{client_id}",
                              title=title, body=body, published_at=T0 + timedelta(hours=hours), client_id=client_id)


BANK = dict(client_id="bank", title=BANK_TITLE, body=BANK_BODY, hours=-20, source="finance-daily")
FOOTBALL = dict(client_id="football", title=FOOTBALL_TITLE, body=FOOTBALL_BODY, hours=-10, source="sport-desk")
COURIER = dict(client_id="fire-courier", title=FIRE_COURIER_TITLE, body=FIRE_COURIER_BODY, hours=0,
               source="northern-courier")
REPRINT = dict(client_id="fire-reprint", title="Chemical plant blaze: residents evacuated",
               body=reprint_of(FIRE_COURIER_BODY), hours=2, source="coastal-herald")
VALLEY = dict(client_id="fire-valley", title=FIRE_VALLEY_TITLE, body=FIRE_VALLEY_BODY, hours=3,
              source="valley-times")


@pytest.fixture
def processor(store):
    return Processor(store)


def submit(store: RedisStore, processor: Processor, spec: dict):
    rec = article(**spec)
    assert store.accept_articles([rec]) == [(rec["id"], True)]
    return processor.process(rec["id"])


def df_counts(store: RedisStore, terms: list[str]) -> dict[str, int]:
    """The stream's document frequency of each term, read from Redis."""
    vec = Vectorizer(store.settings.hash_features)
    args = [x for t in terms for x in ("GET", "u32", f"#{vec.feature_of(t)}")]
    return dict(zip(terms, store.redis.execute_command("BITFIELD", store.keys.df, *args)))


def df_docs(store: RedisStore) -> int:
    return int(store.redis.get(store.keys.df_docs) or 0)


# ---------------------------------------------------------------- duplicates
def test_reprint_is_a_duplicate_of_the_earliest_copy_and_shares_its_story(store, processor):
    submit(store, processor, BANK)
    original = submit(store, processor, COURIER)
    copy = submit(store, processor, REPRINT)

    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    assert copy.opened_story is False
    reprint = store.get_article("fire-reprint")
    assert reprint["status"] == "processed"
    assert reprint["duplicate_of"] == "fire-courier"
    assert reprint["story"] == original.story_id
    assert not store.get_article("fire-courier")["duplicate_of"]

    # Why: the truncated copy is mostly contained in the original though its Jaccard is low.
    report = reprint["decision"]["duplicate"]
    assert report["matched"] == "fire-courier"
    (candidate,) = [c for c in report["candidates"] if c["article"] == "fire-courier"]
    assert candidate["duplicate"] is True and candidate["exact"] is False
    assert candidate["jaccard"] < 0.7 <= 0.8 <= candidate["containment"]
    assert reprint["similarity"] == pytest.approx(candidate["containment"])
    assert reprint["decision"]["story"]["action"] == "followed_canonical"

    story = store.get_story(original.story_id)
    assert story["article_count"] == 2
    assert story["original_count"] == 1
    assert story["source_count"] == 2
    assert sorted(story["sources"]) == ["coastal-herald", "northern-courier"]
    assert story["representative_article"] == "fire-courier"
    assert story["headline"] == FIRE_COURIER_TITLE
    (folded,) = story["articles"]
    assert folded["id"] == "fire-courier"
    assert [d["id"] for d in folded["duplicates"]] == ["fire-reprint"]


def test_exact_copy_with_new_case_and_typography_is_an_exact_duplicate(store, processor):
    original = submit(store, processor, COURIER)
    shouted = FIRE_COURIER_BODY.upper().replace("'", "\u2019").replace(", ", " \u2014 ")
    copy = submit(store, processor, dict(client_id="fire-shout", title="FIRE!", body=shouted, hours=1))
    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    (candidate,) = store.get_article("fire-shout")["decision"]["duplicate"]["candidates"]
    assert candidate["exact"] is True and candidate["jaccard"] == 1.0


def test_different_reports_of_one_event_are_not_duplicates_of_each_other(store, processor):
    submit(store, processor, COURIER)
    outcome = submit(store, processor, VALLEY)
    assert outcome.duplicate_of is None
    assert not store.get_article("fire-valley")["duplicate_of"]


# ---------------------------------------------------------------- stories
def test_two_outlets_on_one_event_join_one_story_and_unrelated_events_open_their_own(store, processor):
    bank = submit(store, processor, BANK)
    courier = submit(store, processor, COURIER)
    valley = submit(store, processor, VALLEY)
    football = submit(store, processor, FOOTBALL)  # unrelated, after the fire stories exist

    assert bank.opened_story and courier.opened_story and football.opened_story
    assert valley.opened_story is False
    assert valley.duplicate_of is None
    assert valley.story_id == courier.story_id
    assert len({bank.story_id, football.story_id, courier.story_id}) == 3

    story = store.get_story(courier.story_id)
    assert story["article_count"] == 2 and story["original_count"] == 2
    assert sorted(story["sources"]) == ["northern-courier", "valley-times"]
    assert [a["id"] for a in story["articles"]] == ["fire-courier", "fire-valley"]
    assert all(a["duplicates"] == [] for a in story["articles"])
    assert {"marrow", "halden", "kessel"} <= set(story["top_terms"])
    assert store.get_story(bank.story_id)["article_count"] == 1
    assert store.get_story(football.story_id)["headline"] == FOOTBALL_TITLE


def test_decision_lists_candidate_stories_with_scores(store, processor):
    bank = submit(store, processor, BANK)
    courier = submit(store, processor, COURIER)
    valley = submit(store, processor, VALLEY)

    decision = store.get_article("fire-valley")["decision"]
    story_report = decision["story"]
    assert story_report["action"] == "joined"
    assert story_report["story"] == courier.story_id
    assert story_report["threshold"] == store.settings.story_threshold
    candidates = story_report["candidates"]
    assert candidates[0]["story"] == courier.story_id
    assert all(c["score"] < story_report["threshold"] for c in candidates[1:])
    for c in candidates:
        assert set(c) == {"story", "similarity", "time_factor", "score"}
        assert c["score"] == pytest.approx(c["similarity"] * c["time_factor"], abs=1e-3)
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    best = candidates[0]
    assert best["score"] >= store.settings.story_threshold
    # Three hours after a one-article story, sigma 72 hours.
    assert best["time_factor"] == pytest.approx(math.exp(-(3 ** 2) / (2 * 72 ** 2)), abs=1e-4)
    assert store.get_article("fire-valley")["similarity"] == pytest.approx(best["score"], abs=1e-4)
    assert decision["duplicate"]["matched"] is None
    assert valley.story_id == courier.story_id

    # The first article of a stream had nothing to compare with.
    first = store.get_article("bank")["decision"]["story"]
    assert first["action"] == "opened" and first["candidates"] == [] and first["story"] == bank.story_id


def test_an_article_a_month_after_a_story_does_not_join_it(store, processor, redis_client):
    courier = submit(store, processor, COURIER)
    late = submit(store, processor, dict(VALLEY, hours=30 * 24))
    assert late.opened_story is True
    assert late.story_id != courier.story_id
    report = store.get_article("fire-valley")["decision"]["story"]
    assert report["action"] == "opened"
    assert courier.story_id not in [c["story"] for c in report["candidates"]]
    assert store.get_story(courier.story_id)["article_count"] == 1

    # The control: the very same article three hours after it joins.
    other = RedisStore(redis_client, Settings(key_prefix=store.settings.key_prefix + "-control"))
    try:
        first = submit(other, Processor(other), COURIER)
        in_time = submit(other, Processor(other), VALLEY)
        assert in_time.story_id == first.story_id
    finally:
        other.clear()


def test_a_story_kept_current_by_a_reprint_is_still_found_inside_the_window(store, processor):
    courier = submit(store, processor, COURIER)
    reprint = submit(store, processor, dict(REPRINT, hours=100))  # a syndicated copy four days later
    assert reprint.story_id == courier.story_id
    story = store.get_story(courier.story_id)
    assert story["last_updated"] == "2024-03-09T12:00:00Z"
    # 130 hours after the original, 30 hours after the story's newest article: inside the
    # 72-hour window as stories.in_window defines it, and similar enough to clear the
    # threshold with the time factor exp(-30**2 / (2 * 72**2)) = 0.917 (it scored 0.385 at
    # three hours in test_decision_lists_candidate_stories_with_scores).
    late = submit(store, processor, dict(VALLEY, hours=130))
    candidates = store.get_article("fire-valley")["decision"]["story"]["candidates"]
    assert courier.story_id in [c["story"] for c in candidates]
    assert late.story_id == courier.story_id


def test_article_published_before_a_story_window_does_not_join_it(store, processor):
    courier = submit(store, processor, COURIER)
    early = submit(store, processor, dict(VALLEY, hours=-30 * 24))
    assert early.story_id != courier.story_id


# ---------------------------------------------------------------- idempotence
def test_processing_the_same_article_twice_changes_nothing(store, processor, redis_client, settings):
    submit(store, processor, COURIER)
    first = submit(store, processor, VALLEY)
    submit(store, processor, REPRINT)
    story_before = store.get_story(first.story_id)
    docs_before = df_docs(store)
    before = snapshot(redis_client, settings.key_prefix)

    for article_id in ("fire-valley", "fire-reprint", "fire-courier"):
        again = processor.process(article_id)
        assert again.already_processed is True
        assert again.story_id == first.story_id
    # A fresh processor (another worker, a redelivered task) agrees.
    again = Processor(store).process("fire-reprint")
    assert again.already_processed and again.duplicate_of == "fire-courier"

    assert store.get_story(first.story_id)["article_count"] == story_before["article_count"] == 3
    assert df_docs(store) == docs_before == 2
    assert snapshot(redis_client, settings.key_prefix) == before


def test_unknown_article_id_is_not_found(store, processor):
    with pytest.raises(NotFound):
        processor.process("never-accepted")


def test_article_without_words_is_invalid_and_leaves_no_trace(store, processor, redis_client, settings):
    rec = article("empty", title="!!!", body="<p>\u2014 ... \u2014</p><script>var words = 1;</script>")
    store.accept_articles([rec])
    before = snapshot(redis_client, settings.key_prefix)
    with pytest.raises(InvalidArticle, match="no words"):
        processor.process("empty")
    assert store.get_article("empty")["status"] == "queued"
    assert snapshot(redis_client, settings.key_prefix) == before


def test_short_article_uses_its_title_too(store, processor):
    outcome = submit(store, processor, dict(client_id="flash", title="Earthquake hits Velmora region",
                                            body="Developing."))
    assert outcome.opened_story
    assert store.get_story(outcome.story_id)["headline"] == "Earthquake hits Velmora region"


# ---------------------------------------------------------------- stream IDF
def test_document_frequencies_count_originals_only(store, processor):
    assert df_docs(store) == 0
    for spec in (BANK, FOOTBALL, COURIER, REPRINT, VALLEY):
        submit(store, processor, spec)
    # Five articles processed, one of them a copy: four documents.
    assert df_docs(store) == 4
    counts = df_counts(store, ["kessel", "lindenmark", "moyes", "advertisement", "marrow", "halden"])
    assert counts == {"kessel": 2, "lindenmark": 1, "moyes": 1, "advertisement": 0, "marrow": 2, "halden": 2}


def test_document_frequencies_grow_one_article_at_a_time(store, processor):
    submit(store, processor, COURIER)
    assert df_docs(store) == 1
    assert df_counts(store, ["kessel", "lindenmark"]) == {"kessel": 1, "lindenmark": 0}
    submit(store, processor, BANK)
    assert df_docs(store) == 2
    assert df_counts(store, ["kessel", "lindenmark"]) == {"kessel": 1, "lindenmark": 1}


def test_stories_from_the_pipeline_list_by_size_and_recency(store, processor):
    for spec in (BANK, FOOTBALL, COURIER, REPRINT, VALLEY):
        submit(store, processor, spec)
    fire = store.get_article("fire-courier")["story"]
    by_size = store.list_stories(sort="size", limit=10).items
    assert [s["id"] for s in by_size][0] == fire
    assert [s["article_count"] for s in by_size] == [3, 1, 1]
    recent = store.list_stories(sort="recent", limit=10).items
    assert [s["id"] for s in recent] == [fire, store.get_article("football")["story"],
                                         store.get_article("bank")["story"]]
    assert recent[0]["last_updated"] == "2024-03-05T11:00:00Z"  # the Valley Times piece
    assert [s["id"] for s in store.list_stories(sort="recent", limit=10, min_sources=2).items] == [fire]
