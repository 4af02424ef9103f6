"""Run a labelled stream through Storywire and score it.

    python scripts/evaluate.py [--stream PATH] [--out PRED.jsonl] [--api URL] [--split tune|held-out]
                               [--snippet-words N | --headlines-only]

Engine mode (the default) feeds the stream, in order, through the same engine
code the workers run, against a real Redis: ``REDIS_URL`` if set, otherwise a
private server started for the run. ``--api`` posts the stream to a running
service instead and reads the answers back over HTTP. Either way the ``gold``
field is removed before anything is sent, and it is only used for scoring.

``--split`` keeps only half of the stream's stories, split by topic (see
:func:`evaluation.variants.split_of`): ``tune`` is the half settings are
tuned on, ``held-out`` the half they are reported on (scripts/tune.py).
``--snippet-words N`` keeps the first N words of each body and
``--headlines-only`` the titles alone, as feeds of short items give them.

A line that is not an article (see :func:`evaluation.streams.line_problem`) is
skipped and named on stderr with its line number; the rest of the stream is
scored. ``scripts/eval_all.py`` (``make eval-all``) scores the shared streams in
one table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from evaluation.api_replay import run_api
from evaluation.replay import REPAIR_EVERY, engine_redis, eval_settings, run_engine
from evaluation.scores import score
from evaluation.streams import DEFAULT_STREAM, gray_pairs, read_stream
from evaluation.variants import shorten, split, stretch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM, help="JSON lines, one article each")
    parser.add_argument("--out", type=Path, help="write one prediction per line here")
    parser.add_argument("--meta", type=Path, help="gray pairs (default: STREAM with .meta.json)")
    parser.add_argument("--api", help="post to a running service at this base URL instead of the engine")
    parser.add_argument("--token", default=os.environ.get("STORYWIRE_API_KEY"), help="API key for --api")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for processing (--api)")
    parser.add_argument("--split", choices=("tune", "held-out"), help="only this half of the stories, by topic")
    short = parser.add_mutually_exclusive_group()
    short.add_argument("--snippet-words", type=int,
                       help="keep only the first N words of each body (a feed of headlines and snippets)")
    short.add_argument("--headlines-only", action="store_true",
                       help="each article keeps its title alone, its body dropped (a feed of headlines)")
    parser.add_argument("--stretch", type=float,
                        help="spread each story's articles over FACTOR times as long (a labelled stream; "
                             "the dev stream's stories last 48 hours, real ones days)")
    parser.add_argument("--repair-every", type=int, default=REPAIR_EVERY,
                        help="run the repair pass every N articles (engine mode; 0: only at the end)")
    args = parser.parse_args(argv)

    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a JSON lines file")
    rows = read_stream(args.stream)
    if args.split:
        if not all("gold" in r for r in rows):
            parser.error("--split needs a labelled stream (every line with a gold field)")
        rows = split(rows, args.split)
    if args.snippet_words is not None and args.snippet_words < 0:
        parser.error("--snippet-words must be 0 or more")
    if args.stretch is not None:
        if not args.stretch >= 1:
            parser.error("--stretch must be 1 or more (3: stories three times as long)")
        if not all("gold" in r for r in rows):
            parser.error("--stretch needs a labelled stream (every line with a gold field)")
        rows = stretch(rows, args.stretch)
    rows = shorten(rows, args.snippet_words, args.headlines_only)
    started = time.monotonic()
    notes: list[str] = []
    if args.api:
        predictions = run_api(rows, args.api, args.token, args.timeout, notes=notes)
    else:
        with engine_redis() as redis_url:
            predictions = run_engine(rows, redis_url, eval_settings(), args.repair_every, notes=notes)
    elapsed = time.monotonic() - started

    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for p in predictions:
                fh.write(json.dumps(p) + "\n")
    print(f"{len(rows)} articles in {elapsed:.1f}s ({len(rows) / elapsed:.0f} articles/s)")
    for note in notes:
        print(note)
    if all("gold" in r for r in rows):
        scores = score(predictions, rows, gray_pairs(args.stream, args.meta))
        width = max(map(len, scores))
        for name, value in scores.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
