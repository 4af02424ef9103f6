"""Tasks: load by id, call the engine, handle retries. The logic lives in storyengine."""
from __future__ import annotations

import logging
import os
import time

from celery import shared_task

from storyengine.errors import InvalidArticle, NotFound, StoreUnavailable
from storyengine.metrics import Metrics
from storyengine.pipeline import Processor, collect_less
from storyengine.repair import Repairer
from storyengine.store import RedisStore, connect

from . import names

log = logging.getLogger("storywire.worker")

_processors: dict[tuple[int, int], Processor] = {}


def processor_for(app) -> Processor:
    """One Processor per worker process (after the fork), so each has its own
    Redis connections and remembers only the lock it holds itself."""
    key = (os.getpid(), id(app))
    if key not in _processors:
        collect_less()  # the first task of this process: see storyengine.pipeline
        config = app.conf.storywire
        _processors[key] = Processor(RedisStore(connect(config.redis_url), config.settings))
    return _processors[key]


def backoff(retries: int) -> float:
    return min(60.0, 0.5 * 2 ** retries)


@shared_task(name=names.PROCESS_ARTICLE, bind=True, acks_late=True)
def process_article(self, article_id: str) -> dict:
    """Decide one article (see :func:`process_articles`)."""
    [result] = _process(self, [article_id])
    return result


# The worker logs a task's whole result (which articles it decided), not the
# first 1,024 characters Celery keeps by default.
_RESULT_LOG_CHARS = 65536


@shared_task(name=names.PROCESS_ARTICLES, bind=True, acks_late=True, resultrepr_maxsize=_RESULT_LOG_CHARS)
def process_articles(self, article_ids: list[str]) -> dict:
    """Decide the articles of one batch post together: one lock hold, a few
    round trips and one commit for all of them (storyengine.pipeline).
    Idempotent, so a redelivered or requeued task changes nothing. The
    result lists the ids by what happened to them."""
    results = _process(self, list(article_ids))
    summary: dict = {"articles": len(results), "decided": [], "already_processed": [], "failed": [], "missing": [],
                     "queued": []}
    for result in results:
        if result["status"] == "processed":
            summary["already_processed" if result["already_processed"] else "decided"].append(result["article"])
        else:
            summary[result["status"]].append(result["article"])
    return summary


def _process(task, article_ids: list[str]) -> list[dict]:
    """A transient store error is retried here, in the task, with backoff, not
    with ``self.retry``: the broker is usually the very Redis that is away,
    so a retry could not be published and Celery would drop the message. The
    message stays unacknowledged (acks_late) until the articles are decided;
    if the retries run out, they stay queued and the requeue pass sends them
    again later."""
    processor = processor_for(task.app)
    config = task.app.conf.storywire
    attempt = 0
    spent_before = dict(processor.phase_seconds)
    while True:
        try:
            outcomes = processor.process_many(article_ids)
            break
        except StoreUnavailable as exc:
            if attempt >= config.max_retries:
                # Transient by nature, so never "failed": the articles stay queued
                # and the requeue pass (requeue_stale) sends them again later.
                log.warning("giving up for now; the requeue pass will send them again",
                            extra={"article_ids": article_ids, "task_id": task.request.id, "reason": str(exc)})
                return [{"article": a, "status": "queued"} for a in article_ids]
            delay = backoff(attempt)
            log.warning("store unavailable (%s); retry %d of %d in %.1f s", exc, attempt + 1, config.max_retries,
                        delay, extra={"article_ids": article_ids, "task_id": task.request.id})
            attempt += 1
            time.sleep(delay)
        except Exception:
            # A bug, not the articles' fault and not transient: record it so they
            # do not sit in "queued" forever, and let Celery log it.
            Metrics(processor.store).count_failed(article_ids)
            for article_id in article_ids:
                processor.store.mark_failed(article_id, "internal error while processing; see the worker log")
            raise
    # Before marking failed (see storyengine.metrics); the seconds by phase include any retries.
    spent = {phase: seconds - spent_before.get(phase, 0.0) for phase, seconds in processor.phase_seconds.items()}
    Metrics(processor.store).count_outcomes(outcomes, spent)
    results = []
    for outcome in outcomes:
        if isinstance(outcome.error, InvalidArticle):
            # Permanent: retrying cannot help. Say why on the article itself.
            processor.store.mark_failed(outcome.article_id, str(outcome.error))
            log.warning("article failed", extra={"article_id": outcome.article_id, "reason": str(outcome.error),
                                                 "task_id": task.request.id})
            results.append({"article": outcome.article_id, "status": "failed"})
        elif isinstance(outcome.error, NotFound):
            log.warning("article not found; nothing to do",
                        extra={"article_id": outcome.article_id, "task_id": task.request.id})
            results.append({"article": outcome.article_id, "status": "missing"})
        else:
            results.append({"article": outcome.article_id, "status": "processed", "story": outcome.story_id,
                            "duplicate_of": outcome.duplicate_of, "opened_story": outcome.opened_story,
                            "already_processed": outcome.already_processed})
    return results


@shared_task(name=names.REPAIR_STORIES, bind=True, acks_late=True)
def repair_stories(self) -> dict:
    """Merge stories that converged (see storyengine.repair). Safe to run
    twice or on two workers at once: it works under the assignment lock, and
    a second run finds nothing left to merge. If Redis is away, this run is
    skipped; beat starts the next one on schedule."""
    store = processor_for(self.app).store
    try:
        report = Repairer(store).run()
    except StoreUnavailable as exc:
        log.warning("repair pass skipped: %s", exc)
        return {"status": "skipped", "reason": str(exc)}
    if report.merges:
        Metrics(store).count_merges(len(report.merges))
        log.info("repair pass merged %d stories", len(report.merges), extra={"merges": report.as_dict()["merges"]})
    return dict(report.as_dict(), status="done")


@shared_task(name=names.REQUEUE_STALE, bind=True, acks_late=True)
def requeue_stale(self) -> dict:
    """Send again every article queued for longer than requeue_after seconds.
    A task can be lost (a broker that lost data, retries given up while Redis
    was away); the article itself never is, since it waits in the queued set
    until processed, and processing twice changes nothing."""
    store = processor_for(self.app).store
    try:
        ids = store.claim_stale_queued(self.app.conf.storywire.requeue_after)
    except Exception as exc:  # noqa: BLE001 - Redis away: the next run tries again
        log.warning("requeue pass skipped: %s", exc)
        return {"status": "skipped"}
    for start in range(0, len(ids), 100):
        process_articles.apply_async(args=[ids[start:start + 100]], queue=names.QUEUE)
    if ids:
        log.info("requeued %d stale articles", len(ids))
    return {"status": "done", "requeued": len(ids)}
