"""Helpers the benchmark scripts share: timing by medians, and writing a script's section of a doc."""

from __future__ import annotations

import time
from pathlib import Path
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


def alternating_times(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed in turns (ab, ba, ab, ...), after one warm-up each: neither
    always runs right after the other's writes to disk or frees of memory."""
    a()
    b()
    ta, tb = [], []
    for i in range(repeat):
        for fn, ts in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return float(np.median(ta)), float(np.median(tb))


def write_section(doc: Path, begin: str, end: str, text: str) -> None:
    """Puts ``text`` between the marker lines ``begin`` and ``end`` of ``doc`` (appended with its
    markers when they are missing), atomically: the rest of the document is left as it was."""
    from rxquant.core.atomic import atomic_open

    body = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if begin in body and end in body:
        body = body[: body.index(begin) + len(begin)] + "\n" + text + "\n" + body[body.index(end) :]
    else:
        body = body.rstrip("\n") + "\n\n" + begin + "\n" + text + "\n" + end + "\n"
    with atomic_open(doc) as f:
        f.write(body)
    print(f"wrote {doc}")
