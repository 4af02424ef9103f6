"""The importer's exceptions: each says what failed and what to do, and decides what the run does next."""


class FeedError(Exception):
    """A feed could not be read; the message says why and what to do."""


class StateError(Exception):
    """The state file cannot be used; nothing is fetched or sent."""


class ApiStop(Exception):
    """The API cannot take items now (down, wrong key, wrong URL): the rest wait for the next run."""
