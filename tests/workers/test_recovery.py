"""Recovery with the shipped settings: faults while a stream is posted.

The whole deployment as `make run` starts it (gunicorn, two workers, beat, on
a real redis-server with its append-only file), nothing tuned for the test:
while a stream is posted over HTTP in batches, a worker is killed (SIGKILL,
the whole worker), Redis is stopped for 5 seconds and started again, and a
worker is killed again. Every article answered 202 must be decided within a
minute of the last fault, exactly once, and /metrics must count as many
articles accepted as decided.
"""
from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from embedded_redis.server import EmbeddedRedis
from tests.workers.process_stack import (Role, assert_processed_exactly_once, http, realistic_articles, statuses,
                                         wait_until)

pytestmark = pytest.mark.e2e

WITHIN = 60.0  # seconds after the last fault by which every accepted article is decided


def metric(stack, name: str) -> float:
    text = stack.get("/metrics").data.decode()
    match = re.search(rf"^storywire_{name}_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Poster(threading.Thread):
    """Posts the stream in batches of 10, a batch every 50 ms; a batch answered
    503 (Redis away) is posted again after its Retry-After, as a feed would."""

    def __init__(self, stack, rows):
        super().__init__(daemon=True)
        self.stack, self.rows = stack, rows
        self.accepted: list[str] = []
        self.refused = 0

    def run(self):
        for start in range(0, len(self.rows), 10):
            batch = self.rows[start:start + 10]
            while True:
                try:
                    answer = http("POST", f"{self.stack.api_url}/v1/articles/batch", {"articles": batch})
                except OSError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    self.accepted += [r["id"] for r in answer.get_json()["results"] if "id" in r]
                    break
                self.refused += 1
                time.sleep(1.0)
            time.sleep(0.05)


def kill_worker(worker: Role) -> None:
    for p in worker.family():
        try:
            p.send_signal(signal.SIGKILL)
        except Exception:  # noqa: BLE001 - already gone
            pass
    worker.proc.wait(timeout=10)


def test_killed_twice_and_redis_stopped_mid_stream_everything_is_decided_within_a_minute(stack):
    stack.api()
    first, second = stack.worker(), stack.worker()
    beat = Role("beat", dict(stack.env, STORYWIRE_DATA_DIR=str(stack.tmp / "beat")), stack.tmp / "beat.log").start()
    stack.roles.append(beat)
    rows = realistic_articles(600, "recovery")
    poster = Poster(stack, rows)
    poster.start()
    store = stack.store

    wait_until(lambda: len(poster.accepted) >= 100, 60, "a first part of the stream accepted")
    kill_worker(first)  # fault 1: a worker killed, whatever it held
    stack.worker()      # its replacement

    wait_until(lambda: len(poster.accepted) >= 250, 60, "more of the stream accepted")
    stack.redis.stop()  # fault 2: Redis away for 5 s
    time.sleep(5)
    stack.redis = EmbeddedRedis(stack.redis.data_dir, port=stack.redis.port, appendonly=True).start()

    wait_until(lambda: len(poster.accepted) >= 400, 90, "the stream goes on after the outage")
    kill_worker(second)  # fault 3: another worker killed
    last_fault = time.monotonic()
    poster.join(timeout=120)
    assert not poster.is_alive()

    accepted = list(dict.fromkeys(poster.accepted))
    assert len(accepted) == len(rows)  # every batch was taken in the end (503s were retried)
    left = WITHIN - (time.monotonic() - last_fault)
    assert left > 0, "the stream took too long to post"

    def all_decided():
        return all(s == "processed" for s in statuses(store, accepted).values())
    try:
        wait_until(all_decided, left, "every accepted article decided within a minute of the last fault",
                   interval=0.5)
    except AssertionError:
        waiting = [i for i, s in statuses(store, accepted).items() if s != "processed"]
        raise AssertionError(f"{len(waiting)} of {len(accepted)} still waiting "
                             f"{time.monotonic() - last_fault:.0f} s after the last fault") from None
    print(f"all {len(accepted)} decided {time.monotonic() - last_fault:.1f} s after the last fault; "
          f"{poster.refused} posts answered 503 and were sent again")
    assert_processed_exactly_once(store, accepted)
    assert metric(stack, "articles_accepted") == metric(stack, "articles_decided") == len(accepted)
