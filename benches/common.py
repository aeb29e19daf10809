"""Helpers the benchmark scripts share: timing by medians, and writing a script's section of a doc."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: Seconds of warm-up calls before a timing. On this project's 2-vCPU VM a 2-thread kernel right
#: after idle or single-threaded work runs 2-5x slower for its first ~30 ms, while the host wakes
#: the second vCPU (``cold_call`` in compare.py prints it); criterion warms up for the same reason.
WARMUP_S = 0.1


def _warm_up(fns: tuple[Callable[[], Any], ...], calls: int) -> None:
    """Runs ``fns`` in turns at least ``calls`` times, then until WARMUP_S seconds have passed
    (nothing when ``calls`` is 0: a reference that takes seconds is timed once, cold)."""
    start, n = time.perf_counter(), 0
    while n < calls or (calls and time.perf_counter() - start < WARMUP_S):
        for fn in fns:
            fn()
        n += 1


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Median of ``repeat`` timed calls of ``fn`` after a warm-up (``_warm_up``)."""
    _warm_up((fn,), warmup)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def alternating_times(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed in turns (ab, ba, ab, ...), after warming up both in turns:
    neither always runs right after the other's writes to disk or frees of memory."""
    _warm_up((a, b), 1)
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
