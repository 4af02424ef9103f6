"""The Celery app factory."""
from __future__ import annotations

from celery import Celery

from storyengine.logs import log_format

from . import kombu_fixes, logs, names
from .config import WorkerConfig


def create_celery(config: WorkerConfig | None = None) -> Celery:
    config = config or WorkerConfig.from_env()
    logs.install(log_format())  # LOG_FORMAT=json: every worker and beat line a JSON object (workers/logs.py)
    kombu_fixes.install()  # a worker survives Redis going away with a BRPOP in flight (workers/kombu_fixes.py)
    app = Celery("storywire", broker=config.broker, include=["workers.tasks"])
    app.conf.update(
        task_default_queue=names.QUEUE,
        task_ignore_result=True,          # state lives in the store, not in a result backend
        task_acks_late=True,              # tasks are idempotent (see storyengine.pipeline)
        task_reject_on_worker_lost=True,  # a killed worker's task goes back to the queue
        worker_prefetch_multiplier=4,
        broker_transport_options={"visibility_timeout": config.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,     # Flower shows task states
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "repair-stories": {
                "task": names.REPAIR_STORIES,
                "schedule": float(config.repair_interval),
                # A run that could not start before the next one is due is dropped,
                # so stopped workers do not come back to a pile of repair runs.
                "options": {"queue": names.QUEUE, "expires": float(config.repair_interval)},
            },
            "requeue-stale": {
                "task": names.REQUEUE_STALE,
                "schedule": float(config.repair_interval),
                "options": {"queue": names.QUEUE, "expires": float(config.repair_interval)},
            },
        },
    )
    app.conf.storywire = config
    return app
