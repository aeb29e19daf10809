"""Quantization MSE of each calibration method on heavy-tailed distributions, relative to min-max.
Prints a markdown table (used in docs/calibration.md).

Run: python benches/calibration_quality.py
"""

from __future__ import annotations

import numpy as np

import rxquant as rq


def distributions(n: int = 1 << 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    outliers = rng.standard_normal(n)
    idx = rng.choice(n, n // 1000, replace=False)
    outliers[idx] = 50 * np.sign(rng.standard_normal(idx.size))
    return {
        "normal": rng.standard_normal(n),
        "Laplace": rng.laplace(size=n),
        "Student-t(3)": rng.standard_t(3, size=n),
        "ReLU(Laplace)": np.maximum(rng.laplace(size=n), 0),
        "normal + 0.1% at 50 sigma": outliers,
    }


def main() -> None:
    methods = ("minmax", "percentile", "entropy", "mse")
    print(f"{1 << 20:,} values per distribution; quantization MSE relative to min-max (lower is better)\n")
    print("| distribution | precision | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for name, x in distributions().items():
        x = x.astype(np.float32)
        for precision in ("int8", "int4"):
            errs = []
            for m in methods:
                y = rq.fake_quantize(x, qparams=rq.calibrate(x, m, precision))
                errs.append(float(np.mean((x.astype(np.float64) - y) ** 2)))
            cells = " | ".join(f"{e / errs[0]:.3f}" for e in errs)
            print(f"| {name} | {precision} | {cells} |")


if __name__ == "__main__":
    main()
