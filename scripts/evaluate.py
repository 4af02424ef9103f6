"""Run a labelled stream through Storywire and score it.

    python scripts/evaluate.py [--stream PATH] [--out PRED.jsonl] [--api URL]

Engine mode (the default) feeds the stream, in order, through the same engine
code the workers run, against a real Redis: ``REDIS_URL`` if set, otherwise a
private server started for the run. ``--api`` posts the stream to a running
service instead and reads the answers back over HTTP. Either way the ``gold``
field is removed before anything is sent, and it is only used for scoring.
"""
from __future__ import annotations

import argparse
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
from storyengine.settings import Settings  # noqa: E402
from storyengine.store import RedisStore, connect  # noqa: E402

DEFAULT_STREAM = ROOT.parent / "shared" / "eval" / "dev.jsonl"
INPUT_FIELDS = ("id", "source", "url", "title", "body", "published_at", "language")


def read_stream(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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


def run_engine(rows: list[dict], redis_url: str, settings: Settings) -> list[dict]:
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    processor = Processor(store)
    progress = Progress(len(rows), "engine")
    try:
        for n, row in enumerate(rows, 1):
            article = without_gold(row)
            record = new_article_record(
                source=article["source"], url=article["url"], title=article["title"], body=article.get("body", ""),
                published_at=datetime.fromisoformat(article["published_at"].replace("Z", "+00:00")),
                client_id=article.get("id"), language=article.get("language"))
            [(article_id, _)] = store.accept_articles([record])
            processor.process(article_id)
            progress.update(n)
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
    args = parser.parse_args(argv)

    if not args.stream.exists():
        parser.error(f"{args.stream} does not exist; pass --stream PATH to a JSON lines file")
    rows = read_stream(args.stream)
    started = time.monotonic()
    if args.api:
        predictions = run_api(rows, args.api, args.token, args.timeout)
    else:
        settings = Settings.from_env().replace(key_prefix=f"sw-eval-{uuid.uuid4().hex[:8]}")
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:
            predictions = run_engine(rows, redis_url, settings)
        else:
            with tempfile.TemporaryDirectory(prefix="storywire-eval-") as tmp, \
                    EmbeddedRedis(tmp, appendonly=False) as server:
                predictions = run_engine(rows, server.url, settings)
    elapsed = time.monotonic() - started

    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for p in predictions:
                fh.write(json.dumps(p) + "\n")
    print(f"{len(rows)} articles in {elapsed:.1f}s ({len(rows) / elapsed:.0f} articles/s)")
    if all("gold" in r for r in rows):
        meta_path = args.meta or args.stream.with_suffix("").with_suffix(".meta.json")
        gray = json.loads(meta_path.read_text())["gray_pairs"] if meta_path.exists() else []
        scores = evaluation.score(predictions, rows, gray)
        width = max(map(len, scores))
        for name, value in scores.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
