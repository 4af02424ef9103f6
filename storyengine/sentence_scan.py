"""Sentence breaks of many ASCII texts at once, as array operations over their
bytes: what storyengine.text's sentence pattern finds one text at a time
(sentences, entities), without a regex pass per text.

A sentence breaks at a line break, or at . ! ? before white space, unless
the full stop ends a title ("Mr") or a lone capital ("U.S."), each a whole
word: the pattern's look-behinds, ``\\b{title}\\.`` and ``\\b[A-Z]\\.``.
"""
from __future__ import annotations

import numpy as np

# Each ASCII byte's class (by bytes.translate). A class test "c - first < n"
# on uint8 is a range test: below the first, it wraps round to a large number.
_LOWER, _UPPER, _DIGIT, _SPACE, _LINE, _STOP, _MARK = range(1, 8)
_CLASSES = bytes(_LOWER if chr(c).islower() else _UPPER if chr(c).isupper() else
                 _DIGIT if chr(c).isdigit() or chr(c) == "_" else _LINE if chr(c) == "\n" else
                 _SPACE if chr(c).isspace() else _STOP if chr(c) == "." else _MARK if chr(c) in "!?" else 0
                 for c in range(128)) + bytes(128)


class Scan:
    """Texts joined by line breaks (``whole``), each byte's class, and where
    the sentences break: text i is ``whole[bounds[i]:bounds[i + 1] - 1]``."""

    def __init__(self, texts: list[str], titles: frozenset[str]) -> None:
        self.whole = "\n".join(texts)
        self.bounds = np.cumsum([0] + [len(t) + 1 for t in texts])
        raw = self.whole.encode("ascii")
        self.data = data = np.frombuffer(raw.translate(_CLASSES), dtype=np.uint8)
        # . ! ? before white space in the same text (the line break after a text's last byte joins it to the next)
        ends = np.flatnonzero(((data[:-1] - _STOP) < 2) & ((data[1:] - _SPACE) < 2))
        if len(texts) > 1:
            ends = np.setdiff1d(ends, self.bounds[1:-1] - 2)
        # A full stop right after a whole word that is a title or one capital letter ends no sentence.
        stops = ends[(data[ends] == _STOP)]
        longest = max(map(len, titles))
        size = np.zeros(len(stops), dtype=np.int64)
        running = np.ones(len(stops), dtype=bool)
        code = np.zeros(len(stops), dtype=np.int64)
        chars = np.frombuffer(raw, dtype=np.uint8)
        for k in range(1, longest + 2):  # the word's length (past the longest: no title), its bytes from the last
            at = np.maximum(stops - k, 0)
            running &= (stops >= k) & ((data[at] - _LOWER) < 3)  # a word byte (\w): letter, digit or _
            size += running
            code = np.where(running, (code << 8) | chars[at], code)
        codes = np.array([int.from_bytes(t.encode("ascii"), "little") for t in titles], dtype=np.int64)
        kept = ((size == 1) & (data[np.maximum(stops - 1, 0)] == _UPPER)) | \
               ((size > 1) & (size <= longest) & np.isin(code, codes))
        line_breaks = np.flatnonzero(data == _LINE)
        self.breaks = np.sort(np.concatenate((line_breaks, ends[~np.isin(ends, stops[kept])])))

    def sentences(self) -> list[list[str]]:
        """Each text's parts between its breaks (the breaks left out), as a pattern's split gives them."""
        cuts = self.breaks.tolist()  # the joining line breaks among them
        at = np.searchsorted(self.breaks, self.bounds).tolist()
        whole, bounds = self.whole, self.bounds.tolist()
        out = []
        for i in range(len(bounds) - 1):
            inner = cuts[at[i]:at[i + 1] - 1] if i < len(bounds) - 2 else cuts[at[i]:at[i + 1]]
            starts = [bounds[i], *(c + 1 for c in inner)]
            ends = [*inner, bounds[i + 1] - 1]
            out.append([whole[a:b] for a, b in zip(starts, ends)])
        return out

    def later_capitalised(self) -> list[list[str]]:
        """Each text's capitalised words of two letters or more (runs of
        letters) that are not the first word of their sentence, in order."""
        data = self.data
        letter = np.zeros(len(data) + 2, dtype=bool)
        letter[1:-1] = (data - _LOWER) < 2
        edges = np.flatnonzero(letter[1:] != letter[:-1])
        starts, stops = edges[0::2], edges[1::2]
        sentence = np.searchsorted(self.breaks, starts)
        later = np.concatenate(([False], sentence[1:] == sentence[:-1]))
        chosen = later & (stops - starts > 1) & (data[starts] == _UPPER)
        starts, stops = starts[chosen], stops[chosen]
        at = np.searchsorted(starts, self.bounds).tolist()
        starts, stops, whole = starts.tolist(), stops.tolist(), self.whole
        return [[whole[a:b] for a, b in zip(starts[lo:hi], stops[lo:hi])] for lo, hi in zip(at, at[1:])]
