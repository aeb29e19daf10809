"""Each OpenCL kernel against the CPU path, transfers included, on the chosen OpenCL device
(`--device opencl:N`, default `$RXQUANT_DEVICE` or the first). On PoCL (a CPU OpenCL platform)
these numbers only show that the path works: PoCL shares the CPU with rayon and adds copies.
Run it on a real card.

Run: python benches/opencl_bench.py [--device opencl:0]
"""

from __future__ import annotations

import argparse
import os
from typing import Callable

import numpy as np
from common import median_time

import rxquant as rq
from rxquant.core.devices import backend, opencl_devices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default=os.environ.get("RXQUANT_DEVICE", "opencl"))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    devs, why = opencl_devices()
    if not devs:
        raise SystemExit(f"no OpenCL device: {why}")
    be = backend(a.device)
    print(f"device: {be.name} (correctly rounded division: {be.exact_division})")
    if all(d["type"] != "gpu" for d in devs):
        print("note: no OpenCL GPU here; a CPU OpenCL platform only shows that the path works")
    x = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    print(f"{'kernel (4096x4096 float32)':<40} {'cpu ms':>9} {'opencl ms':>10} {'opencl/cpu':>11}")

    def row(name: str, fn: Callable[[str], object]) -> None:
        t_cpu = median_time(lambda: fn("cpu"), a.repeat)
        t_cl = median_time(lambda: fn(a.device), a.repeat)
        print(f"{name:<40} {t_cpu * 1e3:>9.2f} {t_cl * 1e3:>10.2f} {t_cl / t_cpu:>10.2f}x")

    for label, s in (
        ("quantize int8 per channel", rq.Scheme("int8", axis=0)),
        ("quantize int4 groups of 32", rq.Scheme("int4", symmetric=False, group_size=32)),
    ):
        qp = rq.calibrate(x, "minmax", s)
        q, _ = rq.quantize(x, s, qp)
        row(label, lambda d, s=s, qp=qp: rq.quantize(x, s, qp, device=d))
        row(f"dequantize ({label[9:]})", lambda d, q=q, qp=qp: rq.dequantize(q, qp, device=d))
        row(f"fake-quantize ({label[9:]})", lambda d, qp=qp: rq.fake_quantize(x, qparams=qp, device=d))
        row(f"min-max + quantize ({label[9:]})", lambda d, s=s: rq.quantize(x, s, device=d))
    per_channel = rq.Scheme("int8", axis=0)
    y = rq.fake_quantize(x, per_channel)
    row("calibrate entropy per tensor", lambda d: rq.calibrate(x, "entropy", "int8", device=d))
    row("calibrate mse per tensor (histogram)", lambda d: rq.calibrate(x, "mse", exact=False, device=d))
    row(
        "calibrate percentile per channel",
        lambda d: rq.calibrate(x, "percentile", per_channel, exact=False, device=d),
    )
    row("metrics (SQNR, cosine, MSE, ...)", lambda d: rq.metrics(x, y, device=d))


if __name__ == "__main__":
    main()
