"""Labelled streams on disk: one JSON article per line (``shared/eval/README.md``),
its gray pairs beside it in a .meta.json file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STREAM = ROOT.parent / "shared" / "eval" / "dev.jsonl"
# What a stream line gives the service; gold is only for scoring.
INPUT_FIELDS = ("id", "source", "url", "title", "body", "published_at", "language")

# Every line must carry these as non-blank strings, and a title or a body (or both) with text.
REQUIRED_FIELDS = ("id", "source", "url", "published_at")
TEXT_FIELDS = ("title", "body")
# Skipped lines named one by one on stderr; the rest are counted.
SHOWN_PROBLEMS = 10
STREAM_RULES = (f"each line must be one JSON object with {', '.join(REQUIRED_FIELDS)} and a title or a body "
                "(optionally language and gold)")


def line_problem(row) -> str | None:
    """Why a parsed stream line is not an article the run can send, or None."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [f for f in REQUIRED_FIELDS if not isinstance(row.get(f), str) or not row[f].strip()]
    if missing:
        return f"missing or empty {', '.join(missing)}"
    wrong = [f for f in TEXT_FIELDS if row.get(f) is not None and not isinstance(row[f], str)]
    if wrong:
        return f"{' and '.join(wrong)} not a string"
    if not any((row.get(f) or "").strip() for f in TEXT_FIELDS):
        return "title and body are both blank"
    gold = row.get("gold")
    if gold is not None and not (isinstance(gold, dict) and isinstance(gold.get("story"), str) and gold["story"]
                                 and (gold.get("duplicate_of") is None or isinstance(gold["duplicate_of"], str))):
        return "gold is not an object with a story (and duplicate_of null or an id)"
    return None


def scan_stream(path: Path) -> tuple[list[dict], list[str]]:
    """The stream's valid articles, in order, and one problem per line that is
    not one (``"line N: why"``). Blank lines are neither."""
    rows, problems = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    problems.append(f"line {number}: not JSON ({exc.msg})")
                    continue
                problem = line_problem(row)
                if problem:
                    problems.append(f"line {number}: {problem}")
                    continue
                rows.append(row)
    except UnicodeDecodeError:
        raise SystemExit(f"{path} is not UTF-8 text; a stream is JSON lines in UTF-8") from None
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
    return rows, problems


def read_stream(path: Path) -> list[dict]:
    """The stream's articles, in order. A line that is not an article (not
    JSON, not an object, without source, url, published_at or id, or with
    neither a title nor a body) is skipped, and named with its line number
    on stderr (the first SHOWN_PROBLEMS of them; the rest are counted): one
    bad line never refuses the whole run. A stream with no article at all
    stops the run."""
    rows, problems = scan_stream(path)
    if problems:
        for problem in problems[:SHOWN_PROBLEMS]:
            print(f"{path}: skipped {problem}", file=sys.stderr)
        if len(problems) > SHOWN_PROBLEMS:
            print(f"{path}: ... and {len(problems) - SHOWN_PROBLEMS} more lines skipped", file=sys.stderr)
        print(f"{path}: skipped {len(problems)} of {len(problems) + len(rows)} lines that are not articles "
              f"({STREAM_RULES})", file=sys.stderr, flush=True)
    if not rows:
        if problems:
            raise SystemExit(f"{path} holds no valid article: all {len(problems)} lines were skipped ({STREAM_RULES})")
        raise SystemExit(f"{path} holds no articles; a stream is one JSON object per line")
    return rows


def gray_pairs(stream: Path, meta: Path | None = None) -> list:
    meta_path = meta or stream.with_suffix("").with_suffix(".meta.json")
    return json.loads(meta_path.read_text())["gray_pairs"] if meta_path.exists() else []


def without_gold(row: dict) -> dict:
    return {k: row[k] for k in INPUT_FIELDS if row.get(k) is not None}
