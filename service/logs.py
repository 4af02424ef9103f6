"""The API's logs under gunicorn: its access and error lines and the app's own, in one format.

``scripts/run.py`` starts gunicorn with ``--logger-class service.logs.GunicornLogger``.
With ``LOG_FORMAT=json`` (storyengine.logs) every line is one JSON object:
an access line carries ``method``, ``path``, ``query``, ``status``,
``duration_ms``, ``bytes``, ``remote_addr``, ``user_agent`` and, when a proxy
sent a well-formed ``X-Request-ID``, ``request_id``; a line the app logs while
handling a request carries that request's ``method``, ``path`` and
``request_id``. No header other than those is logged (an API key never is),
and each value is cut to a bounded length. With ``LOG_FORMAT=text``
gunicorn's own lines stay as they are and the app's lines get gunicorn's
error-line format (before, only its warnings reached the terminal, bare).
"""
from __future__ import annotations

import logging
import re
import sys

from flask import has_request_context, request
from gunicorn import glogging

from storyengine.logs import JsonLineFormatter, log_format

# A request id as proxies make them (UUIDs, hex, base64, dotted or dashed
# tokens); anything else is left out rather than written into the log.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_MAX_VALUE_CHARS = 1000


def request_id(value: str | None) -> str | None:
    """A client's or proxy's X-Request-ID, if it is a well-formed id."""
    return value if value and _REQUEST_ID.fullmatch(value) else None


def _bounded(value: str | None) -> str | None:
    return value[:_MAX_VALUE_CHARS] if value else value


class RequestContext(logging.Filter):
    """Names the request a line was logged during (method, path, request id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.method = request.method
            record.path = _bounded(request.path)
            rid = request_id(request.headers.get("X-Request-ID"))
            if rid:
                record.request_id = rid
        return True


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, with JSON lines on demand and the app's loggers on the same stream."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self.json = log_format() == "json"  # a bad LOG_FORMAT stops gunicorn before it serves anything
        if self.json:
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(JsonLineFormatter())
        # The app's loggers (storywire.*) and every library's warnings go where
        # gunicorn's error log goes, in the same format; set up again on a reload.
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_storywire", False)]:
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLineFormatter() if self.json else logging.Formatter(
            r"%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s", self.datefmt))
        handler.addFilter(RequestContext())
        handler._storywire = True
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        logging.getLogger("storywire").setLevel(self.loglevel)

    def access(self, resp, req, environ, request_time) -> None:
        if not self.json:
            return super().access(resp, req, environ, request_time)
        if not self.access_log_enabled:
            return None
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "path": _bounded(environ.get("PATH_INFO")),
            "query": _bounded(environ.get("QUERY_STRING")) or None,
            "status": int(status) if str(status).isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000.0, 3),
            "bytes": getattr(resp, "sent", None),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": _bounded(environ.get("HTTP_USER_AGENT")),
        }
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        if rid:
            fields["request_id"] = rid
        try:
            self.access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)
        except Exception:  # noqa: BLE001 - as gunicorn does: a broken access line never breaks the response
            self.exception("could not write the access log line")
        return None
