"""The state file: what was sent to each API, by feed and by item, so a second run posts nothing already sent.

It lives in ``var/feeds-state.json`` (under ``STORYWIRE_DATA_DIR`` when set) unless ``--state`` names another.
It is locked for the whole run and written atomically after every batch, so a crash or a second import running
at once never leaves it half-written. A file in the format before states were kept per API is taken as the
run's API's.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .errors import StateError

ROOT = Path(__file__).resolve().parent.parent
FORGET_AFTER = timedelta(days=90)     # an item gone from its feed this long is forgotten


class ItemState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    status: Literal["sent", "rejected"]
    seen: AwareDatetime               # the last run that found it in its feed
    article: str | None = None        # the API's id, for sent items
    problem: str | None = None        # the API's reason, for rejected items


class FeedState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    etag: str | None = None
    modified: str | None = None
    items: dict[str, ItemState] = Field(default_factory=dict)


class ApiState(BaseModel):
    """What was sent to one API, by feed: another API has none of it, so it gets every item."""
    model_config = ConfigDict(extra="forbid", strict=True)
    feeds: dict[str, FeedState] = Field(default_factory=dict)


class State(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[2] = 2
    apis: dict[str, ApiState] = Field(default_factory=dict)   # by api_address()


class StateVersion1(BaseModel):
    """The format before what was sent was kept per API; it is read as the state of the API of the run."""
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1]
    feeds: dict[str, FeedState] = Field(default_factory=dict)


def default_state_path() -> Path:
    return Path(os.environ.get("STORYWIRE_DATA_DIR") or ROOT / "var") / "feeds-state.json"


def api_address(url: str) -> str:
    """The API's base URL as the state file names it: scheme and host in lower case, without the default
    port or a trailing slash, so ``http://LOCALHOST:80/`` and ``http://localhost`` share one state."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = "" if parts.port in (None, {"http": 80, "https": 443}.get(scheme)) else f":{parts.port}"
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


class StateFile:
    """The state file, locked for the whole run so two imports never interleave their writes. It keeps what
    was sent apart for each API (``api``: the run's, as api_address() names it)."""

    def __init__(self, path: Path, api: str) -> None:
        self.path = path
        self.api = api
        self.state = State()
        self.adopted_version_1 = False   # the file was in the format before states were kept per API
        self._lock: io.TextIOWrapper | None = None

    def __enter__(self) -> StateFile:
        if self.path.is_dir():
            raise StateError(f"the state file {self.path} is a directory; pass --state with a file's path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path} ({exc.strerror}); pass --state with a "
                             "path in a writable directory") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StateError(f"another import is running with the state file {self.path}; wait for it to "
                             "finish, or pass a different --state") from None
        try:
            self.state = self._load()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the lock
            self._lock = None

    def _load(self) -> State:
        fix = ("fix it, or move it away to start afresh (items still in their feeds are then posted again, "
               "and the API answers those it already has as known)")
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path} ({exc.strerror})") from None
        try:
            document = json.loads(raw)
        except ValueError:  # not JSON, not UTF-8: the validation below says so
            document = None
        model = StateVersion1 if isinstance(document, dict) and document.get("version") == 1 else State
        try:
            state = model.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the document"
            raise StateError(f"the state file {self.path} is not a feed import state ({where}: {first['msg']}); "
                             f"{fix}") from None
        if isinstance(state, StateVersion1):
            # It names no API: the importer then posted to one API only, most likely the one it posts to now.
            self.adopted_version_1 = True
            return State(apis={self.api: ApiState(feeds=state.feeds)})
        return state

    @property
    def feeds(self) -> dict[str, FeedState]:
        """The run's API's feeds (an API the file has not seen starts with none)."""
        return self.state.apis.setdefault(self.api, ApiState()).feeds

    def save(self) -> None:
        """Write atomically: a reader or a crash sees the old file or the new one, never a mix."""
        data = self.state.model_dump_json(indent=1).encode("utf-8")
        tmp_name = None
        try:
            with tempfile.NamedTemporaryFile("wb", dir=self.path.parent, prefix=f".{self.path.name}.",
                                             suffix=".tmp", delete=False) as tmp:
                tmp_name = tmp.name
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except OSError as exc:
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
            raise StateError(f"cannot write the state file {self.path} ({exc.strerror}); the previous state is "
                             "kept, and items sent since are answered as known when posted again") from None


def forget_old(feed_state: FeedState, current: set[str], now: datetime) -> None:
    """Drop the items no longer in the feed (``current``: the keys it holds now) that it has not held for
    FORGET_AFTER."""
    for key in [k for k, item in feed_state.items.items() if k not in current and now - item.seen > FORGET_AFTER]:
        del feed_state.items[key]
