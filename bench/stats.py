"""Percentiles of a run's samples; NaN for none, so a figure not measured shows as such."""
from __future__ import annotations

import math

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def median(values: list[float]) -> float:
    return percentile(values, 50)
