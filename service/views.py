"""The API's answers made of the store's records: times in ISO 8601, the public
field names and order, copies folded under their canonical article, and the
duplicate rule (storyengine.duplicates says it) and the story method in English,
from the settings (the same for every article, so not stored with each)."""
from __future__ import annotations

from storyengine.duplicates import duplicate_rule
from storyengine.settings import Settings
from storyengine.timestamps import iso

ARTICLE_VIEW_ORDER = ("id", "client_id", "source", "url", "title", "title_derived", "language", "published_at",
                      "published_assigned", "received_at", "status", "story", "duplicate_of", "similarity",
                      "decision", "error", "processed_at")


def story_method(s: Settings) -> str:
    """How an article's story is chosen, as the settings decide it."""
    kernel = f"Gaussian time kernel (sigma {s.time_sigma_hours:g} h, window {s.story_window_hours:g} h)"
    if s.story_score != "by_length":
        return f"mean cosine to the story's members, each weighed by a {kernel}"
    return (f"for a full text ({s.full_text_words} words or more) the mean cosine to the story's "
            f"members, each weighed by a {kernel}; for a short one ({s.short_text_words} or fewer) "
            f"the cosine to the centroid of each {s.bucket_hours:g}-hour bucket of them, averaged over "
            f"the members weighed by that kernel, times the kernel of the nearest bucket (a blend "
            f"between); joins the best story that reaches its threshold "
            f"({s.story_threshold:g} for a full text, {s.short_text_threshold:g} for a short one; up to "
            f"{s.single_member_threshold:g} against a single short member, less as the story grows) "
            f"and shares at least {s.min_shared_words} words with it")


def _with_iso_times(record: dict, names: tuple[str, ...]) -> dict:
    """The record with each ``<name>_ts`` replaced by ``<name>_at`` in ISO 8601 (null when unknown)."""
    view = dict(record)
    for name in names:
        ts = view.pop(f"{name}_ts")
        view[f"{name}_at"] = iso(ts) if ts is not None else None
    return view


def article_view(record: dict, settings: Settings) -> dict:
    """GET /v1/articles/{id}: every field present, empty or missing ones null."""
    view = _with_iso_times(record, ("published", "received", "processed"))
    view = {name: view[name] for name in ARTICLE_VIEW_ORDER}
    decision = view.get("decision")
    if decision:
        if "duplicate" in decision:
            decision["duplicate"]["rule"] = duplicate_rule(settings)
        story = decision.get("story", {})
        if story.get("action") in ("opened", "joined"):
            # Older records kept no threshold of their own: the setting's.
            story.setdefault("threshold", settings.story_threshold)
            story["method"] = story_method(settings)
    return view


def story_view(record: dict) -> dict:
    """A story as GET /v1/stories lists it: its outlets by article count."""
    counts = record["sources"]
    # Most articles first, ties by name: by name, then (stably) by count; both keys run in C.
    names = sorted(sorted(counts), key=counts.__getitem__, reverse=True)
    return {
        "id": record["id"],
        "headline": record["headline"],
        "representative_article": record["representative"],
        "article_count": record["article_count"],
        "original_count": record["originals"],
        "source_count": len(names),
        "sources": names,
        "first_seen": iso(record["first_seen"]),
        "last_updated": iso(record["last_updated"]),
        "top_terms": record["top_terms"],
        "merged_from": record["merged_from"],
    }


def story_detail_view(record: dict) -> dict:
    """GET /v1/stories/{id}: the story with its articles, copies folded."""
    view = story_view(record)
    view["articles"] = fold_duplicates([_with_iso_times(member, ("published",)) for member in record["articles"]])
    return view


def fold_duplicates(rows: list[dict]) -> list[dict]:
    """Originals in published order, each with its copies under ``duplicates``."""
    originals = [dict(r, duplicates=[]) for r in rows if not r.get("duplicate_of")]
    by_id = {r["id"]: r for r in originals}
    for row in rows:
        parent = by_id.get(row.get("duplicate_of") or "")
        if parent is not None:
            parent["duplicates"].append(row)
        elif row.get("duplicate_of"):
            originals.append(dict(row, duplicates=[]))  # canonical outside this page
    originals.sort(key=lambda r: (r.get("published_at") or "", r["id"]))
    return originals
