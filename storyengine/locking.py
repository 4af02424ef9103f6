"""The assignment lock: one writer of story and duplicate decisions at a time.

Deciding reads shared state (bands, stories, term statistics) and then writes
it, so it runs under one Redis lock with a timeout. The writes go out in one
MULTI/EXEC transaction that WATCHes the lock key and first checks that the
lock still holds our token: if it expired and another process took it, the
transaction aborts and the caller retries, so a slow process can never write
a decision made on stale reads. Article processing and the repair pass both
take this lock, so a merge never interleaves with an assignment.
"""
from __future__ import annotations

import redis

from .errors import StoreUnavailable

# A decision holds the lock for milliseconds; the timeout only matters when
# its holder died (killed, or Redis went away mid-decision), and then it is how
# long every other worker waits before deciding again.
LOCK_TIMEOUT_SECONDS = 10.0
LOCK_WAIT_SECONDS = 60.0


class AssignmentConflict(StoreUnavailable):
    """The assignment lock was lost before the decision was written; retry."""


class AssignmentLock:
    def __init__(self, client: redis.Redis, key: str, timeout: float = LOCK_TIMEOUT_SECONDS,
                 wait: float = LOCK_WAIT_SECONDS) -> None:
        self.redis = client
        self.key = key
        # Poll often while waiting: a batch holds the lock for tens of milliseconds, and
        # redis-py's default (every 100 ms) would leave a waiting worker idle most of that time.
        self._lock = client.lock(key, timeout=timeout, blocking_timeout=wait, sleep=0.002)
        self._token: bytes | None = None

    def __enter__(self) -> "AssignmentLock":
        if not self._lock.acquire():
            raise AssignmentConflict("timed out waiting for the assignment lock")
        self._token = self._lock.local.token
        return self

    def __exit__(self, *exc) -> None:
        self._token = None
        try:
            self._lock.release()
        except redis.exceptions.LockError:
            pass  # expired: the WATCH in commit() already protected the writes

    def commit(self, writes) -> None:
        """Run ``writes(pipe)`` in one transaction, only if we still hold the lock."""
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.key)
                if self._token is None or pipe.get(self.key) != self._token:
                    raise AssignmentConflict("the assignment lock expired before the decision was written")
                pipe.multi()
                writes(pipe)
                pipe.execute()
            except redis.WatchError:
                raise AssignmentConflict("the assignment lock expired before the decision was written") from None
