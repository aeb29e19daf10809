"""Helpers the benchmark scripts share: timing by medians."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))
