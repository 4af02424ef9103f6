"""The bench's HTTP client of the API: plain http.client, so its own cost stays small and known."""
from __future__ import annotations

import http.client
import json


class Http:
    """One connection per client thread, kept alive where the server allows
    (gunicorn's sync workers close it after each answer; http.client reopens)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.headers, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a kept-alive connection between requests:
                # once more on a new one (posting is idempotent by id).
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, path: str) -> dict:
        status, _, payload = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {payload[:300]!r}")
        return json.loads(payload)
