"""Exceptions raised by the engine.

    StorywireError
    ├── ConfigError          a setting or environment variable is invalid
    ├── InvalidArticle       an article cannot be processed (permanent: never retried)
    ├── DecisionFailed       deciding one article raised an error of ours (tried again a few times)
    ├── NotFound             an article or story id that the store does not hold
    │   └── Gone             ... because retention removed it (when and why are attached)
    ├── StoryMoved           a story merged into another one (its new id is .story_id)
    ├── InvalidCursor        a pagination cursor that was not issued by us
    ├── QueueFull            too many articles wait to be decided: refuse new ones for now
    └── StoreUnavailable     Redis could not be reached (transient: retry later)

The service maps these to HTTP answers; the workers retry only
``StoreUnavailable`` and mark an article failed on ``InvalidArticle``.
"""


class StorywireError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(StorywireError):
    """A setting or environment variable has a value we cannot use."""


class InvalidArticle(StorywireError):
    """The article cannot be processed, whatever we retry."""


class DecisionFailed(StorywireError):
    """Deciding this article raised an error of ours (a bug, a script error):
    the others of its batch were decided; it is tried again a bounded number
    of times (Settings.max_attempts), then marked failed with this reason."""

    @classmethod
    def of(cls, exc: BaseException) -> "DecisionFailed":
        return cls(f"internal error while deciding: {type(exc).__name__}: {exc}"[:300])


class NotFound(StorywireError):
    """No article or story with that id."""


class Gone(NotFound):
    """The id was removed by the retention policy (``tombstone`` says when and why)."""

    def __init__(self, message: str, tombstone) -> None:
        super().__init__(message)
        self.tombstone = tombstone


class QueueFull(StorywireError):
    """More articles wait to be decided than the deployment admits (``max_waiting``)."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"{waiting} articles are waiting to be decided (the limit is {limit})")
        self.waiting = waiting
        self.limit = limit


class StoryMoved(StorywireError):
    """The story was merged into another one by the repair pass."""

    def __init__(self, old_id: str, story_id: str) -> None:
        super().__init__(f"story {old_id!r} was merged into {story_id!r}")
        self.old_id = old_id
        self.story_id = story_id


class InvalidCursor(StorywireError):
    """A pagination cursor that was tampered with or belongs to another listing."""


class StoreUnavailable(StorywireError):
    """Redis is unreachable or timed out; the operation may succeed later."""
