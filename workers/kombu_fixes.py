"""A fix to kombu's Redis transport that keeps a worker alive when Redis goes away.

When the broker connection breaks, Celery 5.7 first ``collect()``s the old
connection and then ``close()``s it. kombu's Redis ``Channel.close`` begins by
reading the reply to a BRPOP still in flight; with the server gone that read
raises a connection error, and ``close`` stops there, before the channel is
marked closed. ``collect()`` swallows the error and drops the transport (its
``client`` becomes ``None``); if another channel's close also failed, nothing
closed the consuming channel in between. ``close()`` then closes it a second
time, tries to put its prefetched messages back through the dropped transport,
and raises ``AttributeError: 'NoneType' object has no attribute 'hostname'``,
which is not a connection error: the consumer dies and takes the worker with it.

The fix: a BRPOP whose connection is gone will never be answered, so its
connection error ends the read, not the close. (The read itself stays: kombu
added it so that a message BRPOP popped while the channel closes is delivered
and put back, not lost.) The channel then closes once,
while the transport is still there; putting the prefetched messages back fails
with a connection error (Redis is away), which Celery ignores, and they stay in
kombu's unacknowledged set in Redis, from where they are restored after the
visibility timeout (and Storywire's requeue pass sends their articles again
sooner). ``tests/workers/test_kombu_fixes.py`` reproduces the crash on a real
Redis and checks the fix; when it reports that kombu no longer crashes without
it, this module can go.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis

_ORIGINAL_CLOSE = kombu_redis.Channel.close


def _close(self) -> None:
    if self._in_poll and not self.closed:
        try:
            self._brpop_read()  # sets _in_poll to None whatever happens
        except kombu_redis.Empty:
            pass
        except self.connection_errors:
            pass  # the server went away: no reply is coming; go on closing
    _ORIGINAL_CLOSE(self)


def install() -> None:
    """Patch kombu's Redis channel (idempotent; every Storywire Celery app calls it)."""
    kombu_redis.Channel.close = _close

