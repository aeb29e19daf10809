"""Per-channel INT8 quantize of a 4096x4096 float32 matrix: rxquant against np.copyto and the numpy
expression, and 2 threads against 1, all measured in this run. Prints ratios (medians).

Run: python benches/quantize_ratios.py   (or `make bench-quantize`)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def median_time(fn, repeat: int = 15, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def matrix() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)


def time_rxquant(repeat: int) -> float:
    import rxquant as rq

    x = matrix()
    s = rq.Scheme("int8", axis=0)
    return median_time(lambda: rq.quantize(x, s), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # runs in a subprocess so RAYON_NUM_THREADS takes effect
        print(time_rxquant(args.repeat))
        return

    import rxquant as rq

    x = matrix()
    dst = np.empty_like(x)
    t_copy = median_time(lambda: np.copyto(dst, x), args.repeat)

    def numpy_expr() -> np.ndarray:
        s = np.abs(x).max(1, keepdims=True) / 127
        return np.clip(np.rint(x / s), -127, 127).astype(np.int8)

    t_np = median_time(numpy_expr, max(3, args.repeat // 3))
    t_rx = time_rxquant(args.repeat)
    q, _ = rq.quantize(x, rq.Scheme("int8", axis=0))
    assert np.array_equal(q, numpy_expr()), "rxquant and the numpy expression disagree"

    def child(threads: int) -> float:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--repeat", str(args.repeat)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return float(out.stdout.strip())

    t1, t2 = child(1), child(2)
    print(f"machine: {os.cpu_count()} logical CPUs; rxquant threads: {rq.threads()}")
    print(f"np.copyto 4096x4096 f32            : {t_copy * 1e3:8.2f} ms")
    print(f"numpy expression (per-channel int8): {t_np * 1e3:8.2f} ms")
    print(f"rxquant quantize per-channel int8  : {t_rx * 1e3:8.2f} ms")
    print(f"rxquant 1 thread / 2 threads       : {t1 * 1e3:8.2f} / {t2 * 1e3:.2f} ms")
    print()
    print(f"ratio rxquant / np.copyto          : {t_rx / t_copy:5.2f}x  (target <= 2.0)")
    print(f"speed-up over numpy expression     : {t_np / t_rx:5.2f}x  (target >= 4.0)")
    print(f"speed-up 2 threads over 1          : {t1 / t2:5.2f}x  (target >= 1.6)")


if __name__ == "__main__":
    main()
