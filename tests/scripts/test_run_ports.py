"""`make run` (scripts/run.py) checks the ports it binds before it starts anything.

A port another program holds used to end in "api exited with 1" after every
role had started. Now run.py refuses at once, names the port and the variable
that moves it, and suggests a port that is free ("port 8000 is in use ...:
set API_PORT=8001 make run"). The embedded Redis takes a free port of its
own, so only API_PORT and FLOWER_PORT are checked. Also: `make feeds` posts
to the API on API_PORT when API is not given.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.run import port_conflicts, port_in_use
from embedded_redis.server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_PY = ROOT / "scripts" / "run.py"
SUGGESTION = re.compile(r"set (API_PORT|FLOWER_PORT)=(\d+) make run")


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port something listens on, as another program's server would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def clean_environ(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWER_", "STORYWIRE_", "API_")) and k not in ("REDIS_URL", "CELERY_BROKER_URL",
                                                                                 "API", "MAKEFLAGS", "MFLAGS")}
    env.update(extra)
    return env


def suggested_port(message: str, variable: str) -> int:
    found = SUGGESTION.search(message)
    assert found and found.group(1) == variable, message
    return int(found.group(2))


# ====================================================== port_conflicts
@pytest.mark.parametrize("variable,other", [("API_PORT", "FLOWER_PORT"), ("FLOWER_PORT", "API_PORT")])
def test_a_port_in_use_is_named_with_the_variable_that_moves_it(occupied, variable, other):
    [message] = port_conflicts({variable: str(occupied), other: str(free_port())})
    assert message.startswith(f"port {occupied} is in use"), message
    port = suggested_port(message, variable)
    assert port > occupied and not port_in_use("127.0.0.1", port), message


def test_both_ports_in_use_are_both_named(occupied):
    with socket.socket() as second:
        second.bind(("127.0.0.1", 0))
        second.listen()
        flower_port = second.getsockname()[1]
        messages = port_conflicts({"API_PORT": str(occupied), "FLOWER_PORT": str(flower_port)})
    assert [suggested_port(m, v) > 0 for m, v in zip(messages, ["API_PORT", "FLOWER_PORT"])] == [True, True], messages
    assert f"port {occupied} is in use" in messages[0] and f"port {flower_port} is in use" in messages[1], messages


def test_free_ports_give_no_message():
    assert port_conflicts({"API_PORT": str(free_port()), "FLOWER_PORT": str(free_port())}) == []


def test_one_port_for_both_roles_is_refused():
    port = free_port()
    [message] = port_conflicts({"API_PORT": str(port), "FLOWER_PORT": str(port)})
    assert message.startswith(f"API_PORT and FLOWER_PORT are both {port}"), message
    assert suggested_port(message, "FLOWER_PORT") != port


@pytest.mark.parametrize("value", ["http", "80a", "-1", "70000", "", "²"])
def test_a_port_that_is_no_number_is_refused(value):
    [message] = port_conflicts({"API_PORT": value, "FLOWER_PORT": str(free_port())})
    assert message.startswith(f"API_PORT={value!r} is not a port number: set API_PORT=8000 make run"), message


def test_a_port_left_in_time_wait_by_the_last_run_is_free():
    """A server that closed its connections leaves them in TIME_WAIT; the next
    gunicorn or Flower binds over them (both set SO_REUSEADDR, as this server
    does), so the check must not call the port in use."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side waits in TIME_WAIT
        client.close()
    assert not port_in_use("127.0.0.1", port)
    assert port_conflicts({"API_PORT": str(port), "FLOWER_PORT": str(free_port())}) == []


# ====================================================== run.py and make run, for real
def run_refused(argv: list[str], env: dict[str, str], data: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout + result.stderr
    assert not (data / "redis").exists(), "the embedded Redis was started before the refusal"
    assert "redis   " not in result.stdout and "exited with" not in result.stderr, result.stdout + result.stderr
    return result


@pytest.mark.e2e
def test_run_py_refuses_a_port_in_use_before_starting_anything(occupied, tmp_path):
    env = clean_environ(API_PORT=str(occupied), FLOWER_PORT=str(free_port()), STORYWIRE_DATA_DIR=str(tmp_path),
                        HOME=str(tmp_path))
    result = run_refused([sys.executable, str(RUN_PY)], env, tmp_path)
    assert f"port {occupied} is in use" in result.stderr, result.stderr
    suggested_port(result.stderr, "API_PORT")


@pytest.mark.e2e
def test_a_second_make_run_beside_the_first_is_told_one_command_for_everything(occupied, tmp_path):
    """The first instance holds its data directory (and here its Flower port):
    a second one started with only API_PORT changed is told every variable at
    once, not one per try, and never opens the first one's Redis data."""
    data = tmp_path / "var"
    data.mkdir()
    with open(data / "run.lock", "a+") as first:  # as the first make run holds it
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        api_port = free_port()
        env = clean_environ(API_PORT=str(api_port), FLOWER_PORT=str(occupied), STORYWIRE_DATA_DIR=str(data),
                            HOME=str(tmp_path))
        result = run_refused([sys.executable, str(RUN_PY)], env, data)
    assert f"another make run uses {data}" in result.stderr, result.stderr
    together = re.search(r"all together: (.*) make run", result.stderr)
    assert together, result.stderr
    settings = dict(part.split("=", 1) for part in together.group(1).split())
    assert settings["API_PORT"] == str(api_port)  # kept as the user set it
    assert int(settings["FLOWER_PORT"]) != occupied and not port_in_use("127.0.0.1", int(settings["FLOWER_PORT"]))
    assert settings["STORYWIRE_DATA_DIR"] != str(data)


def test_the_data_directory_is_free_again_once_the_first_run_ends(tmp_path):
    from scripts.run import lock_data_dir
    env = {"STORYWIRE_DATA_DIR": str(tmp_path / "var")}
    first = lock_data_dir(env)
    assert first is not None and lock_data_dir(env) is None
    first.close()
    again = lock_data_dir(env)
    assert again is not None
    again.close()


@pytest.mark.e2e
def test_make_run_says_which_port_is_in_use(occupied, tmp_path):
    env = clean_environ(FLOWER_PORT=str(occupied), STORYWIRE_DATA_DIR=str(tmp_path), HOME=str(tmp_path))
    # -o: never rebuild .venv from a test, even when requirements.txt is newer
    result = run_refused(["make", "--no-print-directory", "-o", ".venv/.installed", "run"], env, tmp_path)
    assert f"port {occupied} is in use" in result.stderr, result.stderr
    suggested_port(result.stderr, "FLOWER_PORT")


# ====================================================== make feeds
def feeds_command(*variables: str, **environ: str) -> str:
    """The command `make feeds` would run (make -n), with these variables."""
    result = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "feeds", "FEEDS=saved/atom.xml",
                             *variables], cwd=ROOT, env=clean_environ(**environ), capture_output=True, text=True,
                            timeout=30, check=True)
    return result.stdout.strip()


@pytest.mark.e2e
def test_make_feeds_posts_to_the_api_on_api_port():
    assert "--api http://127.0.0.1:8123 " in feeds_command("API_PORT=8123")
    assert "--api http://127.0.0.1:8124 " in feeds_command(API_PORT="8124")  # from the environment, as for make run


@pytest.mark.e2e
def test_make_feeds_api_overrides_api_port():
    command = feeds_command("API=http://10.0.0.5:9000", "API_PORT=8123")
    assert "--api http://10.0.0.5:9000 " in command and "8123" not in command, command


@pytest.mark.e2e
def test_make_feeds_without_either_leaves_the_default_to_import_feeds():
    assert "--api" not in feeds_command(), "import_feeds.py's own default (127.0.0.1:8000) applies"
