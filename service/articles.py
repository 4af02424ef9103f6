"""POST /v1/articles, POST /v1/articles/batch, GET /v1/articles/{id}."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, url_for
from pydantic import ValidationError

from storyengine.admission import Admission
from storyengine.articles import CLIENT_ID, new_article_record
from storyengine.errors import InvalidArticle, NotFound
from storyengine.timestamps import iso

from . import response_schemas as answers
from .errors import ApiError, invalid_article
from .openapi import PathParam, Reply, documented
from .requests import json_body
from .runtime import runtime
from .schemas import ArticleIn, BatchIn
from .views import article_view

log = logging.getLogger("storywire.api")
bp = Blueprint("articles", __name__, url_prefix="/v1/articles")


def _validate(item, prefix: str = "") -> dict:
    """A validated article turned into the record the store keeps."""
    if not isinstance(item, dict):
        raise ApiError(422, "invalid_article", f"{prefix.rstrip('.') or 'The body'} must be a JSON object "
                       "with source, url and title.", [{"field": prefix.rstrip(".") or "body",
                                                         "problem": "not an object"}])
    context = {"max_body_chars": current_app.config["MAX_BODY_CHARS"],
               "future_tolerance_seconds": current_app.config["FUTURE_TOLERANCE_SECONDS"]}
    try:
        article = ArticleIn.model_validate(item, context=context)
        return new_article_record(source=article.source, url=article.url, title=article.title, body=article.body,
                                  published_at=article.published_datetime(), client_id=article.id,
                                  language=article.language)
    except (ValidationError, InvalidArticle) as exc:
        raise invalid_article(exc, prefix) from None


def _accept(records: list[dict]) -> list[Admission]:
    """Store (all new articles of the post in one atomic step), then enqueue
    the new ones and any known one still waiting (a client's retry after a
    lost task). If the broker refuses, the new records are removed again, so
    an article is never left stored without a task to process it."""
    rt = runtime()
    admissions = rt.store.accept_articles(records)
    created = [record for record, a in zip(records, admissions) if a.created]
    waiting = [a.id for a in admissions if a.resend]
    ids = list(dict.fromkeys([record["id"] for record in created] + waiting))
    try:
        task_id = rt.enqueue_process(ids)
    except Exception as exc:  # kombu raises several types when the broker is down
        log.warning("enqueue failed, %d new article(s) not stored: %s", len(created), exc, extra=_id_fields(ids))
        try:
            for record in created:
                rt.store.forget_queued(record)
        except Exception:  # noqa: BLE001 - Redis is away too: the articles stay, and a retry re-sends them
            raise ApiError(503, "queue_unavailable", "The work queue and the store are unavailable; some articles "
                           "may be stored and waiting. Retry after a few seconds: sending the same articles again "
                           "is safe, and sends the task of any that is waiting.",
                           headers={"Retry-After": "5"}) from None
        raise ApiError(503, "queue_unavailable", "The work queue is unavailable; nothing was stored. Retry after a "
                       "few seconds: sending the same articles again is safe.", headers={"Retry-After": "5"}) from None
    if ids:
        # The line that ties a request to the task deciding its articles (and to the worker's lines).
        log.info("queued %d article(s) as task %s", len(ids), task_id, extra={"task_id": task_id, **_id_fields(ids)})
    return admissions


def _id_fields(ids: list[str]) -> dict:
    """The log fields naming these articles: ``article_id`` for one, ``article_ids`` for several."""
    if not ids:
        return {}
    return {"article_ids": ids} if len(ids) > 1 else {"article_id": ids[0]}


def _answer(record: dict, admission: Admission, prefix: str = "") -> dict:
    """The answer for one admitted article; an ApiError for one refused."""
    if admission.outcome == "too_old":
        days = runtime().store.settings.retention_days
        raise ApiError(422, "too_old", f"The article was published {record['published_at']}, more than {days:g} "
                       f"days before the stream clock ({iso(admission.clock)}), so retention would remove it at "
                       "once; it was not stored. Send articles inside the window (STORYWIRE_RETENTION_DAYS sets "
                       "it).",
                       [{"field": f"{prefix}published_at", "problem": "older than the retention window"}])
    if admission.outcome == "conflict":
        source, url = admission.stored
        differs = [name for name, sent, kept in (("source", record["source"], source), ("url", record["url"], url))
                   if sent != kept] or ["url"]
        raise ApiError(409, "id_conflict", f"The id {record['client_id'] or record['id']!r} of {record['source']!r} "
                       f"already names another article ({', '.join(differs)} differ: stored {url!r}); nothing was "
                       "stored. Send each article of an outlet with an id of its own.",
                       [{"field": f"{prefix}{name}", "problem": "differs from the article this id names"}
                        for name in differs])
    return {"id": admission.id, "client_id": record.get("client_id") or None,
            "status": "queued" if admission.created else "known", "created": admission.created,
            "status_url": url_for("articles.get_article", article_id=admission.id)}


_BODY_ERRORS = {400: "The body is empty, not UTF-8, not JSON or nested too deeply (empty_body, invalid_encoding, "
                     "malformed_json, too_deeply_nested)", 413: None, 415: None}
_QUEUE_DOWN = ("Redis or the work queue is unreachable (unavailable, queue_unavailable), too many articles are "
               "waiting (queue_full) or Redis is out of memory (store_full); nothing was stored: retry after "
               "Retry-After seconds, sending the same articles again is safe")


@documented(summary="Accept one article", tag="articles", body=ArticleIn,
            description="Stores the article and queues it for a worker. Posting the same article again (same id "
                        "from the same outlet, or same outlet and canonical URL) answers 200 with the same id and "
                        "stores nothing (an article still waiting has its task sent again).",
            replies={202: Reply("Stored and queued", answers.ArticleAccepted, ("Location",)),
                     200: Reply("Already known: nothing was done", answers.ArticleAccepted, ("Location",))},
            errors={**_BODY_ERRORS, 409: "The id already names another article of this outlet (id_conflict)",
                    422: "The article is not valid (invalid_article; details lists each field), or older than the "
                         "retention window on the stream clock (too_old)",
                    503: _QUEUE_DOWN})
@bp.post("")
def post_article():
    record = _validate(json_body())
    [admission] = _accept([record])
    body = _answer(record, admission)
    return body, (202 if admission.created else 200), {"Location": body["status_url"]}


@documented(summary="Accept a batch of articles", tag="articles", body=BatchIn,
            description="One result per item, in order; a bad item fails alone with its own error while the "
                        "others are stored (all of them in one atomic step). The whole batch is decided by one "
                        "task, which costs a worker far less than the same articles posted one by one.",
            replies={202: Reply("Each item stored, known or refused", answers.BatchAccepted)},
            errors={**_BODY_ERRORS, 413: "The body or the batch is too large (body_too_large, batch_too_large)",
                    422: "Not a batch, or no item in it is valid (invalid_batch)", 503: _QUEUE_DOWN})
@bp.post("/batch")
def post_batch():
    payload = json_body()
    try:
        batch = BatchIn.model_validate(payload if isinstance(payload, dict) else {"articles": payload})
    except ValidationError:
        raise ApiError(422, "invalid_batch", "Send {\"articles\": [ ... ]} with 1 to "
                       f"{current_app.config['MAX_BATCH_ARTICLES']} articles.") from None
    limit = current_app.config["MAX_BATCH_ARTICLES"]
    if len(batch.articles) > limit:
        raise ApiError(413, "batch_too_large", f"A batch holds at most {limit} articles; split it into "
                       f"batches of {limit} or fewer.")
    results: list[dict | None] = [None] * len(batch.articles)
    valid: list[tuple[int, dict]] = []
    for index, item in enumerate(batch.articles):
        try:
            valid.append((index, _validate(item, f"articles.{index}.")))
        except ApiError as err:
            results[index] = _rejected(index, err)
    admitted = 0
    if valid:
        for (index, record), admission in zip(valid, _accept([record for _, record in valid])):
            try:
                results[index] = dict(_answer(record, admission, f"articles.{index}."), index=index)
                admitted += 1
            except ApiError as err:
                results[index] = _rejected(index, err)
    if not valid:
        details = [d for r in results for d in r["error"]["details"]]
        raise ApiError(422, "invalid_batch", "No article in the batch is valid; fix the listed fields and send "
                       "the batch again.", details)
    # Valid items the store refused (too_old, id_conflict) are answered item by item, like invalid ones.
    return {"accepted": admitted, "rejected": len(results) - admitted, "results": results}, 202


def _rejected(index: int, err: ApiError) -> dict:
    return {"index": index, "error": {"status": err.status, "code": err.code, "message": err.message,
                                      "details": err.details}}


@documented(summary="An article's status, story and decision", tag="articles",
            path_params={"article_id": PathParam("The id POST answered with", CLIENT_ID.pattern)},
            replies={200: Reply("The article", answers.ArticleView)},
            errors={404: "No article with this id (not_found)",
                    410: "Removed by the retention policy; the message says when and why (gone)", 503: None})
@bp.get("/<article_id>")
def get_article(article_id: str):
    if not CLIENT_ID.fullmatch(article_id):
        raise NotFound(f"no article with id {article_id!r}")
    store = runtime().store
    return article_view(store.get_article(article_id), store.settings)
