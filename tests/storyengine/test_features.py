"""Featurising an article (storyengine.features): pure, in a plain process, no Redis."""
from __future__ import annotations

import numpy as np
import pytest

from storyengine.boilerplate import Stripped
from storyengine.errors import InvalidArticle
from storyengine.features import Featuriser, word_groups
from storyengine.settings import Settings
from storyengine.text import stem
from tests.articles import BANK, COURIER, REPRINT, article


@pytest.fixture(scope="module")
def featuriser():
    return Featuriser(Settings())


def test_the_same_text_gives_the_same_features_and_names_its_band_slots(featuriser):
    a, b = featuriser.featurise(article(**COURIER)), featuriser.featurise(article(**COURIER))
    assert a.fingerprint == b.fingerprint and np.array_equal(a.signature, b.signature)
    assert np.array_equal(a.term_indices, b.term_indices) and a.term_names == b.term_names
    assert len(a.bands) == len(a.slots) == featuriser.layout.bands
    assert [key for key, _ in a.slots] == [featuriser.keys.band(i, bucket) for i, (bucket, _) in enumerate(a.bands)]
    assert a.dated and a.published == article(**COURIER)["published_ts"]


def test_a_copy_differing_in_case_and_punctuation_has_the_same_fingerprint(featuriser):
    original = article(**BANK)
    shouted = dict(original, title=original["title"].upper() + "!!", body=original["body"].replace(",", " ,"))
    assert featuriser.featurise(shouted).fingerprint == featuriser.featurise(original).fingerprint
    assert featuriser.featurise(article(**REPRINT)).fingerprint != featuriser.featurise(article(**COURIER)).fingerprint


def test_an_article_without_words_or_a_valid_time_is_invalid(featuriser):
    with pytest.raises(InvalidArticle):
        featuriser.featurise(dict(article(**BANK), title="", body=" ... "))
    with pytest.raises(InvalidArticle):
        featuriser.featurise(dict(article(**BANK), published_ts="soon"))


def test_an_undated_article_waits_for_the_streams_time(featuriser):
    f = featuriser.featurise(dict(article(**BANK), published_assigned="1"))
    assert not f.dated and np.isnan(f.published)


def test_featurise_stripped_uses_the_stripped_text_and_says_what_was_left_out(featuriser):
    rec = article(**COURIER)
    stripped = Stripped(title=rec["title"], body=rec["body"], copy_body=rec["body"], digests=[b"d1"],
                        sentences_dropped=2, segments_dropped=1)
    f = featuriser.featurise_stripped(rec, stripped)
    assert (f.sentences, f.boilerplate, f.headline_boilerplate) == ([b"d1"], 2, 1)
    assert f.fingerprint == featuriser.featurise(rec).fingerprint


def test_a_name_and_its_word_count_as_one_word(featuriser):
    v = featuriser.vectorizer
    word = v.feature_of(stem("harbours"))
    indices = np.array(sorted({word, v.feature_of("e:harbours"), v.feature_of("fire")}))
    groups, distinct = word_groups(indices, ["e:harbours"], v)
    assert distinct == 2
    assert groups[np.searchsorted(indices, v.feature_of("e:harbours"))] == word
