"""Score the shared labelled streams in one run and print one table.

    python scripts/eval_all.py [--split tune|held-out] [--out TABLE.json] [--dev PATH] [--feeds PATH]

Rows: the dev stream as it is, with each body cut to its first 30 words
(``evaluate.py --snippet-words 30``), with the titles alone
(``--headlines-only``), those two again with each story's articles spread
over three times as long (``--stretch 3``: six days, not two, as real stories
of short items run), and the feeds-dev stream of real RSS items. Columns:
B-cubed precision, recall and F1, ARI, AMI, NMI, duplicate precision, recall
and F1 ("n/a" for a stream without gold duplicates: no row with
``gold.duplicate_of`` set), and the seconds each row took.

Every row is a fresh, ordered pass through the engine, as ``scripts/evaluate.py``
runs it (engine mode), all against one Redis: ``REDIS_URL`` if set, otherwise a
private server started once for the run. ``--split`` keeps only that half of
each stream's stories (as ``evaluate.py --split``). The table is printed as
Markdown, ready to paste into the docs; ``--out`` also writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.replay import REPAIR_EVERY, engine_redis, eval_settings, run_engine
from evaluation.scores import score
from evaluation.streams import gray_pairs, read_stream
from evaluation.variants import shorten, split, stretch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "eval"
DEV = SHARED / "dev.jsonl"
FEEDS = SHARED / "feeds-dev.jsonl"


@dataclass(frozen=True)
class Variant:
    name: str
    stream: str  # "dev" or "feeds": which of the streams
    shorten: dict = field(default_factory=dict)  # evaluation.variants.shorten's arguments
    stretch: float | None = None  # evaluation.variants.stretch's factor


VARIANTS = (
    Variant("dev", "dev"),
    Variant("dev, 30 words", "dev", {"snippet_words": 30}),
    Variant("dev, headlines only", "dev", {"headlines_only": True}),
    Variant("dev, 30 words, stories x3 longer", "dev", {"snippet_words": 30}, stretch=3.0),
    Variant("dev, headlines only, stories x3 longer", "dev", {"headlines_only": True}, stretch=3.0),
    Variant("feeds-dev", "feeds"),
)

# (column heading, score name); duplicate columns read "n/a" on a stream without gold duplicates.
SCORE_COLUMNS = (
    ("B-cubed P", "bcubed_precision"), ("B-cubed R", "bcubed_recall"), ("B-cubed F1", "bcubed_f1"),
    ("ARI", "ari"), ("AMI", "ami"), ("NMI", "nmi"),
    ("dup P", "duplicate_precision"), ("dup R", "duplicate_recall"), ("dup F1", "duplicate_f1"),
)
DUPLICATE_SCORES = ("duplicate_precision", "duplicate_recall", "duplicate_f1")
HEADINGS = ("stream", "articles") + tuple(h for h, _ in SCORE_COLUMNS) + ("seconds",)


def has_gold_duplicates(rows: list[dict]) -> bool:
    return any(r["gold"].get("duplicate_of") for r in rows)


def load(path: Path, label: str, half: str | None) -> list[dict]:
    """The labelled rows of one stream (the ``half`` of its stories, if given)."""
    rows = read_stream(path)
    if not all("gold" in r for r in rows):
        raise SystemExit(f"{path} ({label}) is not labelled: every line needs a gold field to be scored")
    if half:
        rows = split(rows, half)
        if not rows:
            raise SystemExit(f"{path} ({label}) has no story in the {half} half")
    return rows


def run_all(streams: dict[str, Path], half: str | None = None, repair_every: int = REPAIR_EVERY) -> list[dict]:
    """One result per variant: its name, stream, article count, scores (the
    duplicate ones None where the stream has no gold duplicates) and seconds."""
    loaded = {key: load(path, key, half) for key, path in streams.items()}
    gray = {key: gray_pairs(path) for key, path in streams.items()}
    results = []
    with engine_redis() as redis_url:
        for variant in VARIANTS:
            started = time.monotonic()
            rows = loaded[variant.stream]
            rows = shorten(stretch(rows, variant.stretch) if variant.stretch else rows, **variant.shorten)
            notes: list[str] = []
            predictions = run_engine(rows, redis_url, eval_settings(), repair_every, label=variant.name,
                                     notes=notes)
            scores = score(predictions, rows, gray[variant.stream])
            seconds = time.monotonic() - started
            for note in notes:
                print(f"{variant.name}: {note}", file=sys.stderr)
            reported = {name: scores[name] for _, name in SCORE_COLUMNS}
            if not has_gold_duplicates(rows):
                reported.update(dict.fromkeys(DUPLICATE_SCORES))
            results.append({"name": variant.name, "stream": str(streams[variant.stream]), **variant.shorten,
                            **({"stretch": variant.stretch} if variant.stretch else {}),
                            "articles": scores["articles"], "unpredicted": scores["unpredicted"],
                            "scores": reported, "seconds": round(seconds, 2)})
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "|".join("---" for _ in HEADINGS) + "|"]
    for r in results:
        cells = [r["name"], str(r["articles"])]
        cells += ["n/a" if r["scores"][name] is None else f"{r['scores'][name]:.4f}" for _, name in SCORE_COLUMNS]
        cells.append(f"{r['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missing_stream(path: Path, option: str) -> str:
    return (f"{path} not found: the labelled streams come from the shared data, which must sit beside the "
            f"repository as ../shared (expected at {SHARED}); or pass {option} PATH")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("tune", "held-out"), help="only this half of each stream's stories")
    parser.add_argument("--out", type=Path, help="also write the table here as JSON")
    parser.add_argument("--dev", type=Path, default=DEV, help="the dev stream (default: ../shared/eval/dev.jsonl)")
    parser.add_argument("--feeds", type=Path, default=FEEDS,
                        help="the feeds stream (default: ../shared/eval/feeds-dev.jsonl)")
    parser.add_argument("--repair-every", type=int, default=REPAIR_EVERY,
                        help="run the repair pass every N articles (0: only at the end)")
    args = parser.parse_args(argv)

    streams = {"dev": args.dev, "feeds": args.feeds}
    for key, path in streams.items():
        if not path.is_file():
            raise SystemExit(missing_stream(path, f"--{key}"))
    started = time.monotonic()
    results = run_all(streams, args.split, args.repair_every)
    table = markdown(results)
    print(f"\n{table}\n")
    print(f"{'all stories' if not args.split else f'the {args.split} half of the stories'}; "
          f"{time.monotonic() - started:.1f}s in all")
    if args.out:
        args.out.write_text(json.dumps({"split": args.split, "columns": list(HEADINGS), "rows": results,
                                        "markdown": table}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
