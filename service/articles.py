"""POST /v1/articles, POST /v1/articles/batch, GET /v1/articles/{id}."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, url_for
from pydantic import ValidationError

from storyengine.articles import CLIENT_ID, new_article_record
from storyengine.errors import InvalidArticle, NotFound

from .errors import ApiError, invalid_article
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
    try:
        rt.enqueue_process([record["id"] for record in created])
    except Exception as exc:  # kombu raises several types when the broker is down
        log.warning("enqueue failed: %s", exc)
        for record in created:
            rt.store.forget_queued(record)
        raise ApiError(503, "queue_unavailable", "The work queue is unavailable; articles not yet queued were "
                       "not stored. Retry after a few seconds: sending the same articles again is safe, those "
                       "already queued answer with their existing ids.",
                       headers={"Retry-After": "5"}) from None
    return results


def _accepted(article_id: str, created: bool) -> dict:
    return {"id": article_id, "status": "queued" if created else "known", "created": created,
            "status_url": url_for("articles.get_article", article_id=article_id)}


@bp.post("")
def post_article():
    record = _validate(json_body())
    [(article_id, created)] = _accept([record])
    body = _accepted(article_id, created)
    return body, (202 if created else 200), {"Location": body["status_url"]}


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


@bp.get("/<article_id>")
def get_article(article_id: str):
    if not CLIENT_ID.match(article_id):
        raise NotFound(f"no article with id {article_id!r}")
    return runtime().store.get_article(article_id)
