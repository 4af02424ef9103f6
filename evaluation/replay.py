"""A labelled stream replayed, in order, through the same engine code the workers
run, against a real Redis, with the answers kept as the engine gives them."""
from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
import uuid
from datetime import datetime

from embedded_redis.server import EmbeddedRedis
from storyengine.articles import new_article_record
from storyengine.errors import InvalidArticle
from storyengine.decider import Decider
from storyengine.repair import Repairer
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .decisions import Decisions, predictions_of, unpredicted_notes
from .progress import Progress
from .streams import without_gold

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


def read_back(store: RedisStore, decisions: Decisions, article_ids: list[str]) -> set[str]:
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
    followed (Decisions): the story merges of each repair pass,
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
    decider = Decider(store)
    repairer = Repairer(store)
    decisions = Decisions()  # by the engine's article ids
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
            for outcome in decider.process_many(ids) if ids else []:
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
    it into runs of its own: storyengine.runs), but the answers that the
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


def record_of(row: dict) -> dict:
    """The record the service would make of a stream row (without its gold)."""
    article = without_gold(row)
    return new_article_record(
        source=article["source"], url=article["url"], title=article.get("title", ""), body=article.get("body", ""),
        published_at=datetime.fromisoformat(article["published_at"].replace("Z", "+00:00")),
        client_id=article.get("id"), language=article.get("language"))


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
