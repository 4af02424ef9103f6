"""Reading request bodies: JSON only, with errors that say what to send."""
from __future__ import annotations

import json

from flask import request

from .errors import ApiError


def json_body():
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as JSON with Content-Type: application/json.")
    raw = request.get_data(cache=False)
    if not raw:
        raise ApiError(400, "empty_body", "The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The body is not valid UTF-8; encode the JSON as UTF-8.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "too_deeply_nested", "The JSON nests too deeply; send a flat article object.") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON ({exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}); fix it and send again.") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise ApiError(400, "malformed_json", f"The body is not acceptable JSON ({exc}); fix it and send again.") from None
