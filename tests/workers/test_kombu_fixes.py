"""workers/kombu_fixes.py on a real Redis: the broker connection Celery 5.7 tears
down after Redis went away, closed the way Celery closes it.

The situation is the one that killed the worker in
``test_faults.py::test_redis_stopped_and_started_again_mid_stream`` now and
then: the consuming (default) channel holds prefetched, unacknowledged
messages and has a BRPOP in flight; another channel on the same connection
(the remote-control one, with a fanout queue) fails to close; Redis stops.
"""
from __future__ import annotations

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Queue
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis

from embedded_redis.server import EmbeddedRedis
from workers import kombu_fixes

TASKS = Queue("fix-tasks", Exchange("fix-tasks"), "fix-tasks")
CONTROL = Queue("fix-control", Exchange("fix-control", type="fanout"), auto_delete=True)


class Broken:
    """A consumer connection caught by a Redis outage."""

    def __init__(self, server: EmbeddedRedis) -> None:
        with Connection(server.url) as producer_connection:
            producer = producer_connection.Producer()
            for i in range(2):
                producer.publish({"i": i}, exchange=TASKS.exchange, routing_key="fix-tasks", declare=[TASKS])
        self.delivered: list = []
        self.connection = Connection(server.url)
        self.channel = self.connection.default_channel
        self.channel.basic_qos(0, 10, False)
        Consumer(self.channel, [TASKS], callbacks=[lambda body, message: self.delivered.append(body)],
                 accept=["json"]).consume()
        Consumer(self.connection.channel(), [CONTROL], callbacks=[lambda body, message: None],
                 accept=["json"]).consume()
        for _ in range(10):  # both messages delivered (not acknowledged), then a BRPOP left waiting
            try:
                self.connection.drain_events(timeout=0.2)
            except TimeoutError:  # socket.timeout
                pass
            if len(self.delivered) == 2 and self.channel._in_poll:
                break
        assert len(self.delivered) == 2 and self.channel._in_poll, (self.delivered, self.channel._in_poll)
        server.stop()

    def tear_down_as_celery_does(self) -> None:
        """celery.worker.consumer.Consumer.on_connection_error_after_connected (5.7)."""
        try:
            self.connection.collect(socket_timeout=1)
        except Exception:  # noqa: BLE001, S110  (Celery ignores every error here)
            pass
        ignore_errors(self.connection, self.connection.close)  # only connection errors are ignored


@pytest.fixture
def server(tmp_path):
    started = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    yield started
    started.stop()


@pytest.mark.e2e
def test_the_consumer_connection_closes_cleanly_and_keeps_the_prefetched_messages(server, tmp_path):
    kombu_fixes.install()
    broken = Broken(server)
    broken.tear_down_as_celery_does()
    assert broken.channel.closed

    # The two prefetched messages are still in kombu's unacknowledged set when
    # Redis comes back (append-only file), so the visibility timeout restores them.
    again = EmbeddedRedis(server.data_dir, port=server.port, appendonly=True).start()
    try:
        client = redis.Redis.from_url(again.url)
        assert client.hlen("unacked") == 2
        assert client.zcard("unacked_index") == 2
    finally:
        again.stop()


@pytest.mark.e2e
def test_kombu_without_the_fix_still_crashes(server, monkeypatch):
    """When this fails, kombu no longer needs the fix: remove workers/kombu_fixes.py."""
    monkeypatch.setattr(kombu_redis.Channel, "close", kombu_fixes._ORIGINAL_CLOSE)  # put back after the test
    broken = Broken(server)
    with pytest.raises(AttributeError, match="hostname"):
        broken.tear_down_as_celery_does()


def test_install_is_idempotent():
    kombu_fixes.install()
    kombu_fixes.install()
    assert kombu_redis.Channel.close is kombu_fixes._close
    assert kombu_redis.SentinelChannel.close is kombu_fixes._close  # Sentinel URLs get it too
