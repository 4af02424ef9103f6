"""A test's own deployment of real processes, for the fault and recovery
tests: its own redis-server (append-only file on, as shipped), the API under
gunicorn and Celery roles started with the command `make run` uses
(scripts.run.role_command); an HTTP client that keeps every answer; the
articles posted (lines of the dev stream when ../shared is there, else
generated news-like text); and checks that every article was decided exactly
once. The ``stack`` fixture built on it is in tests/workers/conftest.py."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

import psutil

from embedded_redis.server import EmbeddedRedis, free_port
from scripts.run import role_command
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

ROOT = Path(__file__).resolve().parent.parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev.jsonl"
PREFIX = "sw-faults"
HTTP_TIMEOUT = 5.0      # a client that waits no longer than this for any answer


# ====================================================================== articles
def realistic_articles(n: int, tag: str) -> list[dict]:
    """n articles as a client posts them (no gold): lines of the dev stream
    when it is present next to the project, else generated news-like text."""
    rows: list[dict] = []
    if DEV.exists():
        with DEV.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    row.pop("gold", None)
                    rows.append(row)
                if len(rows) == n:
                    break
    if len(rows) < n:
        rows.extend(generated_articles(n - len(rows), start=len(rows)))
    for i, row in enumerate(rows):
        row["id"] = f"{tag}-{i:04d}"  # unique, and easy to tell apart in a log
    return rows


_PLACES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Cardiff", "Hobart", "Tbilisi", "Recife", "Gdansk",
           "Manila", "Windhoek", "Valletta", "Reno", "Izmir", "Perth", "Bergen", "Cusco", "Dakar", "Kochi"]
_EVENTS = [
    ("Flooding closes roads around {p}", "Heavy rain flooded low streets in {p} overnight and emergency crews "
     "closed {k} roads, officials said on {d}. Residents near the river were told to move cars to higher ground."),
    ("Ferry strike halts crossings at {p}", "Ferry crews at {p} walked out on {d} over pay, stranding {k} "
     "passengers. The operator said talks with the union would resume once both sides had studied the offer."),
    ("Wildfire forces evacuations near {p}", "A wildfire driven by strong winds burned {k} hectares of scrub near "
     "{p} on {d}. Firefighters backed by aircraft worked to keep the flames away from homes."),
    ("Court blocks stadium plan in {p}", "A court in {p} on {d} blocked plans for a new stadium, ruling that the "
     "council had not consulted residents. The club said it would appeal; {k} jobs depend on the project."),
]


def generated_articles(n: int, start: int = 0) -> list[dict]:
    base = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    rows = []
    for i in range(start, start + n):
        title, body = _EVENTS[i % len(_EVENTS)]
        place = _PLACES[(i // len(_EVENTS)) % len(_PLACES)]
        when = base + timedelta(hours=i)
        fill = {"p": place, "k": 10 + i % 90, "d": when.strftime("%A")}
        rows.append({"source": f"outlet-{i % 7}", "url": f"https://outlet-{i % 7}.example/{i}",
                     "title": title.format(**fill), "body": body.format(**fill),
                     "published_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return rows


# ====================================================================== HTTP
@dataclass
class Answer:
    """What the server sent, shaped like a Flask test response so that
    tests/service/envelope.py's assert_error can judge it."""
    status_code: int
    headers: dict
    data: bytes
    elapsed: float

    @property
    def mimetype(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def get_json(self):
        return json.loads(self.data)

    def get_data(self, as_text: bool = False):
        return self.data.decode("utf-8", "replace") if as_text else self.data


def http(method: str, url: str, body=None, timeout: float = HTTP_TIMEOUT) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, err.headers, err.read()
    return Answer(status, {k.lower(): v for k, v in headers.items()}, raw, time.monotonic() - started)


# ====================================================================== processes
@dataclass
class Role:
    """One role (api or worker) started with role_command, in its own session
    so that it and any children it forks can be ended together."""
    name: str
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Role":
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(role_command(self.name, self.env), cwd=ROOT, env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Terminate (a warm shutdown for a worker), then kill whatever is left
        of the process and its children."""
        if self.proc is None:
            return
        family = self.family()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def family(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def children(self) -> list[psutil.Process]:
        return self.family()[1:]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(interval)


@dataclass
class Stack:
    """A test's own Redis, and the roles started on it."""
    tmp: Path
    redis: EmbeddedRedis
    env: dict
    roles: list[Role] = field(default_factory=list)
    api_url: str = ""

    @cached_property
    def store(self) -> RedisStore:
        return RedisStore(connect(self.redis.url), Settings(key_prefix=PREFIX))

    def worker(self, **extra_env) -> Role:
        env = dict(self.env, **extra_env)
        role = Role("worker", env, self.tmp / f"worker-{len(self.roles)}.log").start()
        self.roles.append(role)
        wait_until(lambda: " ready." in role.log_text() or role.proc.poll() is not None, 60, "worker ready")
        assert role.proc.poll() is None, f"the worker exited: {role.log_text()[-3000:]}"
        return role

    def api(self, **extra_env) -> Role:
        port = free_port()
        env = dict(self.env, API_PORT=str(port), API_WORKERS="1", **extra_env)
        role = Role("api", env, self.tmp / f"api-{len(self.roles)}.log").start()
        self.roles.append(role)
        self.api_url = f"http://127.0.0.1:{port}"

        def up():
            assert role.proc.poll() is None, f"gunicorn exited: {role.log_text()[-3000:]}"
            try:
                return http("GET", f"{self.api_url}/healthz", timeout=1).status_code == 200
            except OSError:
                return False
        wait_until(up, 30, "gunicorn answers /healthz", interval=0.2)
        return role

    def post(self, row: dict) -> Answer:
        return http("POST", f"{self.api_url}/v1/articles", row)

    def get(self, path: str) -> Answer:
        return http("GET", f"{self.api_url}{path}")

    def stop(self) -> None:
        for role in reversed(self.roles):
            role.stop()
        self.redis.stop()


# ====================================================================== checks on the store
def statuses(store: RedisStore, ids: list[str]) -> dict[str, str | None]:
    with store.redis.pipeline(transaction=False) as pipe:
        for article_id in ids:
            pipe.hget(store.keys.article(article_id), "status")
        return {i: (s.decode() if s else None) for i, s in zip(ids, pipe.execute())}


def wait_all_processed(store: RedisStore, ids: list[str], timeout: float) -> None:
    def done():
        return all(s == "processed" for s in statuses(store, ids).values())
    try:
        wait_until(done, timeout, "every accepted article processed", interval=0.2)
    except AssertionError:
        left = {i: s for i, s in statuses(store, ids).items() if s != "processed"}
        raise AssertionError(f"{len(left)} of {len(ids)} not processed within {timeout}s: "
                             f"{dict(list(left.items())[:10])}") from None


def assert_processed_exactly_once(store: RedisStore, ids: list[str]) -> None:
    """Every article processed, counted once: in exactly one story's article
    set (the story it names), story counts and outlet counts summing to the
    number of articles, one document-frequency count per canonical article,
    and nothing left waiting in the queued set."""
    k, r = store.keys, store.redis
    assert r.zcard(k.queued) == 0, r.zrange(k.queued, 0, 20)
    records = {}
    with r.pipeline(transaction=False) as pipe:
        for article_id in ids:
            pipe.hmget(k.article(article_id), ("status", "story", "duplicate_of"))
        for article_id, (status, story, duplicate_of) in zip(ids, pipe.execute()):
            records[article_id] = (status.decode(), story.decode(), (duplicate_of or b"").decode())
    assert {s for s, _, _ in records.values()} == {"processed"}
    stories = [m.decode() for m in r.zrange(k.stories_recent, 0, -1)]
    assert len(stories) == len(set(stories)) == r.zcard(k.stories_size)
    memberships: dict[str, list[str]] = {}
    total_count = total_sources = 0
    with r.pipeline(transaction=False) as pipe:
        for story_id in stories:
            pipe.zrange(k.story_articles(story_id), 0, -1)
            pipe.hget(k.story(story_id), "article_count")
            pipe.hvals(k.story_sources(story_id))
        answers = pipe.execute()
    for n, story_id in enumerate(stories):
        members, count, sources = answers[3 * n: 3 * n + 3]
        assert int(count) == len(members), (story_id, int(count), len(members))
        assert sum(int(v) for v in sources) == len(members), story_id
        total_count += int(count)
        total_sources += sum(int(v) for v in sources)
        for m in members:
            memberships.setdefault(m.decode(), []).append(story_id)
    assert set(memberships) == set(ids)
    twice = {a: s for a, s in memberships.items() if len(s) != 1}
    assert not twice, f"articles in more than one story: {twice}"
    assert all(memberships[a] == [records[a][1]] for a in ids)
    assert total_count == total_sources == len(ids)
    canonical = sum(1 for _, _, dup in records.values() if not dup)
    assert int(r.get(k.df_docs)) == canonical
