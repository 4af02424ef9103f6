"""POST /v1/articles, POST /v1/articles/batch and GET /v1/articles/{id}, against a real Redis.

Every refused write is checked twice: the answer is the one JSON error envelope
with a 4xx status and a message that says what to do, and nothing at all was
written under the test's key prefix.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from service import create_app
from tests.helpers import keys_under
from tests.service.envelope import ACTION_WORDS, assert_error  # noqa: F401




def nothing_stored(redis_client, settings) -> None:
    assert keys_under(redis_client, settings.key_prefix) == []


def make_article(**changes) -> dict:
    slug = uuid.uuid4().hex[:8]
    article = {
        "source": "example-news.com",
        "url": f"https://example-news.com/world/{slug}",
        "title": f"Harbour authority reopens the northern pier {slug}",
        "body": "The harbour authority reopened the northern pier on Monday after repairs to the "
                "storm-damaged pilings were finished ahead of schedule, officials said.",
        "published_at": "2024-05-01T09:30:00Z",
    }
    article.update(changes)
    return {k: v for k, v in article.items() if v is not ...}


def post_raw(client, data, content_type="application/json", path="/v1/articles"):
    return client.post(path, data=data, content_type=content_type)


def post_json(client, payload, path="/v1/articles"):
    return post_raw(client, json.dumps(payload), path=path)


# ============================================================ accepted articles
def test_valid_article_is_accepted_and_queued(client):
    article = make_article()
    resp = post_json(client, article)
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["created"] is True
    assert body["status"] == "queued"
    article_id = body["id"]
    assert article_id.startswith("a_")
    assert body["status_url"] == f"/v1/articles/{article_id}"
    assert resp.headers["Location"].endswith(body["status_url"])

    got = client.get(body["status_url"])
    assert got.status_code == 200
    view = got.get_json()
    assert view["id"] == article_id
    assert view["status"] == "queued"
    assert view["source"] == article["source"]
    assert view["url"] == article["url"]
    assert view["title"] == article["title"]
    assert view["published_at"] == "2024-05-01T09:30:00Z"
    assert "received_at" in view


def test_client_id_is_scoped_by_its_outlet(client):
    resp = post_json(client, make_article(id="feed-42:item.7_x~y"))
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["id"].startswith("c_") and body["client_id"] == "feed-42:item.7_x~y"
    view = client.get(body["status_url"]).get_json()
    assert (view["status"], view["client_id"]) == ("queued", "feed-42:item.7_x~y")


def test_same_client_id_twice_returns_the_same_article(client, store):
    article = make_article(id="wire-1001")
    first = post_json(client, article)
    assert first.status_code == 202
    article_id = first.get_json()["id"]
    again = post_json(client, dict(article, title="A different headline entirely"))
    assert again.status_code == 200
    body = again.get_json()
    assert body["id"] == article_id
    assert body["created"] is False and body["status"] == "known"
    assert again.headers["Location"].endswith(f"/v1/articles/{article_id}")
    # Nothing was overwritten by the second post.
    assert store.load_article(article_id)["title"].startswith("Harbour authority reopens")


def test_same_source_and_url_modulo_tracking_and_fragment_is_the_same_article(client, redis_client, settings):
    first = post_json(client, make_article(url="https://Example-News.com/world/pier?b=2&a=1"))
    assert first.status_code == 202
    keys_after_first = keys_under(redis_client, settings.key_prefix)
    again = post_json(client, make_article(
        url="https://example-news.com/world/pier/?a=1&utm_source=feed&fbclid=xyz&b=2#comments"))
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["created"] is False
    assert keys_under(redis_client, settings.key_prefix) == keys_after_first


def test_same_url_from_another_source_is_another_article(client):
    url = "https://example-news.com/world/shared"
    a = post_json(client, make_article(url=url, source="one.example"))
    b = post_json(client, make_article(url=url, source="two.example"))
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"]


def test_html_body_is_reduced_to_text(client, store):
    html = ("<html><head><style>p {color: red}</style></head><body>"
            "<p>Harbour <b>reopened</b> today.</p><script>stealCookies('secret-token')</script>"
            "<p>Second paragraph.</p></body></html>")
    resp = post_json(client, make_article(body=html, title="<em>Harbour</em> reopens"))
    assert resp.status_code == 202
    stored = store.load_article(resp.get_json()["id"])
    assert "stealCookies" not in stored["body"] and "secret-token" not in stored["body"]
    assert "color" not in stored["body"]
    assert "<" not in stored["body"]
    assert "Harbour reopened today." in stored["body"]
    assert "Second paragraph." in stored["body"]
    assert stored["title"] == "Harbour reopens"


def test_an_undated_article_waits_without_a_date_and_says_it_will_be_assigned(client, store):
    resp = post_json(client, make_article(published_at=...))
    assert resp.status_code == 202
    view = client.get(resp.get_json()["status_url"]).get_json()
    # Not "now": in a replayed archive that would be years ahead. It takes the
    # stream's time when decided (tests/service/test_admission.py).
    assert view["published_at"] is None and view["published_assigned"] is True


def test_published_at_with_offset_is_stored_in_utc(client):
    resp = post_json(client, make_article(published_at="2024-03-02T12:27:47+01:00"))
    assert resp.status_code == 202
    assert client.get(resp.get_json()["status_url"]).get_json()["published_at"] == "2024-03-02T11:27:47Z"


def test_published_at_slightly_ahead_is_within_tolerance(client):
    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert post_json(client, make_article(published_at=soon)).status_code == 202


def test_valid_language_is_kept(client):
    resp = post_json(client, make_article(language="pt-BR"))
    assert resp.status_code == 202
    assert client.get(resp.get_json()["status_url"]).get_json()["language"] == "pt-BR"


def test_body_exactly_at_max_body_chars_is_accepted(redis_url, settings):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_BODY_CHARS": 50})
    resp = post_json(app.test_client(), make_article(body="x" * 50))
    assert resp.status_code == 202


# ============================================================ malformed requests
def test_malformed_json(client, redis_client, settings):
    err = assert_error(post_raw(client, '{"source": "a", "url": '), 400, "malformed_json")
    assert "line 1" in err["message"]
    nothing_stored(redis_client, settings)


def test_json_with_trailing_garbage(client, redis_client, settings):
    assert_error(post_raw(client, json.dumps(make_article()) + " }"), 400, "malformed_json")
    nothing_stored(redis_client, settings)


def test_single_quoted_pseudo_json(client, redis_client, settings):
    assert_error(post_raw(client, "{'source': 'a'}"), 400, "malformed_json")
    nothing_stored(redis_client, settings)


def test_empty_body(client, redis_client, settings):
    assert_error(post_raw(client, b""), 400, "empty_body")
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "multipart/form-data; boundary=x"])
def test_non_json_content_type(client, redis_client, settings, content_type):
    resp = post_raw(client, json.dumps(make_article()), content_type=content_type)
    err = assert_error(resp, 415, "unsupported_media_type")
    assert "application/json" in err["message"]
    nothing_stored(redis_client, settings)


def test_missing_content_type(client, redis_client, settings):
    resp = client.post("/v1/articles", data=json.dumps(make_article()).encode())
    assert_error(resp, 415, "unsupported_media_type")
    nothing_stored(redis_client, settings)


def test_json_content_type_with_charset_is_accepted(client):
    resp = post_raw(client, json.dumps(make_article()), content_type="application/json; charset=utf-8")
    assert resp.status_code == 202


@pytest.mark.parametrize("data", ["[]", json.dumps([make_article()]), '"an article"', "42", "3.5", "null", "true"],
                         ids=["empty-array", "array-of-article", "string", "int", "float", "null", "bool"])
def test_json_that_is_not_an_object(client, redis_client, settings, data):
    err = assert_error(post_raw(client, data), 422, "invalid_article")
    assert "object" in err["message"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("field", ["source", "url"])
def test_missing_required_field(client, redis_client, settings, field):
    err = assert_error(post_json(client, make_article(**{field: ...})), 422, "invalid_article")
    assert [d["field"] for d in err["details"]] == [field]
    assert field in err["message"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("title,body", [(..., ...), ("", ""), ("   ", " \n\t "), (..., "  "), ("", ...)],
                         ids=["neither", "both-empty", "both-blank", "no-title-blank-body", "empty-title-no-body"])
def test_an_article_needs_a_title_or_a_body(client, redis_client, settings, title, body):
    err = assert_error(post_json(client, make_article(title=title, body=body)), 422, "invalid_article")
    assert [d["field"] for d in err["details"]] == ["body"]
    assert "title or a body" in err["details"][0]["problem"]
    assert "a title or a body" in err["message"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("title", [..., "", "   "], ids=["absent", "empty", "blank"])
def test_an_untitled_item_gets_a_headline_from_its_body(client, title):
    # RSS allows an item with a description and no title.
    body = ("<p>Firefighters contained a blaze at the Oakridge paper mill late on Tuesday after six hours. "
            "No one was hurt, the county said.</p><p>Follow us on Twitter</p>")
    resp = post_json(client, make_article(title=title, body=body))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    article = client.get(resp.get_json()["status_url"]).get_json()
    assert article["title"] == "Firefighters contained a blaze at the Oakridge paper mill late on Tuesday after six hours."
    assert article["title_derived"] is True


def test_a_titled_article_says_its_title_was_sent(client):
    resp = post_json(client, make_article())
    article = client.get(resp.get_json()["status_url"]).get_json()
    assert article["title_derived"] is False


@pytest.mark.parametrize("field,value", [
    ("title", 5), ("title", None), ("title", ["a"]), ("body", []), ("body", {"text": "x"}),
    ("published_at", 12345), ("published_at", 1714555800.0), ("source", True), ("url", {"href": "x"}),
    ("id", 42), ("language", False),
])
def test_wrong_types(client, redis_client, settings, field, value):
    err = assert_error(post_json(client, make_article(**{field: value})), 422, "invalid_article")
    assert [d["field"] for d in err["details"]] == [field]
    nothing_stored(redis_client, settings)


def test_unknown_fields(client, redis_client, settings):
    err = assert_error(post_json(client, make_article(author="Jane Doe", tags=["x"])), 422, "invalid_article")
    assert sorted(d["field"] for d in err["details"]) == ["author", "tags"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("field,value", [
    ("source", ""), ("source", "   "), ("url", ""),
])
def test_empty_or_blank_strings(client, redis_client, settings, field, value):
    err = assert_error(post_json(client, make_article(**{field: value})), 422, "invalid_article")
    assert err["details"][0]["field"] == field
    nothing_stored(redis_client, settings)


def test_title_and_body_that_are_only_markup(client, redis_client, settings):
    err = assert_error(post_json(client, make_article(title="<script>alert(1)</script>", body="<p> </p>")), 422,
                       "invalid_article")
    assert "title and body" in err["details"][0]["problem"]
    nothing_stored(redis_client, settings)


def test_title_that_is_only_markup_takes_a_headline_from_the_body(client):
    resp = post_json(client, make_article(title="<script>alert(1)</script>"))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    article = client.get(resp.get_json()["status_url"]).get_json()
    assert article["title"].startswith("The harbour authority reopened the northern pier on Monday")
    assert article["title_derived"] is True


def test_request_body_over_max_content_length(redis_url, redis_client, settings):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_CONTENT_LENGTH": 300})
    resp = post_json(app.test_client(), make_article(body="word " * 200))
    err = assert_error(resp, 413, "body_too_large")
    assert "300" in err["message"]
    nothing_stored(redis_client, settings)


def test_batch_request_body_over_max_content_length(redis_url, redis_client, settings):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_CONTENT_LENGTH": 1000})
    resp = post_json(app.test_client(), {"articles": [make_article() for _ in range(10)]}, path="/v1/articles/batch")
    assert_error(resp, 413, "body_too_large")
    nothing_stored(redis_client, settings)


def test_body_over_max_body_chars(redis_url, redis_client, settings):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_BODY_CHARS": 50})
    err = assert_error(post_json(app.test_client(), make_article(body="x" * 51)), 422, "invalid_article")
    assert err["details"][0]["field"] == "body"
    assert "50" in err["details"][0]["problem"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z", "",
                                   "01/05/2024 09:30", "1850-01-01T00:00:00Z", "2024-05-01T25:00:00Z"])
def test_invalid_published_at(client, redis_client, settings, value):
    err = assert_error(post_json(client, make_article(published_at=value)), 422, "invalid_article")
    assert err["details"][0]["field"] == "published_at"
    nothing_stored(redis_client, settings)


def test_far_future_published_at(client, redis_client, settings):
    future = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    err = assert_error(post_json(client, make_article(published_at=future)), 422, "invalid_article")
    assert "future" in err["details"][0]["problem"]
    nothing_stored(redis_client, settings)


def test_published_at_that_overflows_on_conversion_to_utc(client, redis_client, settings):
    resp = post_json(client, make_article(published_at="9999-12-31T23:00:00-05:00"))
    assert_error(resp, 422, "invalid_article")
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("url", [
    "ftp://example.com/a", "not a url", "javascript:alert(1)", "http://exa mple.com/a",
    "http://example.com/a b", " http://example.com/a b ", "http://", "https:///path-only",
    "//example.com/a", "mailto:desk@example.com", "http://example.com:99999/a", "file:///etc/passwd",
    "http://example.com/\x00",
])
def test_invalid_url(client, redis_client, settings, url):
    err = assert_error(post_json(client, make_article(url=url)), 422, "invalid_article")
    assert err["details"][0]["field"] == "url"
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("url", ["http://example.com/a\nb", "http://example.com/a\tb", "http://exa\r\nmple.com/"])
def test_url_with_embedded_tab_or_newline(client, redis_client, settings, url):
    assert_error(post_json(client, make_article(url=url)), 422, "invalid_article")
    nothing_stored(redis_client, settings)


def test_non_utf8_bytes(client, redis_client, settings):
    data = json.dumps(make_article(title="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    err = assert_error(post_raw(client, data), 400, "invalid_encoding")
    assert "UTF-8" in err["message"]
    nothing_stored(redis_client, settings)


def test_utf16_body(client, redis_client, settings):
    assert_error(post_raw(client, json.dumps(make_article()).encode("utf-16")), 400, "invalid_encoding")
    nothing_stored(redis_client, settings)


def test_lone_surrogate_escape(client, redis_client, settings):
    assert_error(post_raw(client, json.dumps(make_article(title="x")).replace('"x"', '"\\ud800"')),
                 422, "invalid_article")
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("title", ["Breaking\x00news", "Bell\x07rings", "\x1b[31mRed alert", "Delete\x7fme"])
def test_control_characters_in_title(client, redis_client, settings, title):
    err = assert_error(post_json(client, make_article(title=title)), 422, "invalid_article")
    assert err["details"][0]["field"] == "title"
    assert "control" in err["details"][0]["problem"]
    nothing_stored(redis_client, settings)


def test_control_characters_in_source(client, redis_client, settings):
    assert_error(post_json(client, make_article(source="wire\x01service")), 422, "invalid_article")
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("data", ["[" * 100_000, '{"title": ' * 100_000, '{"source": ' + "[" * 50_000],
                         ids=["arrays", "objects", "inside-a-field"])
def test_very_deeply_nested_json(client, redis_client, settings, data):
    assert_error(post_raw(client, data), 400, "too_deeply_nested")
    nothing_stored(redis_client, settings)


def test_huge_integer_literal(client, redis_client, settings):
    data = json.dumps(make_article()).replace('"source": "example-news.com"', '"source": ' + "9" * 5000)
    assert_error(post_raw(client, data), 400)
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("client_id", ["a/b", "../etc", "x" * 129, ".hidden", "-dash", "has space", "", "caf\u00e9",
                                       "semi;colon"])
def test_invalid_client_id(client, redis_client, settings, client_id):
    err = assert_error(post_json(client, make_article(id=client_id)), 422, "invalid_article")
    assert err["details"][0]["field"] == "id"
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("language", ["english", "e", "en_US", "12", "", "en-", "en-toolongsubtag"])
def test_invalid_language(client, redis_client, settings, language):
    err = assert_error(post_json(client, make_article(language=language)), 422, "invalid_article")
    assert err["details"][0]["field"] == "language"
    nothing_stored(redis_client, settings)


def test_several_problems_are_all_listed(client, redis_client, settings):
    err = assert_error(post_json(client, {"source": "", "url": "ftp://x", "title": 5, "extra": 1}),
                       422, "invalid_article")
    assert sorted(d["field"] for d in err["details"]) == ["extra", "source", "title", "url"]
    nothing_stored(redis_client, settings)


# ============================================================ batches
def test_mixed_batch_rejects_only_the_bad_item(client, store, redis_client, settings):
    good0 = make_article()
    bad1 = make_article(title=..., body=...)
    good2 = make_article()
    repeat3 = dict(good0, url=good0["url"] + "?utm_campaign=x")  # same article as item 0
    bad4 = make_article(url="javascript:alert(1)")
    resp = post_json(client, {"articles": [good0, bad1, good2, repeat3, bad4]}, path="/v1/articles/batch")
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["accepted"] == 3
    assert body["rejected"] == 2
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]

    assert results[0]["created"] is True and results[0]["status"] == "queued"
    assert results[2]["created"] is True
    assert results[3]["created"] is False and results[3]["id"] == results[0]["id"]
    assert results[0]["id"] != results[2]["id"]
    for r in (results[0], results[2]):
        assert r["status_url"] == f"/v1/articles/{r['id']}"
        assert client.get(r["status_url"]).get_json()["status"] == "queued"

    for i, field in ((1, "articles.1.body"), (4, "articles.4.url")):
        err = results[i]["error"]
        assert "id" not in results[i]
        assert err["status"] == 422 and err["code"] == "invalid_article"
        assert any(w in err["message"].lower() for w in ACTION_WORDS)
        assert [d["field"] for d in err["details"]] == [field]

    stored_articles = [k for k in keys_under(redis_client, settings.key_prefix) if b":article:" in k]
    assert len(stored_articles) == 2


def test_batch_item_that_is_not_an_object_fails_alone(client):
    good = make_article()
    resp = post_json(client, {"articles": [good, "not an object", 7]}, path="/v1/articles/batch")
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    assert body["results"][0]["created"] is True
    for i in (1, 2):
        err = body["results"][i]["error"]
        assert err["code"] == "invalid_article"
        assert err["details"] == [{"field": f"articles.{i}", "problem": "not an object"}]


def test_batch_as_a_bare_list_is_accepted(client):
    resp = post_json(client, [make_article(), make_article()], path="/v1/articles/batch")
    assert resp.status_code == 202
    assert resp.get_json()["accepted"] == 2


def test_batch_over_max_batch_articles(redis_url, redis_client, settings):
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                      "TESTING": True, "MAX_BATCH_ARTICLES": 3})
    c = app.test_client()
    err = assert_error(post_json(c, {"articles": [make_article() for _ in range(4)]}, path="/v1/articles/batch"),
                       413, "batch_too_large")
    assert "3" in err["message"]
    nothing_stored(redis_client, settings)
    # The limit itself is fine.
    assert post_json(c, {"articles": [make_article() for _ in range(3)]}, path="/v1/articles/batch").status_code == 202


@pytest.mark.parametrize("payload", [
    {"articles": []}, [], {"articles": "not a list"}, {"articles": {"0": {}}}, {"articles": None},
    {}, {"items": []}, {"articles": [{}], "extra": True}, "string", 7,
], ids=["empty-list", "bare-empty-list", "string", "object", "null", "missing", "wrong-key", "extra-key",
        "json-string", "json-number"])
def test_batch_without_a_list_of_articles(client, redis_client, settings, payload):
    err = assert_error(post_json(client, payload, path="/v1/articles/batch"), 422, "invalid_batch")
    assert "articles" in err["message"]
    nothing_stored(redis_client, settings)


@pytest.mark.parametrize("data,status,code", [
    ('{"articles": [', 400, "malformed_json"), ("", 400, "empty_body"), ("[" * 100_000, 400, "too_deeply_nested"),
])
def test_batch_with_unreadable_body(client, redis_client, settings, data, status, code):
    assert_error(post_raw(client, data, path="/v1/articles/batch"), status, code)
    nothing_stored(redis_client, settings)


def test_batch_with_non_json_content_type(client, redis_client, settings):
    resp = post_raw(client, json.dumps({"articles": [make_article()]}), content_type="text/plain",
                    path="/v1/articles/batch")
    assert_error(resp, 415, "unsupported_media_type")
    nothing_stored(redis_client, settings)


def test_batch_with_only_invalid_articles_uses_the_error_envelope(client, redis_client, settings):
    resp = post_json(client, {"articles": [make_article(title=..., body=...), make_article(url="ftp://x")]},
                     path="/v1/articles/batch")
    nothing_stored(redis_client, settings)
    assert_error(resp, 422)


# ============================================================ reading articles
def test_unknown_article_id(client):
    err = assert_error(client.get("/v1/articles/a_00000000000000000000"), 404, "not_found")
    assert "check the id" in err["message"]


@pytest.mark.parametrize("path", [
    "/v1/articles/../x", "/v1/articles/..%2Fx", "/v1/articles/%2e%2e", "/v1/articles/" + "a" * 129,
    "/v1/articles/" + "a" * 5000, "/v1/articles/has%20space", "/v1/articles/x%00y", "/v1/articles/-x",
    "/v1/articles/a%0A",
])
def test_weird_article_ids(client, path):
    assert_error(client.get(path), 404)
