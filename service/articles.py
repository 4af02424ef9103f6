"""POST /v1/articles, POST /v1/articles/batch, GET /v1/articles/{id}."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, url_for
from pydantic import ValidationError

from storyengine.articles import CLIENT_ID, new_article_record
from storyengine.errors import InvalidArticle, NotFound
from storyengine.metrics import Metrics

from . import response_schemas as answers
from .errors import ApiError, invalid_article
from .openapi import PathParam, Reply, documented
from .requests import json_body
from .runtime import runtime
from .schemas import ArticleIn, BatchIn

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


def _accept(records: list[dict]) -> list[tuple[str, bool]]:
    """Store then enqueue. If the broker refuses, the new records are removed
    again, so an article is never left stored without a task to process it."""
    rt = runtime()
    results = rt.store.accept_articles(records)
    created = [record for record, (_, new) in zip(records, results) if new]
    ids = [record["id"] for record in created]
    try:
        task_id = rt.enqueue_process(ids)
    except Exception as exc:  # kombu raises several types when the broker is down
        log.warning("enqueue failed, %d new article(s) not stored: %s", len(ids), exc, extra=_id_fields(ids))
        for record in created:
            rt.store.forget_queued(record)
        raise ApiError(503, "queue_unavailable", "The work queue is unavailable; articles not yet queued were "
                       "not stored. Retry after a few seconds: sending the same articles again is safe, those "
                       "already queued answer with their existing ids.",
                       headers={"Retry-After": "5"}) from None
    if ids:
        # The line that ties a request to the task deciding its articles (and to the worker's lines).
        log.info("queued %d article(s) as task %s", len(ids), task_id, extra={"task_id": task_id, **_id_fields(ids)})
        Metrics(rt.store).count_accepted(len(ids))  # best effort: a failure is logged, the post stands
    return results


def _id_fields(ids: list[str]) -> dict:
    """The log fields naming these articles: ``article_id`` for one, ``article_ids`` for several."""
    if not ids:
        return {}
    return {"article_ids": ids} if len(ids) > 1 else {"article_id": ids[0]}


def _accepted(article_id: str, created: bool) -> dict:
    return {"id": article_id, "status": "queued" if created else "known", "created": created,
            "status_url": url_for("articles.get_article", article_id=article_id)}


_BODY_ERRORS = {400: "The body is empty, not UTF-8, not JSON or nested too deeply (empty_body, invalid_encoding, "
                     "malformed_json, too_deeply_nested)", 413: None, 415: None}
_QUEUE_DOWN = ("Redis or the work queue is unreachable (unavailable, queue_unavailable); nothing was stored: "
               "retry after Retry-After seconds, sending the same articles again is safe")


@documented(summary="Accept one article", tag="articles", body=ArticleIn,
            description="Stores the article and queues it for a worker. Posting the same article again (same id, "
                        "or same source and canonical URL) answers 200 with the same id and changes nothing.",
            replies={202: Reply("Stored and queued", answers.ArticleAccepted, ("Location",)),
                     200: Reply("Already known: nothing was done", answers.ArticleAccepted, ("Location",))},
            errors={**_BODY_ERRORS, 422: "The article is not valid (invalid_article); details lists each field",
                    503: _QUEUE_DOWN})
@bp.post("")
def post_article():
    record = _validate(json_body())
    [(article_id, created)] = _accept([record])
    body = _accepted(article_id, created)
    return body, (202 if created else 200), {"Location": body["status_url"]}


@documented(summary="Accept a batch of articles", tag="articles", body=BatchIn,
            description="One result per item, in order; a bad item fails alone with its own error while the "
                        "others are stored. The whole batch is decided by one task, which costs a worker far "
                        "less than the same articles posted one by one.",
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
            results[index] = {"index": index, "error": {"status": err.status, "code": err.code,
                                                        "message": err.message, "details": err.details}}
    if valid:
        accepted = _accept([record for _, record in valid])
        for (index, _), (article_id, created) in zip(valid, accepted):
            results[index] = dict(_accepted(article_id, created), index=index)
    if not valid:
        details = [d for r in results for d in r["error"]["details"]]
        raise ApiError(422, "invalid_batch", "No article in the batch is valid; fix the listed fields and send "
                       "the batch again.", details)
    return {"accepted": len(valid), "rejected": len(results) - len(valid), "results": results}, 202


@documented(summary="An article's status, story and decision", tag="articles",
            path_params={"article_id": PathParam("The id POST answered with", CLIENT_ID.pattern)},
            replies={200: Reply("The article", answers.ArticleView)},
            errors={404: "No article with this id (not_found)", 503: None})
@bp.get("/<article_id>")
def get_article(article_id: str):
    if not CLIENT_ID.match(article_id):
        raise NotFound(f"no article with id {article_id!r}")
    return runtime().store.get_article(article_id)
