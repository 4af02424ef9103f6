"""The assignment lock: one writer of story and duplicate decisions at a time.

Deciding reads shared state (bands, stories, term statistics) and then writes
it, so it runs under one Redis lock: a one-second lease its holder renews.
The writes go out in one call of a script (storyengine.commit_script) that
first checks the lock still holds our token: if it expired and another
process took it, nothing is written and the caller retries, so a slow
process can never write a decision made on stale reads. Article processing,
retention and the repair pass all write through :meth:`AssignmentLock.commit`,
so a merge never interleaves with an assignment, and every write is logged
for the deciders' in-memory replicas (storyengine.change_log, replica).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from . import change_log
from .commit_script import COMMIT
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
POLL_SECONDS = 0.002


class AssignmentConflict(StoreUnavailable):
    """The assignment lock was lost before the decision was written; retry."""


class AssignmentLock:
    def __init__(self, client: redis.Redis, keys: Keys, log_entries: int, lease: float = LEASE_SECONDS,
                 wait: float = LOCK_WAIT_SECONDS, renew_every: float = RENEW_EVERY_SECONDS,
                 waiting: Callable[[], None] | None = None) -> None:
        self.redis = client
        self.key = key = keys.assign_lock
        self.keys = keys
        self.log_entries = log_entries  # the change log's cap (settings.change_log_entries)
        self._recorder = change_log.Recorder(keys)
        self._commit = client.register_script(COMMIT)
        self.lease = lease
        self.renew_every = renew_every
        self.wait = wait
        self.waiting = waiting  # called between tries while another process holds the lock
        # Not thread-local: the renewing thread extends the lease with the holder's token.
        self._lock = client.lock(key, timeout=lease, thread_local=False)
        self._token: bytes | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> "AssignmentLock":
        # Tried often: a batch holds the lock for tens of milliseconds, and
        # redis-py's default (every 100 ms) would leave a waiting worker idle
        # most of that time. Between tries, ``waiting`` takes in what the
        # holder commits, so that work is not left for under the lock.
        deadline = time.monotonic() + self.wait
        while not self._lock.acquire(blocking=False):
            if time.monotonic() > deadline:
                raise AssignmentConflict("timed out waiting for the assignment lock")
            if self.waiting is not None:
                self.waiting()
            time.sleep(POLL_SECONDS)
        self._token = self._lock.local.token
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="assignment-lock-lease", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                if self._token is None or not self._lock.reacquire():
                    return
            except redis.exceptions.LockError:
                return  # lost: commit() checks the token and refuses a decision made after it
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
            pass  # expired, or Redis away: commit()'s token check already protected the writes

    def commit(self, writes, meanwhile: Callable[[bytes, list], None] | None = None) -> change_log.Entry | None:
        """Run ``writes(pipe)`` (commands queued on a pipeline) as one call of
        storyengine.commit_script.COMMIT: only if we still hold the lock, all
        at once, with what they wrote logged for the replicas
        (storyengine.change_log). Returns the entry logged (None if nothing a
        replica keeps was written). ``meanwhile(token, commands)`` runs while
        Redis runs the script, when there is an entry: a replica applies it then."""
        if self._token is None:
            raise AssignmentConflict("no assignment lock held")
        with self.redis.pipeline(transaction=False) as pipe:
            writes(pipe)  # only collected: sent below as one argument
            commands = change_log.wire(pipe.command_stack)
            pipe.reset()
        if not commands:
            return None
        kept = self._recorder.record(commands)
        token = change_log.new_token()
        try:
            seq = self._run_commit([self.key, self.keys.changes], [
                self._token, self.log_entries, token, change_log.pack(commands),
                change_log.pack(kept) if kept else b"", change_log.FORGET_EVERYTHING],
                (lambda: meanwhile(token, kept)) if meanwhile is not None and kept else None)
        except redis.ResponseError as exc:
            if str(exc).startswith("LOCKLOST"):
                raise AssignmentConflict("the assignment lock expired before the decision was written") from None
            raise
        return change_log.Entry(int(seq), token, kept) if kept else None

    def _run_commit(self, keys: list, args: list, meanwhile: Callable[[], None] | None):
        """EVALSHA COMMIT: sent, then ``meanwhile``, then the reply read. Never
        sent twice over a broken connection, whatever the client's retries: a
        second run of a commit the first may have made would count it twice."""
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", self._commit.sha, len(keys), *keys, *args)
            if meanwhile is not None:
                try:
                    meanwhile()
                except BaseException:
                    conn.disconnect()  # its reply unread: the connection cannot be used again
                    raise
            try:
                return self.redis.parse_response(conn, "EVALSHA")
            except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts: not run, so run it now
                self._commit.sha = self.redis.script_load(COMMIT)
                conn.send_command("EVALSHA", self._commit.sha, len(keys), *keys, *args)
                return self.redis.parse_response(conn, "EVALSHA")
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
