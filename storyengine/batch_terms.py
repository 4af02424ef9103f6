"""The term counts, term names and word groups of a batch of articles at once
(storyengine.features), exactly as one article's are defined on their own:
storyengine.text.content_terms and readable_forms, Vectorizer.counted and
features.word_groups.

Each distinct word of an article's headline and of its body is looked up
once (storyengine.features tallies them), in a :class:`Vocabulary` that
numbers it; what the terms need of a word (its stem's term, that term's
feature) are arrays indexed by its number. Weighing, counting, sorting and
finding first uses are then a few array operations over all the batch's
words, instead of dictionaries and small arrays per article.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import NamedTuple

import numpy as np

from .text import ENTITY_PREFIX, stem, texts_entities, word_stems
from .vectors import Vectorizer


class ArticleWords(NamedTuple):
    """What one article's terms come from (storyengine.features). Its counted
    words as tallies: each distinct word, in the order it first comes, and how
    many times it comes, so that a word is looked up once an article."""
    title_words: list[str]  # the headline's words: the first of a stem's words names its term
    headline: Counter       # the headline's words the terms count (boilerplate left out), tallied
    body: Counter           # the body's words, tallied
    headline_stripped: bool  # whether ``headline`` leaves a part of the headline out (not ``title_words``)
    names_text: str         # the normalised "headline.\nbody" its names are found in (text.entities)
    fallback: list[str]     # its terms when it has no content terms and no names


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
        every = list(itertools.chain.from_iterable(texts))
        numbers = np.fromiter(map(self.numbered.get, every, itertools.repeat(-1)), dtype=np.int64, count=len(every))
        unknown = np.flatnonzero(numbers < 0)
        if len(unknown):  # looked up once more, those alone
            unknown_words = list(map(every.__getitem__, unknown.tolist()))
            new = sorted(set(unknown_words))  # sorted: numbered the same every run
            self._learn([w for w in new if not w.startswith(ENTITY_PREFIX)],
                        [w for w in new if w.startswith(ENTITY_PREFIX)])
            numbers[unknown] = np.fromiter(map(self.numbered.__getitem__, unknown_words), dtype=np.int64,
                                           count=len(unknown_words))
        return numbers

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
    # The counted parts of every article, in order (headline, body, names),
    # each as its distinct words in the order they first come and how many
    # times each comes: a term's first word comes first among these as among
    # all the words.
    distinct, times, sizes = [], [], []
    for a, names in zip(articles, found):
        for part in (a.headline, a.body):
            distinct += part
            times += part.values()
            sizes.append(len(part))
        part = Counter(names)
        distinct += map(ENTITY_PREFIX.__add__, part)
        times += part.values()
        sizes.append(len(part))
    all_numbers = word_numbers = vocabulary.numbers([distinct])
    terms = vocabulary.words.columns["term"][word_numbers]
    lengths = np.array(sizes, dtype=np.int64)
    weights = np.repeat(np.tile(np.array([title_weight, 1, entity_weight], dtype=np.int64), n), lengths) * \
        np.array(times, dtype=np.int64)
    article = np.repeat(np.arange(n, dtype=np.int64), lengths.reshape(n, 3).sum(axis=1))
    keep = (terms >= 0) & (weights > 0)
    terms, weights, article, word_numbers = terms[keep], weights[keep], article[keep], word_numbers[keep]
    # An article with no content terms and no names counts its words as they are.
    bare = np.flatnonzero(np.bincount(article, minlength=n) == 0).tolist()
    if bare:
        extra = [np.array(vocabulary.terms_of(articles[i].fallback), dtype=np.int64) for i in bare]
        extra_sizes = list(map(len, extra))
        terms = np.concatenate([terms, *extra])
        weights = np.concatenate([weights, np.ones(sum(extra_sizes), dtype=np.int64)])
        article = np.concatenate([article, np.repeat(np.array(bare, dtype=np.int64), extra_sizes)])
        word_numbers = np.concatenate([word_numbers, np.zeros(sum(extra_sizes), dtype=np.int64)])  # named below
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
    distinct_words = np.bincount(groups[np.concatenate(([True], groups[1:] != groups[:-1]))] >> 32,
                                 minlength=n).tolist()
    bounds = np.searchsorted(g_article, np.arange(n + 1)).tolist()
    # Names in the order their terms first came. A term is shown as the
    # article's first headline or body word with its stem: the word where it
    # first came, when its headline is the one counted (a name shows its "e:"
    # term); the others' below.
    by_place = np.argsort((g_article << 32) | g_place)
    shown_as = vocabulary.words.columns["text"][word_numbers[g_last[by_place]]]
    others = sorted({*bare, *(i for i, a in enumerate(articles) if a.headline_stripped)})
    if others:
        part_starts = np.concatenate(([0], np.cumsum(lengths))).tolist()
        bodies = [all_numbers[part_starts[3 * i + 1]:part_starts[3 * i + 2]] for i in others]
        at = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in others])
        shown_as[at] = _first_words(vocabulary, [articles[i].title_words for i in others], bodies,
                                    np.repeat(np.arange(len(others)), [bounds[i + 1] - bounds[i] for i in others]),
                                    g_term[by_place[at]])
    name_features, name_texts = g_feature[by_place].tolist(), shown_as.tolist()
    return [Terms(indices, counts, dict(zip(name_features[lo:hi], name_texts[lo:hi])), group, d)
            for indices, counts, group, d, lo, hi in zip(
                _split(g_feature, bounds), _split(g_count, bounds), _split(g_group, bounds), distinct_words,
                bounds, bounds[1:])]


def _first_words(vocabulary: Vocabulary, headlines: list[list[str]], bodies: list[np.ndarray],
                 owners: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """How each term of ``wanted`` is shown in the article ``owners`` says:
    its first word among that article's headline words and then its body's
    distinct words (numbered, in the order they first come), or the term
    itself when none has it (text.readable_forms)."""
    heads = [list(dict.fromkeys(words)) for words in headlines]  # a word's first use is all that counts
    head_numbers = vocabulary.numbers(heads)
    sizes = list(map(len, heads))
    head_parts = np.split(head_numbers, np.cumsum(sizes)[:-1].tolist())
    numbers = np.concatenate([x for pair in zip(head_parts, bodies) for x in pair])
    owner = np.repeat(np.arange(len(heads), dtype=np.int64), [h + len(b) for h, b in zip(sizes, bodies)])
    terms = vocabulary.words.columns["term"][numbers]
    content = terms >= 0
    keys, numbers = (owner[content] << 32) | terms[content], numbers[content]
    order = np.argsort(keys, kind="stable")  # stable: a term's first word first
    keys, numbers = keys[order], numbers[order]
    first = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    keys = np.append(keys[first], np.iinfo(np.int64).max)  # a last key past every one: none is out of range
    numbers = numbers[first]
    wanted_keys = (owners.astype(np.int64) << 32) | wanted
    at = np.searchsorted(keys, wanted_keys)
    has = keys[at] == wanted_keys
    shown = vocabulary.terms.columns["text"][wanted]
    shown[has] = vocabulary.words.columns["text"][numbers[at[has]]]
    return shown
