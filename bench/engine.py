"""The engine as the bench runs it in-process (sections 2, 4 and 6).

The one place the bench names the engine's class, so a rename in
storyengine changes one import here."""
from __future__ import annotations

from collections.abc import Callable

from storyengine.decider import Decider
from storyengine.gc_tuning import collect_less
from storyengine.store import RedisStore


def start_engine(store: RedisStore) -> Decider:
    """The engine over ``store``, in a process whose garbage collector runs
    less often, as a worker process's does (workers/tasks.py)."""
    collect_less()
    return Decider(store)


def batch_processor(decider: Decider) -> Callable[[list[str]], list]:
    """``process_many`` where the engine has it (one call per chunk, as a
    worker would), else one ``process`` per article."""
    many = getattr(decider, "process_many", None)
    if many is not None:
        return many
    return lambda ids: [decider.process(article_id) for article_id in ids]


def processing_mode() -> str:
    """How the engine is called, for the figures: ``process_many`` or one ``process`` per article."""
    return "process_many" if getattr(Decider, "process_many", None) else "process (no process_many yet)"
