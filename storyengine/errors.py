"""Exceptions raised by the engine.

    StorywireError
    ├── ConfigError          a setting or environment variable is invalid
    ├── InvalidArticle       an article cannot be processed (permanent: never retried)
    ├── NotFound             an article or story id that the store does not hold
    ├── StoryMoved           a story merged into another one (its new id is .story_id)
    ├── InvalidCursor        a pagination cursor that was not issued by us
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


class NotFound(StorywireError):
    """No article or story with that id."""


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
