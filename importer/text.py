"""Text from feeds, the API and the command line, made safe to post, store and print."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Nothing a URL or an API key may hold.
SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def clean(value: object, limit: int | None = None) -> str:
    """A string with its control characters blanked and its ends stripped, cut to ``limit``; "" for a non-string."""
    text = _CONTROL.sub(" ", value).strip() if isinstance(value, str) else ""
    return text[:limit] if limit else text


def shorten(location: str) -> str:
    """A feed's or a URL's location as a message shows it: at most 100 characters."""
    return location if len(location) <= 100 else location[:97] + "..."
