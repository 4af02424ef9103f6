"""Processing articles end to end in the engine, against a real Redis: duplicates (exact, by
containment, short copies found through their story, promotion of an earlier copy),
story assignment, idempotence, the time window, decisions and stream IDF."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from storyengine import signatures
from storyengine.articles import new_article_record
from storyengine.errors import InvalidArticle, NotFound
from storyengine.pipeline import Processor
from storyengine.settings import Settings
from storyengine.store import RedisStore
from storyengine.stories import Bucket, story_link
from storyengine.text import words
from storyengine.vectors import Vectorizer, tfidf
from tests.conftest import snapshot
from tests.helpers import pairs

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
                              title=title, body=body, published_at=T0 + timedelta(hours=hours), article_id=client_id)


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
    assert pairs(store.accept_articles([rec])) == [(rec["id"], True)]
    return processor.process(rec["id"])


def df_counts(store: RedisStore, terms: list[str]) -> dict[str, int]:
    """The stream's document frequency of each term, read from Redis."""
    vec = Vectorizer(store.settings.hash_features)
    args = [x for t in terms for x in ("GET", "u32", f"#{vec.feature_of(t)}")]
    return dict(zip(terms, store.redis.execute_command("BITFIELD", store.keys.df, *args)))


def df_docs(store: RedisStore) -> int:
    return int(store.redis.get(store.keys.df_docs) or 0)


def df_counts_of_features(store: RedisStore, features) -> np.ndarray:
    args = [x for i in features for x in ("GET", "u32", f"#{int(i)}")]
    return np.asarray(store.redis.execute_command("BITFIELD", store.keys.df, *args), dtype=np.float64)


def story_buckets(store: RedisStore, story_id: str) -> dict[int, Bucket]:
    """A story's member buckets, read from its hash."""
    raw = store.redis.hgetall(store.keys.story(story_id))
    return {int(k.decode()[2:]): Bucket.from_bytes(v) for k, v in raw.items() if k.decode().startswith("b:")}


def story_canonicals(store: RedisStore, story_id: str) -> list[str]:
    return json.loads(store.redis.hget(store.keys.story(story_id), "canonicals") or "[]")


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
    assert candidate["jaccard"] < 0.6 and candidate["containment"] >= store.settings.duplicate_containment
    assert candidate["found_by"] == "lsh"  # about the original's length: LSH finds it
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


def shout(text: str) -> str:
    """The same words in capitals, with typographic apostrophes and dashes."""
    return text.upper().replace("'", "\u2019").replace(", ", " \u2014 ")


def test_exact_copy_with_new_case_and_typography_is_an_exact_duplicate(store, processor):
    original = submit(store, processor, COURIER)
    # Headline and body are fingerprinted together: the copy changes the typography of both.
    copy = submit(store, processor, dict(client_id="fire-shout", title=shout(FIRE_COURIER_TITLE),
                                         body=shout(FIRE_COURIER_BODY), hours=1))
    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    (candidate,) = store.get_article("fire-shout")["decision"]["duplicate"]["candidates"]
    assert candidate["exact"] is True and candidate["found_by"] == "exact"
    assert candidate["jaccard"] == 1.0 and candidate["containment"] == 1.0


def test_copy_with_only_a_new_headline_is_a_duplicate_but_not_an_exact_one(store, processor):
    original = submit(store, processor, COURIER)
    copy = submit(store, processor, dict(client_id="fire-shout", title="FIRE!", body=shout(FIRE_COURIER_BODY),
                                         hours=1))
    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id
    (candidate,) = store.get_article("fire-shout")["decision"]["duplicate"]["candidates"]
    # The headline is a few shingles out of a couple of hundred.
    assert candidate["exact"] is False and candidate["duplicate"] is True
    assert candidate["containment"] >= 0.95 and candidate["jaccard"] >= 0.9


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
    # Valley's TF-IDF vector as the processor will weigh it: with the stream's counts so far.
    valley_features = processor.featurise(article(**VALLEY))
    valley_vector = tfidf(valley_features.term_indices, valley_features.term_counts,
                          df_counts_of_features(store, valley_features.term_indices), df_docs(store))
    (member,) = story_buckets(store, courier.story_id).values()  # the courier piece alone
    valley = submit(store, processor, VALLEY)

    decision = store.get_article("fire-valley")["decision"]
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
    assert store.get_article("fire-valley")["similarity"] == pytest.approx(best["score"], abs=1e-4)
    assert decision["duplicate"]["matched"] is None
    assert valley.story_id == courier.story_id

    # The first article of a stream had nothing to compare with.
    first = store.get_article("bank")["decision"]["story"]
    assert first["action"] == "opened" and first["candidates"] == [] and first["story"] == bank.story_id
    # It was compared with no story: no score is reported (1.0 would read as a comparison made).
    assert store.get_article("bank")["similarity"] is None


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
    reprint = submit(store, processor, dict(REPRINT, hours=80))  # a syndicated copy three days later
    assert reprint.story_id == courier.story_id
    story = store.get_story(courier.story_id)
    assert story["last_updated"] == "2024-03-08T16:00:00Z"
    # 110 hours after the original, 30 hours after the story's newest article: the
    # story is inside the 96-hour window as stories.in_window defines it, and the term
    # index (kept current by the copy) finds it as a candidate ...
    late = submit(store, processor, dict(VALLEY, hours=110))
    candidates = store.get_article("fire-valley")["decision"]["story"]["candidates"]
    (found,) = [c for c in candidates if c["story"] == courier.story_id]
    # ... but a copy adds no member: average link compares with original articles only,
    # and the one original is 110 hours away, beyond the kernel's window.
    assert {k: found[k] for k in ("story", "score", "members_compared", "shared_words")} == {
        "story": courier.story_id, "score": 0.0, "members_compared": 0, "shared_words": 0}
    assert late.opened_story and late.story_id != courier.story_id


def test_a_follow_up_is_scored_against_original_articles_not_their_copies(store, processor):
    courier = submit(store, processor, COURIER)
    submit(store, processor, dict(REPRINT, hours=20))
    late = submit(store, processor, dict(VALLEY, hours=30))
    (found,) = [c for c in store.get_article("fire-valley")["decision"]["story"]["candidates"]
                if c["story"] == courier.story_id]
    assert found["members_compared"] == 1  # the original, not its copy
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
    counts = df_counts(store, ["kessel", "lindenmark", "moy", "advertis", "marrow", "halden"])  # terms are stems
    assert counts == {"kessel": 2, "lindenmark": 1, "moy": 1, "advertis": 0, "marrow": 2, "halden": 2}


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


# ================================================================ copies by containment, average-link stories
# Event 4: a long article (about 430 words) and what others made of it.
BRIDGE_TITLE = "Aldwick Bridge collapses into River Tamsin during morning rush hour"
BRIDGE_BODY = (
    "A section of the Aldwick Bridge in the city of Carrowmore collapsed into the River Tamsin shortly after "
    "eight o'clock on Monday morning, sending at least four cars and a delivery van into the water and "
    "leaving dozens of commuters stranded on either bank. Emergency services said nine people had been "
    "pulled from the river alive and taken to St Brendan's Hospital, where three were being treated for "
    "serious injuries. Two people were still missing on Monday afternoon, and divers from the Carrowmore "
    "harbour police were searching the wreckage in strong currents.\n"
    "Witnesses described hearing a loud crack before the central span dropped several metres and then "
    "slid into the river. Aoife Brennan, who runs a bakery on Quay Street, said the noise sounded like "
    "thunder. She saw a bus stop just short of the gap, and its passengers climbed out through the back "
    "door while other drivers reversed away from the edge. A cyclist who had been halfway across managed "
    "to jump onto the remaining section and was helped to safety by a passing taxi driver.\n"
    "The bridge, built in 1962, carries about forty thousand vehicles a day between the old town and the "
    "docklands. It had been due for a major refurbishment next spring after engineers found corrosion in "
    "its steel supports during an inspection two years ago. Mayor Declan Hurley said the city would open "
    "an independent inquiry into why the work had been delayed, and promised that every other bridge in "
    "Carrowmore would be checked before the end of the week.\n"
    "Transport minister Ruth Callaghan travelled to the scene by helicopter and met rescue workers on the "
    "northern bank. She said the government would pay for a temporary crossing and that army engineers "
    "could have a floating bridge in place within a fortnight. Until then, traffic between the two halves "
    "of the city will be diverted over the Pennock Road bridge, five kilometres upstream, and extra ferries "
    "will run from the docklands to the old town every fifteen minutes.\n"
    "Shipping on the River Tamsin has been suspended below the collapse, and the port authority warned "
    "that cargo vessels due in Carrowmore this week would be sent to other harbours along the coast. Local "
    "businesses on both sides of the river said they feared weeks of lost trade. Schools in the docklands "
    "will stay closed on Tuesday, and the city council has opened a helpline for families who are still "
    "waiting for news of relatives. Police asked people to stay away from the riverside so that rescue "
    "boats and divers could continue their work through the night."
)
# Event 4, another outlet's own report: the same names and places, none of the sentences.
BRIDGE_WIRE_TITLE = "Search for two missing after Carrowmore bridge falls into the Tamsin"
BRIDGE_WIRE_BODY = (
    "Rescue divers in Carrowmore spent Monday night searching the River Tamsin for two people who are "
    "believed to have been in a car when the central span of the Aldwick Bridge gave way. Nine others "
    "were rescued from the water and three of them are in a serious condition at St Brendan's Hospital, "
    "according to the harbour police. The 1962 bridge had been scheduled for repairs after an inspection "
    "found rusting supports, and Mayor Declan Hurley has ordered an inquiry into the delay. Transport "
    "minister Ruth Callaghan, who visited the riverbank, pledged government money for a temporary army "
    "pontoon. Commuters face long detours over the Pennock Road crossing, while ships bound for Carrowmore "
    "are being diverted to other ports."
)

# Event 5: a story that develops over days, one new report a day.
TRAWLER_DAY0_TITLE = "Trawler Northern Star missing off Skerry Point with six crew"
TRAWLER_DAY0_BODY = (
    "A search is under way for the fishing trawler Northern Star, which lost contact with the coastguard "
    "off Skerry Point late on Friday with six crew on board. The Brannock coastguard said the vessel sent "
    "a brief distress call as a storm moved in from the west, and that lifeboats from Kilbride and "
    "Brannock were sent to its last known position. The trawler, skippered by Owen Fairley, left Kilbride "
    "harbour on Thursday for the herring grounds. Families of the crew gathered at the harbour office "
    "overnight as waves of eight metres hampered the search."
)
TRAWLER_DAY1_TITLE = "Life raft from Northern Star found as Skerry Point search widens"
TRAWLER_DAY1_BODY = (
    "Rescuers found an empty life raft from the trawler Northern Star drifting twenty kilometres south of "
    "Skerry Point on Saturday, the Brannock coastguard said, as the search for its six crew widened. A "
    "navy patrol ship and two helicopters joined the Kilbride and Brannock lifeboats once the storm eased. "
    "Skipper Owen Fairley's brother said the families in Kilbride were clinging to hope. Coastguard "
    "officers said debris, including fish boxes marked with the trawler's name, had also been recovered."
)
TRAWLER_DAY2_TITLE = "Two Northern Star fishermen rescued alive near Skerry Point"
TRAWLER_DAY2_BODY = (
    "Two crew members of the trawler Northern Star were found alive on a rocky islet near Skerry Point on "
    "Sunday, two days after the vessel went missing, the Brannock coastguard said. The men, both from "
    "Kilbride, were winched aboard a helicopter and flown to hospital suffering from cold and exhaustion. "
    "They told rescuers that the trawler capsized in the storm and that skipper Owen Fairley had helped "
    "them into the water before it sank. The search for the four other crew continued into the night."
)
TRAWLER_DAY3_TITLE = "Search for Northern Star crew called off as Kilbride mourns"
TRAWLER_DAY3_BODY = (
    "The Brannock coastguard called off the search for four crew of the trawler Northern Star on Monday, "
    "three days after it sank off Skerry Point. Skipper Owen Fairley is among those missing and presumed "
    "dead. Hundreds of people gathered at Kilbride harbour for a vigil, and the two survivors sent a "
    "message thanking the lifeboat crews. The marine accident investigation board said it would examine "
    "why the Northern Star's emergency beacon did not activate when it went down."
)

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

BRIDGE = dict(client_id="bridge", title=BRIDGE_TITLE, body=BRIDGE_BODY, hours=1, source="carrowmore-post")
BRIDGE_WIRE = dict(client_id="bridge-wire", title=BRIDGE_WIRE_TITLE, body=BRIDGE_WIRE_BODY, hours=4,
                   source="national-wire")
# A news-in-brief item: the headline and the first sixty words of the long article.
BRIDGE_BRIEF = dict(client_id="bridge-brief", title=BRIDGE_TITLE, body=" ".join(BRIDGE_BODY.split()[:60]),
                    hours=2, source="metro-briefs")
TRAWLER = [dict(client_id=f"trawler-day{day}", title=title, body=body, hours=24 * day, source=f"outlet-{day}")
           for day, (title, body) in enumerate([(TRAWLER_DAY0_TITLE, TRAWLER_DAY0_BODY),
                                                (TRAWLER_DAY1_TITLE, TRAWLER_DAY1_BODY),
                                                (TRAWLER_DAY2_TITLE, TRAWLER_DAY2_BODY),
                                                (TRAWLER_DAY3_TITLE, TRAWLER_DAY3_BODY)])]


def candidate_report(store: RedisStore, article_id: str, candidate: str) -> dict:
    (found,) = [c for c in store.get_article(article_id)["decision"]["duplicate"]["candidates"]
                if c["article"] == candidate]
    return found


def test_reprint_with_a_new_headline_boilerplate_and_edits_is_a_duplicate(store, processor):
    submit(store, processor, BANK)
    original = submit(store, processor, COURIER)
    # Three edits: the typo fixed, a word changed, a number in figures.
    body = (FIRE_COURIER_BODY.replace("controll", "control").replace("about 2,000", "around 2,000")
            .replace("twelve workers", "12 workers"))
    reprint = dict(client_id="fire-syndicated", title="Thousands flee toxic smoke as chemical plant burns",
                   body=("Advertisement - scroll to continue reading\n" + body +
                         "\nSign up for our morning newsletter to get the day's top stories from the region. "
                         "Copyright 2024 Coastal Herald Media. All rights reserved."),
                   hours=5, source="coastal-herald")
    copy = submit(store, processor, reprint)

    assert copy.duplicate_of == "fire-courier"
    assert copy.story_id == original.story_id and copy.opened_story is False
    found = candidate_report(store, "fire-syndicated", "fire-courier")
    assert found["duplicate"] is True and found["exact"] is False
    assert found["containment"] >= store.settings.duplicate_containment
    assert found["jaccard"] < found["containment"]  # the boilerplate and headline are in one text only
    report = store.get_article("fire-syndicated")["decision"]["duplicate"]
    assert report["matched"] == "fire-courier" and report["compared"] >= 1
    assert store.get_story(original.story_id)["original_count"] == 1


def test_short_copy_of_a_long_article_is_found_through_its_story_not_lsh(store, processor):
    for spec in (BANK, FOOTBALL, COURIER):
        submit(store, processor, spec)
    original = submit(store, processor, BRIDGE)
    # MinHash sees a Jaccard far below what LSH is tuned to catch, so its bands do not meet.
    s = store.settings
    full = signatures.shingle_hashes(words(f"{BRIDGE_TITLE}\n{BRIDGE_BODY}"), s.shingle_size)
    brief = signatures.shingle_hashes(words(f"{BRIDGE_BRIEF['title']}\n{BRIDGE_BRIEF['body']}"), s.shingle_size)
    estimate = signatures.jaccard(signatures.minhash(full, s.num_perm), signatures.minhash(brief, s.num_perm))
    assert estimate < s.lsh_threshold / 2

    copy = submit(store, processor, BRIDGE_BRIEF)
    assert copy.duplicate_of == "bridge"
    assert copy.story_id == original.story_id
    found = candidate_report(store, "bridge-brief", "bridge")
    assert found["found_by"] == "story"
    assert found["containment"] == 1.0 and found["jaccard"] < 0.2 and found["duplicate"] is True
    assert store.get_article("bridge-brief")["decision"]["story"]["action"] == "followed_canonical"
    assert store.get_story(original.story_id)["article_count"] == 2


def test_another_outlets_write_up_is_not_a_duplicate_but_joins_the_story(store, processor):
    for spec in (BANK, FOOTBALL, COURIER):
        submit(store, processor, spec)
    original = submit(store, processor, BRIDGE)
    wire = submit(store, processor, BRIDGE_WIRE)

    assert wire.duplicate_of is None
    assert wire.opened_story is False and wire.story_id == original.story_id
    decision = store.get_article("bridge-wire")["decision"]
    assert decision["duplicate"]["matched"] is None
    # Compared with the original (its story's canonical article): same names, hardly a shared sentence.
    found = candidate_report(store, "bridge-wire", "bridge")
    assert found["duplicate"] is False and found["containment"] < 0.1
    assert decision["story"]["action"] == "joined" and decision["story"]["story"] == original.story_id
    story = store.get_story(original.story_id)
    assert story["original_count"] == 2
    assert {"carrowmore", "tamsin", "bridge"} <= set(story["top_terms"])
    assert not any(t.startswith("e:") for t in story["top_terms"])
    assert len(story["top_terms"]) == len(set(story["top_terms"]))
    assert story_canonicals(store, original.story_id) == ["bridge", "bridge-wire"]


def test_top_terms_are_words_as_the_text_splits_them(store, processor):
    for spec in (BANK, FOOTBALL, COURIER, BRIDGE):
        submit(store, processor, spec)
    outcome = submit(store, processor, BRIDGE_WIRE)  # the hospital's name is in both bridge reports
    top_terms = store.get_story(outcome.story_id)["top_terms"]
    assert "carrowmore" in top_terms
    assert [term for term in top_terms if words(term) != [term]] == []


def test_daily_coverage_keeps_a_developing_story_together_but_not_across_a_month(store, processor, redis_client):
    submit(store, processor, BANK)
    outcomes = [submit(store, processor, spec) for spec in TRAWLER]
    assert outcomes[0].opened_story
    assert {o.story_id for o in outcomes} == {outcomes[0].story_id}
    story = store.get_story(outcomes[0].story_id)
    assert story["original_count"] == 4
    assert story["first_seen"] == "2024-03-05T08:00:00Z" and story["last_updated"] == "2024-03-08T08:00:00Z"
    # Day three was compared with the three earlier days, one bucket each.
    day3 = store.get_article("trawler-day3")["decision"]["story"]["candidates"][0]
    assert day3["story"] == outcomes[0].story_id and day3["members_compared"] == 3
    assert len(story_buckets(store, outcomes[0].story_id)) == 4

    def fresh_stream(tag: str) -> RedisStore:
        return RedisStore(redis_client, Settings(key_prefix=f"{store.settings.key_prefix}-{tag}"))

    # The control: without the days between, day three alone is too far from day zero ...
    alone = fresh_stream("alone")
    try:
        first = submit(alone, Processor(alone), TRAWLER[0])
        skipped = submit(alone, Processor(alone), TRAWLER[3])
        assert skipped.opened_story and skipped.story_id != first.story_id
    finally:
        alone.clear()
    # ... and the same day-three text a month after the coverage opens a story of its own.
    later = fresh_stream("later")
    try:
        covered = [submit(later, Processor(later), spec) for spec in TRAWLER[:3]]
        month = submit(later, Processor(later), dict(TRAWLER[3], hours=24 * 32))
        assert month.opened_story and month.story_id != covered[0].story_id
        report = later.get_article("trawler-day3")["decision"]["story"]
        assert report["action"] == "opened"
        assert covered[0].story_id not in [c["story"] for c in report["candidates"]]
    finally:
        later.clear()


def test_an_article_bridging_two_events_does_not_merge_their_stories(store, processor):
    def spec(client_id, title, body, hours):
        return dict(client_id=client_id, title=title, body=body, hours=hours, source=f"outlet-{client_id}")

    bank = [spec("bank", BANK_TITLE, BANK_BODY, -20),
            spec("bank-mortgage", BANK_MORTGAGE_TITLE, BANK_MORTGAGE_BODY, -12),
            spec("bank-parliament", BANK_PARLIAMENT_TITLE, BANK_PARLIAMENT_BODY, 2)]
    fire = [spec("fire-courier", FIRE_COURIER_TITLE, FIRE_COURIER_BODY, 0),
            spec("fire-valley", FIRE_VALLEY_TITLE, FIRE_VALLEY_BODY, 3),
            spec("fire-inquiry", FIRE_INQUIRY_TITLE, FIRE_INQUIRY_BODY, 6)]
    bank_story = {submit(store, processor, a).story_id for a in bank}
    fire_story = {submit(store, processor, a).story_id for a in fire}
    assert len(bank_story) == 1 and len(fire_story) == 1 and bank_story != fire_story
    (bank_story,), (fire_story,) = bank_story, fire_story

    bridge = submit(store, processor, spec("markets", MARKETS_TITLE, MARKETS_BODY, 8))
    # It scores against both stories; whichever it joins (or none), the other stays apart.
    scored = {c["story"] for c in store.get_article("markets")["decision"]["story"]["candidates"]}
    assert {bank_story, fire_story} <= scored
    assert bridge.story_id in (bank_story, fire_story) or bridge.opened_story

    # What comes next about each event still goes to its own story.
    union = submit(store, processor, spec("fire-union", FIRE_UNION_TITLE, FIRE_UNION_BODY, 12))
    crown = submit(store, processor, spec("bank-crown", BANK_CROWN_TITLE, BANK_CROWN_BODY, 14))
    assert union.story_id == fire_story and crown.story_id == bank_story
    counts = {store.get_story(bank_story)["original_count"], store.get_story(fire_story)["original_count"]}
    assert counts == ({4} if bridge.opened_story else {4, 5})
    # And the repair pass's measure keeps them apart too.
    link = story_link(story_buckets(store, bank_story), story_buckets(store, fire_story), store.settings)
    assert link < store.settings.merge_threshold


def test_copies_share_their_canonicals_story_and_promotion_updates_the_canonical_list(store, processor):
    submit(store, processor, FOOTBALL)
    # A syndicated copy, published after the original, is processed first ...
    syndicated = submit(store, processor, dict(client_id="bridge-syndicated", title=BRIDGE_TITLE,
                                               body="Advertisement\n" + BRIDGE_BODY, hours=3,
                                               source="regional-news"))
    assert syndicated.opened_story
    story_id = syndicated.story_id
    assert story_canonicals(store, story_id) == ["bridge-syndicated"]

    # ... then the original, published earlier, arrives and takes its place.
    original = submit(store, processor, BRIDGE)
    assert original.duplicate_of is None and original.story_id == story_id
    assert store.get_article("bridge")["decision"]["story"]["action"] == "followed_copy"
    assert store.get_article("bridge-syndicated")["duplicate_of"] == "bridge"
    assert story_canonicals(store, story_id) == ["bridge"]

    # A short copy is found only through the story's canonical list, and now finds the original.
    brief = submit(store, processor, dict(BRIDGE_BRIEF, hours=5))
    assert brief.duplicate_of == "bridge" and brief.story_id == story_id
    assert candidate_report(store, "bridge-brief", "bridge")["found_by"] == "story"
    assert [c["article"] for c in store.get_article("bridge-brief")["decision"]["duplicate"]["candidates"]
            ].count("bridge-syndicated") == 0  # no longer canonical, so never compared

    # An original report joins and is listed after it; the story holds four articles, two canonical.
    wire = submit(store, processor, BRIDGE_WIRE)
    assert wire.story_id == story_id and wire.duplicate_of is None
    assert story_canonicals(store, story_id) == ["bridge", "bridge-wire"]
    story = store.get_story(story_id)
    assert story["article_count"] == 4 and story["original_count"] == 2
    folded = {a["id"]: [d["id"] for d in a["duplicates"]] for a in story["articles"]}
    assert folded == {"bridge": ["bridge-syndicated", "bridge-brief"], "bridge-wire": []}  # by published time


def test_a_story_lists_only_its_newest_canonical_articles(store):
    capped = Processor(store, store.settings.replace(story_duplicate_candidates=2))
    outcomes = [submit(store, capped, spec) for spec in TRAWLER]
    assert len({o.story_id for o in outcomes}) == 1
    assert story_canonicals(store, outcomes[0].story_id) == ["trawler-day2", "trawler-day3"]


def test_collect_less_freezes_what_exists_and_collects_less_often():
    import gc

    from storyengine.pipeline import GC_THRESHOLDS, collect_less

    before = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
