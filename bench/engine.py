"""The engine as the bench runs it in-process (sections 2, 4 and 6).

The one place the bench names the engine's class, so a rename in
storyengine changes one import here."""
from __future__ import annotations

from storyengine.decider import Decider
from storyengine.gc_tuning import collect_less
from storyengine.store import RedisStore


def start_engine(store: RedisStore) -> Decider:
    """The engine over ``store``, in a process whose garbage collector runs
    less often, as a worker process's does (workers/tasks.py)."""
    collect_less()
    return Decider(store)
