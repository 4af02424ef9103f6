"""Test helpers shared by several test files: a Storywire role started as a real
process (the way `make run` and the image start it), the app built from a test
config, and headless Chromium gated on being installed.

Plain functions and classes; the fixtures built on them live in tests/conftest.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import redis

from storyengine.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0   # seconds for a role to be ready on a busy 2-core machine
STOP_TIMEOUT = 20.0    # seconds between SIGTERM and SIGKILL


# ================================================================ processes
class RunningProcess:
    """A process with its output in a log file. Waits fail the test with the
    log's tail, so a start that went wrong says why; stop() always ends it."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT,
                 own_session: bool = False) -> None:
        self.log = log
        self.own_session = own_session  # stop() also kills what it started (pool children, gunicorn workers)
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=own_session)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def wait_for(self, what: str, check: Callable[[], object], timeout: float = START_TIMEOUT,
                 interval: float = 0.2):
        """check() until it returns something true, and return that; fail the
        test, with the log's tail, if the process exits or time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if self.proc.poll() is not None:
                pytest.fail(f"{what}: the process exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(interval)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: celery, gunicorn and run.py shut down cleanly on it
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.own_session:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # anything of ours still left in its session
            except ProcessLookupError:
                pass

    def __enter__(self) -> RunningProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


Ready = Callable[[RunningProcess], object]


def start_role(role: str, env: dict[str, str], log: Path, ready: Ready | None = None,
               timeout: float = START_TIMEOUT) -> RunningProcess:
    """One role (api, worker, beat, flower) started with scripts.run.role_command, the
    command `make run` and the image use; returns once ready(process) holds (at
    once without ``ready``). A role that does not get ready is stopped and the
    test fails with its log's tail."""
    from scripts.run import role_command, role_environment
    process = RunningProcess(role_command(role, env), role_environment(role, env), log)
    if ready is not None:
        try:
            process.wait_for(f"{role} did not start", lambda: ready(process), timeout)
        except BaseException:
            process.stop()
            raise
    return process


def log_says(text: str) -> Ready:
    """Ready once the log holds ``text`` (a Celery worker logs "<hostname> ready.")."""
    return lambda process: text in process.log_text()


def listening(port: int) -> Ready:
    """Ready once something accepts connections on 127.0.0.1:port."""
    def check(_process: RunningProcess) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    return check


def answers(url: str) -> Ready:
    """Ready once a GET of ``url`` answers 2xx (a 503 from /healthz is not ready yet)."""
    def check(_process: RunningProcess) -> bool:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except OSError:  # refused, timed out, or an HTTPError
            return False
    return check


# ================================================================ the app
def build_app(redis_url: str, settings, **config):
    """The Flask app over ``redis_url`` (store and broker) with the test's engine
    settings; ``config`` overrides or adds keys (CELERY_BROKER_URL, STORYWIRE_API_KEY, ...)."""
    from service import create_app
    return create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "ENGINE_SETTINGS": settings,
                       "TESTING": True, **config})


# ================================================================ the headless browser
HOW_TO_INSTALL = ("run `bash .ci/install-browser` (as root, or with sudo: apt-get install -y chromium "
                  "chromium-driver), or set STORYWIRE_SKIP_BROWSER=1 to skip the browser tests")
_FLAG_VALUES = ("", "0", "1", "true", "false", "yes", "no")


def browser_problem(environ: dict[str, str], which=shutil.which) -> tuple[str, str] | None:
    """What stops the browser tests: None, or ("skip" | "fail", why). A missing
    browser is a skip that says how to get one, and a failure where
    STORYWIRE_REQUIRE_BROWSER=1 (CI); STORYWIRE_SKIP_BROWSER=1 skips on purpose."""
    flags = {name: environ.get(name, "").strip().lower()
             for name in ("STORYWIRE_SKIP_BROWSER", "STORYWIRE_REQUIRE_BROWSER")}
    for name, flag in flags.items():
        if flag not in _FLAG_VALUES:
            return "fail", f"{name}={flag[:40]!r} is not understood; set it to 1 (skip) or 0 (run)"
    if flags["STORYWIRE_SKIP_BROWSER"] in ("1", "true", "yes"):
        return "skip", "STORYWIRE_SKIP_BROWSER=1: the headless-browser tests of the page are skipped"
    missing = [name for name in ("chromium", "chromedriver") if which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (install requirements.txt into .venv)")
    if missing:
        required = flags["STORYWIRE_REQUIRE_BROWSER"] in ("1", "true", "yes")
        return ("fail" if required else "skip",
                f"no headless browser for the page tests ({', '.join(missing)} missing): {HOW_TO_INSTALL}")
    return None


def require_browser() -> None:
    """Skip the calling test or fixture, saying how to get a browser, or fail it
    where STORYWIRE_REQUIRE_BROWSER=1 (CI), unless Chromium can be driven."""
    problem = browser_problem(dict(os.environ))
    if problem and problem[0] == "skip":
        pytest.skip(problem[1])
    if problem:
        pytest.fail(problem[1], pytrace=False)


def chromium_driver(workdir: Path, window_size: str = "1000,1000", page_load_timeout: float = 15,
                    extra_args: Iterable[str] = ()):
    """Debian's headless Chromium under Selenium, its profile and chromedriver's log
    in ``workdir``, the browser console kept for get_log("browser"). Call
    require_browser() first; the caller quits the driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                f"--window-size={window_size}", "--disable-extensions", f"--user-data-dir={workdir / 'profile'}",
                *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver"),
                                               log_output=str(workdir / "chromedriver.log")), options=options)
    browser.set_page_load_timeout(page_load_timeout)
    return browser


def pairs(admissions) -> list[tuple[str, bool]]:
    """(id, created) of each Admission the store answered a post with."""
    return [(a.id, a.created) for a in admissions]


def accept(store, records: list[dict]) -> list[str]:
    """Accept new records into the store (each must be new); their ids."""
    results = pairs(store.accept_articles(records))
    assert all(created for _, created in results)
    return [article_id for article_id, _ in results]


# ================================================================ the ids the service answers with
def served_id(row: dict) -> str:
    """The id the service keeps and serves an article posted over HTTP under:
    a client's own ``id`` scoped by its outlet (storyengine.articles.scoped_id_for),
    or, posted without one, the outlet-and-URL id (article_id_for)."""
    from storyengine.articles import article_id_for, scoped_id_for
    from storyengine.text import canonical_url
    source = row["source"].strip()  # as new_article_record keeps it
    return scoped_id_for(source, row["id"]) if row.get("id") else article_id_for(source, canonical_url(row["url"]))


def stream_ids(rows: Iterable[dict]) -> dict[str, str]:
    """served_id of each row -> the row's own (stream) id, to read the ids the
    service answers with (an article's, its duplicate_of) as the stream's,
    e.g. against gold labels keyed by them."""
    return {served_id(row): row["id"] for row in rows}


# ================================================================ the API's answers of the store's records
# The store gives records; the API answers service.views of them. Engine tests
# that check what a reader of the API sees read it through these.
def article_answer(store, article_id: str) -> dict:
    """The article as GET /v1/articles/{id} answers it."""
    from service.views import article_view
    return article_view(store.get_article(article_id), store.settings)


def story_answer(store, story_id: str, max_articles: int = 500) -> dict:
    """The story as GET /v1/stories/{id} answers it."""
    from service.views import story_detail_view
    return story_detail_view(store.get_story(story_id, max_articles))


def listed_stories(store, *args, **kwargs) -> list[dict]:
    """A page of stories as GET /v1/stories lists them (store.list_stories' arguments)."""
    from service.views import story_view
    return [story_view(story) for story in store.list_stories(*args, **kwargs).items]


# ================================================================ what a deployment holds in Redis
def keys_under(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key of the deployment with this key_prefix (a setting, ``sw``) or
    key tag (``Keys.prefix``, ``{sw}``): the keys carry the prefix as a hash tag."""
    tag = prefix if prefix.startswith("{") and prefix.endswith("}") else Keys(prefix).prefix
    return sorted(client.scan_iter(match=f"{tag}:*", count=1000))


def snapshot(client: redis.Redis, prefix: str) -> dict:
    """Every key under the prefix with its value, compared by content (DUMP's
    byte order of a hash is not stable, so it cannot be compared)."""
    out = {}
    for key in keys_under(client, prefix):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = client.smembers(key)
        elif kind == b"list":  # document-frequency deltas
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"stream":  # the change log
            out[key] = client.xrange(key)
        else:
            out[key] = client.get(key)
    return out
