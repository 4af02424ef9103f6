"""API keys (service/auth.py), against a real Redis.

With STORYWIRE_API_KEY set, every write needs ``Authorization: Bearer <key>``;
reads too when STORYWIRE_PUBLIC_READS=false; /healthz and /readyz never do.
A refused request stores and enqueues nothing, the key is compared in constant
time against every configured key, and no key (right or wrong) ever shows up
in a log record, an error message or a response.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import traceback
import uuid

import pytest

import service.auth as auth
from storyengine.errors import ConfigError
from tests.helpers import build_app as make_app, snapshot
from tests.service.envelope import assert_error
from workers import heartbeat, names

KEY = "sw-live-7f3a9c2e41b8d6f0a5"
OTHER = "sw-next-0b1c2d3e4f5a6b7c8d"
THIRD = "sw-old3-99887766554433221100"
WRONG = "sw-fake-ffffffffffffffffffff"
SHORT = "short-key-12345"  # 15 characters
assert len(SHORT) == 15


# create_app also reads os.environ: keep the developer's shell out of these tests.
pytestmark = pytest.mark.usefixtures("no_auth_in_environment")


@pytest.fixture
def keyed(redis_url, settings):
    """Writes need KEY; reads are public (the default)."""
    return make_app(redis_url, settings, STORYWIRE_API_KEY=KEY).test_client()


@pytest.fixture
def private(redis_url, settings):
    """Reads need a key too."""
    return make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS="false").test_client()


def article(**changes) -> dict:
    slug = uuid.uuid4().hex[:10]
    a = {"source": "auth.example", "url": f"https://auth.example/news/{slug}",
         "title": f"Council approves the harbour budget {slug}",
         "body": "The council approved the harbour budget on Tuesday after a long debate.",
         "published_at": "2024-05-01T09:30:00Z"}
    a.update(changes)
    return a


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


WRITES = {
    "/v1/articles": lambda: article(),
    "/v1/articles/batch": lambda: {"articles": [article(), article()]},
}


def post(client, path, headers=None, payload=None):
    payload = WRITES[path]() if payload is None else payload
    return client.post(path, data=json.dumps(payload), content_type="application/json", headers=headers or {})


class Stored:
    """Everything under the test's key prefix, and the work queue's length."""

    def __init__(self, redis_client, settings):
        self.redis, self.prefix = redis_client, settings.key_prefix

    def state(self):
        return snapshot(self.redis, self.prefix), self.redis.llen(names.QUEUE)


@pytest.fixture
def stored(redis_client, settings):
    return Stored(redis_client, settings)


# ====================================================== writes need the key
REJECTED_HEADERS = {
    "no header": {},
    "wrong key": bearer(WRONG),
    "basic scheme with the key as password": {
        "Authorization": "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()},
    "basic scheme with the bare key": {"Authorization": f"Basic {KEY}"},
    "other scheme": {"Authorization": f"Token {KEY}"},
    "key without a scheme": {"Authorization": KEY},
    "empty bearer": {"Authorization": "Bearer "},
    "bearer only": {"Authorization": "Bearer"},
    "blank bearer": {"Authorization": "Bearer      "},
    "last character differs": bearer(KEY[:-1] + chr(ord(KEY[-1]) ^ 1)),
    "one character short": bearer(KEY[:-1]),
    "sixteen-character prefix": bearer(KEY[:16]),
    "trailing junk": bearer(KEY + "x"),
    "trailing word": bearer(KEY + " junk"),
    "two keys in one header": bearer(f"{KEY},{KEY}"),
    "upper-cased key": bearer(KEY.upper()),
    "non-ascii last character": bearer(KEY[:-1] + "\u00e9"),
}


@pytest.mark.parametrize("path", sorted(WRITES))
@pytest.mark.parametrize("case", sorted(REJECTED_HEADERS))
def test_write_without_the_right_key_is_refused_and_stores_nothing(keyed, stored, path, case):
    before = stored.state()
    resp = post(keyed, path, REJECTED_HEADERS[case])
    err = assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer"), resp.headers
    assert "Bearer" in err["message"] or "check" in err["message"].lower(), err["message"]
    assert stored.state() == before, "a refused write stored or enqueued something"


@pytest.mark.parametrize("path", sorted(WRITES))
def test_missing_key_message_says_how_to_send_it(keyed, path):
    err = assert_error(post(keyed, path), 401, "unauthorized")
    assert "Authorization: Bearer" in err["message"], err["message"]


@pytest.mark.parametrize("case", ["basic scheme with the key as password", "empty bearer", "bearer only"])
def test_wrong_scheme_message_says_how_to_send_it(keyed, case):
    err = assert_error(post(keyed, "/v1/articles", REJECTED_HEADERS[case]), 401, "unauthorized")
    assert "Authorization: Bearer" in err["message"], err["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_write_methods_are_refused_before_routing(keyed, stored, method):
    before = stored.state()
    resp = keyed.open("/v1/articles", method=method, data=json.dumps(article()), content_type="application/json")
    assert_error(resp, 401, "unauthorized")
    assert stored.state() == before


def test_right_key_is_accepted(keyed, stored):
    resp = post(keyed, "/v1/articles", bearer(KEY))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert keyed.get(resp.get_json()["status_url"]).status_code == 200


def test_right_key_is_accepted_for_a_batch(keyed):
    resp = post(keyed, "/v1/articles/batch", bearer(KEY))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert resp.get_json()["accepted"] == 2


def test_scheme_is_case_insensitive(keyed):
    # RFC 7235: the auth scheme is case-insensitive.
    assert post(keyed, "/v1/articles", {"Authorization": f"bearer {KEY}"}).status_code == 202


@pytest.mark.parametrize("configured", [f"{KEY},{OTHER}", f" {KEY} , {OTHER} ", f"{OTHER},{KEY},"])
def test_two_comma_separated_keys_both_work(redis_url, settings, stored, configured):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=configured).test_client()
    for key in (KEY, OTHER):
        resp = post(client, "/v1/articles", bearer(key))
        assert resp.status_code == 202, (key, resp.get_data(as_text=True))
    before = stored.state()
    assert_error(post(client, "/v1/articles", bearer(WRONG)), 401, "unauthorized")
    assert_error(post(client, "/v1/articles", bearer(f"{KEY},{OTHER}")), 401, "unauthorized")
    assert stored.state() == before


# ====================================================== auth before the body
def test_oversized_unauthenticated_post_gets_401_not_413(redis_url, settings, stored):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, MAX_CONTENT_LENGTH=2048).test_client()
    big = article(body="word " * 4000)
    before = stored.state()
    for path, payload in (("/v1/articles", big), ("/v1/articles/batch", {"articles": [big]})):
        resp = post(client, path, payload=payload)
        assert_error(resp, 401, "unauthorized")
        # The limit is live: the same body with the key is refused for its size.
        assert_error(post(client, path, bearer(KEY), payload), 413, "body_too_large")
    assert stored.state() == before


@pytest.mark.parametrize("data,content_type", [
    ('{"source": "a", "url": ', "application/json"),     # malformed JSON would be 400
    (b"", "application/json"),                            # empty body would be 400
    (json.dumps(article()), "text/plain"),               # wrong type would be 415
    ("[1, 2, 3]", "application/json"),                    # not an article would be 422
])
def test_unauthenticated_post_is_refused_before_the_body_is_looked_at(keyed, stored, data, content_type):
    before = stored.state()
    for path in WRITES:
        assert_error(keyed.post(path, data=data, content_type=content_type), 401, "unauthorized")
    assert stored.state() == before


# ====================================================== reads
READS = ["/v1/stories", "/v1/stories?sort=size&limit=5", "/v1/stories/st_0123456789abcdef",
         "/v1/articles/no-such-article"]


@pytest.mark.parametrize("path", READS)
def test_reads_are_public_by_default_even_with_a_key(keyed, path):
    resp = keyed.get(path)
    assert resp.status_code in (200, 404), resp.get_data(as_text=True)
    if resp.status_code == 404:
        assert resp.get_json()["error"]["code"] == "not_found"


def test_a_posted_article_is_readable_without_a_key_by_default(keyed):
    resp = post(keyed, "/v1/articles", bearer(KEY))
    got = keyed.get(resp.get_json()["status_url"])
    assert got.status_code == 200 and got.get_json()["id"] == resp.get_json()["id"]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("headers", [{}, bearer(WRONG), {"Authorization": "Bearer "}], ids=["none", "wrong", "empty"])
def test_private_reads_need_the_key(private, path, headers):
    resp = private.get(path, headers=headers)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", READS)
def test_private_reads_work_with_the_key(private, path):
    resp = private.get(path, headers=bearer(KEY))
    assert resp.status_code in (200, 404), resp.get_data(as_text=True)
    if path == "/v1/stories":
        assert resp.status_code == 200 and resp.get_json()["stories"] == []


def test_private_reads_also_cover_head(private):
    assert private.head("/v1/stories").status_code == 401
    assert private.head("/v1/stories", headers=bearer(KEY)).status_code == 200


def test_private_reads_find_a_posted_article_only_with_the_key(private):
    resp = post(private, "/v1/articles", bearer(KEY))
    assert resp.status_code == 202
    url = resp.get_json()["status_url"]
    assert_error(private.get(url), 401, "unauthorized")
    assert private.get(url, headers=bearer(KEY)).status_code == 200


@pytest.mark.parametrize("public", ["false", "0", "no", " False "])
def test_every_false_spelling_makes_reads_private(redis_url, settings, public):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS=public).test_client()
    assert_error(client.get("/v1/stories"), 401, "unauthorized")


@pytest.mark.parametrize("public", ["true", "false"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_stay_public(redis_url, settings, store, public, path):
    heartbeat.record(store.redis, store.keys, "storywire-0a1b2c@test")  # /readyz: a worker heard from just now
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS=public).test_client()
    resp = client.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["status"] in ("ok", "ready")


# ====================================================== no key configured
def test_without_a_key_writes_are_open(client):
    resp = post(client, "/v1/articles")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert post(client, "/v1/articles/batch").status_code == 202


def test_without_a_key_create_app_warns(redis_url, settings, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(redis_url, settings)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "STORYWIRE_API_KEY" in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert "post" in warnings[0].getMessage().lower() or "open" in warnings[0].getMessage().lower()


def test_with_a_key_create_app_does_not_warn_about_it(redis_url, settings, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(redis_url, settings, STORYWIRE_API_KEY=KEY)
    assert not [r for r in caplog.records if "STORYWIRE_API_KEY" in r.getMessage()]


def test_key_from_the_environment_is_used(redis_url, settings, monkeypatch, stored):
    monkeypatch.setenv("STORYWIRE_API_KEY", KEY)
    client = make_app(redis_url, settings).test_client()
    before = stored.state()
    assert_error(post(client, "/v1/articles"), 401, "unauthorized")
    assert stored.state() == before
    assert post(client, "/v1/articles", bearer(KEY)).status_code == 202


@pytest.mark.parametrize("blank", [" ", ",", " , , "])
def test_a_set_but_blank_key_is_refused(redis_url, settings, blank):
    with pytest.raises(ConfigError):
        make_app(redis_url, settings, STORYWIRE_API_KEY=blank)


# ====================================================== configuration errors
def assert_config_error_hides(exc_info, *secrets, mentions=()):
    text = "".join(traceback.format_exception(exc_info.value)) + repr(exc_info.value.args)
    for secret in secrets:
        assert secret not in text, f"the ConfigError shows a key: {text}"
    for word in mentions:
        assert word in str(exc_info.value), str(exc_info.value)


def test_short_key_is_refused_without_echoing_it(redis_url, settings):
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings, STORYWIRE_API_KEY=SHORT)
    assert_config_error_hides(info, SHORT, mentions=("STORYWIRE_API_KEY", "16"))


def test_one_short_key_among_several_is_refused_without_echoing_any(redis_url, settings):
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings, STORYWIRE_API_KEY=f"{KEY},{SHORT},{OTHER}")
    assert_config_error_hides(info, KEY, SHORT, OTHER, mentions=("STORYWIRE_API_KEY",))


def test_short_key_from_the_environment_is_refused_without_echoing_it(redis_url, settings, monkeypatch):
    monkeypatch.setenv("STORYWIRE_API_KEY", SHORT)
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings)
    assert_config_error_hides(info, SHORT, mentions=("STORYWIRE_API_KEY",))


def test_key_of_exactly_sixteen_characters_is_accepted(redis_url, settings):
    key = "0123456789abcdef"
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=key).test_client()
    assert post(client, "/v1/articles", bearer(key)).status_code == 202


def test_short_non_ascii_key_is_refused(redis_url, settings):
    key = "\u00e9" * 8  # 8 characters, 16 bytes in UTF-8
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings, STORYWIRE_API_KEY=key)
    assert_config_error_hides(info, key)


@pytest.mark.parametrize("public", ["maybe", "ture", "on?", "2"])
def test_bad_public_reads_value_is_refused_without_echoing_the_key(redis_url, settings, public):
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings, STORYWIRE_API_KEY=KEY, STORYWIRE_PUBLIC_READS=public)
    assert_config_error_hides(info, KEY, mentions=("STORYWIRE_PUBLIC_READS",))


def test_private_reads_without_a_key_are_refused(redis_url, settings):
    with pytest.raises(ConfigError) as info:
        make_app(redis_url, settings, STORYWIRE_PUBLIC_READS="false")
    assert_config_error_hides(info, mentions=("STORYWIRE_PUBLIC_READS", "STORYWIRE_API_KEY"))


# ====================================================== constant-time comparison
@pytest.fixture
def compare_calls(monkeypatch):
    """Every call of hmac.compare_digest as service.auth sees it."""
    calls = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    if hasattr(auth, "compare_digest"):  # in case it is ever imported by name
        monkeypatch.setattr(auth, "compare_digest", recording)
    return calls


@pytest.mark.parametrize("presented,expected", [(KEY, True), (OTHER, True), (THIRD, True), (WRONG, False),
                                                (KEY[:-1], False), ("", False)])
def test_key_matches_compares_every_key_with_compare_digest(compare_calls, presented, expected):
    keys = auth.parse_keys(f"{KEY},{OTHER},{THIRD}")
    assert auth.key_matches(presented, keys) is expected
    # Every configured key compared, even when the first one matched: no early exit.
    assert len(compare_calls) == len(keys) == 3
    assert sorted(b for _, b in compare_calls) == sorted(keys)
    # bytes on both sides: compare_digest refuses non-ASCII str.
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in compare_calls)


def test_requests_are_checked_with_compare_digest_against_every_key(redis_url, settings, compare_calls):
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=f"{KEY},{OTHER},{THIRD}").test_client()
    assert post(client, "/v1/articles", bearer(KEY)).status_code == 202
    assert sorted(b for _, b in compare_calls) == sorted(k.encode() for k in (KEY, OTHER, THIRD))
    compare_calls.clear()
    assert_error(post(client, "/v1/articles", bearer(WRONG)), 401, "unauthorized")
    assert len(compare_calls) == 3


# ====================================================== secrets stay secret
def record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), record.exc_text or ""]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    parts.extend(repr(v) for v in vars(record).values())
    return "\n".join(parts)


def test_keys_never_appear_in_logs_or_responses(redis_url, settings, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_app(redis_url, settings, STORYWIRE_API_KEY=f"{KEY},{OTHER}",
                      STORYWIRE_PUBLIC_READS="false").test_client()
    responses = []
    for headers in [{}, bearer(WRONG), bearer(KEY[:-1]), bearer(KEY + "x"), {"Authorization": f"Basic {KEY}"},
                    {"Authorization": "Bearer "}, bearer(KEY), bearer(OTHER)]:
        for path in WRITES:
            responses.append(post(client, path, headers))
        responses.append(client.get("/v1/stories", headers=headers))
        responses.append(client.get("/v1/articles/nope", headers=headers))
        # an invalid article with and without the key: the 422 path must not echo it either
        responses.append(post(client, "/v1/articles", headers, {"title": ""}))
    statuses = {r.status_code for r in responses}
    assert {202, 200, 401, 404, 422} <= statuses, statuses
    assert any(r.levelno >= logging.WARNING for r in caplog.records), "a rejected key should be logged"
    for secret in (KEY, OTHER, WRONG, KEY[:-1], KEY[:16]):
        for record in caplog.records:
            assert secret not in record_text(record), f"{secret!r} logged: {record.getMessage()}"
        for resp in responses:
            assert secret not in resp.get_data(as_text=True)
            assert secret not in str(resp.headers)
