"""Deployment safety in scripts/run.py and docker-compose.yml.

- Flower never listens beyond localhost without a password, and the password
  stays off the command line (a real Flower is started to check it is enforced);
- Flower's HTTP API answers without a password (read-only) on localhost when
  it has none, as the README's `curl 127.0.0.1:5555/api/tasks` needs, and
  never beyond localhost (a real Flower started by run.py checks both);
- URLs are printed with their passwords redacted (a real ``scripts/run.py`` is
  started with a password in REDIS_URL);
- the compose file publishes nothing but 127.0.0.1 ports, keeps Redis
  unpublished, requires the API key and the Flower password, and holds no
  literal secret.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from scripts.run import ROLES, redact_url, role_command, role_environment
from embedded_redis.server import free_port
from tests.helpers import RunningProcess, listening, start_role

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
RUN_PY = ROOT / "scripts" / "run.py"

FLOWER_USER, FLOWER_PASSWORD = "ops", "fl0wer-S3cret-pw-7731"
FLOWER_AUTH = f"{FLOWER_USER}:{FLOWER_PASSWORD}"


def clean_environ(**extra) -> dict[str, str]:
    """os.environ without anything that would change what is tested here."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWER_", "STORYWIRE_", "API_")) and k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(extra)
    return env


# ====================================================== role_command("flower")
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "10.0.0.5", "flower.example.org", "[::]"])
@pytest.mark.parametrize("auth", [None, ""], ids=["unset", "empty"])
def test_flower_beyond_localhost_needs_basic_auth(host, auth):
    env = {"FLOWER_HOST": host}
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    with pytest.raises(SystemExit) as info:
        role_command("flower", env)
    message = str(info.value)
    assert "FLOWER_BASIC_AUTH" in message, message
    assert message != "0" and info.value.code not in (0, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_flower_with_basic_auth_keeps_the_password_off_the_command_line(host):
    cmd = role_command("flower", {"FLOWER_HOST": host, "FLOWER_BASIC_AUTH": FLOWER_AUTH, "FLOWER_PORT": "5599"})
    line = " ".join(cmd)
    assert "flower" in cmd and f"--address={host}" in cmd and "--port=5599" in cmd, cmd
    assert FLOWER_PASSWORD not in line and FLOWER_AUTH not in line, cmd
    assert "basic_auth" not in line.lower() and "basic-auth" not in line.lower(), cmd


@pytest.mark.parametrize("host", [None, "127.0.0.1", "localhost", "::1"])
def test_flower_on_loopback_needs_no_auth(host):
    env = {} if host is None else {"FLOWER_HOST": host}
    cmd = role_command("flower", env)
    assert f"--address={host or '127.0.0.1'}" in cmd, cmd


@pytest.mark.parametrize("auth", ["admin", "admin:", ":", " "])
def test_flower_basic_auth_without_a_password_is_refused(auth):
    with pytest.raises(SystemExit) as info:
        role_command("flower", {"FLOWER_HOST": "0.0.0.0", "FLOWER_BASIC_AUTH": auth})
    assert "FLOWER_BASIC_AUTH" in str(info.value)


def test_no_role_puts_a_secret_on_its_command_line(tmp_path):
    secrets = {"redis-pw-41c2d9", "broker-pw-88aa01", "api-key-0123456789abcdef", FLOWER_PASSWORD}
    env = {"REDIS_URL": "redis://default:redis-pw-41c2d9@cache:6379/0",
           "CELERY_BROKER_URL": "redis://:broker-pw-88aa01@mq:6379/0",
           "STORYWIRE_API_KEY": "api-key-0123456789abcdef", "FLOWER_BASIC_AUTH": FLOWER_AUTH,
           "FLOWER_HOST": "0.0.0.0", "API_HOST": "0.0.0.0", "STORYWIRE_DATA_DIR": str(tmp_path)}
    for role in ROLES:
        line = " ".join(role_command(role, env))
        for secret in secrets:
            assert secret not in line, (role, line)


# ====================================================== a real Flower
def http_request(url: str, method: str = "GET", auth: str | None = None):
    """(status, headers, body) of a request without a body; the headers are
    looked up case-insensitively."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def http_get(url: str, auth: str | None = None):
    """(status, headers) of a GET."""
    return http_request(url, auth=auth)[:2]


@pytest.fixture(scope="module")
def flower(redis_url, tmp_path_factory):
    """A real Flower, started the way run.py and the image start it, with the
    password only in its environment, against the test Redis as broker."""
    tmp_path = tmp_path_factory.mktemp("flower")
    port = free_port()
    env = clean_environ(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, PYTHONPATH=str(ROOT),
                        FLOWER_PORT=str(port), FLOWER_BASIC_AUTH=FLOWER_AUTH, HOME=str(tmp_path))
    process = start_role("flower", env, tmp_path / "flower.log", ready=listening(port))
    try:
        yield f"http://127.0.0.1:{port}", process.proc, process.log
    finally:
        process.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/", "/api/workers", "/tasks"])
def test_real_flower_refuses_requests_without_the_password(flower, path):
    base, _, _ = flower
    status, headers = http_get(base + path)
    assert status == 401, (path, status)
    for wrong in (f"{FLOWER_USER}:wrong-password", f"{FLOWER_USER}:", f"nobody:{FLOWER_PASSWORD}",
                  FLOWER_USER, f"{FLOWER_AUTH}x"):
        assert http_get(base + path, wrong)[0] == 401, (path, wrong)
    if path == "/":
        assert (headers.get("WWW-Authenticate") or "").startswith("Basic"), dict(headers)


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/", "/api/workers"])
def test_real_flower_answers_with_the_password(flower, path):
    base, _, _ = flower
    status, _ = http_get(base + path, FLOWER_AUTH)
    assert status == 200, (path, status)


@pytest.mark.e2e
def test_real_flower_password_is_not_visible_in_ps_or_its_log(flower):
    base, proc, log = flower
    assert http_get(base + "/", FLOWER_AUTH)[0] == 200
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "flower" in cmdline
    assert FLOWER_PASSWORD not in cmdline, cmdline
    assert FLOWER_PASSWORD not in log.read_text(errors="replace")


# ====================================================== Flower's HTTP API without a password
OPEN_API = {"FLOWER_UNAUTHENTICATED_API": "true", "FLOWER_READ_ONLY": "true"}


@pytest.mark.parametrize("host", [None, "127.0.0.1", "localhost", "::1"])
def test_flower_on_loopback_without_a_password_opens_its_api_read_only(host):
    env = {} if host is None else {"FLOWER_HOST": host}
    flower_env = role_environment("flower", env)
    assert {k: flower_env.get(k) for k in OPEN_API} == OPEN_API, flower_env
    line = " ".join(role_command("flower", env))
    assert "unauthenticated" not in line.lower() and "read_only" not in line.lower(), line


def test_flower_read_only_can_be_turned_off_on_loopback():
    assert role_environment("flower", {"FLOWER_READ_ONLY": "false"})["FLOWER_READ_ONLY"] == "false"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "192.168.1.20", "flower.example.org"])
@pytest.mark.parametrize("inherited", [None, "true"], ids=["unset", "set-in-shell"])
def test_flower_with_a_password_never_opens_its_api(host, inherited):
    """With FLOWER_BASIC_AUTH (required beyond loopback) the API stays behind
    the password, even when the shell holds FLOWER_UNAUTHENTICATED_API=true."""
    env = {"FLOWER_HOST": host, "FLOWER_BASIC_AUTH": FLOWER_AUTH}
    if inherited is not None:
        env["FLOWER_UNAUTHENTICATED_API"] = inherited
    assert role_command("flower", env)  # allowed: it has a password
    flower_env = role_environment("flower", env)
    assert "FLOWER_UNAUTHENTICATED_API" not in flower_env, flower_env
    assert flower_env["FLOWER_BASIC_AUTH"] == FLOWER_AUTH


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_flower_beyond_loopback_without_a_password_is_refused_even_with_the_api_opened_in_the_shell(host):
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        role_command("flower", {"FLOWER_HOST": host, "FLOWER_UNAUTHENTICATED_API": "true"})


@pytest.mark.parametrize("role", ["api", "worker", "beat"])
def test_other_roles_run_with_the_environment_as_given(role):
    env = {"FLOWER_UNAUTHENTICATED_API": "true", "REDIS_URL": "redis://cache:6379/0"}
    assert role_environment(role, env) == env


def run_py_flower(env: dict[str, str], log: Path, port: int) -> RunningProcess:
    """Flower as the image and `make run` start it: `scripts/run.py --role flower`."""
    process = RunningProcess([sys.executable, str(RUN_PY), "--role", "flower"], env, log)
    try:
        process.wait_for("Flower listening", lambda: listening(port)(process))
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture(scope="module")
def open_flower(redis_url, tmp_path_factory):
    """A real Flower started by run.py with the `make run` defaults: 127.0.0.1, no password."""
    tmp_path = tmp_path_factory.mktemp("open-flower")
    port = free_port()
    env = clean_environ(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, FLOWER_PORT=str(port), HOME=str(tmp_path))
    process = run_py_flower(env, tmp_path / "flower.log", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/api/tasks", "/api/workers", "/api/task/types"])
def test_real_flower_on_loopback_answers_the_readme_api_example(open_flower, path):
    status, _, body = http_request(open_flower + path)
    assert status == 200, (path, status, body[:300])
    assert isinstance(json.loads(body), (dict, list)), body[:300]


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/api/worker/shutdown/nobody@nowhere", "/api/task/revoke/0000",
                                  "/api/task/async-apply/storywire.process_articles"])
def test_real_open_flower_refuses_to_act(open_flower, path):
    status, _, body = http_request(open_flower + path, method="POST")
    assert status == 403, (path, status, body[:300])
    assert b"Read only" in body, body[:300]


@pytest.mark.e2e
def test_real_flower_with_a_password_keeps_its_api_closed_whatever_the_shell_says(redis_url, tmp_path):
    port = free_port()
    env = clean_environ(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, FLOWER_PORT=str(port), HOME=str(tmp_path),
                        FLOWER_BASIC_AUTH=FLOWER_AUTH, FLOWER_UNAUTHENTICATED_API="true")
    process = run_py_flower(env, tmp_path / "flower.log", port)
    try:
        assert http_request(f"http://127.0.0.1:{port}/api/tasks")[0] == 401
        assert http_request(f"http://127.0.0.1:{port}/api/tasks", auth=FLOWER_AUTH)[0] == 200
    finally:
        process.stop()


# ====================================================== redact_url
@pytest.mark.parametrize("url,expected", [
    ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:s3cret@cache.example:6380/2", "rediss://default:***@cache.example:6380/2"),
    ("redis://user:s3cr@t@cache:6379/0", "redis://user:***@cache:6379/0"),       # '@' in the password
    ("redis://user:s3cr%40t%3A@cache/0", "redis://user:***@cache/0"),            # percent-encoded
    ("redis://:s3cret@[::1]:6379/0", "redis://:***@[::1]:6379/0"),               # IPv6 host
    ("amqp://guest:s3cret@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ("redis://user:@cache/0", "redis://user:***@cache/0"),
])
def test_redact_url_hides_passwords(url, expected):
    redacted = redact_url(url)
    assert redacted == expected
    password = urlsplit(url).password
    if password:
        assert password not in redacted


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "redis://127.0.0.1:6379", "redis://user@cache:6379/0",
                                 "rediss://cache.example:6380/2?ssl_cert_reqs=required", "unix:///tmp/redis.sock",
                                 "redis://localhost", ""])
def test_redact_url_leaves_urls_without_a_password_unchanged(url):
    assert redact_url(url) == url


def test_redact_url_hides_a_password_given_in_the_query_string():
    from redis.connection import parse_url
    url = "redis://cache:6379/0?password=s3cret-in-query"
    assert parse_url(url)["password"] == "s3cret-in-query"  # redis-py really uses it
    assert "s3cret-in-query" not in redact_url(url)


def test_run_py_prints_redis_url_only_through_redact_url():
    """Every print() in run.py that shows REDIS_URL or CELERY_BROKER_URL wraps it in redact_url()."""
    tree = ast.parse(RUN_PY.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def names_a_url(node) -> bool:
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            return node.slice.value in ("REDIS_URL", "CELERY_BROKER_URL")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            return any(isinstance(a, ast.Constant) and a.value in ("REDIS_URL", "CELERY_BROKER_URL")
                       for a in node.args)
        return False

    printed = 0
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"):
            continue
        for node in ast.walk(call):
            if names_a_url(node):
                printed += 1
                parent = parents[node]
                assert (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name)
                        and parent.func.id == "redact_url"), f"line {node.lineno}: a URL printed without redact_url"
    assert printed >= 1, "run.py no longer prints REDIS_URL: update this test"


@pytest.mark.e2e
def test_run_py_prints_redis_url_redacted(tmp_path):
    """A real `scripts/run.py` with a password in REDIS_URL (a closed port, so
    nothing connects): its output, and its children's, shows the URL redacted."""
    password = "Rd1s-pa55w0rd-4f9e2"
    url = f"redis://default:{password}@127.0.0.1:{free_port()}/0"
    env = clean_environ(REDIS_URL=url, API_PORT=str(free_port()), FLOWER_PORT=str(free_port()), API_WORKERS="1",
                        STORYWIRE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", HOME=str(tmp_path))
    out = tmp_path / "run.log"
    # Its own session, so every process it starts can be stopped with it.
    run_py = RunningProcess([sys.executable, str(RUN_PY)], env, out, own_session=True)
    try:
        # The summary is printed once every role is started; then give the
        # children (worker banner, Flower's broker line) a moment to print theirs.
        run_py.wait_for("run.py's summary", lambda: "beat " in out.read_text(errors="replace"), timeout=60)
        child_deadline = time.monotonic() + 15
        while time.monotonic() < child_deadline and not ("transport:" in out.read_text(errors="replace")
                                                          and "Broker:" in out.read_text(errors="replace")):
            time.sleep(0.2)
    finally:
        run_py.stop(timeout=30)  # run.py stops its children on SIGTERM; then its session is killed
    text = out.read_text(errors="replace")
    assert f"redis   {redact_url(url)}" in text, text[:2000]
    assert password not in text, [line for line in text.splitlines() if password in line]


# ====================================================== docker-compose.yml
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and << merges


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def required_var(name: str) -> re.Pattern:
    return re.compile(rf"^\$\{{{name}:\?[^}}]+\}}$")


def test_redis_is_not_published(compose):
    redis_service = compose["services"]["redis"]
    assert "ports" not in redis_service, redis_service.get("ports")
    assert redis_service.get("network_mode") != "host"


def test_api_requires_the_api_key(compose):
    env = environment(compose["services"]["api"])
    assert required_var("STORYWIRE_API_KEY").match(env.get("STORYWIRE_API_KEY", "")), env.get("STORYWIRE_API_KEY")


def test_flower_requires_basic_auth(compose):
    env = environment(compose["services"]["flower"])
    assert required_var("FLOWER_BASIC_AUTH").match(env.get("FLOWER_BASIC_AUTH", "")), env.get("FLOWER_BASIC_AUTH")


def test_each_secret_goes_only_to_the_service_that_needs_it(compose):
    needs = {"STORYWIRE_API_KEY": {"api"}, "FLOWER_BASIC_AUTH": {"flower"}}
    for name, service in compose["services"].items():
        env = environment(service)
        for secret, owners in needs.items():
            assert (secret in env) == (name in owners), (name, secret)


def test_compose_flower_environment_is_what_role_command_demands(compose):
    """The container's Flower listens on FLOWER_HOST from compose: without the
    password run.py refuses it, with one it starts."""
    env = environment(compose["services"]["flower"])
    assert env["FLOWER_HOST"] not in ("127.0.0.1", "localhost", "::1")
    without = {k: v for k, v in env.items() if k != "FLOWER_BASIC_AUTH"}
    with pytest.raises(SystemExit):
        role_command("flower", without)
    assert role_command("flower", dict(without, FLOWER_BASIC_AUTH=FLOWER_AUTH))


SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|PASS|TOKEN|AUTH|CREDENTIAL)", re.IGNORECASE)
VARIABLE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[?\-][^}]*)?\}$")


def scalars(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from scalars(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from scalars(v, f"{path}[{i}]")
    elif node is not None:
        yield path, str(node)


def test_no_literal_secret_anywhere(compose):
    for name, service in compose["services"].items():
        for var, value in environment(service).items():
            if SECRET_NAME.search(var):
                assert VARIABLE.match(value), f"{name}: {var} holds a literal value"
    for path, value in scalars(compose):
        for word in re.findall(r"\b[a-z][a-z0-9+.-]*://\S+", value):
            assert urlsplit(word).password is None, f"{path}: a URL with a password"
        assert not re.search(r"--(requirepass|masterauth)\s+(?!\$\{)", value), f"{path}: a literal Redis password"
    raw = COMPOSE.read_text()
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*[:=]\s*(?!\$\{)['\"]?[A-Za-z0-9+/_\-]{8,}", raw), \
        "a literal secret in docker-compose.yml"


def test_every_host_port_binds_to_loopback(compose):
    checked = 0
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            checked += 1
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                spec = str(port)
                assert spec.startswith("127.0.0.1:") and spec.count(":") == 2, (name, spec)
        assert service.get("network_mode") != "host", name
    assert checked >= 2, "the API and Flower ports should be published (on 127.0.0.1)"
