"""A labelled stream posted through a running service's HTTP API, and its answers
read back (``scripts/evaluate.py --api``)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from .decisions import Decisions, predictions_of, unpredicted_notes
from .progress import Progress
from .replay import BATCH
from .streams import without_gold


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
    decisions = Decisions()  # by the service's article ids
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
