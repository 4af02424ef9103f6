"""Posting to the API that the session's worker (tests/conftest.py
``celery_worker``) decides for, and waiting for its decisions: the
two-events sample, a post without words, and waits until articles are
processed or a story is merged."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.articles import T0

DATA = Path(__file__).resolve().parent.parent / "data" / "two_events.jsonl"


def load_articles() -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return rows


def wait_processed(client, ids, timeout=60.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    seen: dict[str, dict] = {}
    while pending:
        for article_id in sorted(pending):
            response = client.get(f"/v1/articles/{article_id}")
            answer = response.get_json()
            assert response.status_code == 200, (article_id, answer)
            if answer["status"] != "queued":
                seen[article_id] = answer
                pending.discard(article_id)
        if pending:
            assert time.monotonic() < deadline, f"not processed in {timeout}s: {sorted(pending)}"
            time.sleep(0.1)
    return seen


# A post that passes the API's checks but has no words: the worker fails it, saying why.
WORDLESS = {"id": "wordless", "source": "shouty.example", "url": "https://shouty.example/1", "title": "!!! ???",
            "body": "<p>\u2014 ... \u2014</p>", "published_at": T0.strftime("%Y-%m-%dT%H:%M:%SZ")}


def wait_merged(store, story_id: str, timeout: float = 30.0) -> str:
    """Poll the store until ``story_id`` is a redirect; return where it points."""
    deadline = time.monotonic() + timeout
    while True:
        target = store.redis.hget(store.keys.story(story_id), "merged_into")
        if target is not None:
            return target.decode()
        assert time.monotonic() < deadline, f"{story_id} was not merged within {timeout}s"
        time.sleep(0.1)
