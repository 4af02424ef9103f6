"""The command line: ``python scripts/import_feeds.py [--api URL] [--api-key KEY] [--state PATH]
[--allow-private-addresses] FEED [FEED ...]`` (``make feeds``). Every flag, and the exit status, in
docs/importer.md."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlsplit

from .checked_http import ALLOW_PRIVATE_FLAG
from .errors import StateError
from .fetch import check_feed_location
from .run import EXIT_USAGE, run, say
from .state import StateFile, api_address, default_state_path
from .text import SPACE_OR_CONTROL

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_FEED_BYTES = 10 * 1024 * 1024
DEFAULT_BATCH = 100
MAX_BATCH = 500                       # the API's default MAX_BATCH_ARTICLES


def _positive(kind: type, name: str, ceiling: float | None = None):
    def convert(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {raw!r}") from None
        if not value > 0 or value != value or (ceiling is not None and value > ceiling):
            limit = f" and at most {ceiling:g}" if ceiling is not None else ""
            raise argparse.ArgumentTypeError(f"{name} must be more than 0{limit}, got {raw!r}")
        return value
    return convert


def _api_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = urlsplit("")
    if "@" in parts.netloc:
        raise argparse.ArgumentTypeError("--api must not carry a user name or password; the API key goes in "
                                         "STORYWIRE_API_KEY or --api-key")
    if parts.scheme not in ("http", "https") or not parts.hostname or SPACE_OR_CONTROL.search(raw) \
            or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"--api must be the service's http(s) base URL, such as {DEFAULT_API}; "
                                         f"got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"--api has an invalid port: {raw!r}") from None
    return raw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post the items of RSS and Atom feeds to Storywire; items already sent are not sent again.",
        epilog="Exit status: 0 all read and sent; 1 a feed could not be read or items were rejected or left "
               "for the next run; 2 a bad command line or state file.")
    parser.add_argument("feeds", nargs="+", metavar="FEED", help="an http(s) feed URL or a local feed file")
    parser.add_argument("--api", type=_api_url, default=DEFAULT_API, help=f"the service (default {DEFAULT_API})")
    parser.add_argument("--api-key", default=None,
                        help="the API key (default: STORYWIRE_API_KEY; prefer the variable, a command line is "
                             "visible to other users)")
    parser.add_argument("--state", type=Path, default=None,
                        help="where to remember what was sent, to each API apart (default: var/feeds-state.json, under "
                             "STORYWIRE_DATA_DIR when set)")
    parser.add_argument("--batch-size", type=_positive(int, "--batch-size", MAX_BATCH), default=DEFAULT_BATCH,
                        help=f"articles per request (default {DEFAULT_BATCH}, at most {MAX_BATCH})")
    parser.add_argument("--timeout", type=_positive(float, "--timeout", 3600), default=DEFAULT_TIMEOUT,
                        help="seconds for the whole of one feed's download (name lookup, connection, headers and "
                             f"body) or for one API request (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--max-feed-bytes", type=_positive(int, "--max-feed-bytes"), default=DEFAULT_MAX_FEED_BYTES,
                        help=f"refuse a feed larger than this (default {DEFAULT_MAX_FEED_BYTES})")
    parser.add_argument("--lenient", action="store_true",
                        help="import what a forgiving parser recovers even from a feed that ends before its root "
                             "element closes (a feed that is complete but not well-formed is imported anyway, "
                             "with a warning)")
    parser.add_argument(ALLOW_PRIVATE_FLAG, action="store_true",
                        help="read feed URLs (and follow redirects) that lead to this machine or a private network "
                             "(loopback, private, link-local and other non-public addresses), refused by default "
                             "so that a feed cannot make the importer reach services there; --api is never "
                             "restricted")
    args = parser.parse_args(argv)
    try:
        args.feeds = [check_feed_location(location) for location in args.feeds]
    except ValueError as exc:
        parser.error(str(exc))
    if args.api_key is None:
        args.api_key = os.environ.get("STORYWIRE_API_KEY", "").strip() or None
    elif not args.api_key.strip():
        parser.error("--api-key is empty; give the key, or leave the option out when the API needs none")
    if args.api_key is not None and (SPACE_OR_CONTROL.search(args.api_key) or not args.api_key.isascii()):
        # The key itself is never echoed: it may be a real one with a typo.
        parser.error("the API key holds spaces, control or non-ASCII characters; an API key is one printable "
                     "ASCII word")
    args.state = args.state or default_state_path()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with StateFile(args.state, api_address(args.api)) as state_file:
            return run(args, state_file)
    except StateError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted; what was sent before is recorded in the state file")
        return 130

