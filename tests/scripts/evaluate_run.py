"""Reading a run of scripts/evaluate.py: the scores it prints, and the rows
it hands the engine (through evaluation.replay.record_of, as they are)."""
from __future__ import annotations

from evaluation import replay


def scores_from(stdout: str) -> dict[str, float]:
    scores = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                scores[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return scores


def sent_records(monkeypatch) -> list[dict]:
    """The rows run_engine turns into records (what the engine is given), as they are."""
    seen = []
    real = replay.record_of

    def record_of(row):
        seen.append(row)
        return real(row)

    monkeypatch.setattr(replay, "record_of", record_of)
    return seen
