"""Featurising a batch at once (Featuriser.featurise_many: storyengine.batch_terms,
storyengine.sentence_scan, the batch paths of storyengine.signatures) gives
every article exactly the features it is defined to have on its own: the
same as featurising it alone, and the same as the per-article definitions
(text.content_terms and readable_forms, Vectorizer.counted,
features.word_groups, datasketch's MinHash, one blake2b per band)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from evaluation.replay import record_of
from storyengine import signatures
from storyengine import text as T
from storyengine.boilerplate import Boilerplate
from storyengine.errors import InvalidArticle
from storyengine.features import Features, Featuriser, word_groups
from storyengine.keys import Keys
from storyengine.settings import Settings
from tests.articles import BANK, COURIER, article
from tests.shared_data import DEV_STREAM, require_shared

FEED_ITEMS = Path(__file__).parent.parent / "data" / "feed_items.jsonl"
FIELDS = ("published", "fingerprint", "signature", "shingle_set", "bands", "slots", "term_indices",
          "term_counts", "term_names", "dated", "sentences", "boilerplate", "headline_boilerplate",
          "word_groups", "distinct_words")


def stream_records(path: Path, limit: int) -> list[dict]:
    with path.open() as lines:
        return [record_of(json.loads(line)) for line, _ in zip(lines, range(limit))]


def stripped(records: list[dict], settings: Settings) -> list[tuple[dict, object]]:
    """Each record with its outlet's boilerplate left out, as a batch learns it
    (no stored counts: the items before it in the list teach it)."""
    learnt = Boilerplate(Keys(settings.key_prefix), settings)
    return [(record, learnt.strip(record["id"], record)) for record in records]


def same(a: Features, b: Features) -> list[str]:
    """The fields in which two Features differ: arrays by dtype, shape and bytes, names in order too."""
    def key(value):
        if isinstance(value, np.ndarray):
            return value.dtype.str, value.shape, value.tobytes()
        if isinstance(value, float):
            return repr(value)  # an undated article's nan, too
        return list(value.items()) if isinstance(value, dict) else value
    return [f for f in FIELDS if key(getattr(a, f)) != key(getattr(b, f))]


def defined(featuriser: Featuriser, record: dict, stripped) -> dict:
    """One article's terms and signature as they are defined, one article at a time."""
    s = featuriser.settings
    title = "" if record.get("title_derived") == "1" else record.get("title", "")
    body, copy_body = stripped.body, stripped.copy_body
    title, body = T.normalise(T.without_addresses(title)), T.normalise(T.without_addresses(body))
    title_words, body_words = T.words(title, normalised=True), T.words(body, normalised=True)
    copy_words = body_words if copy_body == stripped.body else \
        T.words(T.normalise(T.without_addresses(copy_body)), normalised=True)
    tokens = title_words + copy_words
    terms_title = title
    if title and stripped.title != record.get("title", ""):
        terms_title = T.normalise(T.without_addresses(stripped.title))
    terms = T.content_terms(terms_title, body, s.title_weight, s.entity_weight,
                            T.words(terms_title, normalised=True), body_words, normalised=True) \
        or title_words + body_words or tokens
    indices, counts, names = featuriser.vectorizer.counted(terms)
    groups, distinct = word_groups(indices, [t for t in names.values() if t.startswith(T.ENTITY_PREFIX)],
                                   featuriser.vectorizer)
    forms = T.readable_forms(title_words, body_words)
    shingles = signatures.shingle_hashes(tokens, s.shingle_size)
    template = MinHash(num_perm=s.num_perm, scheme="affine32")
    minhash = MinHash(num_perm=s.num_perm, scheme="affine32", hashfunc=int, permutations=template.permutations)
    minhash.update_batch(shingles.tolist())
    signature = minhash.hashvalues.astype(np.uint32)
    rows = featuriser.layout.rows
    bands = []
    for i in range(featuriser.layout.bands):
        digest = hashlib.blake2b(signature[i * rows:(i + 1) * rows].astype("<u4").tobytes(), digest_size=6).digest()
        bands.append((int.from_bytes(digest[:2], "little") % featuriser.layout.SLOT_BUCKETS, digest[2:]))
    return {"term_indices": indices, "term_counts": counts, "word_groups": groups, "distinct_words": distinct,
            "term_names": list(zip(names, map(forms.get, names.values(), names.values()))),
            "signature": signature, "shingle_set": np.unique((shingles & 0xFFFF).astype(np.uint16)), "bands": bands,
            "fingerprint": hashlib.blake2b(" ".join(tokens).encode("utf-8"), digest_size=12).hexdigest()}


def check_batch(items: list[tuple[dict, object]], settings: Settings) -> list:
    batch = Featuriser(settings).featurise_many(items)
    alone = Featuriser(settings)
    for (record, strip), features in zip(items, batch):
        try:
            expected = alone.featurise_stripped(record, strip)
        except InvalidArticle as exc:
            assert isinstance(features, InvalidArticle) and str(features) == str(exc), record["id"]
            continue
        assert isinstance(features, Features), (record["id"], features)
        assert same(features, expected) == [], record["id"]
        for name, value in defined(alone, record, strip).items():
            got = getattr(features, name)
            if name == "term_names":
                assert list(got.items()) == value, record["id"]
            elif isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and np.array_equal(got, value), (record["id"], name)
            else:
                assert got == value, (record["id"], name)
    return batch


ODD = [  # failing, undated, untitled, wordless, typographic, non-Latin, address-only, one-word items
    dict(title="", body=" ... "),
    dict(title="A headline", body="A body of words.", published_ts="soon"),
    dict(title="Dated later", body="Nobody knows when.", published_assigned="1"),
    dict(title="Rescue Teams pulled hikers out.", body="Rescue Teams pulled hikers out. Mr. Smith said so.",
         title_derived="1"),
    dict(title="Café “Zürich” — naïve résumé", body="Ünïcödé text… Mr. Smith met U.S. Navy officers.\nNew line!"),
    dict(title="Ελληνικά ΚΕΦΑΛΑΙΑ", body="Σίσυφος Athens. Ο Παπαδόπουλος είπε."),
    dict(title="Read at www.example.com", body="Follow us https://t.co/abc @handle\nvisit example.co.uk now."),
    dict(title="", body="word"),
    dict(title="The", body="is 42 of it"),  # no content word and no name: its words count as they are
    dict(title="Storm hits Velmora: Live updates - BBC News", body="Storm hits. Velmora Council met."),
]


def odd_records() -> list[dict]:
    base = article(**COURIER)
    return [dict(base, id=f"odd-{i}", **changes) for i, changes in enumerate(ODD)]


def test_a_batch_of_the_dev_stream_and_feed_items_featurises_each_as_defined():
    require_shared(DEV_STREAM)
    settings = Settings()
    records = stream_records(DEV_STREAM, 150) + stream_records(DEV_STREAM.parent / "feeds-dev.jsonl", 250)
    feeds = [record_of(json.loads(line)) for line in FEED_ITEMS.open()]
    feeds.sort(key=lambda r: r["published_ts"])  # an outlet's furniture is learnt from its earlier items
    items = stripped(records, settings) + stripped(feeds, settings) + stripped(odd_records(), settings)
    assert any(s.sentences_dropped for _, s in items) and any(s.segments_dropped for _, s in items)
    batch = check_batch(items, settings)
    assert sum(isinstance(f, InvalidArticle) for f in batch) == 2


def test_features_do_not_depend_on_the_batch_or_the_settings():
    # Few hashed features: terms that share one are common, and are added up as scikit-learn adds them.
    for settings in (Settings(), Settings(hash_features=64, title_weight=1, entity_weight=3),
                     Settings(shingle_size=8, num_perm=64, lsh_threshold=0.8)):
        items = stripped([article(**COURIER), article(**BANK), *odd_records()], settings)
        check_batch(items, settings)
        check_batch(items[::-1], settings)
        check_batch(items[2:3], settings)


def test_terms_are_named_from_the_whole_headline_when_its_furniture_is_left_out():
    # Items of one outlet under one headline prefix: from the third on, the
    # prefix is furniture the terms leave out, yet a term is still shown as its
    # first word in the whole headline ("Running" for the body's "runs"), in a
    # batch of several such items, bare ones and others together.
    settings = Settings()
    records = [article(f"velmora-{i}", f"Running Velmora Wire: Storm {word} item {i}",
                       f"Kestrel Council runs shelters. Storm {word} runs on in Velmora.", hours=i,
                       source="velmora-wire")
               for i, word in enumerate(["hits", "hit", "hitting", "lingers", "lingered"])]
    bare = [dict(article(f"bare-{i}", "The", "is 42 of it", hours=i), id=f"bare-{i}") for i in range(2)]
    items = stripped(records[:3] + bare[:1] + records[3:] + bare[1:], settings)
    assert sum(s.segments_dropped > 0 for _, s in items) >= 2
    batch = check_batch(items, settings)
    named = batch[-2].term_names.values()
    assert "running" in named and "velmora" in named


def test_an_article_that_cannot_be_featurised_fails_alone():
    settings = Settings()
    broken = dict(article(**BANK), id="broken", title=None)  # an error of ours, not the article's: it fails alone
    wordless = dict(article(**BANK), id="wordless", title="", body=" ... ")
    items = stripped([article(**COURIER), wordless, article(**BANK)], settings)
    items.insert(1, (broken, items[0][1]))
    batch = Featuriser(settings).featurise_many(items)
    assert isinstance(batch[1], TypeError) and isinstance(batch[2], InvalidArticle)
    assert same(batch[0], Featuriser(settings).featurise_stripped(*items[0])) == []
    assert same(batch[3], Featuriser(settings).featurise_stripped(*items[3])) == []


def test_a_vocabulary_forgotten_between_batches_changes_nothing():
    settings = Settings()
    featuriser = Featuriser(settings)
    featuriser.vocabulary.LIMIT = 20  # forgotten before nearly every batch
    items = stripped([article(**COURIER), article(**BANK), *odd_records()], settings)
    for _ in range(3):
        for (record, strip), features in zip(items, featuriser.featurise_many(items)):
            if not isinstance(features, Exception):
                assert same(features, Featuriser(settings).featurise_stripped(record, strip)) == []


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("aAbBzZ09 .!?\n\t\r'\"_-,;:()\x01\x0b\x1c") + [
        "Mr. ", "U.", "Dr ", "St. ", "The ", "Paris ", "Prof.", "Mrs.", "Sgt. ", "9Mr. A", "_Mr. B", "A.B. C",
        "x.\nY Z", "www.", ".com", "a@b", "http://x.co/y", "(z.org)", " . ", ".\n", "!\t"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n)]


@pytest.mark.parametrize("scan_from", [0, T._SCAN_FROM])  # every batch scanned as arrays; as the size decides
def test_sentences_and_names_of_many_texts_are_those_the_patterns_find(monkeypatch, scan_from):
    monkeypatch.setattr(T, "_SCAN_FROM", scan_from)
    texts = random_texts(1, 3000) + ["", " ", ".", "\n", "a.", "A. b", "Mr. X", "end.\nNext One"]
    for start in range(0, len(texts), 97):
        chunk = texts[start:start + 97]
        for text, split, names in zip(chunk, T.texts_sentences(chunk), T.texts_entities(chunk)):
            assert split == [p.strip() for p in T._SENTENCE_BREAK.split(text) if p.strip()], text
            later = []
            for sentence in T._SENTENCE_BREAK.split(text):
                later += T._ENTITY_WORD.findall(sentence)[1:]
            assert names == list(filter(None, map(T._NAME_OF.__getitem__, later))), text


def test_addresses_found_among_candidates_are_those_every_token_judged_finds():
    for text in random_texts(2, 3000):
        expected = "\n".join(" ".join(t for t in line.split() if not T._address(t)) for line in text.split("\n"))
        assert T.without_addresses(text) == (expected if T._may_hold_address(text) else text), text


def test_the_decider_fails_a_wordless_article_alone_and_decides_the_rest(store):
    from storyengine.decider import Decider

    records = [article(**COURIER), article("wordless", title="!!!", body="\u2014 ... \u2014"), article(**BANK)]
    ids = [a.id for a in store.accept_articles(records)]
    outcomes = {o.article_id: o.error for o in Decider(store).process_many(ids)}
    assert isinstance(outcomes.pop("wordless"), InvalidArticle)
    assert outcomes == {"fire-courier": None, "bank": None}
    assert {store.get_article(i)["status"] for i in outcomes} == {"processed"}
