"""The duplicate rule and its settings, and promotion under the lock it is
given (storyengine.duplicates). The flows themselves are tested end to end in
test_decider.py and test_batches.py."""
from __future__ import annotations

import pytest

from storyengine.decider import Decider
from storyengine.duplicates import duplicate_rule, is_copy
from storyengine.state import RedisState
from storyengine.locking import AssignmentConflict
from storyengine.settings import Settings
from tests.articles import BRIDGE, BRIDGE_BODY, BRIDGE_TITLE, article

S = Settings()


def test_identical_text_is_always_a_copy():
    assert is_copy(0.0, 1.0, 1, True, S)


@pytest.mark.parametrize("containment, chance, smaller, copy", [
    (0.8, 1e-7, 3, True),     # at every limit
    (0.79, 1e-7, 300, False),  # too little of the smaller text
    (1.0, 1e-6, 300, False),   # that large an overlap is too likely by accident
    (1.0, 0.0, 2, False),      # too short to judge by containment
])
def test_a_copy_needs_containment_an_unlikely_overlap_and_enough_shingles(containment, chance, smaller, copy):
    assert is_copy(containment, chance, smaller, False, S) is copy


def test_the_rules_numbers_are_settings_with_their_defaults():
    assert (S.duplicate_chance_limit, S.duplicate_candidate_stories) == (1e-6, 3)
    strict = Settings.from_env({"STORYWIRE_DUPLICATE_CHANCE_LIMIT": "1e-9",
                                "STORYWIRE_DUPLICATE_CANDIDATE_STORIES": "1"})
    assert (strict.duplicate_chance_limit, strict.duplicate_candidate_stories) == (1e-9, 1)
    assert not is_copy(1.0, 1e-7, 300, False, strict)


def test_the_rule_in_english_follows_the_settings():
    assert duplicate_rule(S) == (
        "a copy when the texts are identical, or when at least 80% of the smaller text's 5-word shingles are in "
        "the other (and it has at least 3); the canonical article is the earliest published copy")
    assert duplicate_rule(S.replace(duplicate_containment=0.9, shingle_size=4, containment_min_shingles=5)) == (
        "a copy when the texts are identical, or when at least 90% of the smaller text's 4-word shingles are in "
        "the other (and it has at least 5); the canonical article is the earliest published copy")


def test_a_promotion_whose_lock_was_lost_writes_nothing(store, monkeypatch):
    decider = Decider(store)
    syndicated = article(client_id="bridge-syndicated", title=BRIDGE_TITLE, body="Advertisement\n" + BRIDGE_BODY,
                         hours=3, source="regional-news")
    original = article(**BRIDGE)
    store.accept_articles([syndicated, original])
    decider.process("bridge-syndicated")
    promote = RedisState.promote

    def promote_after_losing_the_lock(self, decision, record, f, lock, meanwhile=None):
        assert decision.kind == "promoted" and [o["article"] for o in decision.takes_over] == ["bridge-syndicated"]
        store.redis.set(store.keys.assign_lock, b"someone-else")  # another worker took it meanwhile
        return promote(self, decision, record, f, lock, meanwhile)

    monkeypatch.setattr(RedisState, "promote", promote_after_losing_the_lock)
    with pytest.raises(AssignmentConflict):
        decider.process("bridge")
    assert store.get_article("bridge")["status"] == "queued"
    assert store.get_article("bridge-syndicated")["duplicate_of"] is None
    store.redis.delete(store.keys.assign_lock)
    monkeypatch.undo()
    outcome = decider.process("bridge")  # the retry takes over
    assert (outcome.duplicate_of, outcome.opened_story) == (None, False)
    assert store.get_article("bridge-syndicated")["duplicate_of"] == "bridge"


def test_the_chance_of_an_overlap_uses_scipys_binomial_tail_exactly():
    """signatures.ShingleMask.overlaps calls scipy's private ``binom._sf`` (without
    the public sf's argument checks): it must give what ``binom.sf`` gives on
    the counts it is called with, or a scipy upgrade changed it."""
    import numpy as np
    from scipy.stats import binom
    common = np.array([1, 2, 5, 40, 300, 3, 17])
    small = np.array([1, 3, 9, 50, 320, 300, 20])
    rate = np.array([0.33, 0.01, 0.5, 0.2, 0.33, 1e-5, 0.9])
    assert np.array_equal(np.clip(binom._sf(common - 1, small, rate), 0.0, 1.0), binom.sf(common - 1, small, rate))
