"""The API client: items posted through ``POST /v1/articles/batch``, one outcome per item.

Each item is sent, and then either new (stored now) or already known (posted before, nothing stored again);
refused (invalid, too large, too_old, id_conflict): remembered with the reason and never sent again; or not taken
now (queue_full, the queue or store unavailable), which like a 503 for the whole request stops the posting. A
batch the API finds too large is halved until it fits. The API's redirects are never followed.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

from . import USER_AGENT
from .errors import ApiStop
from .read import Item
from .text import clean, shorten

MAX_API_ANSWER_BYTES = 16 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024   # half the API's default MAX_CONTENT_LENGTH; a 413 halves a batch further

# The API's refusals of an item that sending it again cannot change, named in the summary with their reason.
# Any other refusal (invalid_article, body_too_large) is recorded and not retried too.
REFUSAL_REASONS = {
    "too_old": "older than the service's retention window on its stream's clock",
    "id_conflict": "its id belongs to another article",
}
# The API could not take an item now (backpressure, its store or queue down): left unsent, posted next run.
BUSY_CODES = frozenset({"queue_full", "queue_unavailable", "unavailable"})


@dataclass
class PostOutcome:
    status: Literal["sent", "rejected", "unsent"]   # unsent: not recorded, posted again next run
    article: str | None = None
    problem: str | None = None
    code: str | None = None           # the API's error code, for a rejected or unsent item
    reason: str | None = None         # what the summary says about the code, when more than the code is known
    created: bool | None = None       # for a sent item: stored by this request (new) or already known; None: not said

    @property
    def label(self) -> str:
        """How the summary counts a rejection: the code, and the reason when there is one."""
        code = self.code or "rejected"
        return f"{code} ({self.reason})" if self.reason else code


def _busy(status: int, code: str) -> bool:
    return code in BUSY_CODES or status == 429 or status >= 500


def _refusal(code: str, text: str) -> str:
    reason = REFUSAL_REASONS.get(code)
    head = f"{code} ({reason})" if reason else code
    return clean(f"{head}: {text}" if head and text else head or text or "rejected", 2000)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API's redirects are never followed: urllib would send the key along to wherever it points (another
    host), and a 301-303 turns the POST into a GET that posts nothing. The 3xx is answered as an error."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_API_OPENER = urllib.request.build_opener(_NoRedirects)


class Api:
    """Storywire's batch endpoint under ``base``, posted to with ``key`` (when one is given), each request
    bounded by ``timeout`` seconds."""

    def __init__(self, base: str, key: str | None, timeout: float) -> None:
        self.base, self.key, self.timeout = base.rstrip("/"), key, timeout
        self.batch_url = f"{self.base}/v1/articles/batch"

    def _post(self, articles: list[dict]) -> tuple[int, object, str]:
        """The status, the JSON answer (None if not JSON) and the Retry-After header ("" if none)."""
        data = json.dumps({"articles": articles}).encode("utf-8")
        request = urllib.request.Request(self.batch_url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        unsent = "the items stay unsent and are posted next run"
        try:
            with _API_OPENER.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read(MAX_API_ANSWER_BYTES)
                retry_after = response.headers.get("Retry-After") or ""
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = (exc.headers.get("Retry-After") if exc.headers is not None else None) or ""
            location = (exc.headers.get("Location") if exc.headers is not None else None) or ""
            try:
                raw = exc.read(MAX_API_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            if 300 <= status < 400:
                target = urlsplit(urljoin(self.batch_url, clean(location)))
                shown = urlunsplit(target._replace(netloc=target.netloc.rpartition("@")[2]))  # no credentials
                raise ApiStop(f"the API at {self.base} answered HTTP {status}, a redirect to {shorten(shown)}; it is "
                              "not followed, so the key is sent only to --api: if the service has moved there, "
                              f"pass that address as --api; {unsent}")
        except (TimeoutError, socket.timeout):
            raise ApiStop(f"the API at {self.base} did not answer within {self.timeout:g} s; {unsent}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise ApiStop(f"cannot reach the API at {self.base} ({reason}); start it or check --api; "
                          f"{unsent}") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise ApiStop(f"the API at {self.base} broke off the connection ({type(exc).__name__}); "
                          f"{unsent}") from None
        retry_after = clean(retry_after, 64)
        try:
            return status, json.loads(raw), retry_after
        except ValueError:
            return status, None, retry_after

    def post(self, articles: list[dict]) -> list[PostOutcome]:
        """One outcome per article, in order. A batch the API finds too large is halved until it fits, and so
        is one it refuses whole for a reason that belongs to one item (too_old, id_conflict)."""
        status, answer, retry_after = self._post(articles)
        error = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), dict) else {}
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        code = error.get("code") if isinstance(error.get("code"), str) else ""
        details = error.get("details") if isinstance(error.get("details"), list) else []
        wait = f" (Retry-After: {retry_after})" if retry_after else ""
        unsent = "the items stay unsent and are posted next run"
        if status in (200, 202):
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(articles):
                raise ApiStop(f"the API at {self.base} answered with something that is not Storywire's batch "
                              f"answer; check --api; {unsent}")
            outcomes = [self._outcome(result) for result in results]
            for outcome in outcomes:
                if outcome.status == "unsent" and wait:
                    outcome.problem = f"{outcome.problem}{wait}"
            return outcomes
        if status == 413 or (status in (409, 422) and code in REFUSAL_REASONS and not details):
            if len(articles) == 1:
                if status == 413:
                    code, message = code or "body_too_large", message or "the API finds this article too large"
                return [PostOutcome("rejected", problem=_refusal(code, message), code=code,
                                reason=REFUSAL_REASONS.get(code))]
            middle = len(articles) // 2
            return self.post(articles[:middle]) + self.post(articles[middle:])
        if status == 422 and details:
            # No item in the batch was taken (invalid, or each refused: too old, an id conflict): each is
            # rejected with the problems listed for it. This answer has no code per item, so the summary
            # counts them under the batch's code with their problems.
            outcomes = []
            for index in range(len(articles)):
                problems = self._problems(details, index, relative=True)
                outcomes.append(PostOutcome("rejected", problem=_refusal(code, problems or message), code=code or None,
                                        reason=REFUSAL_REASONS.get(code) or clean(problems, 200) or None))
            return outcomes
        if status in (401, 403):
            raise ApiStop(f"the API refused the key (HTTP {status}: {message or 'unauthorized'}); set "
                          f"STORYWIRE_API_KEY or pass --api-key with a key the service accepts; {unsent}")
        if status in (404, 405):
            raise ApiStop(f"there is no Storywire batch endpoint at {self.batch_url} (HTTP {status}); check "
                          f"--api; {unsent}")
        if code == "queue_full":
            raise ApiStop(f"the API's queue is full (HTTP {status} queue_full{': ' + message if message else ''})"
                          f"{wait}; it is shedding load: {unsent}")
        raise ApiStop(f"the API answered HTTP {status}{': ' + message if message else ''}{wait}; {unsent}")

    @staticmethod
    def _outcome(result: object) -> PostOutcome:
        # The error first: a refusal may name the id it concerns (too_old, id_conflict) and is still no success.
        error = result.get("error") if isinstance(result, dict) else None
        if not isinstance(error, dict) and isinstance(result, dict) and isinstance(result.get("id"), str):
            created = result.get("created")
            if not isinstance(created, bool):  # created is the API's word; its status says the same
                created = {"queued": True, "known": False}.get(result.get("status"))  # type: ignore[arg-type]
            return PostOutcome("sent", article=result["id"], created=created)
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else ""
            status = error.get("status") if isinstance(error.get("status"), int) else 0
            message = str(error.get("message") or "")
            details = error.get("details") if isinstance(error.get("details"), list) else []
            problems = "; ".join(f"{d.get('field')}: {d.get('problem')}" for d in details if isinstance(d, dict))
            if _busy(status, code):  # the API could not take it now (queue_full): not recorded, sent next run
                return PostOutcome("unsent", problem=_refusal(code, message or f"HTTP {status}"), code=code or None)
            if code in REFUSAL_REASONS:  # the message says why with the dates or ids concerned
                return PostOutcome("rejected", problem=_refusal(code, message or problems), code=code,
                               reason=REFUSAL_REASONS[code])
            return PostOutcome("rejected", problem=_refusal(code, problems or message), code=code or None)
        raise ApiStop("the API answered an item with neither an id nor an error; check --api")

    @staticmethod
    def _problems(details: list, index: int, relative: bool = False) -> str:
        """The problems the API listed for item ``index``; ``relative``: fields named within the item
        (``published_at``, not ``articles.3.published_at``)."""
        prefix = f"articles.{index}"
        found = []
        for d in details:
            name = str(d.get("field", "")) if isinstance(d, dict) else ""
            if name == prefix or name.startswith(prefix + "."):
                found.append(f"{name[len(prefix) + 1:] or 'article' if relative else name}: {d.get('problem')}")
        return "; ".join(found)


def batches(items: list[Item], size: int, max_bytes: int) -> Iterator[list[Item]]:
    """Up to ``size`` items a request, and (unless one item alone is bigger) at most ``max_bytes`` of JSON:
    a server that refuses a large body may close the connection before the client has sent it all."""
    batch: list[Item] = []
    batch_bytes = 0
    for item in items:
        item_bytes = len(json.dumps(item.article).encode("utf-8")) + 2
        if batch and (len(batch) == size or batch_bytes + item_bytes > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(item)
        batch_bytes += item_bytes
    if batch:
        yield batch
