"""What an article's text counts for, computed before any shared state is
read: its fingerprint, shingles, MinHash and LSH band slots, and its term
counts. Pure computation, so it runs outside the assignment lock and needs no Redis.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import signatures
from .batch_terms import ArticleWords, Vocabulary, batch_terms
from .boilerplate import Stripped
from .errors import InvalidArticle
from .keys import Keys
from .settings import Settings
from .text import ENTITY_PREFIX, normalise, stem, without_addresses, words
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


def word_groups(indices: np.ndarray, entity_terms: list[str], vectorizer: Vectorizer) -> tuple[np.ndarray, int]:
    """(one word id per feature of ``indices``, how many words): a name ("e:"
    and the word) has the id of its word's stem, so shared words are counted
    once however the article weighs them. Ids are feature numbers. One
    article's, as defined; storyengine.batch_terms works out a batch's."""
    keys = indices.copy()
    if entity_terms:
        at = np.searchsorted(indices, [vectorizer.feature_of(term) for term in entity_terms])
        keys[at] = [vectorizer.feature_of(stem(term[len(ENTITY_PREFIX):])) for term in entity_terms]
    return keys, len(set(keys.tolist()))


class _Text(NamedTuple):
    """An article's text read for its features, before the batch's array work."""
    joined: bytes  # its words joined by spaces, for its shingles
    word_count: int
    fingerprint: str
    published: float
    dated: bool
    terms: ArticleWords


class Featuriser:
    """Turns an article record into its :class:`Features`: holds the term
    vectorizer and the LSH band layout the settings call for."""

    def __init__(self, settings: Settings, keys: Keys | None = None) -> None:
        self.settings = settings
        self.keys = keys or Keys(settings.key_prefix)  # only names the band slots: no Redis
        self.vectorizer = Vectorizer(settings.hash_features)
        self.layout = signatures.BandLayout.for_threshold(settings.lsh_threshold, settings.num_perm)
        self.vocabulary = Vocabulary(self.vectorizer)

    def featurise_stripped(self, record: dict, stripped: Stripped) -> Features:
        """The features of a record with its outlet's boilerplate left out
        (storyengine.boilerplate), saying what was left out."""
        [features] = self.featurise_many([(record, stripped)])
        if isinstance(features, Exception):
            raise features
        return features

    def featurise_many(self, items: list[tuple[dict, Stripped]]) -> list[Features | Exception]:
        """:meth:`featurise_stripped` of each (record, stripped) pair: each
        article's words one at a time, then the shingles, MinHash, bands,
        names and term counts of all of them at once. An article that cannot
        be featurised gets its exception in its place; the others go on."""
        texts: list[_Text | Exception] = []
        for record, stripped in items:
            try:
                texts.append(self._read(record, stripped.body, stripped.copy_body, stripped.title))
            except Exception as exc:  # noqa: BLE001 - the caller fails this article alone
                texts.append(exc)
        read = [text for text in texts if isinstance(text, _Text)]
        try:
            done = iter(self._features(read))
        except Exception:  # noqa: BLE001 - an error of ours in one text: each alone, so it fails alone
            done = iter([self._alone(text) for text in read])
        out: list[Features | Exception] = []
        for (_, stripped), text in zip(items, texts):
            features = next(done) if isinstance(text, _Text) else text
            if isinstance(features, Features):
                features.sentences = stripped.digests
                features.boilerplate = stripped.sentences_dropped
                features.headline_boilerplate = stripped.segments_dropped
            out.append(features)
        return out

    def _alone(self, text: _Text) -> Features | Exception:
        try:
            return self._features([text])[0]
        except Exception as exc:  # noqa: BLE001
            return exc

    def featurise(self, record: dict, body: str | None = None, copy_body: str | None = None,
                  terms_title: str | None = None) -> Features:
        """``body`` and ``terms_title``: the body and headline the story terms
        come from, and ``copy_body`` the body copies are compared on, each
        with its outlet's boilerplate left out (storyengine.boilerplate); the
        stored ones if not given."""
        return self._features([self._read(record, body, copy_body, terms_title)])[0]

    def _features(self, texts: list[_Text]) -> list[Features]:
        """The shingles, MinHash signatures, shingle sets, band slots and
        terms of ``texts``, each as array operations over all of them."""
        if not texts:
            return []
        s = self.settings
        shingles = signatures.texts_shingles([t.joined for t in texts], [t.word_count for t in texts], s.shingle_size)
        signature_rows = signatures.minhashes(shingles, s.num_perm)
        shingle_sets = signatures.shingle_sets(shingles)
        bands = self.layout.texts_band_slots(signature_rows)
        terms = batch_terms(self.vocabulary, [t.terms for t in texts], s.title_weight, s.entity_weight)
        return [Features(t.published, t.fingerprint, signature.copy(), shingle_set, slots, self.keys.band_slots(slots),
                         counted.indices, counted.counts, counted.names, dated=t.dated,
                         word_groups=counted.word_groups, distinct_words=counted.distinct_words)
                for t, signature, shingle_set, slots, counted in zip(texts, signature_rows, shingle_sets, bands, terms)]

    def _read(self, record: dict, body: str | None, copy_body: str | None, terms_title: str | None) -> _Text:
        """An article's words, terms and time: the work done one article at a time."""
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
        if headline_stripped:
            # The outlet's headline furniture left out (storyengine.boilerplate): the words it kept.
            terms_title = normalise(without_addresses(terms_title))
            terms_title_words = words(terms_title, normalised=True)
        else:
            terms_title, terms_title_words = title, title_words
        dated = record.get("published_assigned") != "1"
        try:
            published = float(record["published_ts"]) if dated else math.nan
        except (KeyError, ValueError):
            raise InvalidArticle("the article has no valid published time") from None
        joined = " ".join(tokens).encode("utf-8")
        return _Text(joined, len(tokens), signatures.exact_fingerprint(tokens, joined), published, dated,
                     ArticleWords(title_words, Counter(terms_title_words), Counter(body_words), headline_stripped,
                                  f"{terms_title}.\n{body}", title_words + body_words or tokens))
