"""What deciding an article yields: the internal :class:`Decision` (what the
engine made of it, tagged by kind) and the :class:`Outcome` returned to callers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .features import Features

# copy: a copy of a canonical article, in its story; joined, opened: an
# original that joined a story or opened one; promoted: a copy published
# before the canonical copies it matches, which must take over from them
# (applied against the store itself, outside the batch: storyengine.duplicates.Promotion).
Kind = Literal["copy", "joined", "opened", "promoted"]


@dataclass
class Outcome:
    """What became of one article, as process and process_many return it."""
    article_id: str
    story_id: str
    duplicate_of: str | None
    opened_story: bool
    already_processed: bool = False
    error: Exception | None = None  # InvalidArticle or NotFound: this article was not decided


@dataclass
class Decision:
    kind: Kind
    article_id: str
    story_id: str
    duplicate_of: str | None = None
    # promoted: the verified canonical copies it takes over from, and the duplicate report so far.
    takes_over: list[dict] = field(default_factory=list)
    duplicate_report: dict | None = None

    def outcome(self) -> Outcome:
        return Outcome(self.article_id, self.story_id, self.duplicate_of, opened_story=self.kind == "opened")


def with_text_report(decision: dict, f: Features) -> dict:
    """The decision report, saying how many of the body's sentences and of
    the headline's parts were its outlet's boilerplate and left out."""
    if f.boilerplate:
        decision.setdefault("text", {})["boilerplate_sentences_left_out"] = f.boilerplate
    if f.headline_boilerplate:
        decision.setdefault("text", {})["headline_parts_left_out"] = f.headline_boilerplate
    return decision


def received_ts(record: dict) -> float | None:
    """When the article was accepted (for the decided-articles metrics), if recorded."""
    try:
        return float(record["received_ts"])
    except (KeyError, TypeError, ValueError):
        return None
