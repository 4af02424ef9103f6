"""Make a longer labelled stream out of a short one, for evaluation and benchmarks at scale.

    python scripts/replicate_stream.py --copies 8 --out /tmp/dev-10k.jsonl [--stream PATH] [--shift-hours 24]

Copy k of the stream is shifted k * shift-hours later and gets ids, URLs, gold
labels and a vocabulary of its own (see evaluation.variants.replicate), so
the result has the original's stories, duplicates and difficulty, times the
number of copies. Writes OUT and OUT's .meta.json (gray pairs), which
scripts/evaluate.py picks up: `make eval STREAM=/tmp/dev-10k.jsonl`.
"""
from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

from evaluation.streams import DEFAULT_STREAM, gray_pairs, read_stream
from evaluation.variants import replicate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM)
    parser.add_argument("--copies", type=int, required=True, help="how many copies (1 = the stream itself)")
    parser.add_argument("--shift-hours", type=float, default=24.0, help="time between copies")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.copies < 1 or args.copies > 1000:
        parser.error("--copies must be between 1 and 1000")
    if args.shift_hours <= 0:
        parser.error("--shift-hours must be positive")
    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a JSON lines file")
    rows, gray = replicate(read_stream(args.stream), gray_pairs(args.stream), args.copies,
                           timedelta(hours=args.shift_hours))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    meta = args.out.with_suffix("").with_suffix(".meta.json")
    meta.write_text(json.dumps({"name": args.out.stem, "articles": len(rows), "copies": args.copies,
                                "source": str(args.stream), "gray_pairs": gray}) + "\n")
    print(f"wrote {len(rows)} articles to {args.out} and gray pairs to {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
