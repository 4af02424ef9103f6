"""The engine's tunable parameters, in one frozen dataclass.

Nothing here reads the environment at import time: the service and the workers
build a ``Settings`` from their own configuration with :func:`Settings.from_env`,
and tests and the evaluation build one directly.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .errors import ConfigError

MAX_SHINGLE_SIZE = 8  # storyengine.signatures mixes at most this many word hashes


@dataclass(frozen=True)
class Settings:
    # --- Redis layout
    key_prefix: str = "sw"

    # --- duplicates (MinHash over word shingles, LSH for candidates)
    shingle_size: int = 5
    num_perm: int = 128
    # LSH is tuned to catch pairs at this Jaccard (25 bands of 5 rows: a pair
    # at Jaccard 0.7 is a candidate 99 % of the time); verification decides.
    # Copies of another length (low Jaccard) are found through their story.
    lsh_threshold: float = 0.5
    # A candidate is a duplicate when this share of the smaller text's
    # shingles (headline and body) is found in the larger one: a truncated
    # reprint, added boilerplate or a changed headline keep it high; a
    # different outlet's own write-up stays far below it.
    duplicate_containment: float = 0.8
    # Texts with fewer shingles than this are copies only when identical.
    containment_min_shingles: int = 3
    # A containment counts only if an overlap that large is this unlikely by
    # accident (storyengine.signatures.ShingleMask: a long text's 16-bit
    # shingles match a third of any short text's by chance).
    duplicate_chance_limit: float = 1e-6
    # Besides LSH, the newest canonical articles of the best-matching stories
    # (this many of them, at most that many articles each) are checked for
    # containment (a short copy of a long text has a low Jaccard, so LSH alone misses it).
    duplicate_candidate_stories: int = 3
    story_duplicate_candidates: int = 64

    # --- boilerplate, learnt per outlet (storyengine.boilerplate)
    # A sentence or line the same outlet has used word for word in this many
    # earlier items is its furniture (a footer, "Read more", a share bar),
    # not news: left out of story terms (from the second item on, so two
    # items of a new outlet are not joined through it) and of the text
    # copies are compared on (from the third: an outlet may reprint one
    # wire article twice, and the second must still be found a copy by its
    # whole text). News sentences are rewritten as a story develops;
    # templates are not. An item whose every sentence was seen is a repeat,
    # judged whole.
    boilerplate_min_items: int = 1
    boilerplate_min_items_copies: int = 2
    # A part of a headline ("…: Live Updates", "The Papers: …", "Your
    # Monday Briefing") that the outlet has used in this many earlier
    # headlines names its series or section, not the event: left out of story
    # terms (a headline that is all such parts is judged whole). Two, not
    # one: a story's own label ("Canada shooting: …") recurs too, but less.
    boilerplate_min_items_headline: int = 2
    # Only this many sentences at each end of a body, of at most this many
    # words, are counted and judged: furniture sits at the edges of an item
    # and is short ("Read more", a share bar, a copyright line, a newsletter
    # pitch), and counting less keeps the counters small.
    boilerplate_edge_sentences: int = 4
    boilerplate_max_words: int = 20
    # Counters kept per outlet (Misra-Gries): a line on every item, or on most,
    # always survives. Under 512, Redis keeps the hash in its compact
    # encoding (hash-max-ziplist-entries): about 10 KB an outlet at most.
    boilerplate_counters: int = 500
    # A line at the edge of a body that gives an address (a URL, a handle)
    # with at most this many other words is a link to the outlet ("Follow us
    # on Twitter: https://..."), left out from an outlet's very first item.
    boilerplate_link_words: int = 8

    # --- stories (TF-IDF, online average link with a time kernel)
    hash_features: int = 1 << 18
    title_weight: int = 2
    # Capitalised words inside a sentence (names, places, organisations)
    # count this many extra times, as their own features.
    entity_weight: int = 2
    # An article joins the best-scoring story whose score reaches its
    # threshold (storyengine.stories.choose_story); else it opens a new story.
    # What a story's score is (storyengine.stories.rank_stories): "by_length"
    # or "average". "average" is the mean cosine over the story's members in
    # the window (average link). "by_length" keeps that for full texts, where
    # it keeps two similar events (two earthquakes) apart better than a
    # centroid, and for short texts (a headline, a snippet) takes the cosine
    # with each time bucket's centroid instead: an average over hundreds of
    # short, varied members sinks as the story grows (two headlines of one
    # event share a word or two), and big stories of short items split; the
    # centroid holds the story's common words at their weight and does not sink.
    story_score: str = "by_length"
    # The threshold for an article of full_text_words distinct words or more
    # (average link)... 0.16 before stems: texts counted by their stems share
    # more terms, so full texts' scores rise (0.18 keeps the dev stream's
    # precision above 0.90; on the tune half 0.16 and 0.18 are within 0.002).
    story_threshold: float = 0.18
    # ...and for one of short_text_words or fewer (centroid cosine), both the
    # score and the threshold blended linearly in log(words) between: a short
    # text names fewer of its story's words. 0.12 while the short score was
    # averaged over the members' count; weighed by their kernels it no longer
    # sinks with a story's age, and scores are higher. On the tune half of the
    # six evaluation rows 0.12 and 0.14 tie (0.8482, 0.8481; 0.16: 0.8467);
    # 0.14 keeps more of dev at 30 words (0.919 against 0.908).
    short_text_threshold: float = 0.14
    short_text_words: int = 20
    full_text_words: int = 60
    # Against a single member, a short article must reach this instead: two
    # short texts share a word or two ("coronavirus", "Premier League") by
    # chance, so one pair's cosine is a noisy measure of one event. The excess
    # over the threshold shrinks as 1/sqrt(members) (a centroid of many
    # averages the noise away) and as short_text_words/words for longer
    # articles (stories.threshold_for). Without it, on a feed of mostly
    # single items, unrelated short items paired at 0.16-0.25.
    single_member_threshold: float = 0.23
    # A join needs at least this many distinct words shared with the story
    # (a word and its entity feature are one): one word is a topic, not an event.
    min_shared_words: int = 2
    # Gaussian time kernel between an article and each story member, in hours.
    time_sigma_hours: float = 36.0
    # Members further apart than this never count; stories whose newest
    # article is older than this are never candidates.
    story_window_hours: float = 96.0
    # Members are summed per time bucket of this many hours, keeping this
    # many of each bucket's heaviest terms.
    bucket_hours: float = 24.0
    bucket_terms: int = 500
    # The repair pass merges two stories whose link (stories.story_link: the
    # same score as assignment, between their buckets, for the length of their
    # texts) reaches this for full texts, short_merge_threshold for short ones
    # (blended between), plus the single-member excess when the smaller story
    # is small and its texts short.
    merge_threshold: float = 0.2
    short_merge_threshold: float = 0.2
    # How many of an article's heaviest terms look up candidate stories.
    lookup_terms: int = 20
    # Of the stories those terms find, the ones sharing the most term weight
    # with the article are scored, at most this many: in a busy window a
    # common term finds hundreds of stories, and the right one shares the
    # article's heaviest terms.
    candidate_stories: int = 30
    # Each lookup term brings at most its this many most recently updated stories.
    stories_per_term: int = 64
    # How many of a story's heaviest centroid terms index it.
    index_terms: int = 30
    # How many centroid terms a story keeps (the rest is noise).
    centroid_terms: int = 400
    top_terms: int = 10
    # A newcomer becomes a story's representative (its headline) only when it
    # is this much closer to the story's centre (cosine) than the current one:
    # the earlier original is kept unless another clearly represents it better.
    representative_margin: float = 0.05

    # --- the stream clock and retention (storyengine.clock, storyengine.retention)
    # A story whose newest article is this many days older than the stream
    # clock is deleted, with its articles and index entries; an article
    # already that old on the clock is refused when posted.
    retention_days: float = 30.0
    # The clock is the clock_support-th newest of the published times held,
    # each outlet holding at most its clock_per_source newest: no single
    # article or outlet can move it (storyengine.clock says why).
    clock_support: int = 3
    clock_per_source: int = 2
    # An outlet silent this long (wall clock) leaves the clock until it posts
    # again, so one that stopped does not hold the clock back.
    clock_idle_hours: float = 6.0
    # An undated article takes now while the clock is within this many hours
    # of now (a live stream), else the clock (a replayed archive).
    live_stream_hours: float = 24.0
    # What retention removed answers 410 Gone for this many days (wall
    # clock), then 404: the tombstones expire by themselves.
    tombstone_days: float = 7.0

    # --- admission and failures
    # Articles accepted and not yet decided, at most: past it a post answers
    # 503 with Retry-After and stores nothing (each waits with its body).
    max_waiting: int = 100_000
    # Tries at deciding one article that end in an error of ours (not a
    # Redis outage): after this many it is marked failed, with the reason.
    max_attempts: int = 3

    # --- the deciders' in-memory replicas (storyengine.replica, change_log)
    # Entries the change log keeps (one per transaction under the lock, about
    # 6 KB an article decided): a decider that fell further behind than this
    # forgets what it holds and reads it afresh. Workers take turns, so each is
    # a few entries behind at most.
    change_log_entries: int = 16
    # Records a replica holds of each small kind (term-index sets, band slots,
    # fingerprints, about 120 bytes each) and of each large one (stories with
    # their vectors, a few KB each, and candidate articles with their shingle
    # sets); past it the oldest half is forgotten, and read again from Redis
    # when next needed. A story window holds far fewer stories than this.
    replica_records: int = 400_000
    replica_stories: int = 10_000
    # A commit appends its document-frequency changes to {p}:df:deltas (8
    # bytes a changed feature); once they add up to this many bytes it writes
    # the folded counters (4 bytes a feature, 1 MB by default) instead. This
    # bounds what a reader folds, and what the deltas keep in memory; the
    # append-only file then gets the counters once per this many delta bytes.
    df_fold_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "key_prefix":
                if not value or not all(c.isalnum() or c in "-_." for c in value):
                    problems.append("key_prefix must be letters, digits, '-', '_' or '.'")
            elif isinstance(value, (int, float)) and value <= 0:
                problems.append(f"{f.name} must be positive, got {value!r}")
        if self.story_score not in ("by_length", "average"):
            problems.append(f"story_score must be 'by_length' or 'average', got {self.story_score!r}")
        if self.full_text_words < self.short_text_words:
            problems.append("full_text_words must be at least short_text_words")
        for name in ("lsh_threshold", "duplicate_containment", "duplicate_chance_limit", "story_threshold",
                     "merge_threshold", "short_text_threshold", "single_member_threshold", "short_merge_threshold"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if 1 < self.clock_support <= self.clock_per_source:
            problems.append(f"clock_support ({self.clock_support}) must exceed clock_per_source "
                            f"({self.clock_per_source}), or one outlet could move the clock (1 makes the clock the "
                            "newest time seen, trusting every date)")
        if self.hash_features > 1 << 24:
            problems.append(f"hash_features must be at most {1 << 24} (stored in 3 bytes), got {self.hash_features!r}")
        if self.shingle_size > MAX_SHINGLE_SIZE:
            problems.append(f"shingle_size must be at most {MAX_SHINGLE_SIZE}, got {self.shingle_size!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = "STORYWIRE_") -> "Settings":
        """Build settings from ``STORYWIRE_<FIELD>`` variables (for example
        ``STORYWIRE_STORY_THRESHOLD=0.35``). A value that does not parse is a
        :class:`ConfigError` naming the variable, never a silent default."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            name = prefix + f.name.upper()
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw) if kind is not str else raw
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}; fix or unset it") from None
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)
