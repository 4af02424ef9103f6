"""Request schemas: what the API accepts, validated by pydantic."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from storyengine.articles import CLIENT_ID

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def parse_timestamp(value: str, name: str) -> datetime:
    """ISO 8601 with a time; a missing offset means UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time such as 2026-03-02T11:27:47Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{name} is out of range; send a date-time between 1900 and now") from None
    if parsed.year < 1900:
        raise ValueError(f"{name} must be after 1900")
    return parsed


# Descriptions, formats, patterns and examples below only document the models
# (they go into the OpenAPI document); the validators are what enforce them.
_EXAMPLE_ARTICLE = {"source": "example-news.com", "url": "https://example-news.com/2026/03/02/quake",
                    "title": "Strong earthquake hits southern Iran",
                    "body": "A magnitude 5.6 earthquake struck Qeshm island on Sunday ...",
                    "published_at": "2026-03-02T11:27:47Z"}


class ArticleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True,
                              json_schema_extra={"examples": [_EXAMPLE_ARTICLE]})

    source: str = Field(min_length=1, max_length=200, description="The outlet, e.g. 'reuters.com'")
    url: str = Field(min_length=1, max_length=2048, description="The article's absolute http(s) URL",
                     json_schema_extra={"format": "uri"})
    title: str = Field(default="", max_length=1000, description="The headline. An item may come without one (RSS "
                       "allows a description alone): then a body is required, and the headline is made from its "
                       "first sentence")
    body: str = Field(default="", validate_default=True,
                      description="Plain text or HTML (reduced to text with a real parser); required when there is "
                                  "no title")
    published_at: str | None = Field(default=None, max_length=64, description="ISO 8601 with a time; a missing "
                                     "offset means UTC; at most a day ahead. Without it the article takes the "
                                     "stream's time when decided (now on a live stream, the archive's time in a "
                                     "replay) and says so in published_assigned",
                                     json_schema_extra={"format": "date-time"})
    id: str | None = Field(default=None, max_length=128, description="The client's own id",
                           json_schema_extra={"pattern": CLIENT_ID.pattern})
    language: str | None = Field(default=None, max_length=20, description="A BCP 47 tag such as en or pt-BR",
                                 json_schema_extra={"pattern": _LANGUAGE.pattern})

    @field_validator("source", "title")
    @classmethod
    def _no_control(cls, value: str, info: ValidationInfo) -> str:
        if _CONTROL.search(value):
            raise ValueError(f"{info.field_name} must not contain control characters")
        return value

    @field_validator("body")
    @classmethod
    def _body_size(cls, value: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_body_chars", 200_000)
        if len(value) > limit:
            raise ValueError(f"body has {len(value)} characters; at most {limit} are accepted")
        # title is validated first (declared first); absent from data when it was itself invalid
        if not value.strip() and info.data.get("title", "invalid") == "":
            raise ValueError("an article needs a title or a body (or both); both are missing or blank")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or _WHITESPACE_OR_CONTROL.search(value):
            raise ValueError("url must be an absolute http:// or https:// URL without spaces or control characters")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("url has an invalid port") from None
        return value

    @field_validator("published_at")
    @classmethod
    def _published(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        parsed = parse_timestamp(value, "published_at")
        tolerance = (info.context or {}).get("future_tolerance_seconds", 86400)
        if parsed > datetime.now(timezone.utc) + timedelta(seconds=tolerance):
            raise ValueError("published_at is in the future; send the time the article was published")
        return value

    @field_validator("id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not CLIENT_ID.fullmatch(value):
            raise ValueError("id must be 1-128 letters, digits or . _ ~ : - starting with a letter or digit")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and not _LANGUAGE.fullmatch(value):
            raise ValueError("language must be a BCP 47 tag such as 'en' or 'pt-BR'")
        return value

    def published_datetime(self) -> datetime | None:
        """None when absent: the article takes the stream's time when decided (storyengine.clock)."""
        return parse_timestamp(self.published_at, "published_at") if self.published_at else None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    # Items are validated one by one, so a bad item fails alone.
    articles: list[Any] = Field(min_length=1, description="The articles, each as POST /v1/articles takes it")


class StoriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sort: Literal["recent", "size"] = Field(default="recent", description="recent: newest first; size: largest "
                                            "first")
    since: str | None = Field(default=None, description="Only stories last updated at or after this ISO 8601 time",
                              json_schema_extra={"format": "date-time"})
    until: str | None = Field(default=None, description="Only stories last updated at or before this ISO 8601 time",
                              json_schema_extra={"format": "date-time"})
    min_sources: int = Field(default=1, ge=1, le=10_000, description="Only stories covered by at least this many "
                             "outlets")
    limit: int | None = Field(default=None, ge=1, description="Stories per page")
    cursor: str | None = Field(default=None, max_length=512, description="The next_cursor of the previous page")

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_timestamp(value, info.field_name)
        return value
