"""The engine's two records in Redis, the article hash and the story hash:
their field names, how their values are stored and how they are read back.
Who writes a story and its scores: storyengine.story_writer.
"""
from __future__ import annotations

import json
import zlib

import numpy as np

from . import signatures
from .buckets import Bucket
from .vectors import SparseVector


def decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# ---------------------------------------------------------------------- articles
# What a newcomer is compared against, read from a candidate article's hash.
CANDIDATE_FIELDS = ("story", "duplicate_of", "published_ts", "shingle_set")
# What a reader of an article is given (store.get_article); the service makes the API's answer of it.
ARTICLE_PUBLIC_FIELDS = (
    "id", "source", "url", "title", "language", "published_ts", "received_ts", "status",
    "story", "duplicate_of", "similarity", "decision", "error", "processed_ts", "client_id", "published_assigned",
    "title_derived",
)
# Of each member of a story, as store.get_story gives it.
MEMBER_PUBLIC_FIELDS = ("id", "source", "url", "title", "published_ts", "duplicate_of", "similarity")


def parse_candidate(row: list) -> dict:
    """A candidate article's ``CANDIDATE_FIELDS`` row: story, duplicate_of, published, shingles."""
    story, duplicate_of, published, shingles = row
    return {"story": decode(story) if story else None, "duplicate_of": decode(duplicate_of or b"") or None,
            "published": float(published) if published else None,
            "shingles": signatures.shingle_set_from_bytes(shingles) if shingles else None}


# What only a canonical article keeps (it is compared with newcomers and counts
# in the term statistics); a canonical article that becomes a copy drops them.
CANONICAL_ONLY_FIELDS = ("shingle_set", "bands", "terms")


# json.dumps(separators=(",", ":")) makes this encoder anew for every call. A
# decision is a tree of fresh dicts and lists, so no check for cycles is needed.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def compact_decision(decision: dict) -> bytes:
    """A decision as stored: the parts that differ per article (the rule and
    method texts are the settings', added back when it is read), compressed."""
    return zlib.compress(_COMPACT_JSON.encode(decision).encode("utf-8"), 6)


def expand_decision(stored: bytes | None) -> dict | None:
    """A decision as compact_decision stored it."""
    return json.loads(zlib.decompress(stored)) if stored else None


BINARY_FIELDS = frozenset({"bands", "shingle_set", "centroid", "rep_vec", "terms", "decision"})


def decode_hash(raw: dict) -> dict:
    """Field names and text values as str; binary fields (signatures, vectors) left as bytes."""
    out = {}
    for k, v in raw.items():
        name = decode(k)
        out[name] = v if name in BINARY_FIELDS else decode(v)
    return out


def article_record(raw: dict) -> dict:
    """An article's fields as read, parsed: text as str, empty or missing ones
    None, times (``*_ts``) and the similarity as floats, the decision
    decompressed, the two flags as bools."""
    record = {name: (decode(value) or None) for name, value in raw.items() if name != "decision"}
    if "decision" in raw:
        record["decision"] = expand_decision(raw["decision"])
    for name in ("similarity", "published_ts", "received_ts", "processed_ts"):
        if record.get(name) is not None:
            record[name] = float(record[name])
    # The article came without a date and took the stream's time (storyengine.clock).
    if "published_assigned" in record:
        record["published_assigned"] = record["published_assigned"] == "1"
    # The article came without a title and its headline was made from its body.
    if "title_derived" in record:
        record["title_derived"] = record["title_derived"] == "1"
    return record


def decided_article_fields(features, story_id: str, duplicate_of: str | None, similarity: float | None,
                           decision: dict, canonical: dict | None = None) -> dict:
    """The fields a decision writes into an article's hash (``features``: the
    article's storyengine Features; ``canonical``: its
    :func:`canonical_article_fields`, if made already)."""
    fields = {"status": "processed", "story": story_id, "duplicate_of": duplicate_of or "",
              # None when nothing was compared (it opened its story, or took over as the canonical article)
              "similarity": "" if similarity is None else round(float(similarity), 4),
              "decision": compact_decision(decision),
              "fingerprint": features.fingerprint}
    if not features.dated:
        fields["published_ts"] = features.published  # the stream's time, given under the lock
    if not duplicate_of:  # only canonical articles are ever compared with newcomers
        fields.update(canonical_article_fields(features) if canonical is None else canonical)
    return fields


def canonical_article_fields(features) -> dict:
    """``CANONICAL_ONLY_FIELDS`` as stored. The body itself is not kept once
    decided: what is needed later is what the text counted for (its terms, if
    an earlier copy takes over) and its shingles and band slots (to compare and
    to age out). They depend on the text alone, so the decider encodes them
    before it takes the lock (storyengine.run_decider.RunDecider.prepare)."""
    return {"shingle_set": signatures.shingle_set_to_bytes(features.shingle_set),
            "bands": signatures.BandLayout.slots_to_bytes(features.bands),
            "terms": compress_features(features.term_indices)}


def compress_features(features: np.ndarray) -> bytes:
    """A canonical article's distinct term features (sorted), as stored: the
    gaps between them, compressed (about 2 bytes a term)."""
    features = np.asarray(features, dtype=np.int64)
    gaps = np.empty(len(features), dtype="<u4")
    gaps[:1] = features[:1]
    np.subtract(features[1:], features[:-1], out=gaps[1:], casting="unsafe")
    return zlib.compress(gaps.tobytes(), 6)


def decompress_features(raw: bytes | None) -> np.ndarray:
    if not raw:
        return np.empty(0, dtype=np.int64)
    return np.cumsum(np.frombuffer(zlib.decompress(raw), dtype="<u4").astype(np.int64))


# ---------------------------------------------------------------------- stories
BUCKET_PREFIX = "b:"


def bucket_field(index: int) -> str:
    """The story hash field of its day bucket ``index`` (storyengine.stories.bucket_index)."""
    return f"{BUCKET_PREFIX}{index}"


def stored_buckets(fields: dict) -> dict[int, Bucket]:
    """Every day bucket in a story hash read whole (HGETALL)."""
    prefix = BUCKET_PREFIX.encode()
    return {int(name[len(prefix):]): Bucket.from_bytes(value) for name, value in fields.items()
            if isinstance(name, bytes) and name.startswith(prefix)}


def json_field(raw, default):
    """A story field stored as JSON (indexed, canonicals, merged_from, term_names)."""
    return json.loads(raw) if raw else default


STORY_FIELDS = ("centroid", "first_seen", "last_updated", "originals", "article_count", "rep_vec",
                "term_names", "headline", "representative", "canonicals", "indexed")
# What a reader of a story is given (store.get_story, store.list_stories), with its outlets' counts.
STORY_PUBLIC_FIELDS = ("id", "headline", "representative", "first_seen", "last_updated", "article_count",
                       "originals", "top_terms", "merged_from")


def encode_story_fields(*, first_seen: float | None = None, last_updated: float | None = None,
                        article_count: int | None = None, originals: int | None = None,
                        indexed: list[int] | None = None, canonicals: list[str] | None = None,
                        headline: str | None = None, representative: str | None = None,
                        centroid: SparseVector | None = None, rep_vec: SparseVector | bytes | None = None,
                        term_names: dict | None = None, top_terms: list[str] | None = None,
                        merged_from: list[str] | None = None, buckets: dict[int, Bucket] | None = None,
                        **plain) -> dict:
    """The given fields of a story hash as stored (only those given)."""
    out: dict = dict(plain)
    for name, value in (("first_seen", first_seen), ("last_updated", last_updated),
                        ("article_count", article_count), ("originals", originals),
                        ("headline", headline), ("representative", representative)):
        if value is not None:
            out[name] = value
    for name, value in (("indexed", indexed), ("canonicals", canonicals), ("term_names", term_names),
                        ("top_terms", top_terms), ("merged_from", merged_from)):
        if value is not None:
            out[name] = json.dumps(value)
    if centroid is not None:
        out["centroid"] = centroid.to_bytes()
    if rep_vec is not None:
        out["rep_vec"] = rep_vec if isinstance(rep_vec, bytes) else rep_vec.to_bytes()
    for index, bucket in (buckets or {}).items():
        out[bucket_field(index)] = bucket.to_bytes()
    return out


def story_record(raw: dict, sources: dict) -> dict:
    """A story's fields as read, parsed (counts as ints, times as floats, the
    term and merge lists decoded), with ``sources``: each outlet's article count."""
    s = {name: decode(value) for name, value in raw.items()}
    return {
        "id": s["id"],
        "headline": s["headline"],
        "representative": s["representative"],
        "first_seen": float(s["first_seen"]),
        "last_updated": float(s["last_updated"]),
        "article_count": int(s["article_count"]),
        "originals": int(s["originals"]),
        "top_terms": json.loads(s["top_terms"] or "[]"),
        "merged_from": json.loads(s["merged_from"] or "[]"),
        "sources": {name.decode("utf-8"): int(count) for name, count in sources.items()},
    }
