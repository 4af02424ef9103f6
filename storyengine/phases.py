"""Where a deciding process's time goes: the phases that
``storyengine.decider.Decider.phase_seconds`` splits it into, in the order
a batch goes through them, and that worker processes add up in the metrics
(``engine_seconds:<phase>``, see :mod:`storyengine.metrics`). Its own module,
so the API can name the phases without importing the engine's numerical code.

"load", "featurise" and "prefetch" run outside the assignment lock; "lock" is the time spent
taking it (waiting for other workers included) and giving it back, so it
grows when workers contend for it. A worker that reads ahead again while it
waits (storyengine.locking.AssignmentLock's ``waiting``) counts that as "prefetch".
"""
from __future__ import annotations

import time

PHASES = {
    "load": "reading the articles by id (no lock held)",
    "featurise": "text, shingles, MinHash and term counts (no lock held)",
    "prefetch": "bringing the in-memory replica up to date with what the batch will read (no lock held)",
    "lock": "taking the assignment lock (waiting for other workers included) and releasing it",
    "retention": "ageing out old stories when due",
    "reads": "following the change log, reading statuses and what the replica lacks, weighing the terms",
    "decide": "duplicate checks and story choice, with any reads they add",
    "commit": "writing the batch's decisions in one transaction",
}


def lap(phase_seconds, phase: str, began: float) -> float:
    """Add the time since ``began`` (time.perf_counter) to ``phase``; the time now, to start the next one."""
    now = time.perf_counter()
    phase_seconds[phase] += now - began
    return now
