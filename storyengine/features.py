"""What an article's text counts for, computed before any shared state is
read: its fingerprint, shingles, MinHash and LSH band slots, and its term
counts. Pure computation, so it runs outside the assignment lock and needs no Redis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import signatures
from .boilerplate import Stripped
from .errors import InvalidArticle
from .keys import Keys
from .settings import Settings
from .text import (ENTITY_PREFIX, WordTest, content_terms, normalise, readable_forms, stem, without_addresses,
                   words)
from .vectors import Vectorizer


@dataclass
class Features:
    """Everything computed from an article's text, before any shared state is read."""
    published: float
    fingerprint: str
    signature: np.ndarray
    shingle_set: np.ndarray
    bands: list[tuple[int, bytes]]  # (bucket, slot) per LSH band
    slots: list[tuple[str, bytes]]  # (key, field) of each band's slot
    term_indices: np.ndarray
    term_counts: np.ndarray
    term_names: dict[int, str] = field(default_factory=dict)
    # False for an article posted without a date: ``published`` is set, under
    # the lock, to the stream's time (storyengine.clock.stream_time).
    dated: bool = True
    # Its body's edge sentences (counted for its outlet once it is decided)
    # and how many of them were boilerplate and left out (storyengine.boilerplate).
    sentences: list[bytes] = field(default_factory=list)
    boilerplate: int = 0
    headline_boilerplate: int = 0  # parts of its headline left out as the outlet's furniture
    # One id per term (a name and its word share one: word_groups below), and how many there are.
    word_groups: np.ndarray | None = None
    distinct_words: int | None = None


# term -> whether it is a name's feature ("e:..."), remembered (``filter`` over a dict stays in C).
_IS_ENTITY = WordTest(lambda term: term.startswith(ENTITY_PREFIX))


def word_groups(indices: np.ndarray, entity_terms: list[str], vectorizer: Vectorizer) -> tuple[np.ndarray, int]:
    """(one word id per feature of ``indices``, how many words): a name ("e:"
    and the word) has the id of its word's stem, so shared words are counted
    once however the article weighs them. Ids are feature numbers."""
    keys = indices.copy()
    if entity_terms:
        at = np.searchsorted(indices, [vectorizer.feature_of(term) for term in entity_terms])
        keys[at] = [vectorizer.feature_of(stem(term[len(ENTITY_PREFIX):])) for term in entity_terms]
    return keys, len(set(keys.tolist()))


class Featuriser:
    """Turns an article record into its :class:`Features`: holds the term
    vectorizer and the LSH band layout the settings call for."""

    def __init__(self, settings: Settings, keys: Keys | None = None) -> None:
        self.settings = settings
        self.keys = keys or Keys(settings.key_prefix)  # only names the band slots: no Redis
        self.vectorizer = Vectorizer(settings.hash_features)
        self.layout = signatures.BandLayout.for_threshold(settings.lsh_threshold, settings.num_perm)

    def featurise_stripped(self, record: dict, stripped: Stripped) -> Features:
        """The features of a record with its outlet's boilerplate left out
        (storyengine.boilerplate), saying what was left out."""
        features = self.featurise(record, stripped.body, stripped.copy_body, stripped.title)
        features.sentences = stripped.digests
        features.boilerplate = stripped.sentences_dropped
        features.headline_boilerplate = stripped.segments_dropped
        return features

    def featurise(self, record: dict, body: str | None = None, copy_body: str | None = None,
                  terms_title: str | None = None) -> Features:
        """``body`` and ``terms_title``: the body and headline the story terms
        come from, and ``copy_body`` the body copies are compared on, each
        with its outlet's boilerplate left out (storyengine.boilerplate); the
        stored ones if not given."""
        s = self.settings
        # A headline made from the body (an untitled item) would count its first sentence twice.
        title = "" if record.get("title_derived") == "1" else record.get("title", "")
        headline_stripped = bool(title) and terms_title is not None and terms_title != title
        body = record.get("body", "") if body is None else body
        copy_body = body if copy_body is None else copy_body
        # Addresses and handles say where to find an outlet, not what happened.
        # Copies are compared on headline and body together: a changed headline
        # costs a long article a few shingles out of hundreds, and a short item
        # (headline and a snippet) is mostly its headline.
        # Words never span a line break, so these are the words of "title\nbody".
        title = normalise(without_addresses(title))  # once, for the words and the entities
        body = normalise(without_addresses(body))
        title_words, body_words = words(title, normalised=True), words(body, normalised=True)
        copy_words = body_words if copy_body is body or copy_body == body else \
            words(normalise(without_addresses(copy_body)), normalised=True)
        tokens = title_words + copy_words
        if not tokens:
            raise InvalidArticle("the article has no words in its title or body")
        joined = " ".join(tokens).encode("utf-8")  # shingles and the fingerprint both hash the words from it
        shingles = signatures.shingle_hashes(tokens, s.shingle_size, joined)
        signature = signatures.minhash(shingles, s.num_perm)
        if headline_stripped:
            # The outlet's headline furniture left out (storyengine.boilerplate): the words it kept.
            terms_title = normalise(without_addresses(terms_title))
            terms_title_words = words(terms_title, normalised=True)
        else:
            terms_title, terms_title_words = title, title_words
        terms = content_terms(terms_title, body, s.title_weight, s.entity_weight, terms_title_words, body_words,
                              normalised=True) or title_words + body_words or tokens
        indices, counts, names = self.vectorizer.counted(terms)
        groups, distinct = word_groups(indices, list(filter(_IS_ENTITY.__getitem__, names.values())), self.vectorizer)
        forms = readable_forms(title_words, body_words)  # a stem is shown as the article's own first word for it
        names = dict(zip(names, map(forms.get, names.values(), names.values())))
        dated = record.get("published_assigned") != "1"
        try:
            published = float(record["published_ts"]) if dated else math.nan
        except (KeyError, ValueError):
            raise InvalidArticle("the article has no valid published time") from None
        bands = self.layout.band_slots(signature)
        return Features(published, signatures.exact_fingerprint(tokens, joined), signature,
                        signatures.shingle_set(shingles), bands, self.keys.band_slots(bands), indices, counts, names,
                        dated=dated, word_groups=groups, distinct_words=distinct)
