"""The Celery app factory."""
from __future__ import annotations

from celery import Celery

from storyengine.logs import log_format

from . import heartbeat, kombu_fixes, logs, names
from .config import WorkerConfig

# Seconds between two sweeps of kombu's unacknowledged messages (see create_celery).
UNACKED_RESTORE_INTERVAL = 5
# Seconds a sweep's mutex lasts if whoever took it never lets go (see create_celery).
UNACKED_MUTEX_EXPIRE = 10


def create_celery(config: WorkerConfig | None = None) -> Celery:
    config = config or WorkerConfig.from_env()
    logs.install(log_format())  # LOG_FORMAT=json: every worker and beat line a JSON object (workers/logs.py)
    kombu_fixes.install()  # a worker survives Redis going away with a BRPOP in flight (workers/kombu_fixes.py)
    app = Celery("storywire", broker=config.broker, include=["workers.tasks"])
    app.conf.update(
        task_default_queue=config.queue,
        task_ignore_result=True,          # state lives in the store, not in a result backend
        task_acks_late=True,              # tasks are idempotent (see storyengine.decider)
        task_reject_on_worker_lost=True,  # a killed worker's task goes back to the queue
        # One message at a time per pool process: with late acks and tasks of a
        # few seconds, a prefetched message would only wait in this worker's
        # buffer, and die with it (then wait out the visibility timeout).
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # How long a delivered task may stay unacknowledged before another
            # worker gets it: see WorkerConfig.visibility_timeout (40 s).
            "visibility_timeout": config.visibility_timeout,
            # Each worker sweeps kombu's unacknowledged set every 5 s and every
            # sweep looks (throttle 1). kombu's defaults (10 s, every 10th call)
            # only look every ~100 s, so a killed worker's task would wait up to
            # visibility_timeout + 100 s; now it is redelivered within
            # visibility_timeout + 5 s. A sweep is one ZRANGE under a mutex.
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,
            # A sweep holds a mutex in Redis for its few milliseconds. A worker
            # killed mid-sweep, or a sweep cut off by a Redis outage, leaves it
            # held until it expires, and no worker sweeps meanwhile: kombu's
            # 300 s would hold back every stranded task for 5 minutes. 10 s
            # expires before the visibility timeout does.
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
        },
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,     # Flower shows task states
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # Beat's passes go to their own queue, which every worker consumes beside
        # the articles' (scripts/run.py), so a pass starts within a task's time
        # however many article tasks wait.
        beat_schedule={
            "repair-stories": {
                "task": names.REPAIR_STORIES,
                "schedule": float(config.repair_interval),
                # A run that could not start before the next one is due is dropped,
                # so stopped workers do not come back to a pile of repair runs.
                "options": {"queue": config.maintenance_queue, "expires": float(config.repair_interval)},
            },
            "requeue-stale": {
                "task": names.REQUEUE_STALE,
                "schedule": float(config.requeue_interval),
                "options": {"queue": config.maintenance_queue, "expires": float(config.requeue_interval)},
            },
        },
    )
    app.conf.storywire = config
    # Each worker's main process records that it is alive in the store (/readyz, /metrics).
    app.steps["consumer"].add(heartbeat.Heartbeat)
    return app
