"""Ctrl-C on `make run` (scripts/run.py) stops every role before the Redis they use.

The terminal's Ctrl-C goes to the whole foreground process group. It used to
reach the embedded Redis too, which stopped at once, and Flower, still
running, printed "Failed to capture events... Connection refused" every time,
and once kept retrying for 18 s. Now each role and Redis run in sessions of
their own, the Ctrl-C reaches run.py alone, and run.py stops Flower, beat, the
worker and the API, then Redis.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from embedded_redis.server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
STARTED_WITHIN = 90.0
STOPPED_WITHIN = 40.0


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.e2e
def test_ctrl_c_stops_flower_before_redis_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWER_", "STORYWIRE_", "API_", "WORKER_", "REDIS_"))
           and k not in ("CELERY_BROKER_URL", "PYTHONPATH")}
    api_port, flower_port = free_port(), free_port()
    env.update(API_PORT=str(api_port), FLOWER_PORT=str(flower_port), API_WORKERS="1", HOME=str(tmp_path),
               STORYWIRE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        # In a process group of its own, as a shell runs a foreground job: the
        # SIGINT below goes to that whole group, as a terminal's Ctrl-C does.
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run.py")], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = []
    try:
        deadline = time.monotonic() + STARTED_WITHIN
        while not (answers(f"http://127.0.0.1:{api_port}/healthz")
                   and answers(f"http://127.0.0.1:{flower_port}/api/workers")):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "make run did not start:\n" + log_path.read_text(errors="replace")
            time.sleep(0.5)
        time.sleep(2.0)  # Flower is capturing the workers' events now
        started = psutil.Process(proc.pid).children(recursive=True)
        [redis_server] = [p for p in started if "redis-server" in " ".join(p.cmdline())]
        [flower] = [p for p in started if "flower" in p.cmdline()]
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        gone: dict[str, float] = {}  # when each stopped, after the Ctrl-C
        while proc.poll() is None and time.monotonic() - began < STOPPED_WITHIN:
            for name, process in (("redis", redis_server), ("flower", flower)):
                if name not in gone and not alive(process):
                    gone[name] = time.monotonic() - began
            time.sleep(0.005)
        proc.wait(timeout=1)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for child in started:
            if child.is_running():
                child.kill()
    output = log_path.read_text(errors="replace")
    assert proc.returncode == 0, output
    # Redis outlives Flower: Flower never finds it gone (which it reported as
    # "Failed to capture events... Connection refused", retrying for up to 18 s).
    assert gone["flower"] < gone.get("redis", took), gone
    assert "Failed to capture events" not in output and "Connection refused" not in output, output
    assert not [p for p in started if alive(p)], "a role or Redis was left running"
    assert took < STOPPED_WITHIN
