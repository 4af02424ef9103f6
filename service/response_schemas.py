"""Response schemas: what the API answers, as pydantic models.

The views build their answers as plain dicts (the store already shapes them);
these models describe those dicts for the OpenAPI document, and the tests
check every real answer against the document. They forbid fields they do not
name, so a field added to an answer without being documented fails a test
instead of going unnoticed. Request schemas live in :mod:`service.schemas`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STORY_ID_PATTERN = r"^st_[0-9a-f]{16}$"


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ errors
class ErrorDetail(_Answer):
    field: str = Field(min_length=1, description="Where the problem is: a field, a dotted path such as "
                                                 "articles.3.url, or body")
    problem: str = Field(min_length=1, description="What is wrong with it")


class ErrorBody(_Answer):
    status: int = Field(ge=400, le=599, description="The HTTP status, repeated")
    code: str = Field(min_length=1, description="A stable, machine-readable name, e.g. invalid_article")
    message: str = Field(min_length=1, description="What went wrong and what to do about it")
    details: list[ErrorDetail] = Field(default_factory=list, min_length=1,
                                       description="Per-field problems; present only when there are any")


class ErrorEnvelope(_Answer):
    """Every error the API answers, whatever the status."""
    error: ErrorBody


# ------------------------------------------------------------------ articles
class ArticleAccepted(_Answer):
    id: str = Field(description="The article's id: c_… from the outlet and the client's own id (so two outlets' "
                                "equal ids are two articles), or a_… from the outlet and the canonical URL")
    client_id: str | None = Field(description="The id the client sent, if any")
    status: Literal["queued", "known"] = Field(description="queued: new, waiting for a worker; known: posted "
                                                           "before, nothing stored again (if it is still waiting, "
                                                           "its task is sent again)")
    created: bool = Field(description="Whether this request stored the article")
    status_url: str = Field(description="Where to read the article's status and decision")


class BatchItemAccepted(ArticleAccepted):
    index: int = Field(ge=0, description="The item's position in the batch")


class BatchItemErrorBody(_Answer):
    status: int = Field(ge=400, le=599)
    code: str = Field(min_length=1)
    message: str = Field(min_length=1)
    details: list[ErrorDetail]


class BatchItemRejected(_Answer):
    index: int = Field(ge=0, description="The item's position in the batch")
    error: BatchItemErrorBody


class BatchAccepted(_Answer):
    accepted: int = Field(ge=0, description="Items stored or already known")
    rejected: int = Field(ge=0, description="Items refused, each with its own error")
    results: list[BatchItemAccepted | BatchItemRejected] = Field(description="One result per item, in order")


class ArticleView(_Answer):
    id: str
    client_id: str | None = Field(description="The id the client sent, if any")
    source: str
    url: str
    title: str = Field(description="The headline (made from the body's first sentence when none was sent)")
    title_derived: bool = Field(description="True when the article came without a title and its headline was "
                                            "made from its body")
    language: str | None
    published_at: datetime | None = Field(description="When it was published; null while an undated article waits "
                                                      "(it takes the stream's time when decided)")
    published_assigned: bool = Field(description="True when the article came without a date and published_at is "
                                                 "the stream's time when it was decided")
    received_at: datetime
    status: Literal["queued", "processed", "failed"]
    story: str | None = Field(description="The story it belongs to now (after any merge)")
    duplicate_of: str | None = Field(description="The canonical article it is a copy of")
    similarity: float | None = Field(description="Containment with the canonical article, or the score of the story "
                                                 "it joined; null when it was compared with nothing (it opened its "
                                                 "story, or became the canonical article of copies already held)")
    decision: dict[str, Any] | None = Field(
        description="Why: `duplicate` lists the candidate articles compared (found by lsh, story or exact; "
                    "containment, Jaccard, verdict) and the rule; `story` lists the candidate stories "
                    "compared, the threshold and the action (opened, joined, followed_canonical, followed_copy)")
    error: str | None = Field(description="Why processing failed, when status is failed")
    processed_at: datetime | None


# ------------------------------------------------------------------ stories
class StorySummary(_Answer):
    id: str = Field(pattern=STORY_ID_PATTERN)
    headline: str
    representative_article: str = Field(description="The id of the article that best represents the story")
    article_count: int = Field(ge=1, description="Articles received, copies included")
    original_count: int = Field(ge=0, description="Articles that are not copies of another")
    source_count: int = Field(ge=1, description="Distinct outlets")
    sources: list[str] = Field(description="The outlets, most articles first")
    first_seen: datetime
    last_updated: datetime
    top_terms: list[str]
    merged_from: list[str] = Field(description="Stories the repair pass merged into this one")


class StoryPage(_Answer):
    stories: list[StorySummary]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page")


class StoryArticleCopy(_Answer):
    id: str
    source: str
    url: str
    title: str
    published_at: datetime
    duplicate_of: str | None
    similarity: float | None


class StoryArticle(StoryArticleCopy):
    duplicates: list[StoryArticleCopy] = Field(description="Copies of this article, folded under it")


class StoryDetail(StorySummary):
    articles: list[StoryArticle] = Field(description="Originals in published order, each with its copies")


class StoryMovedBody(_Answer):
    story: str = Field(description="The id asked for")
    merged_into: str = Field(description="The story that holds its articles now")
    location: str
    message: str


# ------------------------------------------------------------------ health
class Health(_Answer):
    status: Literal["ok"]


class ReadinessChecks(_Answer):
    redis: Literal["ok"]
    broker: Literal["ok"]
    workers: Literal["ok"] = Field(description="At least one worker was heard from within "
                                               "STORYWIRE_WORKER_STALE_SECONDS (its heartbeat in Redis)")
    workers_seen: int = Field(ge=1, description="Workers heard from within STORYWIRE_WORKER_STALE_SECONDS")
    queued: int = Field(ge=0, description="Articles accepted and waiting to be decided (the backlog)")
    memory: Literal["ok"] = Field(description="Redis is below its maxmemory (at it, Redis refuses writes)")


class Readiness(_Answer):
    status: Literal["ready"]
    checks: ReadinessChecks
