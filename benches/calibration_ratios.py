"""Calibration speed on 16M float32 values: rxquant against ONNX Runtime's HistogramCollector,
np.copyto and (when installed) PyTorch's HistogramObserver, in one run. Prints medians and ratios.

Run: python benches/calibration_ratios.py   (or `make bench-calibration`)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

import rxquant as rq


def median_time(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def ort_collector(method: str, x: np.ndarray):
    from onnxruntime.quantization.calibrate import HistogramCollector

    def run():
        c = HistogramCollector(
            method=method,
            symmetric=True,
            num_bins=2048,
            num_quantized_bins=128,
            percentile=99.99,
            scenario="same",
        )
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            c.collect({"x": [x]})
            return c.compute_collection_result()["x"][:2]

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    x = np.random.default_rng(0).laplace(size=args.n).astype(np.float32)
    dst = np.empty_like(x)
    rows: list[tuple[str, float, str]] = []

    t_copy = median_time(lambda: np.copyto(dst, x), args.repeat * 3)
    t_hist = median_time(lambda: rq.Observer("percentile", "int8").update(x), args.repeat)
    rows.append(
        (
            "histogram (range pass + 2048-bin |x| histogram)",
            t_hist,
            f"{t_copy / t_hist:.2f}x the speed of np.copyto (target >= 0.5)",
        )
    )
    for method, target in (("entropy", 20), ("percentile", 10)):
        ours = median_time(lambda m=method: rq.calibrate(x, m, "int8", exact=False), args.repeat)
        try:
            peer = median_time(ort_collector(method, x), max(1, args.repeat // 2))
            note = (
                f"{peer / ours:.1f}x faster than ONNX Runtime HistogramCollector "
                f"({peer * 1e3:.0f} ms; target >= {target}x)"
            )
        except ImportError:
            note = "ONNX Runtime not installed: no comparison"
        rows.append((f"{method} calibration", ours, note))
    t_mse = median_time(lambda: rq.calibrate(x, "mse", "int8"), args.repeat)
    try:
        import torch

        obs_t = torch.from_numpy(x)

        def torch_mse():
            o = torch.ao.quantization.HistogramObserver()
            o(obs_t)
            return o.calculate_qparams()

        peer = median_time(torch_mse, max(1, args.repeat // 2))
        note = f"{peer / t_mse:.1f}x faster than torch HistogramObserver ({peer * 1e3:.0f} ms)"
    except ImportError:
        note = "torch is not installed: HistogramObserver not timed"
    rows.append(("mse calibration (histogram)", t_mse, note))

    print(
        f"input: {args.n:,} float32 values (Laplace), medians of {args.repeat} runs; "
        f"rxquant threads: {rq.threads()}"
    )
    print(f"np.copyto of the same array: {t_copy * 1e3:.2f} ms")
    for name, t, note in rows:
        print(f"{name:<50} {t * 1e3:8.2f} ms   {note}")


if __name__ == "__main__":
    main()
