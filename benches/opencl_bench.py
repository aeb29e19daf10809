"""Each OpenCL operation against the CPU path and against ``device="auto"``, in one run: end to end
(numpy in, numpy out), the kernels alone (OpenCL profiling events) with their share of the
device's measured memory bandwidth or of its fp32 peak, and the transfers.

On PoCL (a CPU OpenCL platform) the numbers only show that the path works: PoCL shares the cores
rayon uses. Run it on a real card (NVIDIA's OpenCL counts); ``--device opencl:N`` picks one.
``auto`` only considers GPUs, so on PoCL its column equals the CPU's.

Run: python benches/opencl_bench.py [--device opencl:0] [--size full|small] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Callable, Optional

import numpy as np
from common import median_time

import rxquant as rq
from rxquant.core import costs
from rxquant.core.devices import backend, opencl_devices
from rxquant.core.gptq import output_error
from rxquant.core.hardware import family_of_device


def fp32_peak_gflops(dev: dict[str, Any]) -> Optional[float]:
    """The device's fp32 peak: the family table's for AMD cards; for NVIDIA, compute units x
    clock x 128 lanes x 2 (an SM has 128 fp32 lanes since Ampere); unknown otherwise."""
    fam = family_of_device(dev["name"])
    if fam is not None:
        return fam.tflops_fp32 * 1e3
    if "nvidia" in dev["platform"].lower() and dev.get("max_clock_mhz"):
        return dev["compute_units"] * dev["max_clock_mhz"] * 1e-3 * 128 * 2
    return None


def interleaved(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Median time of each function, calls taken in turn (so drift and a busy neighbour hit all
    alike), with enough rounds for about a quarter second of the slowest."""
    for f in fns:
        f()
    once = max(median_time(f, 1, warmup=0) for f in fns)
    rounds = max(repeat, min(200, int(0.25 / max(once, 1e-6))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for f, ts in zip(fns, times):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) for ts in times]


def traced(be: Any, fn: Callable[[], Any]) -> tuple[float, float]:
    """(kernel seconds, transfer seconds) of one call, from the device's profiling events."""
    be.start_trace()
    fn()
    t = be.take_trace()
    kernel = sum(s for k, s in t if k not in ("upload", "download"))
    return kernel, sum(s for k, s in t if k in ("upload", "download"))


def line(cells: tuple[str, ...]) -> str:
    widths = (36, 9, 10, 9, 10, 9, 10, 12)
    return " ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))) + (
        "  " + cells[8]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default=os.environ.get("RXQUANT_DEVICE", "opencl"))
    ap.add_argument("--size", choices=("full", "small"), default=None, help="default: full on a GPU")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--rows", choices=("all", "elementwise", "matrix"), default="all")
    a = ap.parse_args()
    devs, why = opencl_devices()
    if not devs:
        raise SystemExit(f"no OpenCL device: {why}")
    be = backend(a.device)
    info = (
        devs[int(a.device.split(":")[1])]
        if ":" in a.device
        else next(d for d in devs if d["name"] == be.name)
    )
    full = (a.size or ("full" if be.is_gpu else "small")) == "full"
    t0 = time.perf_counter()
    fig = be.measure()
    t_measure = time.perf_counter() - t0
    cpu = rq.core.native.measure_cpu()
    peak = fp32_peak_gflops(info)
    host = platform.processor() or platform.machine()
    print(f"device: {be.name} on {info['platform']} ({info['driver_version']})")
    print(f"host: {host}, {os.cpu_count()} logical CPUs, rxquant {rq.threads()} threads")
    print(
        f"measured in {t_measure:.2f} s: upload {fig['upload_gbs']:.1f} GB/s pinned, "
        f"{fig['pageable_upload_gbs']:.1f} pageable; download {fig['download_gbs']:.1f} GB/s; "
        f"device memory (copy kernel) {fig['memory_gbs']:.0f} GB/s; "
        f"product {fig['gemm_gflops']:.0f} GFLOP/s"
        + (f" (fp32 peak {peak:.0f})" if peak else "")
        + f"; tiles {be.tiles}; cpu quantize {cpu['quantize_gbs']:.1f} GB/s, "
        f"XᵀX {cpu['gemm_gflops']:.0f} GFLOP/s"
    )
    auto_dev = "auto" if be.is_gpu else "cpu"  # auto never takes a CPU OpenCL device
    rng = np.random.default_rng(0)
    shapes = [(4096, 4096), (16384, 8192)] if full else [(1024, 1024), (2048, 2048)]
    rows: list[tuple[str, float, float, float, float, float, str]] = []

    def row(
        name: str, fn: Callable[[str], Any], kernel_of: Callable[[], Any], roof: Callable[[float], str]
    ) -> None:
        # The device runs apart: a CPU OpenCL platform keeps its worker threads busy for a while
        # after a kernel, which would slow whatever ran next on the same cores.
        (t_dev,) = interleaved([lambda: fn(a.device)], a.repeat)
        t_cpu, t_auto = interleaved([lambda: fn("cpu"), lambda: fn(auto_dev)], a.repeat)
        k, tr = traced(be, kernel_of)
        rows.append((name, t_cpu, t_dev, t_auto, k, tr, roof(k)))

    def bw(nbytes: float) -> Callable[[float], str]:
        return lambda k: (
            f"{nbytes / k / 1e9:.0f} GB/s = {100 * nbytes / k / 1e9 / fig['memory_gbs']:.0f}% of memory"
        )

    def flops(n: float) -> Callable[[float], str]:
        return lambda k: (
            f"{n / k / 1e9:.0f} GFLOP/s" + (f" = {100 * n / k / 1e9 / peak:.0f}% of peak" if peak else "")
        )

    def elementwise_rows(shape: tuple[int, int]) -> None:
        x = rng.standard_normal(shape, dtype=np.float32)
        n, tag = x.size, f"{shape[0]}x{shape[1]}"
        s8 = rq.Scheme("int8", axis=0)
        s4 = rq.Scheme("int4", symmetric=False, group_size=32)
        qp8, qp4 = rq.calibrate(x, "minmax", s8), rq.calibrate(x, "minmax", s4)
        q8, _ = rq.quantize(x, s8, qp8)
        y = rq.dequantize(q8, qp8)
        row(
            f"quantize int8 per channel {tag}",
            lambda d: rq.quantize(x, s8, qp8, device=d),
            lambda: rq.quantize(x, s8, qp8, device=a.device),
            bw(5 * n),
        )
        row(
            f"quantize int4 g32 + pack {tag}",
            lambda d: rq.quantize(x, s4, qp4, pack=True, device=d),
            lambda: rq.quantize(x, s4, qp4, pack=True, device=a.device),
            bw(4.5 * n),
        )
        row(
            f"min-max + quantize int8 {tag}",
            lambda d: rq.quantize(x, s8, device=d),
            lambda: rq.quantize(x, s8, device=a.device),
            bw(9 * n),
        )
        row(
            f"dequantize int8 {tag}",
            lambda d: rq.dequantize(q8, qp8, device=d),
            lambda: rq.dequantize(q8, qp8, device=a.device),
            bw(5 * n),
        )
        row(
            f"entropy calibration {tag}",
            lambda d: rq.calibrate(x, "entropy", "int8", device=d),
            lambda: rq.calibrate(x, "entropy", "int8", device=a.device),
            bw(8 * n),
        )
        row(
            f"metrics {tag}",
            lambda d: rq.metrics(x, y, device=d),
            lambda: rq.metrics(x, y, device=a.device),
            bw(8 * n),
        )

    def matrix_rows() -> None:
        r, f = (8192, 4096) if full else (2048, 1024)
        xs = rng.standard_normal((r, f), dtype=np.float32)
        row(
            f"XᵀX ({r}, {f})",
            lambda d: rq.HessianObserver(device=d).update(xs),
            lambda: rq.HessianObserver(device=a.device).update(xs),
            flops(r * f * f * (1 + 1 / max(1, f // be.tiles[0]))),
        )
        h = rq.HessianObserver(device="cpu").update(xs).hessian()
        w = rng.standard_normal((f, f), dtype=np.float32)
        sg = rq.Scheme("int4", symmetric=False, group_size=128)
        row(
            f"GPTQ {f}x{f} g128 (H given)",
            lambda d: rq.gptq(w, sg, h, device=d),
            lambda: rq.gptq(w, sg, h, device=a.device),
            flops(float(f) * f * f),
        )
        w_hat = rq.fake_quantize(w, sg)
        row(
            f"layer error {f}x{f}",
            lambda d: output_error(w, w_hat, h, device=d),
            lambda: output_error(w, w_hat, h, device=a.device),
            flops(2.0 * f * f * f),
        )

    for shape in shapes if a.rows != "matrix" else []:
        elementwise_rows(shape)

    if a.rows != "elementwise":
        matrix_rows()
    print_table(rows, a.markdown)
    worst = max(ta / tc for _, tc, _, ta, *_ in rows)
    print(f"auto vs cpu, worst row: {worst:.2f}x (target <= 1.10x)")
    be_sizes = costs.break_even(fig, {k: v for k, v in cpu.items() if k != "threads"})
    print("auto uses the device from: " + "; ".join(f"{k}: {v or 'never'}" for k, v in be_sizes.items()))


def print_table(rows: list[Any], markdown: bool) -> None:
    head = (
        "operation",
        "cpu ms",
        "device ms",
        "auto ms",
        "device/cpu",
        "auto/cpu",
        "kernels ms",
        "transfers ms",
        "kernels' rate",
    )
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print(line(head))
    for name, tc, td, ta, k, tr, rate in rows:
        cells = (
            name,
            f"{tc * 1e3:.2f}",
            f"{td * 1e3:.2f}",
            f"{ta * 1e3:.2f}",
            f"{td / tc:.2f}x",
            f"{ta / tc:.2f}x",
            f"{k * 1e3:.2f}",
            f"{tr * 1e3:.2f}",
            rate,
        )
        if markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(line(cells))


if __name__ == "__main__":
    main()
