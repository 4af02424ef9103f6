"""Scores for a labelled stream, as ``shared/eval/README.md`` defines them.

- Story clustering: B-cubed precision, recall and F1 over articles (a duplicate
  belongs to its canonical's story), plus ARI, AMI and NMI.
- Dedup: pairwise precision, recall and F1 over duplicate groups (articles
  joined through ``duplicate_of``), gray pairs left out.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from itertools import combinations

from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

from .text import _STOPWORDS


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def bcubed(predicted: dict[str, str], gold: dict[str, str]) -> tuple[float, float, float]:
    ids = list(gold)
    pred_members: dict[str, set] = defaultdict(set)
    gold_members: dict[str, set] = defaultdict(set)
    for i in ids:
        pred_members[predicted[i]].add(i)
        gold_members[gold[i]].add(i)
    precision = recall = 0.0
    for i in ids:
        p_set, g_set = pred_members[predicted[i]], gold_members[gold[i]]
        both = len(p_set & g_set)
        precision += both / len(p_set)
        recall += both / len(g_set)
    precision /= len(ids)
    recall /= len(ids)
    return precision, recall, _f1(precision, recall)


def duplicate_groups(duplicate_of: dict[str, str | None]) -> dict[str, str]:
    """Article -> root of its duplicate group, following links to the end."""
    def root(i: str) -> str:
        seen = set()
        while duplicate_of.get(i) and i not in seen:
            seen.add(i)
            i = duplicate_of[i]
        return i
    return {i: root(i) for i in duplicate_of}


def _pairs(groups: dict[str, str], excluded: set[frozenset]) -> set[frozenset]:
    members: dict[str, list] = defaultdict(list)
    for i, g in groups.items():
        members[g].append(i)
    pairs = set()
    for group in members.values():
        for a, b in combinations(sorted(group), 2):
            pair = frozenset((a, b))
            if pair not in excluded:
                pairs.add(pair)
    return pairs


def duplicate_scores(predicted: dict[str, str | None], gold: dict[str, str | None],
                     gray_pairs: list[list[str]]) -> tuple[float, float, float]:
    excluded = {frozenset(p) for p in gray_pairs}
    pred_pairs = _pairs(duplicate_groups({i: predicted.get(i) for i in gold}), excluded)
    gold_pairs = _pairs(duplicate_groups(gold), excluded)
    hits = len(pred_pairs & gold_pairs)
    precision = hits / len(pred_pairs) if pred_pairs else 1.0
    recall = hits / len(gold_pairs) if gold_pairs else 1.0
    return precision, recall, _f1(precision, recall)


# The predicted story of an article with no prediction: a story of its own
# (the NUL keeps it apart from any id the engine gives).
_UNPREDICTED = "\0unpredicted:"


def unpredicted(predictions: list[dict], gold_rows: list[dict]) -> list[str]:
    """Ids of the gold rows with no prediction: none at all, or no story
    (an article that failed, was refused, or could not be read back)."""
    by_id = {p["id"]: p for p in predictions}
    return [r["id"] for r in gold_rows if not (by_id.get(r["id"]) or {}).get("story")]


def score(predictions: list[dict], gold_rows: list[dict], gray_pairs: list[list[str]]) -> dict[str, float]:
    """All metrics for predictions ``{"id", "story", "duplicate_of"}`` against
    gold rows ``{"id", "gold": {"story", "duplicate_of"}}``.

    An article with no prediction (missing, or its story null: it failed, was
    refused, or could not be read back) is not left out, which would score
    the run on the articles it managed: it counts as a story of its own and a
    copy of nothing, and ``unpredicted`` says how many there were."""
    by_id = {p["id"]: p for p in predictions}
    missing = set(unpredicted(predictions, gold_rows))
    ids = [r["id"] for r in gold_rows]
    gold_story = {r["id"]: r["gold"]["story"] for r in gold_rows}
    pred_story = {i: _UNPREDICTED + i if i in missing else by_id[i]["story"] for i in ids}
    p, r, f = bcubed(pred_story, gold_story)
    labels_true = [gold_story[i] for i in ids]
    labels_pred = [pred_story[i] for i in ids]
    dp, dr, df = duplicate_scores({i: None if i in missing else by_id[i].get("duplicate_of") for i in ids},
                                  {r["id"]: r["gold"]["duplicate_of"] for r in gold_rows}, gray_pairs)
    return {
        "articles": len(ids),
        "unpredicted": len(missing),
        "bcubed_precision": p, "bcubed_recall": r, "bcubed_f1": f,
        "ari": adjusted_rand_score(labels_true, labels_pred),
        "ami": adjusted_mutual_info_score(labels_true, labels_pred),
        "nmi": normalized_mutual_info_score(labels_true, labels_pred),
        "duplicate_precision": dp, "duplicate_recall": dr, "duplicate_f1": df,
    }


def topic_of(story: str) -> str:
    """The topic a gold story belongs to. ECB+ pairs two similar events per
    topic ("ecb-37ecb" and "ecb-37ecbplus", two earthquakes); they must land
    on the same side of a split, or tuning would see half of each pair."""
    if story.startswith("ecb-"):
        return story[: story.index("ecb", 4)] if "ecb" in story[4:] else story
    return story


def split_of(story: str) -> str:
    """"tune" or "held-out", fixed by a hash of the story's topic."""
    digest = hashlib.blake2b(topic_of(story).encode("utf-8"), digest_size=2).digest()
    return "tune" if digest[0] % 2 == 0 else "held-out"


def split(rows: list[dict], half: str) -> list[dict]:
    """The rows whose gold story falls in ``half``, in stream order."""
    return [r for r in rows if split_of(r["gold"]["story"]) == half]


# Any word with a letter in it. The look-behind starts a match only where a
# word starts, so a long run of digits is read once, not from every digit.
_LATIN_WORD = re.compile(r"(?<![A-Za-z0-9])[0-9]*[A-Za-z][A-Za-z0-9]*")


def _copy_suffix(copy: int) -> str:
    suffix = ""
    n = copy
    while n:
        n, r = divmod(n, 26)
        suffix += chr(ord("a") + r)
    return "q" + suffix


def _recode(text: str, suffix: str) -> str:
    # Every content word gets the copy's suffix; stopwords stay, so the
    # copy reads like a language with the same grammar and its own vocabulary.
    return _LATIN_WORD.sub(lambda m: m.group(0) if m.group(0).lower() in _STOPWORDS else m.group(0) + suffix, text)


def stretch(rows: list[dict], factor: float) -> list[dict]:
    """The rows with each story's coverage spread ``factor`` times as long:
    an article ``t`` after its story's first is moved to ``factor * t`` after
    it, and the stream is put back in time order. The dev stream gives each
    story's articles times within 48 hours of its start; real stories of
    short items run for days, and a score that sinks with a story's age
    splits them. A transform for evaluation only: it reads the gold stories."""
    if factor < 1:
        raise ValueError("the stretch factor must be 1 or more")
    def when(row):
        return datetime.fromisoformat(row["published_at"].replace("Z", "+00:00"))
    first: dict[str, datetime] = {}
    for row in rows:
        story = row["gold"]["story"]
        first[story] = min(first.get(story, when(row)), when(row))
    out = []
    for row in rows:
        start = first[row["gold"]["story"]]
        moved = start + (when(row) - start) * factor
        out.append(dict(row, published_at=moved.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")))
    return sorted(out, key=when)


def replicate(rows: list[dict], gray_pairs: list[list[str]], copies: int,
              shift: timedelta = timedelta(hours=24)) -> tuple[list[dict], list[list[str]]]:
    """A longer labelled stream made of ``copies`` copies of ``rows``: copy k
    is shifted ``k * shift`` later, its ids, URLs and gold labels are its own,
    and every content word carries a suffix of its own (copy 0 is the
    original). The copies share no vocabulary, so they are new events and new
    texts for the engine (not reprints of the first copy), while keeping the
    original's structure: the same stories, duplicates and difficulty. The
    stream stays in time order. Returns (rows, gray pairs)."""
    out = []
    for copy in range(copies):
        suffix = _copy_suffix(copy)
        tag = f"~c{copy}" if copy else ""
        for row in rows:
            published = datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")) + copy * shift
            new = dict(row, id=row["id"] + tag,
                       published_at=published.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            if copy:
                new.update(title=_recode(row["title"], suffix), body=_recode(row.get("body", ""), suffix),
                           url=row["url"] + ("&" if "?" in row["url"] else "?") + f"copy={copy}")
                if "gold" in row:
                    gold = row["gold"]
                    new["gold"] = {"story": gold["story"] + tag,
                                   "duplicate_of": gold["duplicate_of"] + tag if gold.get("duplicate_of") else None}
            out.append(new)
    out.sort(key=lambda r: r["published_at"])
    gray = [[a + (f"~c{c}" if c else ""), b + (f"~c{c}" if c else "")] for c in range(copies) for a, b in gray_pairs]
    return out, gray


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
