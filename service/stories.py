"""GET /v1/stories and GET /v1/stories/{id}."""
from __future__ import annotations

import base64
import binascii
import json
import re

from flask import Blueprint, current_app, request, url_for
from pydantic import ValidationError

from storyengine.errors import InvalidCursor, NotFound, StoryMoved
from storyengine.story_reads import LIST_SCAN_ROWS

from . import response_schemas as answers
from .errors import ApiError, validation_details
from .openapi import PathParam, Reply, documented
from .runtime import runtime
from .schemas import StoriesQuery, parse_timestamp
from .views import story_detail_view, story_view

bp = Blueprint("stories", __name__, url_prefix="/v1/stories")
_STORY_ID = re.compile(answers.STORY_ID_PATTERN)


def encode_cursor(sort: str, after: tuple[float, str]) -> str:
    raw = json.dumps({"o": sort, "s": after[0], "i": after[1]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[float, str]:
    """A cursor is base64url JSON {o: sort, s: score, i: story id}. Anything else,
    or a cursor from the other ordering, is refused."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        score, story_id = float(data["s"]), data["i"]
        if data["o"] != sort:
            raise InvalidCursor(f"this cursor pages sort={data['o']}, not sort={sort}")
        if not isinstance(story_id, str) or not _STORY_ID.fullmatch(story_id) or score != score:
            raise ValueError
    except InvalidCursor:
        raise
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API issued") from None
    return score, story_id


@documented(summary="Stories, newest or largest first", tag="stories", query=StoriesQuery,
            description="Paginated: pass next_cursor as cursor for the next page, until it is null. A filter "
                        "the index cannot answer (min_sources above 1, or since/until with sort=size) reads at "
                        f"most {LIST_SCAN_ROWS} stories per request, so a page may hold fewer than limit stories, "
                        "even none, and still carry a next_cursor: follow it to go on (only a null next_cursor "
                        "means there are no more). Unknown or repeated query parameters are refused.",
            replies={200: Reply("A page of stories", answers.StoryPage)},
            errors={400: "A bad query parameter or cursor (invalid_query, invalid_cursor)", 503: None})
@bp.get("")
def list_stories():
    try:
        query = StoriesQuery.model_validate(request.args.to_dict(flat=True))
    except ValidationError as exc:
        details = validation_details(exc)
        raise ApiError(400, "invalid_query", "Invalid query parameters (" + ", ".join(d["field"] for d in details)
                       + "). Allowed: sort=recent|size, since, until (ISO 8601), min_sources>=1, "
                       f"limit=1..{current_app.config['MAX_PAGE_SIZE']}, cursor.", details) from None
    if any(len(values) > 1 for values in request.args.listvalues()):
        raise ApiError(400, "invalid_query", "Give each query parameter at most once.")
    limit = query.limit or current_app.config["DEFAULT_PAGE_SIZE"]
    if limit > current_app.config["MAX_PAGE_SIZE"]:
        raise ApiError(400, "invalid_query", f"limit must be between 1 and {current_app.config['MAX_PAGE_SIZE']}.",
                       [{"field": "limit", "problem": "too large"}])
    since = parse_timestamp(query.since, "since").timestamp() if query.since else None
    until = parse_timestamp(query.until, "until").timestamp() if query.until else None
    if since is not None and until is not None and since > until:
        raise ApiError(400, "invalid_query", "since must not be later than until.")
    after = decode_cursor(query.cursor, query.sort) if query.cursor else None
    page = runtime().store.list_stories(query.sort, limit, since=since, until=until,
                                        min_sources=query.min_sources, after=after)
    return {"stories": [story_view(story) for story in page.items],
            "next_cursor": encode_cursor(query.sort, page.next_after) if page.next_after else None}


@documented(summary="A story with its articles", tag="stories",
            description="Originals in published order, each copy folded under its canonical article. A story "
                        "the repair pass merged into another answers 301 with the new Location.",
            path_params={"story_id": PathParam("A story id, st_ and 16 hex digits", _STORY_ID.pattern)},
            replies={200: Reply("The story", answers.StoryDetail),
                     301: Reply("Merged into another story: follow Location", answers.StoryMovedBody,
                                ("Location",))},
            errors={404: "No story with this id (not_found)",
                    410: "Removed by the retention policy; the message says when and why (gone)", 503: None})
@bp.get("/<story_id>")
def get_story(story_id: str):
    if not _STORY_ID.fullmatch(story_id):
        raise NotFound(f"no story with id {story_id!r}")
    try:
        return story_detail_view(runtime().store.get_story(story_id, current_app.config["MAX_STORY_ARTICLES"]))
    except StoryMoved as moved:
        # The repair pass merged this story into another: the old id keeps
        # working for anyone who stored it, as a permanent redirect.
        location = url_for("stories.get_story", story_id=moved.story_id)
        body = {"story": moved.old_id, "merged_into": moved.story_id, "location": location,
                "message": f"This story was merged into {moved.story_id}; follow the Location header."}
        return body, 301, {"Location": location}
