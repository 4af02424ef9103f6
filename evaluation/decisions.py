"""The answers of a replay, kept as they are given and followed through later
changes, and turned into one prediction per stream row."""
from __future__ import annotations

from collections import defaultdict

from .scores import unpredicted


class Decisions:
    """The engine's answer about each article of a replay, kept from the
    moment it is given: ``{"id", "story", "duplicate_of"}`` per article.

    Retention deletes what is older than its window on the stream's own
    clock, so when a replayed stream spans more than the window, most of its
    articles are gone from the store by the end: their answers cannot be read
    back then, and are kept here as they are made (``decided``). Two things
    change an answer after it was given, and are followed:

    - the repair pass merges one story into another (``merged``, from its
      report): an article's story is the end of the chain of merges from the
      story it was given, however many merges later;
    - a copy published earlier than the canonical article arriving after it
      becomes the canonical one, and the old canonical article and its copies
      now name it as what they copy: only the store knows, so the replay reads
      answers back (``decided`` again) while the articles are still stored.

    An article that failed or was refused gets no answer, and says why
    (``refused``): it is scored as a story of its own, never left out."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[str, str | None]] = {}
        self.merged_into: dict[str, str] = {}
        self.problems: dict[str, str] = {}

    def decided(self, article_id: str, story: str, duplicate_of: str | None) -> None:
        self.answers[article_id] = (story, duplicate_of or None)
        self.problems.pop(article_id, None)

    def refused(self, article_id: str, reason: str) -> None:
        if article_id not in self.answers:
            self.problems[article_id] = reason

    def merged(self, kept: str, merged: str) -> None:
        if kept != merged:
            self.merged_into[merged] = kept

    def story(self, story_id: str) -> str:
        """Where a story's articles are now: itself, or the end of its chain of merges."""
        seen = set()
        while story_id in self.merged_into and story_id not in seen:
            seen.add(story_id)
            story_id = self.merged_into[story_id]
        return story_id

    def prediction(self, article_id: str) -> dict:
        """The answer to score; story null when there is none."""
        if article_id not in self.answers:
            return {"id": article_id, "story": None, "duplicate_of": None}
        story, duplicate_of = self.answers[article_id]
        return {"id": article_id, "story": self.story(story), "duplicate_of": duplicate_of}

    def why_unpredicted(self, article_ids: list[str]) -> dict[str, int]:
        """Reasons for the articles of ``article_ids`` with no answer, most common first."""
        reasons: dict[str, int] = defaultdict(int)
        for i in article_ids:
            if i not in self.answers:
                reasons[self.problems.get(i, "no decision")] += 1
        return dict(sorted(reasons.items(), key=lambda x: (-x[1], x[0])))


def predictions_of(rows: list[dict], keys: list[str], decisions, row_of: dict) -> list[dict]:
    """One prediction per stream row, in the stream's ids: the service's ids
    are made from them (scoped by outlet), and ``row_of`` maps them back."""
    predictions = []
    for row, key in zip(rows, keys):
        answer = decisions.prediction(key)
        predictions.append({"id": row["id"], "story": answer["story"],
                            "duplicate_of": row_of.get(answer["duplicate_of"], answer["duplicate_of"])})
    return predictions


def prediction(article: dict) -> dict:
    return {"id": article["id"], "story": article.get("story"), "duplicate_of": article.get("duplicate_of") or None}


def unpredicted_notes(rows: list[dict], predictions: list[dict], reasons: dict[str, int]) -> list[str]:
    missing = unpredicted(predictions, rows)
    if not missing:
        return []
    return [f"{len(missing)} of {len(rows)} articles have no prediction, each scored as a story of its own "
            f"and a copy of nothing (e.g. {', '.join(missing[:3])}):"] + \
        [f"  {count} {reason}" for reason, count in reasons.items()]
