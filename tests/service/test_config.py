"""service.config.load_config: defaults, then the environment, then a test's overrides."""
from __future__ import annotations

import pytest

from service import create_app
from service.config import DEFAULTS, load_config
from storyengine.errors import ConfigError
from storyengine.settings import Settings

INT_SETTINGS = sorted(name for name, value in DEFAULTS.items() if isinstance(value, int))


def test_every_size_limit_is_an_integer_setting():
    assert {"MAX_CONTENT_LENGTH", "MAX_BATCH_ARTICLES", "MAX_BODY_CHARS", "MAX_STORY_ARTICLES",
            "MAX_PAGE_SIZE"} <= set(INT_SETTINGS)


def test_defaults_without_environment():
    config = load_config(environ={})
    for name, value in DEFAULTS.items():
        assert config[name] == value
    assert isinstance(config["ENGINE_SETTINGS"], Settings)


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "10k", "1e6", "0x10", "ten"])
def test_non_integer_value_is_refused_by_name(name, raw):
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: raw})
    assert name in str(info.value)
    assert raw in str(info.value)


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("raw", ["0", "-1", "-500"])
def test_non_positive_value_is_refused_by_name(name, raw):
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: raw})
    assert name in str(info.value)
    assert "positive" in str(info.value)


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_valid_integer_from_environment(name):
    assert load_config(environ={name: "7"})[name] == 7


def test_empty_variable_keeps_the_default():
    assert load_config(environ={"MAX_BATCH_ARTICLES": ""})["MAX_BATCH_ARTICLES"] == DEFAULTS["MAX_BATCH_ARTICLES"]


def test_string_settings_from_environment():
    config = load_config(environ={"REDIS_URL": "redis://cache:6380/2", "CELERY_BROKER_URL": "redis://mq:6379/0"})
    assert config["REDIS_URL"] == "redis://cache:6380/2"
    assert config["CELERY_BROKER_URL"] == "redis://mq:6379/0"


def test_overrides_win_over_environment():
    config = load_config({"MAX_BATCH_ARTICLES": 3}, environ={"MAX_BATCH_ARTICLES": "9"})
    assert config["MAX_BATCH_ARTICLES"] == 3


def test_engine_settings_come_from_storywire_variables():
    settings = load_config(environ={"STORYWIRE_KEY_PREFIX": "sw-cfg", "STORYWIRE_STORY_THRESHOLD": "0.4"})[
        "ENGINE_SETTINGS"]
    assert settings.key_prefix == "sw-cfg"
    assert settings.story_threshold == 0.4


def test_bad_engine_variable_is_refused_by_name():
    with pytest.raises(ConfigError) as info:
        load_config(environ={"STORYWIRE_NUM_PERM": "many"})
    assert "STORYWIRE_NUM_PERM" in str(info.value)


def test_create_app_refuses_a_bad_environment(monkeypatch, redis_url):
    monkeypatch.setenv("MAX_BODY_CHARS", "lots")
    with pytest.raises(ConfigError) as info:
        create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url})
    assert "MAX_BODY_CHARS" in str(info.value)


def test_create_app_reads_limits_from_the_environment(monkeypatch, redis_url, settings):
    monkeypatch.setenv("MAX_PAGE_SIZE", "5")
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings})
    assert app.config["MAX_PAGE_SIZE"] == 5
    resp = app.test_client().get("/v1/stories?limit=6")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_query"


def test_default_page_size_above_max_page_size_is_refused():
    with pytest.raises(ConfigError) as info:
        load_config(environ={"DEFAULT_PAGE_SIZE": "200", "MAX_PAGE_SIZE": "100"})
    assert "DEFAULT_PAGE_SIZE" in str(info.value)
