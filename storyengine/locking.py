"""The assignment lock: one writer of story and duplicate decisions at a time.

Deciding reads shared state (bands, stories, term statistics) and then writes
it, so it runs under one Redis lock: a one-second lease its holder renews. The writes go out in one
MULTI/EXEC transaction that WATCHes the lock key and first checks that the
lock still holds our token: if it expired and another process took it, the
transaction aborts and the caller retries, so a slow process can never write
a decision made on stale reads. Article processing and the repair pass both
take this lock, so a merge never interleaves with an assignment.

Every commit also appends what it wrote to the change log
(storyengine.change_log), in the same transaction, for the deciders'
in-memory replicas (storyengine.replica).
"""
from __future__ import annotations

import threading

import redis

from . import change_log
from .errors import StoreUnavailable
from .keys import Keys

# The lock is a short lease that its holder renews while it holds it: if the
# holder dies (killed, or cut off from Redis), the others wait at most this
# long. A decision holds it for milliseconds to a few hundred.
LEASE_SECONDS = 1.0
# The holder renews the lease this often, from a thread of its own, so a
# long step (a big batch, a retention pass, a garbage collection) never
# loses it while the holder is alive.
RENEW_EVERY_SECONDS = 0.25
LOCK_WAIT_SECONDS = 60.0
# A commit (one MULTI/EXEC, a large batch's writes) may take longer than a
# lease while the renewer waits for it: its lease is extended to this first.
COMMIT_BUDGET_SECONDS = 5.0


class AssignmentConflict(StoreUnavailable):
    """The assignment lock was lost before the decision was written; retry."""


class AssignmentLock:
    def __init__(self, client: redis.Redis, keys: Keys, log_entries: int, lease: float = LEASE_SECONDS,
                 wait: float = LOCK_WAIT_SECONDS, renew_every: float = RENEW_EVERY_SECONDS) -> None:
        self.redis = client
        self.key = key = keys.assign_lock
        self.keys = keys
        self.log_entries = log_entries  # the change log's cap (settings.change_log_entries)
        self._recorder = change_log.Recorder(keys)
        self._append = client.register_script(change_log.APPEND)
        self.lease = lease
        self.renew_every = renew_every
        # Poll often while waiting: a batch holds the lock for tens of milliseconds, and
        # redis-py's default (every 100 ms) would leave a waiting worker idle most of that time.
        # Not thread-local: the renewing thread extends the lease with the holder's token.
        self._lock = client.lock(key, timeout=lease, blocking_timeout=wait, sleep=0.002, thread_local=False)
        self._token: bytes | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # Renewing touches the lock key, which the commit WATCHes: the two never overlap.
        self._guard = threading.Lock()

    def __enter__(self) -> "AssignmentLock":
        if not self._lock.acquire():
            raise AssignmentConflict("timed out waiting for the assignment lock")
        self._token = self._lock.local.token
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="assignment-lock-lease", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                with self._guard:
                    if self._token is None or not self._lock.reacquire():
                        return
            except redis.exceptions.LockError:
                return  # lost: the WATCH in commit() refuses a decision made after it
            except redis.RedisError:
                continue  # a blip: try again at the next tick, while the lease may still hold

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
            self._renewer = None
        self._token = None
        try:
            self._lock.release()
        except (redis.exceptions.LockError, redis.RedisError):
            pass  # expired, or Redis away: the WATCH in commit() already protected the writes

    def _forget_everything(self) -> None:
        try:
            self._append(keys=[self.keys.changes],
                         args=[self.log_entries, change_log.new_token(), change_log.pack([[b"FORGETALL"]])])
        except redis.RedisError:
            pass  # Redis away: the replicas' next sync fails too, and the log's gap (if any) tells them

    def commit(self, writes) -> change_log.Entry | None:
        """Run ``writes(pipe)`` in one transaction, only if we still hold the
        lock, and log what it wrote (storyengine.change_log) in the same
        transaction. Returns the entry logged (None if nothing a replica keeps was written)."""
        with self._guard, self.redis.pipeline(transaction=True) as pipe:
            try:
                # The renewer waits while we commit: give the commit a budget of its own.
                if not self._lock.extend(COMMIT_BUDGET_SECONDS, replace_ttl=True):
                    raise AssignmentConflict("the assignment lock expired before the decision was written")
                pipe.watch(self.key)
                if self._token is None or pipe.get(self.key) != self._token:
                    raise AssignmentConflict("the assignment lock expired before the decision was written")
                pipe.multi()
                writes(pipe)
                commands = self._recorder.record(pipe.command_stack)
                if not commands:
                    pipe.execute()
                    return None
                token = change_log.new_token()
                self._append(keys=[self.keys.changes], args=[self.log_entries, token, change_log.pack(commands)],
                             client=pipe)
                try:
                    seq = pipe.execute()[-1]
                except redis.ResponseError:
                    # A command failed inside EXEC (the rest ran, and the entry was logged as if all
                    # had): every replica forgets what it holds.
                    self._forget_everything()
                    raise
                return change_log.Entry(int(seq), token, commands)
            except (redis.WatchError, redis.exceptions.LockError):
                raise AssignmentConflict("the assignment lock expired before the decision was written") from None
