"""Tune the story settings on one half of a labelled stream, report on the other.

    python scripts/tune.py [--stream PATH] [--out RESULTS.json]

The stream's stories are split by topic (evaluation.variants.split_of), so
the two similar events of an ECB+ topic always fall on the same side. Every
combination of the grid below is run on the "tune" half; the best by B-cubed
F1 and the shipped defaults are then run on the "held-out" half, which the
choice never saw. Each run is a fresh, ordered, single pass through the
engine, exactly as ``scripts/evaluate.py`` does it.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from evaluation.replay import engine_redis, eval_settings, run_engine
from evaluation.scores import score
from evaluation.streams import DEFAULT_STREAM, gray_pairs, read_stream
from evaluation.variants import split
from storyengine.settings import Settings

GRID = {
    "story_threshold": (0.12, 0.14, 0.16, 0.18, 0.2),
    "time_sigma_hours": (24.0, 36.0, 48.0),
}
REPORTED = ("bcubed_precision", "bcubed_recall", "bcubed_f1", "duplicate_precision", "duplicate_recall",
            "duplicate_f1")


def score_run(rows, gray, redis_url, label, **changes) -> dict:
    predictions = run_engine(rows, redis_url, eval_settings(**changes), label=label)
    scores = score(predictions, rows, gray)
    return {name: round(scores[name], 4) for name in REPORTED}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM, help="a labelled JSON lines stream")
    parser.add_argument("--out", type=Path, help="write every run's scores here as JSON")
    args = parser.parse_args(argv)
    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a labelled JSON lines file")
    rows = read_stream(args.stream)
    if not all("gold" in r for r in rows):
        parser.error("tuning needs a labelled stream (every line with a gold field)")
    gray = gray_pairs(args.stream)
    halves = {half: split(rows, half) for half in ("tune", "held-out")}
    defaults = Settings()
    results = {"grid": [], "articles": {h: len(r) for h, r in halves.items()}}
    with engine_redis() as redis_url:
        names = list(GRID)
        for n, values in enumerate(itertools.product(*GRID.values()), 1):
            changes = dict(zip(names, values))
            label = f"tune {n}/{len(list(itertools.product(*GRID.values())))} " + \
                " ".join(f"{k}={v:g}" for k, v in changes.items())
            results["grid"].append({"settings": changes, "tune": score_run(halves["tune"], gray, redis_url, label,
                                                                           **changes)})
        best = max(results["grid"], key=lambda r: r["tune"]["bcubed_f1"])
        default_changes = {k: getattr(defaults, k) for k in names}
        default_tune = next(r["tune"] for r in results["grid"] if r["settings"] == default_changes) \
            if any(r["settings"] == default_changes for r in results["grid"]) else \
            score_run(halves["tune"], gray, redis_url, "tune defaults")
        results["best"] = {"settings": best["settings"], "tune": best["tune"],
                           "held-out": score_run(halves["held-out"], gray, redis_url, "held-out best",
                                                 **best["settings"])}
        results["defaults"] = {"settings": default_changes, "tune": default_tune,
                               "held-out": score_run(halves["held-out"], gray, redis_url, "held-out defaults")}

    print(f"\n{'run':<40} {'half':<9} {'P':>7} {'R':>7} {'F1':>7} {'dupF1':>7}")
    for r in results["grid"]:
        label = " ".join(f"{k}={v:g}" for k, v in r["settings"].items())
        t = r["tune"]
        print(f"{label:<40} {'tune':<9} {t['bcubed_precision']:>7.4f} {t['bcubed_recall']:>7.4f} "
              f"{t['bcubed_f1']:>7.4f} {t['duplicate_f1']:>7.4f}")
    for name in ("best", "defaults"):
        for half in ("tune", "held-out"):
            t = results[name][half]
            label = f"{name}: " + " ".join(f"{k}={v:g}" for k, v in results[name]["settings"].items())
            print(f"{label:<40} {half:<9} {t['bcubed_precision']:>7.4f} {t['bcubed_recall']:>7.4f} "
                  f"{t['bcubed_f1']:>7.4f} {t['duplicate_f1']:>7.4f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
