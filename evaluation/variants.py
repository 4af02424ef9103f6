"""Variants of a labelled stream, each scored like the stream itself: half of its
stories (a split by topic), shorter texts (snippets, headlines), stories covered
over longer, and more copies of it (a longer stream with its difficulty)."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

from storyengine.text import STOPWORDS


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


def shorten(rows: list[dict], snippet_words: int | None = None, headlines_only: bool = False) -> list[dict]:
    """The rows as a feed of short items would give them: ``headlines_only``
    keeps each title alone (the body dropped), ``snippet_words`` N keeps the
    first N words of each body (0: none of it). Neither: the rows as they are."""
    if headlines_only:
        return [dict(r, body="") for r in rows]
    if snippet_words is not None:
        if snippet_words < 0:
            raise ValueError("snippet_words must be 0 or more")
        return [dict(r, body=" ".join((r.get("body") or "").split()[:snippet_words])) for r in rows]
    return rows


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
    return _LATIN_WORD.sub(lambda m: m.group(0) if m.group(0).lower() in STOPWORDS else m.group(0) + suffix, text)


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
