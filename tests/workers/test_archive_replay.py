"""An archive replayed over HTTP to a real worker loses nothing it accepted.

Six outlets' items of one day in 2021, posted in batches as `make feeds`
posts them: a few items undated, one dated today (a CMS with a broken clock),
and, later, an item of the same day from an outlet that was slow to publish.
Everything answered 202 is decided and readable afterwards, the undated items
carry the archive's day, and the story list still holds the archive.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.workers.posts_and_waits import wait_processed

pytestmark = pytest.mark.e2e

DAY = datetime(2021, 6, 17, 6, 0, tzinfo=timezone.utc)
OUTLETS = ["bbc.co.uk", "cnn.com", "dailymail.co.uk", "aljazeera.com", "wsj.com", "latimes.com"]
EVENTS = [
    ("MP stabbed at constituency surgery in Essex", "A member of parliament was stabbed several times at a "
     "constituency surgery in Leigh-on-Sea on Friday; a man was arrested at the scene, police said."),
    ("Spacecraft lifts off on a mission to the asteroid belt", "The probe lifted off from Cape Canaveral before "
     "dawn and will spend six years reaching the asteroid belt, the space agency said."),
    ("Hunger spreads in Tigray as aid convoys are blocked", "Aid agencies said convoys carrying food had been "
     "blocked for weeks and that hunger was spreading across the region."),
    ("Floods cut roads across the northern valleys", "Heavy rain cut roads and bridges across the northern "
     "valleys overnight and hundreds of people were moved to shelters."),
]


def item(event: int, outlet: int, when: datetime | None, n: int) -> dict:
    title, body = EVENTS[event]
    row = {"source": OUTLETS[outlet], "url": f"https://{OUTLETS[outlet]}/archive/{n}",
           "title": f"{title}", "body": f"{body} ({OUTLETS[outlet]} report {n})"}
    if when is not None:
        row["published_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return row


def test_an_archive_replay_with_undated_and_far_ahead_items_loses_nothing(e2e_app):
    client = e2e_app.test_client()
    rows, n = [], 0
    for event in range(len(EVENTS)):
        for outlet in range(len(OUTLETS)):
            rows.append(item(event, outlet, DAY + timedelta(hours=3 * event, minutes=7 * outlet), n))
            n += 1
    undated = [item(0, 1, None, 900), item(2, 3, None, 901), item(3, 5, None, 902)]
    ahead = item(1, 2, datetime.now(timezone.utc) - timedelta(minutes=5), 903)
    posts = [rows[:12] + undated[:1], rows[12:] + undated[1:] + [ahead]]
    accepted = []
    for batch in posts:
        answer = client.post("/v1/articles/batch", json={"articles": batch})
        assert answer.status_code == 202, answer.get_json()
        body = answer.get_json()
        assert body["rejected"] == 0
        accepted += [r["id"] for r in body["results"]]
    seen = wait_processed(client, accepted)
    # A late item of the same day, after the far-ahead one: still inside the window, so taken.
    late = client.post("/v1/articles", json=item(0, 4, DAY + timedelta(minutes=1), 904))
    assert late.status_code == 202
    seen.update(wait_processed(client, [late.get_json()["id"]]))

    assert len(seen) == len(rows) + len(undated) + 2
    assert {a["status"] for a in seen.values()} == {"processed"}
    for article_id, article in seen.items():
        again = client.get(f"/v1/articles/{article_id}")
        assert again.status_code == 200, (article_id, again.get_json())
    assigned = [a for a in seen.values() if a["published_assigned"]]
    assert len(assigned) == 3 and all(a["published_at"].startswith("2021-06-17") for a in assigned)
    # Every story of the archive is still listed, with every article in one of them.
    stories = client.get("/v1/stories?limit=100").get_json()["stories"]
    listed = sum(s["article_count"] for s in stories)
    assert listed == len(seen)
    assert sum(1 for s in stories if s["last_updated"].startswith("2021-06-17")) >= len(EVENTS)
