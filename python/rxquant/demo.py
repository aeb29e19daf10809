"""`rxquant demo`: quantizes a built-in set of example tensors with each scheme and prints a table."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .ops import dequantize, metrics, quantize
from .scheme import Scheme


def example_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic tensors shaped and distributed like real layers."""
    rng = np.random.default_rng(seed)
    row_scale = rng.uniform(0.02, 0.2, size=(768, 1))
    outliers = rng.laplace(size=(512, 1024)).astype(np.float32)
    outliers[rng.random(outliers.shape) < 0.001] *= 50
    return {
        "q_proj 768x768 normal, row scales": (rng.standard_normal((768, 768)) * row_scale),
        "embedding 4096x256 Student-t(3)": rng.standard_t(3, size=(4096, 256)) * 0.05,
        "conv 64x32x3x3 uniform": rng.uniform(-0.3, 0.3, size=(64, 32, 3, 3)),
        "acts 512x1024 Laplace+outliers": outliers,
    }


SCHEMES: dict[str, Callable[[np.ndarray], Scheme]] = {
    "fp16": lambda x: Scheme("fp16"),
    "int8 per tensor": lambda x: Scheme("int8"),
    "int8 per channel": lambda x: Scheme("int8", axis=0),
    "int4 per channel": lambda x: Scheme("int4", axis=0),
    # Groups run along the last axis, or along input channels when the last axis is too short (conv).
    "int4 group 32 asym": lambda x: Scheme(
        "int4", symmetric=False, axis=-1 if x.shape[-1] % 32 == 0 else 1, group_size=32
    ),
}


def run_demo(print_fn: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Quantizes every example tensor with every scheme; prints and returns the rows."""
    rows: list[dict[str, object]] = []
    header = f"{'tensor':<34} {'scheme':<20} {'SQNR dB':>8} {'cosine':>9} {'bytes':>10} {'vs fp32':>8}"
    print_fn(header)
    print_fn("-" * len(header))
    for name, x in example_tensors().items():
        x = x.astype(np.float32)
        for label, make in SCHEMES.items():
            s = make(x)
            q, qp = quantize(x, s, pack=s.precision == "int4")
            y = dequantize(q, qp, packed=s.precision == "int4")
            m = metrics(x, y)
            row = {
                "tensor": name,
                "scheme": label,
                "sqnr_db": m.sqnr_db,
                "cosine": m.cosine,
                "bytes": qp.nbytes,
                "ratio": x.nbytes / qp.nbytes,
            }
            rows.append(row)
            stats = f"{m.sqnr_db:8.2f} {m.cosine:9.6f} {qp.nbytes:10d} {row['ratio']:7.2f}x"
            print_fn(f"{name:<34} {label:<20} {stats}")
        print_fn("")
    print_fn("bytes = stored codes + scales (fp32; fp16 for int4) + zero points (asymmetric; int4 packed)")
    return rows
