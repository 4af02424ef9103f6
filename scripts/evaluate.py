"""Run a labelled stream through Storywire and score it.

    python scripts/evaluate.py [--stream PATH] [--out PRED.jsonl] [--api URL] [--split tune|held-out]

Engine mode (the default) feeds the stream, in order, through the same engine
code the workers run, against a real Redis: ``REDIS_URL`` if set, otherwise a
private server started for the run. ``--api`` posts the stream to a running
service instead and reads the answers back over HTTP. Either way the ``gold``
field is removed before anything is sent, and it is only used for scoring.

``--split`` keeps only half of the stream's stories, split by topic (see
:func:`storyengine.evaluation.split_of`): ``tune`` is the half settings are
tuned on, ``held-out`` the half they are reported on (scripts/tune.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storyengine import evaluation  # noqa: E402
from storyengine.articles import new_article_record  # noqa: E402
from storyengine.embedded_redis import EmbeddedRedis  # noqa: E402
from storyengine.pipeline import Processor  # noqa: E402
from storyengine.repair import Repairer  # noqa: E402
from storyengine.settings import Settings  # noqa: E402
from storyengine.store import RedisStore, connect  # noqa: E402

DEFAULT_STREAM = ROOT.parent / "shared" / "eval" / "dev.jsonl"
INPUT_FIELDS = ("id", "source", "url", "title", "body", "published_at", "language")


REQUIRED_FIELDS = ("id", "source", "url", "title", "published_at")


def read_stream(path: Path) -> list[dict]:
    """The stream's articles, in order. A line that is not a JSON object
    with the required fields stops the run with its line number,
    before anything is processed."""
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
                if not isinstance(row, dict):
                    problems.append(f"line {number}: not a JSON object")
                    continue
                missing = [f for f in REQUIRED_FIELDS if not isinstance(row.get(f), str) or not row[f].strip()]
                if missing:
                    problems.append(f"line {number}: missing or empty {', '.join(missing)}")
                    continue
                rows.append(row)
    except UnicodeDecodeError:
        raise SystemExit(f"{path} is not UTF-8 text; a stream is JSON lines in UTF-8") from None
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SystemExit(f"{path} is not a valid stream ({shown}). Each line must be one JSON object with "
                         f"{', '.join(REQUIRED_FIELDS)} (and optionally body, language, gold).")
    if not rows:
        raise SystemExit(f"{path} holds no articles; a stream is one JSON object per line")
    return rows


def without_gold(row: dict) -> dict:
    return {k: row[k] for k in INPUT_FIELDS if row.get(k) is not None}


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.start, self.last = total, label, time.monotonic(), 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done == self.total or now - self.last >= 1.0:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            print(f"\r{self.label}: {done}/{self.total} ({rate:.0f}/s)", end="" if done < self.total else "\n",
                  file=sys.stderr, flush=True)


# The service runs the repair pass on a timer (Celery beat); a replay runs it
# every this many articles, and once at the end.
REPAIR_EVERY = 200
# Articles decided per call, as a worker takes them from one batch post.
BATCH = 100


def run_engine(rows: list[dict], redis_url: str, settings: Settings, repair_every: int = REPAIR_EVERY,
               label: str = "engine") -> list[dict]:
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    processor = Processor(store)
    repairer = Repairer(store)
    progress = Progress(len(rows), label)
    try:
        # As a worker does: accept a batch, then decide it in one go (the
        # engine decides a batch exactly as it would one article at a time).
        batch = max(1, min(BATCH, repair_every or BATCH))
        for start in range(0, len(rows), batch):
            records = []
            for row in rows[start:start + batch]:
                article = without_gold(row)
                records.append(new_article_record(
                    source=article["source"], url=article["url"], title=article["title"],
                    body=article.get("body", ""),
                    published_at=datetime.fromisoformat(article["published_at"].replace("Z", "+00:00")),
                    client_id=article.get("id"), language=article.get("language")))
            ids = [article_id for article_id, _ in store.accept_articles(records)]
            processor.process_many(ids)
            done = start + len(ids)
            if repair_every and done // repair_every > start // repair_every:
                repairer.run()
            progress.update(done)
        repairer.run()
        return [prediction(store.get_article(row["id"])) for row in rows]
    finally:
        store.clear()


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_api(rows: list[dict], api: str, token: str | None, timeout: float) -> list[dict]:
    """Post the stream through a running service's HTTP API, in order, in batches, then
    wait until every article is processed and read the answers back."""
    api = api.rstrip("/")
    progress = Progress(len(rows), "posted")
    for start in range(0, len(rows), 100):
        batch = [without_gold(r) for r in rows[start:start + 100]]
        answer = _http("POST", f"{api}/v1/articles/batch", {"articles": batch}, token)
        failed = [r for r in answer["results"] if r.get("error")]
        if failed:
            raise SystemExit(f"the service rejected articles: {failed[:3]}")
        progress.update(start + len(batch))
    deadline = time.monotonic() + timeout
    predictions = []
    progress = Progress(len(rows), "processed")
    for n, row in enumerate(rows, 1):
        while True:
            article = _http("GET", f"{api}/v1/articles/{row['id']}", token=token)
            if article["status"] in ("processed", "failed"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {row['id']} to be processed")
            time.sleep(0.2)
        predictions.append(prediction(article))
        progress.update(n)
    return predictions


def eval_settings(**changes) -> Settings:
    """Settings from STORYWIRE_* variables, under a throwaway key prefix."""
    return Settings.from_env().replace(key_prefix=f"sw-eval-{uuid.uuid4().hex[:8]}", **changes)


@contextlib.contextmanager
def engine_redis():
    """REDIS_URL if set, else a private Redis for the run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="storywire-eval-") as tmp, EmbeddedRedis(tmp, appendonly=False) as server:
        yield server.url


def gray_pairs(stream: Path, meta: Path | None = None) -> list:
    meta_path = meta or stream.with_suffix("").with_suffix(".meta.json")
    return json.loads(meta_path.read_text())["gray_pairs"] if meta_path.exists() else []


def prediction(article: dict) -> dict:
    return {"id": article["id"], "story": article.get("story"), "duplicate_of": article.get("duplicate_of") or None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM, help="JSON lines, one article each")
    parser.add_argument("--out", type=Path, help="write one prediction per line here")
    parser.add_argument("--meta", type=Path, help="gray pairs (default: STREAM with .meta.json)")
    parser.add_argument("--api", help="post to a running service at this base URL instead of the engine")
    parser.add_argument("--token", default=os.environ.get("STORYWIRE_API_KEY"), help="API key for --api")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for processing (--api)")
    parser.add_argument("--split", choices=("tune", "held-out"), help="only this half of the stories, by topic")
    parser.add_argument("--snippet-words", type=int,
                        help="keep only the first N words of each body (a feed of headlines and snippets)")
    parser.add_argument("--repair-every", type=int, default=REPAIR_EVERY,
                        help="run the repair pass every N articles (engine mode; 0: only at the end)")
    args = parser.parse_args(argv)

    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a JSON lines file")
    rows = read_stream(args.stream)
    if args.split:
        if not all("gold" in r for r in rows):
            parser.error("--split needs a labelled stream (every line with a gold field)")
        rows = evaluation.split(rows, args.split)
    if args.snippet_words is not None:
        if args.snippet_words < 0:
            parser.error("--snippet-words must be 0 or more")
        rows = [dict(r, body=" ".join(r.get("body", "").split()[:args.snippet_words])) for r in rows]
    started = time.monotonic()
    if args.api:
        predictions = run_api(rows, args.api, args.token, args.timeout)
    else:
        with engine_redis() as redis_url:
            predictions = run_engine(rows, redis_url, eval_settings(), args.repair_every)
    elapsed = time.monotonic() - started

    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for p in predictions:
                fh.write(json.dumps(p) + "\n")
    print(f"{len(rows)} articles in {elapsed:.1f}s ({len(rows) / elapsed:.0f} articles/s)")
    if all("gold" in r for r in rows):
        scores = evaluation.score(predictions, rows, gray_pairs(args.stream, args.meta))
        width = max(map(len, scores))
        for name, value in scores.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
