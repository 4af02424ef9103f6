"""The machine, the Redis and the code a run measured, written beside its figures."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

from storyengine.store import connect

ROOT = Path(__file__).resolve().parent.parent


def machine_info(redis_url: str, embedded: bool) -> dict[str, object]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    client = connect(redis_url)
    try:
        redis_version = str(client.info("server").get("redis_version", "unknown"))
    finally:
        client.close()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu_model, "cpu_cores": os.cpu_count() or 0, "cpu_cores_usable": usable or 0,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "redis_version": redis_version, "redis_embedded": embedded, "git_commit": git_commit()}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (modified)' if dirty else ''}" if head else "unknown"
