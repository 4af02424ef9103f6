"""The shared evaluation streams, kept outside the repository in ../shared
(cloned beside it; CI has it). A test that needs one calls require_shared():
on a clone without it the test is skipped, saying how to get it (pytest -ra
lists the reason), and where STORYWIRE_REQUIRE_SHARED=1 (CI) it fails instead,
so a missing ../shared can never pass unnoticed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from evaluation.streams import DEFAULT_STREAM

DEV_STREAM = Path(DEFAULT_STREAM)   # ../shared/eval/dev.jsonl, the labelled dev stream
_FLAG = "STORYWIRE_REQUIRE_SHARED"
_FLAG_VALUES = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


def require_shared(path: Path = DEV_STREAM) -> Path:
    """``path`` (a file under ../shared), or skip the calling test or fixture
    saying how to get it; fail instead where STORYWIRE_REQUIRE_SHARED=1."""
    flag = os.environ.get(_FLAG, "").strip().lower()
    if flag not in _FLAG_VALUES:
        pytest.fail(f"{_FLAG}={flag[:40]!r} is not understood; set it to 1 (fail without ../shared) or 0",
                    pytrace=False)
    if path.exists():
        return path
    why = f"{path} not found: this test needs the shared evaluation data; clone it as ../shared beside the repository"
    if _FLAG_VALUES[flag]:
        pytest.fail(f"{why} ({_FLAG}=1)", pytrace=False)
    pytest.skip(why)
