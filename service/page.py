"""GET /: the aggregator page, the current stories as HTML.

The page reads what ``GET /v1/stories`` reads, through the same view, so it
takes the same query (sort, since, until, min_sources, limit, cursor), refuses
the same bad values with the same JSON error envelope, and costs the same two
Redis round trips. A story's articles are not read here: opening a story
fetches ``GET /v1/stories/{id}`` (static/page.js), so a page of twenty stories
never costs twenty more reads. Everything is rendered by Jinja with
autoescaping, and the Content-Security-Policy allows only this origin's own
script and style, so article text (titles, outlet names, URLs) stays text.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, render_template, request, url_for

from . import stories
from .openapi import Reply, documented
from .schemas import StoriesQuery

bp = Blueprint("page", __name__)

# Only this origin's files: no inline script or style, no third-party hosts (the page works offline).
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
OUTLETS_SHOWN = 6  # a story with more outlets lists the largest few and says how many more
_UNITS = ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "h"), (60, "min"))


def ago(then: datetime, now: datetime) -> str:
    """A short relative time ("5 min ago", "in 3 h"): stream times may be a little ahead of the clock."""
    seconds = (now - then).total_seconds()
    past = seconds >= 0
    seconds = abs(seconds)
    if seconds < 60:
        return "just now"
    size, unit = next((size, unit) for size, unit in _UNITS if seconds >= size)
    count = int(seconds // size)
    label = unit if unit in ("h", "min") else unit + ("s" if count != 1 else "")
    return f"{count} {label} ago" if past else f"in {count} {label}"


def counts_text(story: dict) -> str:
    """Articles with copies folded: "4 articles, 1 copy" means 5 received, 1 of them a copy of another."""
    originals = story["original_count"]
    copies = story["article_count"] - originals
    text = f"{originals} article{'s' if originals != 1 else ''}"
    if copies > 0:
        text += f", {copies} cop{'ies' if copies != 1 else 'y'}"
    return text


def story_card(story: dict, now: datetime) -> dict:
    updated = datetime.fromisoformat(story["last_updated"])  # the listing's ISO form (service.views), in UTC
    sources = story["sources"]
    return {
        "id": story["id"],
        "headline": story["headline"],
        "counts": counts_text(story),
        "received": story["article_count"],
        "outlet_count": story["source_count"],
        "outlets": sources[:OUTLETS_SHOWN],
        "more_outlets": max(0, len(sources) - OUTLETS_SHOWN),
        "updated_iso": story["last_updated"],
        "updated_text": f"{updated.day} {updated:%b %Y, %H:%M} UTC",
        "updated_ago": ago(updated, now),
        "url": url_for("stories.get_story", story_id=story["id"]),
    }


@documented(summary="The aggregator page: the current stories as HTML", tag="page", query=StoriesQuery,
            description="The same query, order and paging as GET /v1/stories; opening a story loads its "
                        "articles from GET /v1/stories/{id}. Errors are the JSON envelope.",
            replies={200: Reply("The page", media_type="text/html")},
            errors={400: "A bad query parameter or cursor (invalid_query, invalid_cursor)", 503: None})
@bp.get("/")
def index():
    # The API's own list view: its validation, its errors, its store read. It
    # raises ApiError (400, the JSON envelope) for a bad query, as the API does.
    listing = stories.list_stories()
    now = datetime.now(timezone.utc)
    args = request.args.to_dict(flat=True)
    next_url = None
    if listing["next_cursor"]:
        next_url = url_for("page.index", **{**args, "cursor": listing["next_cursor"]})
    first_url = url_for("page.index", **{k: v for k, v in args.items() if k != "cursor"}) if "cursor" in args else None
    sort = args.get("sort", "recent")
    orders = [{"label": label, "current": sort == value,
               "url": url_for("page.index", **{**{k: v for k, v in args.items() if k != "cursor"}, "sort": value})}
              for value, label in (("recent", "Newest"), ("size", "Largest"))]
    html = render_template("page.html", stories=[story_card(s, now) for s in listing["stories"]],
                           next_url=next_url, first_url=first_url, orders=orders)
    return html, 200, {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                       "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
