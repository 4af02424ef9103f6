"""Start Storywire: Redis (unless REDIS_URL is set), the API, a worker, beat and Flower.

    python scripts/run.py                 # everything, in the foreground; Ctrl-C stops it all
    python scripts/run.py --role api      # one role only (what a container runs)

Environment: REDIS_URL, CELERY_BROKER_URL, API_HOST (127.0.0.1), API_PORT (8000),
FLOWER_PORT (5555), WORKER_CONCURRENCY (1), API_WORKERS (2), STORYWIRE_DATA_DIR
(var/, where the embedded Redis keeps its append-only file and beat its schedule),
STORYWIRE_REPAIR_INTERVAL (60 seconds between repair passes), STORYWIRE_REQUEUE_INTERVAL
(20 seconds between requeue passes), STORYWIRE_WORKER_NAME (the worker's node name;
storywire-<random>@<host> by default), STORYWIRE_API_KEY
(API keys; writes need one when set), FLOWER_BASIC_AUTH (user:password; required
when Flower listens beyond localhost).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storyengine.embedded_redis import EmbeddedRedis  # noqa: E402
from workers.names import MAINTENANCE_QUEUE, QUEUE  # noqa: E402

ROLES = ("api", "worker", "beat", "flower")


def redact_url(url: str) -> str:
    """A URL fit to print: a password, in the authority or in the query
    string (redis-py reads both), replaced by ***."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(k.lower() == "password" for k, _ in query):
        return url  # untouched, exactly as given
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = [(k, "***" if k.lower() == "password" else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def worker_name(env: dict[str, str]) -> str:
    """The worker's node name, as Flower, `celery inspect` and the heartbeats in
    Redis (workers/heartbeat.py) show it: STORYWIRE_WORKER_NAME when set (Celery
    expands %h to the host name), else ``storywire-<6 random hex>@%h``: one name
    per process, so two workers on one host are two workers, not one."""
    return env.get("STORYWIRE_WORKER_NAME") or f"storywire-{secrets.token_hex(3)}@%h"


def role_command(role: str, env: dict[str, str]) -> list[str]:
    """The command for one role. The Dockerfile, `make run` and the tests all start roles through this."""
    py = sys.executable
    if role == "api":
        return [py, "-m", "gunicorn", "--bind", f"{env.get('API_HOST', '127.0.0.1')}:{env.get('API_PORT', '8000')}",
                "--workers", env.get("API_WORKERS", "2"), "--access-logfile", "-", "--graceful-timeout", "10",
                # JSON or text lines for access, error and app logs alike (LOG_FORMAT; service/logs.py)
                "--logger-class", "service.logs.GunicornLogger",
                "service:create_app()"]
    if role == "worker":
        # The articles' queue and beat's passes' queue (workers/names.py), so a
        # pass never waits behind a backlog of articles.
        return [py, "-m", "celery", "-A", "workers.main", "worker", "--queues", f"{QUEUE},{MAINTENANCE_QUEUE}",
                "--concurrency", env.get("WORKER_CONCURRENCY", "1"), "--loglevel", env.get("LOG_LEVEL", "INFO"),
                "--events", "--without-gossip", "--without-mingle", "--hostname", worker_name(env)]
    if role == "beat":
        # Beat only schedules: it sends the repair task every STORYWIRE_REPAIR_INTERVAL
        # seconds and the requeue task every STORYWIRE_REQUEUE_INTERVAL, to the
        # maintenance queue, and a worker runs them. Run exactly one beat per deployment.
        schedule = Path(env.get("STORYWIRE_DATA_DIR", ROOT / "var")) / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        return [py, "-m", "celery", "-A", "workers.main", "beat", "--schedule", str(schedule),
                "--loglevel", env.get("LOG_LEVEL", "INFO")]
    if role == "flower":
        host = env.get("FLOWER_HOST", "127.0.0.1")
        auth = env.get("FLOWER_BASIC_AUTH", "")
        if auth and not all(u.strip() and p.strip() for u, _, p in (e.partition(":") for e in auth.split(","))):
            raise SystemExit("FLOWER_BASIC_AUTH must be user:password (comma-separated for several), "
                             "each with a user name and a non-empty password")
        if host not in ("127.0.0.1", "localhost", "::1") and not auth:
            raise SystemExit(f"Flower would listen on {host} without a password: set FLOWER_BASIC_AUTH=user:password "
                             "(Flower reads it from the environment), or keep FLOWER_HOST=127.0.0.1")
        # FLOWER_BASIC_AUTH stays in the environment, where Flower reads it, and
        # off the command line, where any local user could see it in ps.
        return [py, "-m", "celery", "-A", "workers.main", "flower", "--address=" + env.get("FLOWER_HOST", "127.0.0.1"),
                "--port=" + env.get("FLOWER_PORT", "5555")]
    raise SystemExit(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=ROLES, help="run only this role, in the foreground")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    if args.role:
        os.chdir(ROOT)
        os.execvpe(sys.executable, role_command(args.role, env), env)

    redis_server = None
    if not env.get("REDIS_URL"):
        data_dir = Path(env.get("STORYWIRE_DATA_DIR", ROOT / "var")) / "redis"
        redis_server = EmbeddedRedis(data_dir).start()
        env["REDIS_URL"] = redis_server.url
        print(f"redis   {redis_server.url}  (embedded; data in {data_dir})", flush=True)
    else:
        print(f"redis   {redact_url(env['REDIS_URL'])}  (from REDIS_URL)", flush=True)

    processes = {role: subprocess.Popen(role_command(role, env), cwd=ROOT, env=env) for role in ROLES}
    api = f"http://{env.get('API_HOST', '127.0.0.1')}:{env.get('API_PORT', '8000')}"
    print(f"api     {api}  (try {api}/v1/stories)", flush=True)
    print(f"flower  http://{env.get('FLOWER_HOST', '127.0.0.1')}:{env.get('FLOWER_PORT', '5555')}", flush=True)
    print(f"worker  1 Celery worker on queues '{QUEUE}' and '{MAINTENANCE_QUEUE}'; Ctrl-C stops everything",
          flush=True)
    print(f"beat    repair pass every {env.get('STORYWIRE_REPAIR_INTERVAL', '60')} s, requeue pass every "
          f"{env.get('STORYWIRE_REQUEUE_INTERVAL', '20')} s", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        for role, proc in processes.items():
            if proc.poll() is not None:
                print(f"{role} exited with {proc.returncode}; stopping the rest", file=sys.stderr, flush=True)
                status = proc.returncode or 1
                stopping = True
        time.sleep(0.5)
    for proc in processes.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in processes.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if redis_server:
        redis_server.stop()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
