"""Start Storywire: Redis (unless REDIS_URL is set), the API, a worker, beat and Flower.

    python scripts/run.py                 # everything, in the foreground; Ctrl-C stops it all
    python scripts/run.py --role api      # one role only (what a container runs)

Environment: REDIS_URL, CELERY_BROKER_URL, API_HOST (127.0.0.1), API_PORT (8000),
FLOWER_PORT (5555), WORKER_CONCURRENCY (1), API_WORKERS (2), STORYWIRE_DATA_DIR
(var/, where the embedded Redis keeps its append-only file and beat its schedule),
STORYWIRE_REPAIR_INTERVAL (60 seconds between repair passes), STORYWIRE_REQUEUE_INTERVAL
(20 seconds between requeue passes), STORYWIRE_WORKER_NAME (the worker's node name;
storywire-<random>@<host> by default), STORYWIRE_QUEUE (the articles' queue,
storywire by default: one per deployment sharing a broker), STORYWIRE_API_KEY
(API keys; writes need one when set), FLOWER_BASIC_AUTH (user:password; required
when Flower listens beyond localhost; without it, on localhost, Flower's HTTP
API answers without a password, read-only).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from embedded_redis.server import EmbeddedRedis
from storyengine.errors import ConfigError
from workers.names import QUEUE, maintenance_queue, queue_name

ROOT = Path(__file__).resolve().parent.parent

ROLES = ("api", "worker", "beat", "flower")
# The roles that listen: (host variable, port variable, default port). The
# embedded Redis takes a free port of its own, so only these two can collide.
LISTENERS = {"api": ("API_HOST", "API_PORT", "8000"), "flower": ("FLOWER_HOST", "FLOWER_PORT", "5555")}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def listen_address(role: str, env: dict[str, str]) -> tuple[str, str]:
    """(host, port) the API or Flower listens on: 127.0.0.1 and its default port unless set."""
    host_var, port_var, default_port = LISTENERS[role]
    return env.get(host_var, "127.0.0.1"), env.get(port_var, default_port)


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


def worker_queues(env: dict[str, str]) -> tuple[str, str]:
    """The deployment's articles' queue (STORYWIRE_QUEUE, else "storywire") and its maintenance queue."""
    try:
        queue = queue_name(env.get("STORYWIRE_QUEUE") or QUEUE)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    return queue, maintenance_queue(queue)


def role_command(role: str, env: dict[str, str]) -> list[str]:
    """The command for one role. The Dockerfile, `make run` and the tests all start roles through this."""
    py = sys.executable
    if role == "api":
        host, port = listen_address("api", env)
        return [py, "-m", "gunicorn", "--bind", f"{host}:{port}",
                "--workers", env.get("API_WORKERS", "2"), "--access-logfile", "-", "--graceful-timeout", "10",
                # JSON or text lines for access, error and app logs alike (LOG_FORMAT; service/logs.py)
                "--logger-class", "service.logs.GunicornLogger",
                "service:create_app()"]
    if role == "worker":
        # The articles' queue and beat's passes' queue (workers/names.py), so a
        # pass never waits behind a backlog of articles.
        return [py, "-m", "celery", "-A", "workers.main", "worker", "--queues", ",".join(worker_queues(env)),
                "--concurrency", env.get("WORKER_CONCURRENCY", "1"), "--loglevel", env.get("LOG_LEVEL", "INFO"),
                "--events", "--without-gossip", "--without-mingle", "--hostname", worker_name(env)]
    if role == "beat":
        # Beat only schedules: it sends the repair task every STORYWIRE_REPAIR_INTERVAL
        # seconds and the requeue task every STORYWIRE_REQUEUE_INTERVAL, to the
        # maintenance queue, and a worker runs them. Run exactly one beat per deployment.
        schedule = data_dir(env) / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        return [py, "-m", "celery", "-A", "workers.main", "beat", "--schedule", str(schedule),
                "--loglevel", env.get("LOG_LEVEL", "INFO")]
    if role == "flower":
        host, port = listen_address("flower", env)
        auth = env.get("FLOWER_BASIC_AUTH", "")
        if auth and not all(u.strip() and p.strip() for u, _, p in (e.partition(":") for e in auth.split(","))):
            raise SystemExit("FLOWER_BASIC_AUTH must be user:password (comma-separated for several), "
                             "each with a user name and a non-empty password")
        if host not in LOOPBACK_HOSTS and not auth:
            raise SystemExit(f"Flower would listen on {host} without a password: set FLOWER_BASIC_AUTH=user:password "
                             "(Flower reads it from the environment), or keep FLOWER_HOST=127.0.0.1")
        # FLOWER_BASIC_AUTH stays in the environment, where Flower reads it, and
        # off the command line, where any local user could see it in ps.
        return [py, "-m", "celery", "-A", "workers.main", "flower", "--address=" + host, "--port=" + port]
    raise SystemExit(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def flower_api_open(env: dict[str, str]) -> bool:
    """Whether Flower's HTTP API answers without a password: only on loopback
    and only without FLOWER_BASIC_AUTH (the `make run` default)."""
    return listen_address("flower", env)[0] in LOOPBACK_HOSTS and not env.get("FLOWER_BASIC_AUTH")


def role_environment(role: str, env: dict[str, str]) -> dict[str, str]:
    """The environment a role runs with: ``env``, and for Flower whether its
    HTTP API needs a password. Flower 2 answers its API (``curl :5555/api/tasks``)
    with 401 unless it has a password or FLOWER_UNAUTHENTICATED_API is set. It is
    set on loopback without a password, and dropped everywhere else, whatever the
    shell holds, so an open API never listens beyond this machine."""
    env = dict(env)
    if role == "flower":
        env.pop("FLOWER_UNAUTHENTICATED_API", None)
        if flower_api_open(env):
            env["FLOWER_UNAUTHENTICATED_API"] = "true"
            # Read-only unless the user says otherwise: an open Flower answers any web
            # page in a local browser (Access-Control-Allow-Origin: *, no XSRF check),
            # and read-only refuses every request that would act on workers or tasks.
            env["FLOWER_READ_ONLY"] = env.get("FLOWER_READ_ONLY") or "true"
    return env


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``port`` where a server would bind it on
    ``host``. Bound the way gunicorn and Flower bind (SO_REUSEADDR), so a port
    the last run left in TIME_WAIT is free, as it is for them."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unknown host: the server says so itself
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return True
    return False


def port_conflicts(env: dict[str, str]) -> list[str]:
    """What would stop the API or Flower from listening, one line each, saying
    which variable to set, to a port that is free now; empty when both can."""
    return port_plan(env)[0]


def port_plan(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the lines of :func:`port_conflicts`, the variable settings they suggest)."""
    problems, ports, fixes = [], {}, {}
    for role, (_, port_var, default_port) in LISTENERS.items():
        host, port = listen_address(role, env)
        if port.isascii() and port.isdigit() and int(port) <= 65535:
            ports[role] = (host, int(port))
        else:
            problems.append(f"{port_var}={port!r} is not a port number: set {port_var}={default_port} make run, "
                            "or another number from 1 to 65535")
            fixes[port_var] = default_port
    taken = {port for _, port in ports.values()}
    claimed: dict[int, str] = {}  # port -> the variable that asked for it first
    for role, (host, port) in ports.items():
        port_var = LISTENERS[role][1]
        if port == 0:
            continue  # any free port, the server's choice
        if port in claimed:
            fixes[port_var] = free_port_after(host, port, taken)
            problems.append(f"{claimed[port]} and {port_var} are both {port}: "
                            f"set {port_var}={fixes[port_var]} make run")
        elif port_in_use(host, port):
            fixes[port_var] = free_port_after(host, port, taken)
            problems.append(f"port {port} is in use, so {role} cannot listen on {host}:{port}: "
                            f"set {port_var}={fixes[port_var]} make run, or stop what holds port {port}")
        if fixes.get(port_var, "").isdigit():
            taken.add(int(fixes[port_var]))
        claimed.setdefault(port, port_var)
    return problems, fixes


def data_dir(env: dict[str, str]) -> Path:
    """Where the embedded Redis keeps its data and beat its schedule."""
    return Path(env.get("STORYWIRE_DATA_DIR", ROOT / "var"))


def lock_data_dir(env: dict[str, str]):
    """An open file holding an exclusive lock on the data directory for as long
    as this process runs, or None when another `make run` holds it: two would
    write one Redis append-only file and one beat schedule, mixing their
    histories."""
    directory = data_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / "run.lock", "a+")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


# What sets one instance of `make run` apart from another on the same machine.
TOGETHER = ("API_PORT", "FLOWER_PORT", "STORYWIRE_DATA_DIR")


def all_together(env: dict[str, str], fixes: dict[str, str]) -> str:
    """The one command that starts this instance beside what holds its ports
    and data: the variables the user set, with the suggested changes."""
    settings = {name: fixes.get(name, env.get(name)) for name in TOGETHER if fixes.get(name, env.get(name))}
    return "all together: " + " ".join(f"{name}={value}" for name, value in settings.items()) + " make run"


def free_port_after(host: str, port: int, taken: set[int]) -> str:
    """The first port above ``port`` that is free now and not ``taken``, to suggest."""
    for candidate in range(port + 1, min(port + 200, 65536)):
        if candidate not in taken and not port_in_use(host, candidate):
            return str(candidate)
    return "<a free port>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=ROLES, help="run only this role, in the foreground")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    if args.role:
        os.chdir(ROOT)
        os.execvpe(sys.executable, role_command(args.role, env), role_environment(args.role, env))

    # Refusals before anything starts: a port another program holds (the role
    # would exit with 1 and take the rest down), a data directory another
    # `make run` uses, or Flower without a password.
    problems, fixes = port_plan(env)
    data_lock = lock_data_dir(env)  # held until this process ends
    if data_lock is None:
        fixes["STORYWIRE_DATA_DIR"] = f"{data_dir(env)}-{fixes.get('API_PORT', env.get('API_PORT', '2'))}"
        problems.append(f"another make run uses {data_dir(env)} (its Redis data and beat schedule): stop it, or "
                        f"give this one its own, set STORYWIRE_DATA_DIR={fixes['STORYWIRE_DATA_DIR']} make run")
    if problems:
        if len(fixes) > 1 or [name for name in TOGETHER if name in env and name not in fixes]:
            problems.append(all_together(env, fixes))  # one command, not one variable at a time
        raise SystemExit("\n".join(problems))
    commands = {role: role_command(role, env) for role in ROLES}

    redis_server = None
    processes: dict[str, subprocess.Popen] = {}
    try:
        if not env.get("REDIS_URL"):
            redis_dir = data_dir(env) / "redis"
            redis_server = EmbeddedRedis(redis_dir, own_session=True).start()
            env["REDIS_URL"] = redis_server.url
            print(f"redis   {redis_server.url}  (embedded; data in {redis_dir})", flush=True)
        else:
            print(f"redis   {redact_url(env['REDIS_URL'])}  (from REDIS_URL)", flush=True)
        # Each role in a session of its own: the terminal's Ctrl-C reaches this
        # process alone, which then stops the roles in order (see stop_roles).
        for role in ROLES:
            processes[role] = subprocess.Popen(commands[role], cwd=ROOT, env=role_environment(role, env),
                                               start_new_session=True)
        return supervise(processes, env)
    finally:
        stop_roles(processes)
        if redis_server:
            redis_server.stop()


def supervise(processes: dict[str, subprocess.Popen], env: dict[str, str]) -> int:
    """Print where each role listens, then wait for Ctrl-C (or SIGTERM) or for
    a role to exit; the exit status."""
    api = "http://{}:{}".format(*listen_address("api", env))
    print(f"api     {api}  (try {api}/v1/stories)", flush=True)
    flower = "http://{}:{}".format(*listen_address("flower", env))
    print(f"flower  {flower}  " + (f"(its API, read-only, without a password on this machine: {flower}/api/tasks)"
                                   if flower_api_open(env) else "(password from FLOWER_BASIC_AUTH)"), flush=True)
    print("worker  1 Celery worker on queues '{}' and '{}'; Ctrl-C stops everything".format(*worker_queues(env)),
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
    return status


# Stopped first to last, each step before the next: Flower and beat only watch
# and schedule, and while Redis is up Flower stops at once (with Redis gone
# first, it retried, printing "Failed to capture events", for up to 18 s); the
# worker and the API finish what they hold; Redis, which all of them use, last.
STOP_ORDER = (("flower",), ("beat",), ("worker", "api"))
STOP_SECONDS = 15


def stop_roles(processes: dict[str, subprocess.Popen]) -> None:
    for step in STOP_ORDER:
        running = [processes[role] for role in step if role in processes and processes[role].poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
