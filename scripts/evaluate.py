"""Run a labelled stream through Storywire and score it.

    python scripts/evaluate.py [--stream PATH] [--out PRED.jsonl] [--api URL] [--split tune|held-out]
                               [--snippet-words N | --headlines-only]

Engine mode (the default) feeds the stream, in order, through the same engine
code the workers run, against a real Redis: ``REDIS_URL`` if set, otherwise a
private server started for the run. ``--api`` posts the stream to a running
service instead and reads the answers back over HTTP. Either way the ``gold``
field is removed before anything is sent, and it is only used for scoring.

``--split`` keeps only half of the stream's stories, split by topic (see
:func:`storyengine.evaluation.split_of`): ``tune`` is the half settings are
tuned on, ``held-out`` the half they are reported on (scripts/tune.py).
``--snippet-words N`` keeps the first N words of each body and
``--headlines-only`` the titles alone, as feeds of short items give them.

A line that is not an article (see :func:`line_problem`) is skipped and named
on stderr with its line number; the rest of the stream is scored.
``scripts/eval_all.py`` (``make eval-all``) scores the shared streams in one
table.
"""
from __future__ import annotations

import argparse
import contextlib
import heapq
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
from storyengine.errors import InvalidArticle  # noqa: E402
from storyengine.pipeline import Processor  # noqa: E402
from storyengine.repair import Repairer  # noqa: E402
from storyengine.settings import Settings  # noqa: E402
from storyengine.store import RedisStore, connect  # noqa: E402

DEFAULT_STREAM = ROOT.parent / "shared" / "eval" / "dev.jsonl"
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
# Answers are read back from the store this long (at most a quarter of the
# retention window) before retention could delete them on the stream's clock
# (see run_engine).
READ_BACK_MARGIN = 86400.0
# Answers read from the store per round trip.
READ_CHUNK = 1000
DAY = 86400.0


def _admitted(result) -> tuple[str, str]:
    """(id, outcome) of one accepted record, outcome "created", "known",
    "too_old" or "conflict": the store answers an Admission per record, or
    (as it did before admissions) an (id, created) pair."""
    if isinstance(result, tuple):
        article_id, created = result
        return article_id, "created" if created else "known"
    return result.id, result.outcome


_NOT_ACCEPTED = {
    "known": "not accepted: an earlier article has the same source and URL",
    "too_old": "not accepted: older than the retention window on the stream clock",
    "conflict": "not accepted: its id names another article",
}


def read_back(store: RedisStore, decisions: evaluation.Decisions, article_ids: list[str]) -> set[str]:
    """Take the answers the store holds now for these articles (pipelined).
    Returns the ids it no longer holds."""
    gone = set()
    k = store.keys
    for start in range(0, len(article_ids), READ_CHUNK):
        chunk = article_ids[start:start + READ_CHUNK]
        with store.redis.pipeline(transaction=False) as pipe:
            for article_id in chunk:
                pipe.hmget(k.article(article_id), ("status", "story", "duplicate_of"))
            rows = pipe.execute()
        for article_id, (status, story, duplicate_of) in zip(chunk, rows):
            if status is None:
                gone.add(article_id)
            elif status == b"processed" and story:
                decisions.decided(article_id, story.decode(), duplicate_of.decode() if duplicate_of else None)
    return gone


def run_engine(rows: list[dict], redis_url: str, settings: Settings, repair_every: int = REPAIR_EVERY,
               label: str = "engine", notes: list[str] | None = None) -> list[dict]:
    """Replay ``rows`` in order through the engine; one prediction per row
    (story null for an article that got no answer). ``notes``, if given,
    receives lines for the report: articles with no answer and why, and how
    many had aged out of the store by the end.

    The answers are kept as the engine gives them (the Outcome of each
    article), not read back at the end: on a stream longer than the
    retention window (30 days on the stream's clock by default) retention
    has deleted most articles by then. What changes an answer later is
    followed (evaluation.Decisions): the story merges of each repair pass,
    and, for the rest (an earlier copy arriving late and taking over as the
    canonical article), the store's own answer, read back for each article
    just before retention could delete it (when the clock is about to pass
    its time, less a margin) and once more at the end for those still stored.
    The store's answer is what the service would show for the article, so it
    is the one scored while there is one; an article aged out is scored by its
    last answer, through the merges made since (its story can still be merged
    while newer articles keep it alive)."""
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    processor = Processor(store)
    repairer = Repairer(store)
    decisions = evaluation.Decisions()  # by the engine's article ids
    keys: list[str] = []  # per row: its engine id (or its own id, if it never got one)
    row_of: dict[str, str] = {}  # engine id -> stream id
    published: dict[str, float] = {}
    to_read: list[tuple[float, str]] = []  # heap of (published, id): answered, not read back near retention yet
    newest = float("-inf")
    progress = Progress(len(rows), label)

    def repair() -> None:
        for merge in repairer.run().merges:
            decisions.merged(merge.kept, merge.merged)

    try:
        # As a worker does: accept a batch, then decide it in one go (batches
        # span less than the retention window, so the read-back below is in time: see batches).
        size = max(1, min(BATCH, repair_every or BATCH))
        retention = settings.retention_days * DAY
        span = max(retention - settings.story_window_hours * 3600.0, retention / 2)
        margin = min(READ_BACK_MARGIN, retention / 4)
        for start, end in batches(rows, size, span):
            chunk, records, ids = rows[start:end], [], []
            for row in chunk:
                try:
                    records.append(record_of(row))
                except (InvalidArticle, ValueError) as exc:
                    records.append(None)
                    decisions.refused(row["id"], f"not accepted: {exc}")
            valid = [record for record in records if record is not None]
            results = iter(store.accept_articles(valid) if valid else [])
            for row, record in zip(chunk, records):
                if record is None:
                    keys.append(row["id"])
                    continue
                article_id, outcome = _admitted(next(results))
                keys.append(record["id"])
                if outcome in ("created", "known") and article_id == record["id"]:
                    ids.append(article_id)  # known: the same article again, its answer is the stored one
                    published[article_id] = float(record["published_ts"])
                    row_of.setdefault(article_id, row["id"])
                else:
                    decisions.refused(record["id"], _NOT_ACCEPTED.get(outcome, f"not accepted ({outcome})"))
            # This batch moves the clock, and retention may then delete what is
            # older than the window on it: read those answers back first.
            newest = max([newest] + [published[i] for i in ids])
            horizon = newest - retention + margin
            due = []
            while to_read and to_read[0][0] < horizon:
                due.append(heapq.heappop(to_read)[1])
            read_back(store, decisions, due)
            for outcome in processor.process_many(ids) if ids else []:
                if outcome.error is not None:
                    decisions.refused(outcome.article_id, f"failed: {type(outcome.error).__name__}: {outcome.error}")
                else:
                    decisions.decided(outcome.article_id, outcome.story_id, outcome.duplicate_of)
                    heapq.heappush(to_read, (published[outcome.article_id], outcome.article_id))
            done = end
            if repair_every and done // repair_every > start // repair_every:
                repair()
            progress.update(done)
        repair()
        gone = read_back(store, decisions, list(dict.fromkeys(k for k in keys if k in decisions.answers)))
        predictions = predictions_of(rows, keys, decisions, row_of)
        if notes is not None:
            if gone:
                notes.append(f"{len(gone)} of {len(rows)} articles had aged out of the store by the end "
                             f"(retention {settings.retention_days:g} days on the stream clock): scored by the "
                             f"answers kept as they were given, through {len(decisions.merged_into)} story merges")
            notes.extend(unpredicted_notes(rows, predictions, decisions.why_unpredicted(keys)))
        return predictions
    finally:
        store.clear()


def batches(rows: list[dict], size: int, span: float):
    """(start, end) of each batch of at most ``size`` rows, in order. A batch
    also ends before a row that would make it span more than ``span`` seconds
    of published time. The engine decides such a batch correctly (it splits
    it into runs of its own: storyengine.pipeline), but the answers that the
    batch's clock will let retention take must be read back before the batch
    is decided (see run_engine), and that is only right for a batch that
    spans less than the window."""
    start = 0
    while start < len(rows):
        end, low, high = start, float("inf"), float("-inf")
        while end < len(rows) and end - start < size:
            t = _published(rows[end])
            if t is not None:
                low, high = min(low, t), max(high, t)
                if high - low > span and end > start:
                    break
            end += 1
        yield start, end
        start = end


def _published(row: dict) -> float | None:
    try:
        return datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, AttributeError):
        return None


def predictions_of(rows: list[dict], keys: list[str], decisions, row_of: dict) -> list[dict]:
    """One prediction per stream row, in the stream's ids: the service's ids
    are made from them (scoped by outlet), and ``row_of`` maps them back."""
    predictions = []
    for row, key in zip(rows, keys):
        answer = decisions.prediction(key)
        predictions.append({"id": row["id"], "story": answer["story"],
                            "duplicate_of": row_of.get(answer["duplicate_of"], answer["duplicate_of"])})
    return predictions


def record_of(row: dict) -> dict:
    """The record the service would make of a stream row (without its gold)."""
    article = without_gold(row)
    return new_article_record(
        source=article["source"], url=article["url"], title=article.get("title", ""), body=article.get("body", ""),
        published_at=datetime.fromisoformat(article["published_at"].replace("Z", "+00:00")),
        client_id=article.get("id"), language=article.get("language"))


def unpredicted_notes(rows: list[dict], predictions: list[dict], reasons: dict[str, int]) -> list[str]:
    missing = evaluation.unpredicted(predictions, rows)
    if not missing:
        return []
    return [f"{len(missing)} of {len(rows)} articles have no prediction, each scored as a story of its own "
            f"and a copy of nothing (e.g. {', '.join(missing[:3])}):"] + \
        [f"  {count} {reason}" for reason, count in reasons.items()]


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_api(rows: list[dict], api: str, token: str | None, timeout: float,
            notes: list[str] | None = None) -> list[dict]:
    """Post the stream through a running service's HTTP API, in order, in batches, then
    wait until every article is processed and read the answers back.

    The answers are read at the end, so the service must still hold the whole
    stream then: its retention (``STORYWIRE_RETENTION_DAYS``, on the stream's
    clock) must cover the stream's span. An article it no longer holds
    (410 Gone once retention removed it, or 404) has no prediction, like one
    that failed or was refused: each is scored as a story of its own and
    counted in ``notes``. Engine mode keeps the answers as they are made and
    scores streams of any span."""
    api = api.rstrip("/")
    decisions = evaluation.Decisions()  # by the service's article ids
    keys: list[str] = []  # per row: the id the service answered with (or its own id, if refused)
    row_of: dict[str, str] = {}  # service id -> stream id
    progress = Progress(len(rows), "posted")
    deadline = time.monotonic() + timeout
    for start in range(0, len(rows), BATCH):
        chunk = rows[start:start + BATCH]
        while True:
            try:
                answer = _http("POST", f"{api}/v1/articles/batch", {"articles": [without_gold(r) for r in chunk]},
                               token)
                results = answer["results"]
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 503 and time.monotonic() < deadline:  # busy (or Redis away): as a client would, wait
                    time.sleep(float(exc.headers.get("Retry-After") or 1))
                    continue
                if exc.code == 422:  # no article of the batch is valid
                    results = [{"error": {"code": "invalid_batch", "message": _error_message(exc)}}] * len(chunk)
                    break
                raise SystemExit(f"the service answered {exc.code} to a batch post: {_error_message(exc)}") from None
        for row, result in zip(chunk, results):
            error = result.get("error")
            if error or not result.get("id"):
                keys.append(row["id"])
                decisions.refused(row["id"], f"refused: {(error or {}).get('code', 'no id')}")
            else:
                keys.append(result["id"])
                row_of.setdefault(result["id"], row["id"])
        progress.update(start + len(chunk))
    progress = Progress(len(rows), "processed")
    for n, (row, key) in enumerate(zip(rows, keys), 1):
        while key not in decisions.answers and key not in decisions.problems:
            try:
                article = _http("GET", f"{api}/v1/articles/{key}", token=token)
            except urllib.error.HTTPError as exc:
                if exc.code not in (404, 410):
                    raise SystemExit(f"the service answered {exc.code} for article {key}: "
                                     f"{_error_message(exc)}") from None
                decisions.refused(key, f"gone from the service ({exc.code}) before it was read back: its "
                                       "retention must cover the stream in --api mode")
                break
            if article["status"] == "processed":
                decisions.decided(key, article["story"], article.get("duplicate_of"))
                break
            if article["status"] == "failed":
                decisions.refused(key, f"failed: {article.get('error') or 'no reason given'}")
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {row['id']} to be processed")
            time.sleep(0.2)
        progress.update(n)
    predictions = predictions_of(rows, keys, decisions, row_of)
    if notes is not None:
        notes.extend(unpredicted_notes(rows, predictions, decisions.why_unpredicted(keys)))
    return predictions


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason


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
        rows = evaluation.split(rows, args.split)
    if args.snippet_words is not None and args.snippet_words < 0:
        parser.error("--snippet-words must be 0 or more")
    if args.stretch is not None:
        if not args.stretch >= 1:
            parser.error("--stretch must be 1 or more (3: stories three times as long)")
        if not all("gold" in r for r in rows):
            parser.error("--stretch needs a labelled stream (every line with a gold field)")
        rows = evaluation.stretch(rows, args.stretch)
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
        scores = evaluation.score(predictions, rows, gray_pairs(args.stream, args.meta))
        width = max(map(len, scores))
        for name, value in scores.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
