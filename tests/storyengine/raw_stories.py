"""Stories written into Redis by the engine's own story writer
(storyengine.records), without articles, one at a time or thousands in one
round trip, for the tests that list stories; and the most round trips a
capped listing takes."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from storyengine import records
from storyengine.story_writer import StoryUpdate, StoryWriter
from storyengine.store import RedisStore

WHEN = datetime(2024, 3, 5, 8, 30, tzinfo=timezone.utc)
T0 = WHEN.timestamp()
# A listing reads at most LIST_SCAN_ROWS index rows in chunks doubling from twice the page (six):
MOST_TRIPS_OF_A_CAPPED_LISTING = 12  # six chunks, a round trip for the index rows and one for their stories


def put_story(store: RedisStore, story_id: str, last_updated: float, article_count: int = 1,
              sources: dict[str, int] | None = None, client=None) -> None:
    """A story as the pipeline writes it (see keys.py for the layout); ``client``:
    a pipeline to write it with (many stories in one round trip), else the store's."""
    client = client if client is not None else store.redis
    sources = sources or {"outlet-a": article_count}
    fields = records.encode_story_fields(
        id=story_id, headline=f"Headline of {story_id}", representative=f"{story_id}-rep",
        first_seen=last_updated - 3600, last_updated=last_updated, article_count=article_count,
        originals=article_count, top_terms=["term"])
    writer = StoryWriter(store.redis, store.keys)
    writer.write(client, [StoryUpdate(story_id, fields, last_updated, article_count, indexed=[])])
    writer.add_members(client, story_id, {}, sources)


def put_many_stories(store: RedisStore, count: int, two_outlets: Iterable[int] = (), same_time: bool = False,
                     story_id: Callable[[int], str] = "st_{:05d}".format) -> list[str]:
    """``count`` one-outlet stories, story i updated i seconds before T0 (all at T0
    with ``same_time``), those numbered in ``two_outlets`` with a second outlet;
    written in one round trip. Their ids, newest (and, at one time, highest id) first."""
    two_outlets = set(two_outlets)
    ids = [story_id(i) for i in range(count)]
    with store.redis.pipeline(transaction=False) as pipe:
        for i, sid in enumerate(ids):
            put_story(store, sid, T0 if same_time else T0 - i, sources={"a": 1, "b": 1} if i in two_outlets else None,
                      client=pipe)
        pipe.execute()
    return sorted(ids, reverse=True) if same_time else ids
