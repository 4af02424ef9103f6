"""Settings: defaults, validation and STORYWIRE_* environment parsing."""
from __future__ import annotations

import pytest

from storyengine.errors import ConfigError
from storyengine.settings import Settings


def test_from_env_parses_floats_ints_and_strings():
    s = Settings.from_env({
        "STORYWIRE_STORY_THRESHOLD": "0.35",
        "STORYWIRE_NUM_PERM": "256",
        "STORYWIRE_TIME_SIGMA_HOURS": "48",
        "STORYWIRE_KEY_PREFIX": "sw-prod",
        "STORYWIRE_DUPLICATE_CONTAINMENT": "0.9",
        "STORYWIRE_ENTITY_WEIGHT": "3",
    })
    assert s.story_threshold == 0.35
    assert s.num_perm == 256 and isinstance(s.num_perm, int)
    assert s.time_sigma_hours == 48.0 and isinstance(s.time_sigma_hours, float)
    assert s.key_prefix == "sw-prod"
    assert s.duplicate_containment == 0.9
    assert s.entity_weight == 3 and isinstance(s.entity_weight, int)
    # Everything else keeps its default.
    assert s.shingle_size == Settings().shingle_size
    assert s.story_window_hours == Settings().story_window_hours


def test_from_env_ignores_unset_empty_and_unrelated_variables():
    s = Settings.from_env({"STORYWIRE_STORY_THRESHOLD": "", "STORY_THRESHOLD": "0.9",
                           "storywire_story_threshold": "0.9", "OTHER_NUM_PERM": "64"})
    assert s == Settings()


def test_from_env_honours_another_prefix():
    s = Settings.from_env({"SW_STORY_THRESHOLD": "0.5", "STORYWIRE_STORY_THRESHOLD": "0.9"}, prefix="SW_")
    assert s.story_threshold == 0.5


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("STORYWIRE_LOOKUP_TERMS", "7")
    assert Settings.from_env().lookup_terms == 7


@pytest.mark.parametrize("name, raw", [
    ("STORYWIRE_STORY_THRESHOLD", "high"),
    ("STORYWIRE_STORY_THRESHOLD", "0,35"),
    ("STORYWIRE_NUM_PERM", "12.5"),
    ("STORYWIRE_NUM_PERM", "1e3"),
    ("STORYWIRE_STORY_WINDOW_HOURS", "72h"),
])
def test_from_env_rejects_unparseable_values_naming_the_variable(name, raw):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: raw})
    message = str(info.value)
    assert name in message
    assert repr(raw) in message


@pytest.mark.parametrize("field, raw", [
    ("story_threshold", "1.5"),
    ("story_threshold", "0"),
    ("story_threshold", "-0.2"),
    ("story_threshold", "nan"),
    ("lsh_threshold", "2"),
    ("duplicate_containment", "1.01"),
    ("duplicate_containment", "0"),
    ("merge_threshold", "1.5"),
])
def test_from_env_rejects_out_of_range_thresholds_naming_the_setting(field, raw):
    with pytest.raises(ConfigError, match=field):
        Settings.from_env({f"STORYWIRE_{field.upper()}": raw})


@pytest.mark.parametrize("field, raw", [("num_perm", "0"), ("story_window_hours", "-1"), ("title_weight", "0")])
def test_from_env_rejects_non_positive_numbers(field, raw):
    with pytest.raises(ConfigError, match=f"{field} must be positive"):
        Settings.from_env({f"STORYWIRE_{field.upper()}": raw})


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Settings(story_threshold=3.0, num_perm=-1)
    assert "story_threshold" in str(info.value) and "num_perm" in str(info.value)


@pytest.mark.parametrize("prefix", ["", "has space", "a:b", "wild*card"])
def test_key_prefix_must_be_safe_for_keys_and_patterns(prefix):
    with pytest.raises(ConfigError, match="key_prefix"):
        Settings(key_prefix=prefix)


def test_replace_returns_a_validated_copy():
    base = Settings()
    changed = base.replace(story_threshold=0.5)
    assert changed.story_threshold == 0.5 and base.story_threshold == Settings().story_threshold != 0.5
    with pytest.raises(ConfigError):
        base.replace(story_threshold=5.0)


def test_shingle_size_the_engine_cannot_hash_is_a_config_error():
    try:
        Settings.from_env({"STORYWIRE_SHINGLE_SIZE": "10"})
    except ConfigError:
        return
    raise AssertionError("STORYWIRE_SHINGLE_SIZE=10 was accepted")


def test_defaults_of_the_average_link_model():
    s = Settings()
    assert (s.story_threshold, s.time_sigma_hours, s.story_window_hours) == (0.18, 36.0, 96.0)
    assert (s.bucket_hours, s.bucket_terms, s.entity_weight, s.merge_threshold) == (24.0, 500, 2, 0.2)
    assert (s.duplicate_containment, s.containment_min_shingles, s.story_duplicate_candidates) == (0.8, 3, 64)


def test_the_removed_duplicate_jaccard_setting_is_gone_and_its_variable_ignored():
    assert not hasattr(Settings(), "duplicate_jaccard")
    with pytest.raises(TypeError):
        Settings(duplicate_jaccard=0.7)
    # A deployment that still sets the old variable starts with the defaults.
    assert Settings.from_env({"STORYWIRE_DUPLICATE_JACCARD": "0.7"}) == Settings()
