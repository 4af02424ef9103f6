"""The API's answers made of the store's records (service/views.py), without Redis.
The answers as the API gives them: test_articles_api.py and test_stories_api.py."""
from __future__ import annotations

from service.views import ARTICLE_VIEW_ORDER, article_view, story_detail_view, story_method, story_view
from storyengine.duplicates import duplicate_rule
from storyengine.settings import Settings

T0 = 1709627400.0  # 2024-03-05T08:30:00Z

STORY = {"id": "st_x", "headline": "Headline of st_x", "representative": "st_x-rep", "first_seen": T0 - 3600,
         "last_updated": T0, "article_count": 3, "originals": 2, "top_terms": ["term"], "merged_from": [],
         "sources": {"outlet-b": 1, "outlet-a": 2}}


def article(**fields) -> dict:
    record = dict.fromkeys(("id", "source", "url", "title", "language", "published_ts", "received_ts", "status",
                            "story", "duplicate_of", "similarity", "decision", "error", "processed_ts",
                            "client_id"))
    record.update(published_assigned=False, title_derived=False, **fields)
    return record


def test_a_story_is_listed_with_iso_times_public_names_and_its_outlets_by_count():
    assert story_view(STORY) == {
        "id": "st_x", "headline": "Headline of st_x", "representative_article": "st_x-rep",
        "article_count": 3, "original_count": 2, "source_count": 2, "sources": ["outlet-a", "outlet-b"],
        "first_seen": "2024-03-05T07:30:00Z", "last_updated": "2024-03-05T08:30:00Z", "top_terms": ["term"],
        "merged_from": [],
    }


def test_a_story_in_full_folds_each_copy_under_its_canonical_article():
    member = dict.fromkeys(("id", "source", "url", "title", "published_ts", "duplicate_of", "similarity"))
    members = [dict(member, id="b", published_ts=T0), dict(member, id="a", published_ts=T0 - 60),
               dict(member, id="b-copy", published_ts=T0 + 1, duplicate_of="b")]
    view = story_detail_view(dict(STORY, articles=members))
    assert [(a["id"], a["published_at"], [d["id"] for d in a["duplicates"]]) for a in view["articles"]] == [
        ("a", "2024-03-05T08:29:00Z", []), ("b", "2024-03-05T08:30:00Z", ["b-copy"])]
    assert "published_ts" not in view["articles"][0]


def test_an_article_answers_every_field_in_order_with_iso_times():
    view = article_view(article(id="art-1", status="queued", published_ts=T0, received_ts=T0 + 1), Settings())
    assert tuple(view) == ARTICLE_VIEW_ORDER
    assert (view["published_at"], view["received_at"], view["processed_at"]) == (
        "2024-03-05T08:30:00Z", "2024-03-05T08:30:01Z", None)


def test_a_decision_says_the_settings_rule_and_method_and_an_old_records_threshold():
    settings = Settings()
    decision = {"duplicate": {"candidates": []}, "story": {"action": "joined"}}
    view = article_view(article(id="art-1", status="processed", decision=decision), settings)
    assert view["decision"]["duplicate"]["rule"] == duplicate_rule(settings)
    assert view["decision"]["story"]["method"] == story_method(settings)
    assert view["decision"]["story"]["threshold"] == settings.story_threshold
    assert f"{settings.duplicate_containment:.0%}" in duplicate_rule(settings)
    assert story_method(settings.replace(story_score="average")).startswith("mean cosine to the story's members")
