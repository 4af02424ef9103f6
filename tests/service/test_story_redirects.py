"""GET /v1/stories/{id} of a story the repair pass merged away: a permanent
redirect to the story that kept its articles, over a real Redis.

Stories are made with tests/newsroom.py, as the repair tests make them: the dam's articles are
processed with ``story_threshold=0.9`` so they open stories apart, then the
repair pass (default ``merge_threshold``) merges them.
"""
from __future__ import annotations

import pytest

from storyengine.repair import Repairer
from tests.service.envelope import assert_error
from tests.newsroom import BANK, DAM, Newsroom


@pytest.fixture
def merged(store):
    """(kept outcome, merged outcome, unrelated outcome) after one repair pass."""
    newsroom = Newsroom(store)
    kept = newsroom.post(DAM[0], 0, "alpha.example")
    gone = newsroom.post(DAM[1], 1, "beta.example")
    other = newsroom.post(BANK, 2, "delta.example")
    [merge] = Repairer(store).run().merges
    assert (merge.kept, merge.merged) == (kept.story_id, gone.story_id)
    return kept, gone, other


def test_a_merged_story_is_a_permanent_redirect_to_the_kept_story(client, merged):
    kept, gone, _ = merged
    resp = client.get(f"/v1/stories/{gone.story_id}")

    assert resp.status_code == 301, resp.get_data(as_text=True)
    assert resp.headers["Location"] == f"/v1/stories/{kept.story_id}"
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"story", "merged_into", "location", "message"}
    assert body["story"] == gone.story_id
    assert body["merged_into"] == kept.story_id
    assert body["location"] == resp.headers["Location"]
    assert kept.story_id in body["message"] and "Location" in body["message"]


def test_following_the_redirect_gives_the_kept_story(client, merged):
    kept, gone, _ = merged
    resp = client.get(f"/v1/stories/{gone.story_id}", follow_redirects=True)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [r.status_code for r in resp.history] == [301]
    assert resp.request.path == f"/v1/stories/{kept.story_id}"
    story = resp.get_json()
    assert story["id"] == kept.story_id
    assert gone.story_id in story["merged_from"]
    assert story["article_count"] == 2
    assert sorted(story["sources"]) == ["alpha.example", "beta.example"]
    assert [a["id"] for a in story["articles"]] == [kept.article_id, gone.article_id]
    # The kept story answers directly, with no redirect of its own.
    assert client.get(f"/v1/stories/{kept.story_id}").get_json() == story


def test_stories_that_were_never_merged_have_an_empty_merged_from(client, merged):
    _, _, other = merged
    resp = client.get(f"/v1/stories/{other.story_id}")
    assert resp.status_code == 200
    assert resp.get_json()["merged_from"] == []


def test_unknown_story_ids_stay_404(client, merged):
    for story_id in ("st_0123456789abcdef", "st_nothex", "not-a-story"):
        assert_error(client.get(f"/v1/stories/{story_id}"), 404)


def test_the_listing_shows_only_the_kept_story(client, merged):
    kept, gone, other = merged
    for sort in ("recent", "size"):
        resp = client.get("/v1/stories", query_string={"sort": sort})
        assert resp.status_code == 200
        ids = [s["id"] for s in resp.get_json()["stories"]]
        assert sorted(ids) == sorted([kept.story_id, other.story_id])
        assert next(s for s in resp.get_json()["stories"] if s["id"] == kept.story_id)["merged_from"] == \
            [gone.story_id]


def test_an_article_of_the_merged_story_reports_the_kept_story(client, merged):
    kept, gone, _ = merged
    resp = client.get(f"/v1/articles/{gone.article_id}")
    assert resp.status_code == 200
    article = resp.get_json()
    assert article["story"] == kept.story_id
    assert article["status"] == "processed"
    # Its story link leads to a story that lists it.
    story = client.get(f"/v1/stories/{article['story']}").get_json()
    assert gone.article_id in [a["id"] for a in story["articles"]]


@pytest.fixture
def chain(store):
    """The third story merged into the second, then the second into the first."""
    newsroom = Newsroom(store)
    second = newsroom.post(DAM[1], 2, "beta.example")
    third = newsroom.post(DAM[2], 3, "gamma.example")
    assert [(m.kept, m.merged) for m in Repairer(store).run().merges] == [(second.story_id, third.story_id)]
    first = newsroom.post(DAM[0], 1, "alpha.example")
    assert [(m.kept, m.merged) for m in Repairer(store).run().merges] == [(first.story_id, second.story_id)]
    return first, second, third


def test_a_chain_of_merges_redirects_straight_to_the_final_story(client, chain):
    first, second, third = chain
    for old in (second, third):
        resp = client.get(f"/v1/stories/{old.story_id}")
        assert resp.status_code == 301
        assert resp.headers["Location"] == f"/v1/stories/{first.story_id}"
        assert resp.get_json()["merged_into"] == first.story_id
        followed = client.get(f"/v1/stories/{old.story_id}", follow_redirects=True)
        assert followed.status_code == 200 and len(followed.history) == 1
        assert followed.get_json()["id"] == first.story_id
    assert client.get(f"/v1/articles/{third.article_id}").get_json()["story"] == first.story_id


def test_following_a_chained_redirect_finds_the_old_id_in_merged_from(client, chain):
    first, second, third = chain
    story = client.get(f"/v1/stories/{third.story_id}", follow_redirects=True).get_json()
    assert third.story_id in story["merged_from"]
