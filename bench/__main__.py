"""``python -m bench``: what ``make bench`` runs."""
from bench.cli import main

try:
    raise SystemExit(main())
except RuntimeError as exc:   # a stage that could not run (a role that did not start, a stuck worker)
    raise SystemExit(f"bench stopped: {exc}") from None
