"""The API and worker processes of sections 3 and 5, started as `make run` starts them."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .http_client import Http
from .settings import RETENTION_DAYS

ROOT = Path(__file__).resolve().parent.parent
# The Dockerfile's entrypoint: it execs the role's command (scripts/run.py's
# role_command, the one `make run` starts), so the pid is the role's own.
RUN_ROLE = [sys.executable, str(ROOT / "scripts" / "run.py"), "--role"]


def service_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of an api or worker process: the same for every run,
    writes open (no API key), reads public, the run's key prefix."""
    env = dict(os.environ)
    env.pop("STORYWIRE_API_KEY", None)
    env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, STORYWIRE_KEY_PREFIX=prefix,
               STORYWIRE_PUBLIC_READS="true", STORYWIRE_RETENTION_DAYS=str(RETENTION_DAYS), API_HOST="127.0.0.1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


@contextlib.contextmanager
def running_role(role: str, env: dict[str, str], log_path: Path, ready: Callable[[], bool],
                 timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """One role started as a container starts it, with the command `make run`
    starts, output to ``log_path``; stopped cleanly on the way out."""
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen([*RUN_ROLE, role], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {role} did not start; last lines of {log_path}:\n{tail(log_path)}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def api_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return Http(port).request("GET", "/healthz")[0] == 200
        except OSError:
            return False
    return ready


def worker_ready(log_path: Path) -> Callable[[], bool]:
    # Celery logs "<hostname> ready." once it consumes from the queue.
    return lambda: b" ready." in log_path.read_bytes()
