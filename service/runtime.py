"""What a request needs at hand: the store and a way to enqueue, built once per app."""
from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from storyengine.store import RedisStore, connect
from workers import names

from .timing import CountingConnection


@dataclass
class Runtime:
    store: RedisStore
    celery: Celery
    queue: str = names.QUEUE   # the articles' queue (STORYWIRE_QUEUE)

    @classmethod
    def from_config(cls, config: dict) -> "Runtime":
        url = config["REDIS_URL"]
        # Plain TCP connections count their round trips for Server-Timing (TLS and sockets keep their own class).
        counting = {"connection_class": CountingConnection} if url.startswith("redis://") else {}
        store = RedisStore(connect(url, **counting), config["ENGINE_SETTINGS"])
        broker = config["CELERY_BROKER_URL"] or config["REDIS_URL"]
        # A client only: it sends tasks by name and never imports the task code.
        celery = Celery("storywire-api", broker=broker, set_as_current=False)
        queue = config["STORYWIRE_QUEUE"]
        celery.conf.update(task_default_queue=queue, broker_connection_retry=False,
                           broker_connection_max_retries=0,
                           broker_transport_options={"max_retries": 1, "interval_start": 0,
                                                     "interval_step": 0.2, "interval_max": 0.5},
                           task_send_sent_event=True)
        return cls(store, celery, queue)

    def enqueue_process(self, article_ids: list[str]) -> str | None:
        """One task per post: a single article, or the articles of a batch together. The task's id."""
        if len(article_ids) == 1:
            return self.celery.send_task(names.PROCESS_ARTICLE, args=[article_ids[0]], queue=self.queue,
                                         retry=False).id
        if article_ids:
            return self.celery.send_task(names.PROCESS_ARTICLES, args=[article_ids], queue=self.queue,
                                         retry=False).id
        return None


def runtime() -> Runtime:
    return current_app.extensions["storywire"]
