"""Time of each GGUF block type's rounding in rxquant (`rxquant.gguf.quantize_tensor`), per weight,
on one 1024 x 4096 tensor of Gaussian weights, on all of rxquant's threads: `nearest` is ggml's
reference rounding; `mse` searches each block's parameters (what `--rounding mse` and, weighted,
`importance` cost). Medians of `--repeat` runs.

    python benches/gguf_rounding.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rxquant
from rxquant import gguf

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    w = (np.random.default_rng(0).standard_normal((1024, 4096)) * 0.05).astype(np.float32)
    rows, cols = w.shape
    print(f"{rows}x{cols} float32, {rxquant.threads()} threads; ns per weight (median of {args.repeat})")
    print(f"{'type':6} {'nearest':>9} {'mse':>9} {'mse/nearest':>12}")
    for ty in TYPES:
        ns = {}
        for rounding in ("nearest", "mse"):
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                gguf.quantize_tensor(w, ty, rounding=rounding)
                runs.append(time.perf_counter() - t)
            ns[rounding] = statistics.median(runs) * 1e9 / w.size
        print(f"{ty:6} {ns['nearest']:9.1f} {ns['mse']:9.1f} {ns['mse'] / ns['nearest']:11.1f}x")


if __name__ == "__main__":
    main()
