"""One log line format for every Storywire process: a JSON object per line, or plain text.

``LOG_FORMAT=json`` makes the API (service/logs.py, gunicorn's access and
error logs and the app's own) and the worker and beat (workers/logs.py,
Celery's logs) write each line as one JSON object:

    {"timestamp": "2026-03-02T11:27:48.021+00:00", "level": "INFO", "logger": "celery.app.trace",
     "message": "Task storywire.process_article[5b1e...] succeeded in 0.01s: {...}", "pid": 4242,
     "task_id": "5b1e...", "task_name": "storywire.process_article", "article_id": "quake-1"}

with, where known, ``task_id``, ``task_name``, ``article_id`` or
``article_ids`` (workers) and ``method``, ``path``, ``status``,
``request_id`` (API). ``LOG_FORMAT=text`` (the default) keeps Celery's and
gunicorn's own text lines, which some tools and tests read.

The choice is read from the environment when a process sets up its logging,
never at import; this module imports neither Flask nor Celery.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .errors import ConfigError

LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
# Celery passes each task message's fields as ``extra={"data": ...}``; the
# worker's filter turns them into task_id and task_name, so they are not logged twice.
_NOT_LOGGED = (*RESERVED_ATTRS, "data")


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """``LOG_FORMAT`` from the environment: ``json`` or ``text``."""
    env = os.environ if environ is None else environ
    raw = env.get("LOG_FORMAT", "").strip().lower()
    if not raw:
        return DEFAULT_LOG_FORMAT
    if raw not in LOG_FORMATS:
        shown = env["LOG_FORMAT"][:40]
        raise ConfigError(f"LOG_FORMAT={shown!r} is not a log format; set LOG_FORMAT=json (one JSON object "
                          "per line) or LOG_FORMAT=text, or unset it")
    return raw


class JsonLineFormatter(JsonFormatter):
    """timestamp (ISO 8601, UTC, milliseconds), level, logger, message and pid,
    then whatever the record carries (``extra=`` fields, and what the
    processes' filters add), then a traceback as ``exc_info`` if any."""

    def __init__(self) -> None:
        super().__init__("{asctime}{levelname}{name}{message}{process}", style="{",
                         rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger",
                                        "process": "pid"},
                         reserved_attrs=_NOT_LOGGED)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
