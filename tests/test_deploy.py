"""The deployment files: docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine runs on the development and CI machines, so:

- docker-compose.yml is validated by a real Compose implementation, Debian's
  ``docker-compose`` (``.ci/install-compose``): ``docker-compose config`` parses
  the file, resolves its anchors and ``${VAR:?message}`` interpolation and checks
  it against the Compose schema, without an engine;
- the Dockerfile is parsed with BuildKit's own parser (the ``dockerfile`` package);
- the image is emulated: its COPY instructions are replayed from the build
  context (less what .dockerignore leaves out) into a folder, and each compose
  service's command is started there the way the container starts it (the
  ENTRYPOINT plus the command, with the image's and the service's environment),
  against a real Redis: each must exec exactly ``role_command(role)``, the
  command ``make run`` starts (checked on a real ``scripts/run.py`` too), and
  pass its own health check.

The secrets' own rules (loopback ports, no literal secrets, each secret only
where needed) are tested in tests/scripts/test_run_security.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dockerfile
import psutil
import pytest
import redis
import yaml

from scripts.run import ROLES, role_command
from service.config import load_config
from embedded_redis.server import EmbeddedRedis, free_port
from storyengine.errors import ConfigError
from storyengine.settings import Settings
from tests.helpers import RunningProcess

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"

API_KEY = "test-api-key-0123456789abcdef"
FLOWER_AUTH = "ops:fl0wer-deploy-pw-5521"
SECRETS = {"STORYWIRE_API_KEY": API_KEY, "FLOWER_BASIC_AUTH": FLOWER_AUTH}
# The `${VAR:?message}` messages compose prints when a secret is missing.
SECRET_MESSAGES = {"STORYWIRE_API_KEY": "set STORYWIRE_API_KEY (at least 16 characters) for the API",
                   "FLOWER_BASIC_AUTH": "set FLOWER_BASIC_AUTH=user:password for Flower"}
APP_SERVICES = ("api", "worker", "beat", "flower")
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|AUTH|CREDENTIAL)", re.IGNORECASE)
START_TIMEOUT = 90.0   # seconds for a role to start and pass its health check on a busy 2-core machine

INSTALL_HINT = ("docker-compose is not installed, so docker-compose.yml cannot be validated: run "
                "`.ci/install-compose` (Debian: `sudo apt-get install --no-install-recommends docker-compose`)")


# ====================================================== docker-compose config
@pytest.fixture(scope="module")
def compose_cli() -> str:
    """Debian's docker-compose; CI (STORYWIRE_REQUIRE_COMPOSE=1) fails without it, a laptop skips."""
    path = shutil.which("docker-compose")
    if path is None:
        if os.environ.get("STORYWIRE_REQUIRE_COMPOSE") == "1":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return path


def compose_config(cli: str, tmp_path: Path, env: dict[str, str], compose_file: Path = COMPOSE):
    """`docker-compose config` on the file, with only ``env`` for interpolation: no
    .env file and nothing from this machine's environment can leak in."""
    empty = tmp_path / "empty.env"
    empty.touch()
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return subprocess.run([cli, "--file", str(compose_file), "--project-directory", str(ROOT),
                           "--env-file", str(empty), "config"],
                          env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def unescape(node):
    """`docker-compose config` writes a literal ``$`` as ``$$``; a container sees ``$``."""
    if isinstance(node, dict):
        return {k: unescape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [unescape(v) for v in node]
    return node.replace("$$", "$") if isinstance(node, str) else node


def resolve(cli: str, tmp_path: Path, env: dict[str, str]) -> dict:
    done = compose_config(cli, tmp_path, env)
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return unescape(yaml.safe_load(done.stdout))


@pytest.fixture(scope="module")
def resolved(compose_cli, tmp_path_factory) -> dict:
    """docker-compose.yml as compose runs it, with both secrets set."""
    return resolve(compose_cli, tmp_path_factory.mktemp("compose"), SECRETS)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def disabled(healthcheck: dict) -> bool:
    """Compose writes `disable: true` as `test: [NONE]`."""
    return bool(healthcheck.get("disable")) or healthcheck.get("test") == ["NONE"]


@pytest.mark.e2e
def test_compose_accepts_the_file_with_the_secrets_set(resolved):
    assert set(resolved["services"]) == {"redis", *APP_SERVICES}
    assert "redis-data" in resolved["volumes"]


@pytest.mark.e2e
@pytest.mark.parametrize("missing", sorted(SECRETS))
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_refuses_to_run_without_a_secret_and_says_which(compose_cli, tmp_path, missing, how):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    if how == "empty":
        env[missing] = ""  # `:?` refuses an empty value as well as a missing one
    done = compose_config(compose_cli, tmp_path, env)
    assert done.returncode != 0, done.stdout
    assert SECRET_MESSAGES[missing] in done.stderr, done.stderr
    assert done.stdout == "", "compose printed a configuration although a secret is missing"


@pytest.mark.e2e
@pytest.mark.parametrize("value", [
    "a" * 10_000,                                   # oversized
    'k3y with "quotes", #hash: colon',              # YAML and shell metacharacters
    "k3y$HOME${PATH}$$`id`;rm -rf /",               # interpolation and shell syntax, never expanded
    "k3y-\u00e9\u4e2d\u6587-\U0001f600",            # non-ASCII
])
def test_compose_passes_secret_values_through_verbatim(compose_cli, tmp_path, value):
    """Compose interpolates the file, never the values: a hostile value reaches the
    service unchanged, and the service's own validation refuses it (or accepts it)."""
    services = resolve(compose_cli, tmp_path, {**SECRETS, "STORYWIRE_API_KEY": value})["services"]
    env = environment(services["api"])
    assert env["STORYWIRE_API_KEY"] == value
    if re.fullmatch(r"[A-Za-z0-9\-._~+/]{16,}=*", value):
        assert load_config(environ=env)["API_KEYS"]
    else:
        with pytest.raises(ConfigError, match="at least 16 characters"):
            load_config(environ=env)


@pytest.mark.e2e
@pytest.mark.parametrize("auth", ["admin", "admin:", ":pw", " : "])
def test_a_malformed_flower_password_passes_compose_but_flower_refuses_it(compose_cli, tmp_path, auth):
    services = resolve(compose_cli, tmp_path, {**SECRETS, "FLOWER_BASIC_AUTH": auth})["services"]
    env = environment(services["flower"])
    assert env["FLOWER_BASIC_AUTH"] == auth
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH must be user:password"):
        role_command("flower", env)


@pytest.mark.e2e
def test_a_short_api_key_passes_compose_but_the_api_refuses_it(compose_cli, tmp_path):
    services = resolve(compose_cli, tmp_path, {**SECRETS, "STORYWIRE_API_KEY": "short"})["services"]
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_config(environ=environment(services["api"]))


BROKEN = {
    "an unknown service key": (r"    command: \[\"worker\"\]", '    command: ["worker"]\n    comand: ["worker"]',
                               "comand"),
    "a count that is not a number": (r"retries: 10", "retries: many", "retries"),
    "a command that is not a list or string": (r'command: \["beat"\]', "command: {role: beat}", "command"),
    "a port that is not a port": (r'"127\.0\.0\.1:8000:8000"', '"127.0.0.1:eighty:8000"', "ports"),
    "a missing anchor": (r"<<: \*storywire\n    command: \[\"beat\"\]", '<<: *storywyre\n    command: ["beat"]',
                         "storywyre"),
    "broken YAML": (r"services:\n", "services:\n  \t- [\n", "cannot start any token"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_compose_rejects_a_broken_copy_of_the_file(compose_cli, tmp_path, name):
    """The validator can fail: each mistake, made in a copy, is refused."""
    pattern, replacement, named = BROKEN[name]
    text, count = re.subn(pattern, lambda _: replacement, COMPOSE.read_text(), count=1)
    assert count == 1, f"docker-compose.yml changed: {pattern!r} not found; update this test"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text)
    done = compose_config(compose_cli, tmp_path, SECRETS, compose_file=broken)
    assert done.returncode != 0, f"{name} was accepted:\n{done.stdout[:2000]}"
    assert named in done.stderr, done.stderr
    assert done.stdout == ""


# ====================================================== what the compose file says
def raw_nodes() -> dict:
    """The compose file's YAML nodes before merging, to see which anchor each service uses."""
    root = yaml.compose(COMPOSE.read_text())
    return {key.value: value for key, value in root.value}


def mapping(node) -> dict:
    return {key.value: value for key, value in node.value}


def test_app_services_share_one_anchor_for_their_settings():
    top = raw_nodes()
    anchor = top["x-storywire"]
    env_anchor = mapping(anchor)["environment"]
    # An alias is the very node of its anchor: identity shows which anchor a service merges.
    services = mapping(top["services"])
    for name in APP_SERVICES:
        service = mapping(services[name])
        assert service["<<"] is anchor, f"{name} does not merge the x-storywire anchor"
        if "environment" in service:  # its own secret, on top of the shared settings
            own = mapping(service["environment"])
            assert own["<<"] is env_anchor, f"{name} replaces the shared environment instead of merging *env"
            assert set(own) - {"<<"} <= set(SECRETS), f"{name} sets more than its secret: {set(own)}"
    assert "<<" not in mapping(services["redis"])


@pytest.mark.e2e
def test_every_role_gets_the_same_broker_and_store(resolved):
    services = resolved["services"]
    envs = {name: environment(services[name]) for name in APP_SERVICES}
    for key in ("REDIS_URL", "CELERY_BROKER_URL", "STORYWIRE_DATA_DIR"):
        assert len({env[key] for env in envs.values()}) == 1, (key, envs)
    broker = urlsplit(envs["flower"]["CELERY_BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname == "redis", broker  # the compose service, by name
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name


@pytest.mark.e2e
def test_every_app_service_runs_one_role_and_each_role_runs(resolved):
    services = resolved["services"]
    commands = {name: services[name].get("command") for name in APP_SERVICES}
    for name, command in commands.items():
        assert isinstance(command, list) and len(command) == 1 and command[0] in ROLES, (name, command)
        assert command == [name], f"the {name} service runs the {command[0]} role"
        assert "entrypoint" not in services[name], f"{name} overrides the image's entrypoint"
        assert services[name]["image"] == services["api"]["image"], "one image for every role"
    assert sorted(c[0] for c in commands.values()) == sorted(ROLES)
    assert "deploy" not in services["beat"] and "scale" not in services["beat"], "exactly one beat"


@pytest.mark.e2e
def test_redis_persists_append_only_and_has_a_health_check(resolved):
    redis_service = resolved["services"]["redis"]
    command = redis_service["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2]))
    assert options.get("--appendonly") == "yes", command
    assert options.get("--appendfsync") in ("everysec", "always"), command
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in redis_service["volumes"]]
    assert any(m.split(":")[0] in resolved["volumes"] and m.split(":")[1] == "/data" for m in mounts), mounts
    check = redis_service["healthcheck"]
    assert not disabled(check) and "redis-cli ping" in " ".join(check["test"]), check
    assert "PONG" in " ".join(check["test"]), "a LOADING error reply must not count as healthy"


@pytest.mark.e2e
def test_redis_compacts_hashes_as_the_embedded_server_does(resolved, tmp_path):
    """The memory figures in the README assume 2,048-byte compact hash values."""
    command = resolved["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2]))
    given = options.get("--hash-max-listpack-value") or options.get("--hash-max-ziplist-value")
    entries = options.get("--hash-max-listpack-entries") or options.get("--hash-max-ziplist-entries")
    with EmbeddedRedis(tmp_path, appendonly=False) as server:
        client = redis.Redis(port=server.port)
        embedded = client.config_get("hash-max-ziplist-value")["hash-max-ziplist-value"]
        embedded_entries = client.config_get("hash-max-ziplist-entries")["hash-max-ziplist-entries"]
        client.close()
    assert given == embedded, (given, embedded)
    # An outlet's boilerplate counters (storyengine.boilerplate) stay compact under this many fields.
    assert entries == embedded_entries, (entries, embedded_entries)
    assert Settings().boilerplate_counters < int(entries)


@pytest.mark.e2e
def test_health_checks(resolved):
    services = resolved["services"]
    for name in ("api", "worker", "flower"):
        check = services[name]["healthcheck"]
        assert not disabled(check) and check["test"][0] in ("CMD", "CMD-SHELL"), (name, check)
    assert disabled(services["beat"]["healthcheck"]), "beat has no port: the image's API check must be off"
    image_check = dockerfile_instruction("HEALTHCHECK")
    assert list(image_check.value) == services["api"]["healthcheck"]["test"], "the API check differs from the image's"


# ====================================================== the Dockerfile
def dockerfile_commands() -> tuple:
    return dockerfile.parse_file(str(DOCKERFILE))


def dockerfile_instruction(name: str):
    found = [c for c in dockerfile_commands() if c.cmd == name]
    assert len(found) == 1, f"expected one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for command in dockerfile_commands():
        if command.cmd == "ENV":
            env.update(zip(command.value[0::2], command.value[1::2]))
    return env


def test_image_is_slim_python_of_the_projects_version():
    [base] = [c.value[0] for c in dockerfile_commands() if c.cmd == "FROM"]
    name, _, tag = base.partition(":")
    assert name in ("python", "docker.io/library/python"), base
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert tag.split("@")[0] in (f"{version}-slim", f"{version}-slim-bookworm"), base


def test_image_runs_as_a_non_root_user_it_creates():
    commands = dockerfile_commands()
    users = [(i, c.value[0]) for i, c in enumerate(commands) if c.cmd == "USER"]
    assert users, "no USER: the container would run as root"
    index, user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0"), user
    assert uid.isdigit(), "a numeric USER lets the runtime verify it is not root"
    later = [c.cmd for c in commands[index:]]
    assert "RUN" not in later and "COPY" not in later and "ADD" not in later, later
    created = " ".join(c.value[0] for c in commands[:index] if c.cmd == "RUN")
    assert re.search(rf"useradd\b[^&;]*--uid {uid}\b", created), "the USER's uid is not created with useradd"
    if gid:
        assert re.search(rf"groupadd\b[^&;]*--gid {gid}\b", created), "the USER's gid is not created with groupadd"


def test_image_holds_no_secret():
    for command in dockerfile_commands():
        if command.cmd in ("ENV", "ARG", "LABEL"):
            pairs = (zip(command.value[0::2], command.value[1::2]) if command.cmd != "ARG"
                     else (v.partition("=")[::2] for v in command.value))
            for key, value in pairs:
                assert not SECRET_NAME.search(key), f"{command.original}: a secret belongs in the environment"
                for word in re.findall(r"[a-z][a-z0-9+.-]*://\S+", value):
                    assert urlsplit(word).password is None, command.original
    assert not any(c.cmd == "ADD" for c in dockerfile_commands()), "ADD can fetch URLs; COPY only copies"


def test_entrypoint_is_run_py_with_a_role():
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    cmd = dockerfile_instruction("CMD")
    assert entrypoint.json and list(entrypoint.value) == ["python", "scripts/run.py", "--role"], entrypoint.original
    assert cmd.json and len(cmd.value) == 1 and cmd.value[0] in ROLES, cmd.original
    assert dockerfile_instruction("WORKDIR").value[0] == "/app"


def test_image_exposes_the_role_ports():
    exposed = set(dockerfile_instruction("EXPOSE").value)
    api, flower = role_command("api", {}), role_command("flower", {})
    api_port = api[api.index("--bind") + 1].rsplit(":", 1)[1]
    flower_port = next(a for a in flower if a.startswith("--port=")).split("=", 1)[1]
    assert {api_port, flower_port} <= exposed, (exposed, api_port, flower_port)


def test_make_run_starts_scripts_run_py():
    """`make run` runs scripts/run.py, which starts every role with role_command (tested for real below)."""
    text = MAKEFILE.read_text()
    recipe = re.search(r"^run:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert recipe, "no run target in the Makefile"
    assert [line.strip() for line in recipe.group(1).splitlines()] == ["$(PY) scripts/run.py"]


# ====================================================== .dockerignore and the image's files
def glob_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go's filepath.Match plus **) as a regex over a relative path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def ignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, glob_regex(os.path.normpath(line.lstrip("!").strip("/")))))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Left out of the build context: the last rule matching the path or a folder above it wins."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context():
    rules = ignore_rules()
    for path in (".env", ".env.production", "prod.env", ".git/config", ".venv/bin/python", "var/redis/appendonly.aof",
                 "tests/conftest.py", "service/__pycache__/errors.cpython-311.pyc", "workers/tasks.pyc",
                 "pred.jsonl", ".pytest_cache/v/cache"):
        assert ignored(path, rules), f"{path} would be sent to the Docker build"
    for path in ("requirements.txt", "scripts/run.py", "service/errors.py", "storyengine/store.py",
                 "workers/main.py"):
        assert not ignored(path, rules), f"{path} is needed in the image"


def build_image_tree(dest: Path) -> Path:
    """The image's WORKDIR as the Dockerfile builds it: each COPY replayed from the
    build context, less what .dockerignore leaves out."""
    rules = ignore_rules()
    workdir = dest / dockerfile_instruction("WORKDIR").value[0].lstrip("/")
    workdir.mkdir(parents=True)
    for command in dockerfile_commands():
        if command.cmd != "COPY":
            continue
        assert not any(f.startswith("--from") for f in command.flags), command.original
        *sources, target = command.value
        for source in sources:
            assert not ignored(source, rules), f"{command.original}: {source} is in .dockerignore"
            origin = ROOT / source
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    relative = path.relative_to(ROOT).as_posix()
                    if path.is_file() and not ignored(relative, rules):
                        copy = workdir / target / path.relative_to(origin)
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, copy)
            else:
                copy = workdir / target / origin.name if target in (".", "./") or target.endswith("/") \
                    else workdir / target
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copy)
    return workdir


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    return build_image_tree(tmp_path_factory.mktemp("image"))


def test_image_tree_holds_the_code_and_nothing_private(image_tree):
    files = {p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*") if p.is_file()}
    assert {"requirements.txt", "scripts/run.py", "workers/main.py", "service/__init__.py"} <= files
    assert not [f for f in files if f.startswith(("tests/", ".venv/", "var/", ".git/")) or f.endswith(".pyc")
                or f.split("/")[-1] == ".env"], sorted(files)


# ====================================================== each role, started as its container starts it
@pytest.fixture(scope="module")
def deploy_redis(tmp_path_factory) -> Iterator[str]:
    """Our own Redis, so the roles started here consume nothing of the other tests."""
    with EmbeddedRedis(tmp_path_factory.mktemp("deploy-redis"), appendonly=False) as server:
        yield server.url


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def running(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> RunningProcess:
    """The process in a session of its own, so stopping it also ends a pool child or gunicorn worker left behind."""
    return RunningProcess(argv, env, log, cwd=cwd, own_session=True)


def container_env(service: dict, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """What the container's processes see: the image's ENV under the service's
    environment, with this machine's addresses in place of the compose network's."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "HOSTNAME": socket.gethostname()}
    env.update(image_env())
    env.update(environment(service))
    env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, API_HOST="127.0.0.1", FLOWER_HOST="127.0.0.1",
               API_PORT=str(free_port()), FLOWER_PORT=str(free_port()), API_WORKERS="1",
               STORYWIRE_DATA_DIR=str(tmp_path / "data"))
    return env


# scripts/run.py names each worker process storywire-<6 random hex>@%h, so no two
# calls of role_command("worker") give the same command: compare them with the name masked.
WORKER_NAME = re.compile(r"storywire-[0-9a-f]{6}@%h")


def comparable(argv: list[str]) -> list[str]:
    """A role's command with the worker's node name checked (storywire-<random>@%h) and masked."""
    if "--hostname" not in argv:
        return list(argv)
    at = argv.index("--hostname") + 1
    assert WORKER_NAME.fullmatch(argv[at]), f"the worker's node name {argv[at]!r} is not storywire-<random>@%h"
    return [*argv[:at], "storywire-<random>@%h", *argv[at + 1:]]


def healthcheck_argv(test: list[str]) -> list[str]:
    """A compose/Docker health check's test as argv here: CMD runs directly (python is
    this interpreter, as in the image), CMD-SHELL through sh -c."""
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0].replace("python ", f"{sys.executable} ", 1)]
    assert kind == "CMD", test
    return [sys.executable if rest[0] == "python" else rest[0], *rest[1:]]


def run_healthcheck(test: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(healthcheck_argv(test), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
@pytest.mark.parametrize("service_name", APP_SERVICES)
def test_each_service_runs_exactly_its_role_command_and_turns_healthy(resolved, image_tree, deploy_redis, tmp_path,
                                                                      service_name):
    service = resolved["services"][service_name]
    env = container_env(service, deploy_redis, tmp_path)
    entrypoint = list(dockerfile_instruction("ENTRYPOINT").value)
    argv = [sys.executable, *entrypoint[1:], *service["command"]]   # python scripts/run.py --role <role>
    role = service["command"][0]
    expected = role_command(role, dict(env))
    check = service.get("healthcheck", {})
    if role in ("api", "flower"):
        # Nothing listens yet: the check must fail, or it proves nothing (the worker's: below).
        failing = run_healthcheck(check["test"], env, image_tree)
        assert failing.returncode != 0, f"{service_name}'s health check passes with nothing running"

    log = tmp_path / f"{service_name}.log"
    before_exec = ([sys.executable, *entrypoint[1:], role], proc_cmdline(os.getpid()))  # run.py; a fork of us
    with running(argv, env, image_tree, log) as proc:
        # run.py execs the role's command in place: same process, new command line.
        cmdline = proc.wait_for("exec of the role's command",
                                lambda: (c := proc_cmdline(proc.pid)) and c not in before_exec and c,
                                START_TIMEOUT, interval=0.3)
        assert comparable(cmdline) == comparable(expected), \
            f"the container runs {cmdline}, role_command gives {expected}"
        if disabled(check):  # beat: started and scheduling
            proc.wait_for("beat starting", lambda: "beat: Starting" in log.read_text(errors="replace"),
                          START_TIMEOUT, interval=0.3)
            schedule = Path(env["STORYWIRE_DATA_DIR"])
            proc.wait_for("beat's schedule file", lambda: any(schedule.glob("celerybeat-schedule*")),
                          START_TIMEOUT, interval=0.3)
        else:
            proc.wait_for(f"{service_name} health check passing",
                          lambda: run_healthcheck(check["test"], env, image_tree).returncode == 0,
                          START_TIMEOUT, interval=0.3)
        assert proc.proc.poll() is None, proc.log_tail()
        if role == "worker":
            # Healthy means this container's worker answered: another host name gets no reply.
            other = run_healthcheck(check["test"], dict(env, HOSTNAME="not-" + env["HOSTNAME"]), image_tree)
            assert other.returncode != 0, other.stdout
    assert "Traceback" not in log.read_text(errors="replace"), proc.log_tail()


@pytest.mark.e2e
def test_make_run_starts_each_role_with_role_command(deploy_redis, tmp_path):
    """`make run` (scripts/run.py) starts the same four commands the containers exec."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWER_", "STORYWIRE_", "API_", "WORKER_")) and k not in ("CELERY_BROKER_URL",
                                                                                          "PYTHONPATH")}
    env.update(REDIS_URL=deploy_redis, API_PORT=str(free_port()), FLOWER_PORT=str(free_port()), API_WORKERS="1",
               STORYWIRE_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    seen_by_roles = dict(env, PYTHONPATH=str(ROOT))   # what run.py hands its children
    expected = {role: role_command(role, dict(seen_by_roles)) for role in ROLES}
    log = tmp_path / "run.log"
    with running([sys.executable, str(ROOT / "scripts" / "run.py")], env, ROOT, log) as proc:
        proc.wait_for("run.py's summary", lambda: "beat " in log.read_text(errors="replace"), START_TIMEOUT,
                      interval=0.3)
        children = proc.wait_for("four roles",
                                 lambda: (c := psutil.Process(proc.pid).children()) and len(c) == 4 and c,
                                 timeout=30, interval=0.3)
        commands = sorted(child.cmdline() for child in children)
    assert sorted(map(comparable, commands)) == sorted(map(comparable, expected.values())), \
        json.dumps({"started": commands, "expected": expected}, indent=1)
