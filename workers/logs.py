"""The worker's and beat's log lines as JSON objects (``LOG_FORMAT=json``; see storyengine.logs).

Celery sets up its own handlers (the root logger's and the task logger's),
then sends ``after_setup_logger`` and ``after_setup_task_logger``; we give
those handlers the JSON formatter and a filter that names the task each line
is about: the task that is running, or the one Celery's own "received" and
"succeeded" lines describe. For the processing tasks the filter also names
the articles (``article_id``, or ``article_ids`` for a batch).
"""
from __future__ import annotations

import ast
import logging

from celery import current_task
from celery.signals import after_setup_logger, after_setup_task_logger

from storyengine.logs import JsonLineFormatter

from . import names

# Celery's "received" line only has the arguments' repr, cut short for a long
# batch; a repr longer than this is not parsed back.
_ARGSREPR_LIMIT = 100_000


def install(log_format: str) -> None:
    """Connect the signal handlers once per process (Celery's signals are global)."""
    if log_format != "json":
        return
    after_setup_logger.connect(_use_json, weak=False, dispatch_uid="storywire-json-logs")
    after_setup_task_logger.connect(_use_json, weak=False, dispatch_uid="storywire-json-task-logs")


def _use_json(logger: logging.Logger, **_) -> None:
    for handler in logger.handlers:
        handler.setFormatter(JsonLineFormatter())
        if not any(isinstance(f, TaskContext) for f in handler.filters):
            handler.addFilter(TaskContext())


class TaskContext(logging.Filter):
    """Adds task_id, task_name and the article ids to a record, where known;
    fields the code logged itself (``extra=``) are kept as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id, task_name, args = None, None, None
        data = getattr(record, "data", None)  # Celery's own task lines
        if isinstance(data, dict) and data.get("id"):
            task_id, task_name, args = str(data["id"]), str(data.get("name") or ""), data.get("args")
        if current_task and current_task.request.id and task_id in (None, current_task.request.id):
            task_id, task_name, args = current_task.request.id, current_task.name, current_task.request.args
        if task_id is None:
            return True
        if not hasattr(record, "task_id"):
            record.task_id = task_id
        if not hasattr(record, "task_name") and task_name:
            record.task_name = task_name
        if not hasattr(record, "article_id") and not hasattr(record, "article_ids"):
            _add_article_ids(record, task_name, args)
        return True


def _add_article_ids(record: logging.LogRecord, task_name: str | None, args) -> None:
    if task_name not in (names.PROCESS_ARTICLE, names.PROCESS_ARTICLES):
        return
    if isinstance(args, str):  # a repr, from the message: parsed as a literal, never evaluated
        if len(args) > _ARGSREPR_LIMIT:
            return
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return  # cut short ("...") or not a literal: the task id is enough to find the rest
    if not isinstance(args, (list, tuple)) or not args:
        return
    first = args[0]
    if task_name == names.PROCESS_ARTICLE and isinstance(first, str):
        record.article_id = first
    elif task_name == names.PROCESS_ARTICLES and isinstance(first, (list, tuple)):
        record.article_ids = [a for a in first if isinstance(a, str)]
