"""Tasks: load by id, call the engine, handle retries. The logic lives in storyengine."""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass

from celery import shared_task
from kombu.transport.redis import PRIORITY_STEPS, Channel

from storyengine.decider import Decider
from storyengine.errors import DecisionFailed, InvalidArticle, NotFound, StoreUnavailable
from storyengine.gc_tuning import collect_less
from storyengine.metrics import Metrics
from storyengine.repair import Repairer
from storyengine.store import RedisStore, connect

from . import names

log = logging.getLogger("storywire.worker")

_deciders: dict[tuple[int, int], Decider] = {}


def decider_for(app) -> Decider:
    """One Decider per worker process (after the fork), so each has its own
    Redis connections and remembers only the lock it holds itself."""
    key = (os.getpid(), id(app))
    if key not in _deciders:
        collect_less()  # the first task of this process: see storyengine.gc_tuning
        config = app.conf.storywire
        _deciders[key] = Decider(RedisStore(connect(config.redis_url), config.settings))
    return _deciders[key]


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
    round trips and one commit for all of them (storyengine.decider).
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
    again later.

    An error of ours while deciding one article (DecisionFailed: the engine
    decided the rest of its batch) is tried again at once, counted on the
    article, and after ``max_attempts`` tries the article is failed with
    the reason (counted in storywire_articles_failed_total)."""
    decider = decider_for(task.app)
    config = task.app.conf.storywire
    attempt = 0
    spent_before = dict(decider.phase_seconds)
    outcomes: dict = {}
    remaining = list(dict.fromkeys(article_ids))
    while remaining:
        try:
            batch = decider.process_many(remaining)
        except StoreUnavailable as exc:
            if attempt >= config.max_retries:
                # Transient by nature, so never "failed": the articles stay queued
                # and the requeue pass (requeue_stale) sends them again later.
                log.warning("giving up for now; the requeue pass will send them again",
                            extra={"article_ids": remaining, "task_id": task.request.id, "reason": str(exc)})
                outcomes.update({a: None for a in remaining})
                break
            delay = backoff(attempt)
            log.warning("store unavailable (%s); retry %d of %d in %.1f s", exc, attempt + 1, config.max_retries,
                        delay, extra={"article_ids": remaining, "task_id": task.request.id})
            attempt += 1
            time.sleep(delay)
            continue
        except Exception:
            # Outside any one article's decision (loading, the lock, the
            # clock): count a try on each; they stay queued until they run out.
            log.exception("processing failed", extra={"article_ids": remaining, "task_id": task.request.id})
            _count_tries(decider, task, remaining, "internal error while processing; see the worker log")
            raise
        remaining = []
        for outcome in batch:
            outcomes[outcome.article_id] = outcome
            if isinstance(outcome.error, DecisionFailed):
                tries = decider.store.count_attempt(outcome.article_id, str(outcome.error))
                if 0 < tries < decider.settings.max_attempts:
                    remaining.append(outcome.article_id)  # once more, now
    # Decided and failed articles are counted where they change (storyengine.metrics); the seconds
    # by phase, any retries included, after the work.
    spent = {phase: seconds - spent_before.get(phase, 0.0) for phase, seconds in decider.phase_seconds.items()}
    Metrics(decider.store).count_engine_seconds(spent)
    results = []
    for article_id in dict.fromkeys(article_ids):
        outcome = outcomes[article_id]
        if outcome is None:
            results.append({"article": article_id, "status": "queued"})
        elif isinstance(outcome.error, (InvalidArticle, DecisionFailed)):
            # Permanent (or tried max_attempts times): say why on the article itself.
            reason = str(outcome.error)
            if isinstance(outcome.error, DecisionFailed):
                reason += f" (after {decider.settings.max_attempts} tries; see the worker log)"
            decider.store.mark_failed(article_id, reason)
            log.warning("article failed", extra={"article_id": article_id, "reason": reason,
                                                 "task_id": task.request.id})
            results.append({"article": article_id, "status": "failed"})
        elif isinstance(outcome.error, NotFound):
            log.warning("article not found; nothing to do",
                        extra={"article_id": article_id, "task_id": task.request.id})
            results.append({"article": article_id, "status": "missing"})
        else:
            results.append({"article": article_id, "status": "processed", "story": outcome.story_id,
                            "duplicate_of": outcome.duplicate_of, "opened_story": outcome.opened_story,
                            "already_processed": outcome.already_processed})
    return results


def _count_tries(decider, task, article_ids: list[str], reason: str) -> None:
    """One more try on each article; those out of tries are failed with ``reason``."""
    store = decider.store
    try:
        spent = [a for a in article_ids if store.count_attempt(a, reason) >= decider.settings.max_attempts]
        if spent:
            for article_id in spent:
                store.mark_failed(article_id, f"{reason} (after {decider.settings.max_attempts} tries)")
    except Exception:  # noqa: BLE001 - the store is away too: the requeue pass sends them again
        log.warning("could not count the tries", extra={"article_ids": article_ids, "task_id": task.request.id})


@shared_task(name=names.REPAIR_STORIES, bind=True, acks_late=True)
def repair_stories(self) -> dict:
    """Merge stories that converged (see storyengine.repair). Safe to run
    twice or on two workers at once: it works under the assignment lock, and
    a second run finds nothing left to merge. If Redis is away, this run is
    skipped; beat starts the next one on schedule."""
    store = decider_for(self.app).store
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
    """Send again the queued articles whose task was lost, every one of them.

    A task can be lost (a broker that lost data, retries given up while Redis
    was away); the article itself never is: it waits in the queued set
    (``{p}:queued``, scored by when its last task was sent) until processed,
    and processing twice changes nothing.

    An article is stale, and sent again, only when no task for it can still
    be waiting, so a backlog is never sent a second time:

    - it was last sent more than ``requeue_after`` seconds ago, and
    - if the article queue in the broker is not empty, it was sent before the
      oldest task still waiting there. The queue is first in, first out
      (kombu LPUSHes a task and a worker BRPOPs the other end), so every task
      sent before the oldest waiting one has been delivered: an article sent
      then and still queued lost its task, or is being decided now. The
      oldest waiting task's time is the lowest queued score of its articles
      (read from the right end of the list; tasks whose articles are all
      decided by now say nothing and are read past, up to _PEEK_MAX tasks);
    - and no task that a worker holds unacknowledged names it: that task is
      being decided, or comes back (visibility timeout) if its worker died.

    When the broker is not the store's Redis (CELERY_BROKER_URL names another
    server), or a waiting task cannot be read, the age rule alone applies.

    Claiming restarts an article's wait, so one pass sends each article once;
    the pass claims and sends tasks of REQUEUE_BATCH articles until nothing
    stale is left (at most requeue_max_per_run articles per pass), so it keeps
    up with a backlog of any size. Runs on the maintenance queue, every
    requeue_interval seconds (beat)."""
    return requeue_pass(self.app, decider_for(self.app).store)


def requeue_pass(app, store: RedisStore) -> dict:
    """The body of :func:`requeue_stale`: claim and send with ``app`` (its
    storywire config and its broker) until nothing stale is left."""
    config = app.conf.storywire
    requeued, bound = 0, WaitingBound(None, frozenset(), "none")
    try:
        bound = waiting_bound(store, config.broker_is_store, config.queue)
        while requeued < config.requeue_max_per_run:
            ids = store.claim_stale_queued(config.requeue_after,
                                           min(REQUEUE_BATCH, config.requeue_max_per_run - requeued),
                                           sent_before=bound.sent_before, skip=bound.in_hand)
            if not ids:
                break
            app.send_task(names.PROCESS_ARTICLES, args=[ids], queue=config.queue)
            requeued += len(ids)
    except Exception as exc:  # noqa: BLE001 - Redis away: what was claimed and not sent is stale again later
        log.warning("requeue pass %s: %s", "stopped" if requeued else "skipped", exc,
                    extra={"requeued": requeued})
        return {"status": "skipped", "requeued": requeued, "rule": bound.rule}
    if requeued:
        log.info("requeued %d stale articles", requeued, extra={"rule": bound.rule})
    return {"status": "done", "requeued": requeued, "rule": bound.rule}


# Articles per task the requeue pass sends: what one batch post may hold.
REQUEUE_BATCH = 500
# Waiting task messages read per round trip, and at most, from the right end of
# each broker list, to find the oldest one naming a queued article.
_PEEK_PAGE = 20
_PEEK_MAX = 200


@dataclass(frozen=True)
class WaitingBound:
    """What the requeue pass may claim: articles sent before ``sent_before``
    (None: no bound but their age), less those in ``in_hand``; ``rule`` says
    which rule applied (``fifo``, ``empty`` queue, ``age`` alone)."""
    sent_before: float | None
    in_hand: frozenset[str]
    rule: str


def broker_lists(queue: str = names.QUEUE) -> list[str]:
    """The Redis lists of a queue on kombu's Redis transport: priority 0 (every
    task Storywire sends) under the queue's name, each other step in its own."""
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]


def message_article_ids(raw: bytes | str) -> list[str] | None:
    """The article ids a task message in the broker names ([] for a task about
    no article, such as a pass); None when the message cannot be read.

    A kombu message on Redis is JSON whose body is the base64 of Celery's
    protocol 2 JSON ``[args, kwargs, embed]``; args[0] is the list of ids
    (process_articles) or one id (process_article)."""
    try:
        message = json.loads(raw)
        task = message["headers"]["task"]
        if task not in (names.PROCESS_ARTICLE, names.PROCESS_ARTICLES):
            return []
        if (message.get("content-type") != "application/json" or message["headers"].get("compression")
                or message["properties"].get("body_encoding") != "base64"):
            return None
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    first = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(first, str):
        return [first]
    return [i for i in first if isinstance(i, str)] if isinstance(first, list) else []


def waiting_bound(store: RedisStore, broker_is_store: bool, queue: str = names.QUEUE) -> WaitingBound:
    """The requeue pass's bound (see requeue_stale), read from the broker's
    lists and unacknowledged set in the store's Redis: usually two round trips."""
    if not broker_is_store:
        return WaitingBound(None, frozenset(), "age")
    lists = broker_lists(queue)
    with store.redis.pipeline(transaction=False) as pipe:
        for key in lists:
            pipe.lrange(key, -_PEEK_PAGE, -1)
        pipe.hvals(Channel.unacked_key)
        *pages, unacked = pipe.execute()
    in_hand: set[str] = set()
    for raw in unacked:
        try:
            payload = json.loads(raw)[0]
        except (ValueError, IndexError, TypeError):
            continue
        ids = message_article_ids(json.dumps(payload)) if isinstance(payload, dict) else None
        in_hand.update(ids or ())
    bounds = []
    for key, page in zip(lists, pages):
        if not page:
            continue
        sent = _oldest_waiting_send(store, key, page)
        if sent is None:  # unreadable, or nothing within _PEEK_MAX tasks names a queued article
            return WaitingBound(None, frozenset(in_hand), "age")
        bounds.append(sent)
    if not bounds:
        return WaitingBound(None, frozenset(in_hand), "empty")
    return WaitingBound(min(bounds), frozenset(in_hand), "fifo")


def _oldest_waiting_send(store: RedisStore, key: str, page: list[bytes]) -> float | None:
    """When the oldest task waiting in list ``key`` that names a queued article
    was sent: the lowest queued score of its articles. ``page`` is the list's
    right end (its oldest tasks, oldest last); more is read as needed."""
    read = 0
    while page:
        messages = []
        for raw in reversed(page):  # the right end first: the oldest
            ids = message_article_ids(raw)
            if ids is None:
                return None
            messages.append(ids)
        wanted = [ids for ids in messages if ids]
        if wanted:
            with store.redis.pipeline(transaction=False) as pipe:
                for ids in wanted:
                    pipe.zmscore(store.keys.queued, ids)
                answers = pipe.execute()
            for scores in answers:
                known = [score for score in scores if score is not None]
                if known:
                    return min(known)
        read += len(page)
        if len(page) < _PEEK_PAGE or read >= _PEEK_MAX:
            return None
        page = store.redis.lrange(key, -read - _PEEK_PAGE, -read - 1)
    return None
