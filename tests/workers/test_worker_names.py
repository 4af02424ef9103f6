"""Each worker process has a name of its own (scripts/run.py, worker_name):
``storywire-<6 random hex>@<host>``, or STORYWIRE_WORKER_NAME. Two workers on
one host are two workers to Celery, Flower and the heartbeats, and the
compose file's health check (a ping, matched on the container's host name)
still finds its own.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.run import role_command, worker_name
from embedded_redis.server import EmbeddedRedis
from storyengine.keys import Keys
from storyengine.store import connect
from tests.helpers import RunningProcess, log_says
from workers import heartbeat

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "sw-names"
HOST = socket.gethostname()


def hostname_arg(argv: list[str]) -> str:
    return argv[argv.index("--hostname") + 1]


def test_each_worker_command_names_its_worker_anew():
    names = {hostname_arg(role_command("worker", {})) for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"storywire-[0-9a-f]{6}@%h", name) for name in names), names


def test_storywire_worker_name_sets_it():
    assert hostname_arg(role_command("worker", {"STORYWIRE_WORKER_NAME": "ingest-7@%h"})) == "ingest-7@%h"
    assert worker_name({"STORYWIRE_WORKER_NAME": ""}).startswith("storywire-")


def compose_worker_check() -> str:
    """The worker's health check in docker-compose.yml, as the container's shell sees it ($$ is a literal $)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kind, command = compose["services"]["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return command.replace("$$", "$").replace("python ", f"{sys.executable} ", 1)


@pytest.mark.e2e
def test_two_workers_on_one_host_are_two_workers(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        env = dict(os.environ, REDIS_URL=server.url, CELERY_BROKER_URL=server.url, STORYWIRE_KEY_PREFIX=PREFIX,
                   PYTHONPATH=str(ROOT), WORKER_CONCURRENCY="1", LOG_LEVEL="INFO")
        env.pop("STORYWIRE_WORKER_NAME", None)
        workers = []
        try:
            for n in range(2):
                worker = RunningProcess(role_command("worker", env), env, tmp_path / f"worker-{n}.log",
                                        own_session=True)
                workers.append(worker)
                worker.wait_for("the worker starts", lambda w=worker: log_says(" ready.")(w))
            started = [re.search(r"(storywire-[0-9a-f]{6}@\S+) ready\.", w.log_text())[1] for w in workers]
            assert len(set(started)) == 2 and all(name.endswith(f"@{HOST}") for name in started), started

            # Both answer a ping, each under its own name.
            ping = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.main", "inspect", "ping",
                                   "--timeout", "3"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert sorted(re.findall(r"->\s+(\S+): OK", ping.stdout)) == sorted(started), ping.stdout
            # Both beat, each under its own name.
            client = connect(server.url)
            assert sorted(heartbeat.seen(client, Keys(PREFIX), within=30)) == sorted(started)

            # The compose health check finds this host's workers, and no other host's.
            check = compose_worker_check()
            ok = subprocess.run(["sh", "-c", check], env=dict(env, HOSTNAME=HOST), cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
            assert ok.returncode == 0, (ok.stdout, ok.stderr)
            other = subprocess.run(["sh", "-c", check], env=dict(env, HOSTNAME=f"not-{HOST}"), cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)
            assert other.returncode != 0, other.stdout
        finally:
            for worker in workers:
                worker.stop()
