"""The duplicate rule and its settings, and promotion under the lock it is
given (storyengine.duplicates). The flows themselves are tested end to end in
test_decider.py and test_batches.py."""
from __future__ import annotations

from operator import itemgetter

import numpy as np
import pytest

from storyengine.batch import Candidate
from storyengine.decider import Decider
from storyengine.duplicates import REPORTED, Duplicates, duplicate_rule, is_copy
from storyengine.signatures import ShingleMask
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


def test_the_rule_on_arrays_is_the_rule_on_each_candidate():
    rng = np.random.default_rng(4)
    containment, chance = rng.choice([0.5, 0.79, 0.8, 1.0], 200), rng.choice([0.0, 1e-7, 1e-6, 0.5], 200)
    smaller, exact = rng.integers(0, 6, 200), rng.random(200) < 0.1
    assert is_copy(containment, chance, smaller, exact, S).tolist() == [
        is_copy(float(c), float(p), int(n), bool(e), S) for c, p, n, e in zip(containment, chance, smaller, exact)]


def _report_of_every_row(f, sources, candidates, exact_owner):
    """The duplicate report made of a row for every candidate compared, sorted whole."""
    compared = [(c, candidates[c]) for c in sorted(sources) if candidates.get(c) is not None]
    overlaps = ShingleMask(f.shingle_set).overlaps([x.shingle_set for _, x in compared], S.duplicate_containment)
    rows = sorted(((c != exact_owner, -round(o.containment, 4), x.published, c, x, o.jaccard,
                    bool(is_copy(o.containment, o.chance, min(len(f.shingle_set), len(x.shingle_set)), c == exact_owner,
                                 S)))
                   for (c, x), o in zip(compared, overlaps)), key=itemgetter(0, 1, 2, 3))

    def record(row):
        inexact, containment, published, c, x, jaccard, verified = row
        return {"article": c, "found_by": sources[c], "story": x.story, "published": published,
                "containment": -containment, "jaccard": round(jaccard, 4), "exact": not inexact, "duplicate": verified}

    verified = [record(row) for row in rows if row[-1]]
    match = min(verified, key=lambda r: (r["published"], r["article"])) if verified else None
    return {"candidates": [{k: r[k] for k in ("article", "found_by", "containment", "jaccard", "exact", "duplicate")}
                           for r in map(record, rows[:REPORTED])],
            "compared": len(compared), "matched": match["article"] if match else None}, verified


class _Text:
    def __init__(self, shingle_set):
        self.shingle_set = shingle_set


def test_a_report_made_of_the_rows_that_can_be_reported_equals_one_made_of_every_row():
    """_verify makes rows only for the verified candidates and those that may be among the first
    REPORTED: the report and the verified list are those of every row, ties of rounded containment too."""
    rng = np.random.default_rng(5)
    for trial in range(150):
        mine = np.unique(rng.integers(0, 65536, int(rng.integers(20, 400)))).astype(np.uint16)
        sources, candidates = {}, {}
        for i in range(int(rng.integers(0, 40))):
            share = rng.choice([0.0, 0.3, 0.6, 0.85, 1.0])
            kept = rng.choice(mine, int(share * len(mine)), replace=False)
            noise = rng.integers(0, 65536, int(rng.integers(0, 400)))
            c = f"c{rng.integers(0, 60):02d}"
            sources[c] = str(rng.choice(["lsh", "story"]))
            candidates[c] = Candidate(c, f"st{i % 3}", float(rng.choice([1.0, 2.0, 3.0])),
                                      np.unique(np.concatenate((kept, noise))).astype(np.uint16))
        if candidates and rng.random() < 0.2:
            candidates[next(iter(candidates))] = None  # no longer a canonical article
        exact_owner = next(iter(sources), None) if rng.random() < 0.3 else None
        f = _Text(mine)
        assert Duplicates(None, S)._verify(f, sources, candidates, exact_owner) == \
            _report_of_every_row(f, sources, candidates, exact_owner), trial


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
