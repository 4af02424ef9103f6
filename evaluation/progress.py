"""A replay's progress on stderr, at most once a second."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.start, self.last = total, label, time.monotonic(), 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done == self.total or now - self.last >= 1.0:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            print(f"\r{self.label}: {done}/{self.total} ({rate:.0f}/s)", end="" if done < self.total else "\n",
                  file=sys.stderr, flush=True)
