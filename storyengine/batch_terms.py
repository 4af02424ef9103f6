"""The term counts, term names and word groups of a batch of articles at once
(storyengine.features), exactly as one article's are defined on their own:
storyengine.text.content_terms and readable_forms, Vectorizer.counted and
features.word_groups.

Each word is looked up once, in a :class:`Vocabulary` that numbers it; what
the terms need of a word (its stem's term, that term's feature) are arrays
indexed by its number. Weighing, counting, sorting and finding first uses
are then a few array operations over all the batch's words, instead of
dictionaries and small arrays per article.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from .text import ENTITY_PREFIX, stem, texts_entities, word_stems
from .vectors import Vectorizer


class ArticleWords(NamedTuple):
    """What one article's terms come from (storyengine.features)."""
    title_words: list[str]        # the headline's words: the first of a stem's words names its term
    body_words: list[str]
    terms_title_words: list[str]  # the headline's words the terms count (boilerplate left out)
    names_text: str               # the normalised "headline.\nbody" its names are found in (text.entities)
    fallback: list[str]           # its terms when it has no content terms and no names


class Terms(NamedTuple):
    indices: np.ndarray      # features, sorted
    counts: np.ndarray       # how many times each counts
    names: dict[int, str]    # feature -> the term shown for it, in the order the terms first came
    word_groups: np.ndarray  # per feature, the word it stands for (features.word_groups)
    distinct_words: int


class _Table:
    """Columns of one length, indexed by number, grown by doubling."""

    def __init__(self, **dtypes) -> None:
        self.size = 0
        self.columns = {name: np.empty(1024, dtype=dtype) for name, dtype in dtypes.items()}

    def add(self, **values: list) -> None:
        n = len(next(iter(values.values())))
        for name, column in self.columns.items():
            if self.size + n > len(column):
                grown = self.columns[name] = np.empty(2 * (self.size + n), dtype=column.dtype)
                grown[:self.size] = column[:self.size]
            self.columns[name][self.size:self.size + n] = values[name]
        self.size += n


class Vocabulary:
    """Words, and names as their "e:" terms (no word holds a colon), ->
    number; per number, the term it counts for (a word's stem, -1 for a word
    that is not a content word) and the text it is shown as. Terms (stems,
    "e:" names, words counted as they are) -> number; per number, its feature
    and, for a name, its word's stem's feature (its word group).
    Bounded: forgotten whole past LIMIT entries, between batches."""

    LIMIT = 500_000

    def __init__(self, vectorizer: Vectorizer) -> None:
        self.vectorizer = vectorizer
        self.clear()

    def clear(self) -> None:
        self.numbered: dict[str, int] = {}
        self.words = _Table(text=object, term=np.int64)
        self.term_numbers: dict[str, int] = {}
        self.terms = _Table(text=object, feature=np.int64, stem_feature=np.int64)

    def bound(self) -> None:
        if self.words.size > self.LIMIT or self.terms.size > self.LIMIT:
            self.clear()

    def numbers(self, texts: list[list[str]]) -> np.ndarray:
        """The numbers of the words of ``texts``, one list after another;
        those not seen yet are learnt together."""
        words = itertools.chain.from_iterable
        size = sum(map(len, texts))
        try:
            return np.fromiter(map(self.numbered.__getitem__, words(texts)), dtype=np.int64, count=size)
        except KeyError:
            new = sorted(set().union(*texts).difference(self.numbered))  # sorted: numbered the same every run
            self._learn([w for w in new if not w.startswith(ENTITY_PREFIX)],
                        [w for w in new if w.startswith(ENTITY_PREFIX)])
            return np.fromiter(map(self.numbered.__getitem__, words(texts)), dtype=np.int64, count=size)

    def _learn(self, words: list[str], names: list[str]) -> None:
        stems = word_stems(words)
        terms = iter(self.terms_of(list(filter(None, stems))))
        stem_features = [self.vectorizer.feature_of(stem(name[len(ENTITY_PREFIX):])) for name in names]
        keys = words + names
        self.numbered.update(zip(keys, range(self.words.size, self.words.size + len(keys))))
        self.words.add(text=keys, term=[next(terms) if s else -1 for s in stems] + self.terms_of(names, stem_features))

    def terms_of(self, texts: list[str], stem_features: list[int] | None = None) -> list[int]:
        """Each term's number; ``stem_features``, for names' terms, their words' stems' features."""
        try:
            return list(map(self.term_numbers.__getitem__, texts))
        except KeyError:
            new = {t: i for i, t in enumerate(texts) if t not in self.term_numbers}  # term -> a place it has
            self.term_numbers.update(zip(new, range(self.terms.size, self.terms.size + len(new))))
            self.terms.add(text=list(new), feature=list(map(self.vectorizer.feature_of, new)),
                           stem_feature=[-1] * len(new) if stem_features is None else
                           [stem_features[i] for i in new.values()])
            return list(map(self.term_numbers.__getitem__, texts))


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(an order that sorts ``keys``, where each run of equal keys starts in it)."""
    order = np.argsort(keys)
    ordered = keys[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return order, np.flatnonzero(first)


def _split(values: np.ndarray, bounds: list[int]) -> list[np.ndarray]:
    return [values[lo:hi].copy() for lo, hi in zip(bounds, bounds[1:])]  # each its own: a view keeps the batch


def batch_terms(vocabulary: Vocabulary, articles: list[ArticleWords], title_weight: int,
                entity_weight: int) -> list[Terms]:
    """The terms of each article: headline stems ``title_weight`` times, body
    stems once, names ``entity_weight`` times (text.content_terms), or its
    fallback words once when that is none; counted by feature
    (Vectorizer.counted), named by the article's first word for each stem
    (text.readable_forms), grouped by word (features.word_groups)."""
    if not articles:
        return []
    vocabulary.bound()
    n = len(articles)
    found = texts_entities([a.names_text for a in articles]) if entity_weight else [[]] * n
    names = [[ENTITY_PREFIX + name for name in names] for names in found]
    # The counted words of every article, in order: headline, body, names.
    counted = [part for a, m in zip(articles, names) for part in (a.terms_title_words, a.body_words, m)]
    word_numbers = vocabulary.numbers(counted)
    terms = vocabulary.words.columns["term"][word_numbers]
    lengths = np.fromiter(map(len, counted), dtype=np.int64, count=len(counted))
    weights = np.repeat(np.tile(np.array([title_weight, 1, entity_weight], dtype=np.int64), n), lengths)
    article = np.repeat(np.arange(n, dtype=np.int64), lengths.reshape(n, 3).sum(axis=1))
    keep = (terms >= 0) & (weights > 0)
    terms, weights, article, word_numbers = terms[keep], weights[keep], article[keep], word_numbers[keep]
    # An article with no content terms and no names counts its words as they are.
    bare = np.flatnonzero(np.bincount(article, minlength=n) == 0).tolist()
    if bare:
        extra = [np.array(vocabulary.terms_of(articles[i].fallback), dtype=np.int64) for i in bare]
        sizes = list(map(len, extra))
        terms = np.concatenate([terms, *extra])
        weights = np.concatenate([weights, np.ones(sum(sizes), dtype=np.int64)])
        article = np.concatenate([article, np.repeat(np.array(bare, dtype=np.int64), sizes)])
        word_numbers = np.concatenate([word_numbers, np.zeros(sum(sizes), dtype=np.int64)])  # named below
    # Each article's distinct terms: how many times each counts, and where it first came.
    order, starts = _groups((article << 32) | terms)
    d_article, d_term = article[order[starts]], terms[order[starts]]
    d_first = np.minimum.reduceat(order, starts)
    d_count = np.add.reduceat(weights[order], starts)
    # Terms sharing a feature add up (as in scikit-learn); the feature keeps
    # its first term's place and shows its last new term (Vectorizer.counted).
    d_feature = vocabulary.terms.columns["feature"][d_term]
    order, starts = _groups((d_article << 32) | d_feature)
    g_article, g_feature = d_article[order[starts]], d_feature[order[starts]]
    g_count = np.add.reduceat(d_count[order], starts).astype(np.float64)
    g_place = np.minimum.reduceat(d_first[order], starts)
    g_last = np.maximum.reduceat(d_first[order], starts)
    g_term = terms[g_last]
    # A name's feature stands for its word's stem (features.word_groups).
    stem_feature = vocabulary.terms.columns["stem_feature"][g_term]
    g_group = np.where(stem_feature >= 0, stem_feature, g_feature)
    groups = np.sort((g_article << 32) | g_group)
    distinct = np.bincount(groups[np.concatenate(([True], groups[1:] != groups[:-1]))] >> 32, minlength=n).tolist()
    # A term is shown as the article's first headline or body word with its
    # stem: the word where it first came, when its headline is the one
    # counted (a name shows its "e:" term); the others' below.
    shown_as = vocabulary.words.columns["text"][word_numbers[g_last]]
    bounds = np.searchsorted(g_article, np.arange(n + 1)).tolist()
    # Names in the order their terms first came.
    by_place = np.argsort((g_article << 32) | g_place)
    name_features, name_texts = g_feature[by_place].tolist(), shown_as[by_place].tolist()
    others = sorted({*bare, *(i for i, a in enumerate(articles) if a.terms_title_words is not a.title_words)})
    for i in others:
        words = articles[i].title_words + articles[i].body_words
        stems = vocabulary.words.columns["term"][vocabulary.numbers([words])].tolist()
        forms = dict(zip(reversed(stems), reversed(words)))  # a stem's term -> its first word (the last written)
        term_numbers = g_term[by_place[bounds[i]:bounds[i + 1]]].tolist()
        name_texts[bounds[i]:bounds[i + 1]] = [forms.get(t, text) for t, text in zip(
            term_numbers, vocabulary.terms.columns["text"][term_numbers].tolist())]
    return [Terms(indices, counts, dict(zip(name_features[lo:hi], name_texts[lo:hi])), group, d)
            for indices, counts, group, d, lo, hi in zip(
                _split(g_feature, bounds), _split(g_count, bounds), _split(g_group, bounds), distinct,
                bounds, bounds[1:])]
