"""rxquant against numpy, ONNX Runtime, gguf and (when installed) PyTorch, in one run; writes
docs/performance.md and docs/performance.png. Same as `make bench` and `rxquant bench`.

Peers: numpy reference expressions, ONNX Runtime (quant_utils, HistogramCollector), the gguf
package (llama.cpp's Q8_0/Q4_0 in numpy), and PyTorch when installed. A missing peer is reported
as missing, never faked. Prints medians and rxquant/peer ratios and the fraction of the copy
bandwidth each memory-bound kernel reaches.

Run: python benches/compare.py [--repeat 7] [--no-docs]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from unittest import mock

import numpy as np
from common import WARMUP_S, alternating_times, median_time

import rxquant as rq
from rxquant.apps.cli import main as cli_main
from rxquant.core.atomic import atomic_open
from rxquant.core.hardware import cpu_model
from rxquant.models.minilm import minilm_dir

N = 4096
#: INT8 symmetric per tensor on -128..127: the grid of torch's qint8 symmetric observers.
FULL8 = rq.Scheme("int8", full_range=True)


@dataclass
class Row:
    work: str
    rxquant_s: float
    bytes_moved: Optional[int]  # read + written by the kernel, for the roofline
    peers: dict[str, Optional[float]] = field(default_factory=dict)  # None: not installed
    notes: str = ""
    #: For a row timed in turns with its peer (``IN_TURNS``): rxquant's and the peer's medians
    #: back to back, each after its own calls rather than the other's.
    alone: Optional[tuple[float, float]] = None

    def fastest_peer(self) -> Optional[tuple[str, float]]:
        times = [(k, v) for k, v in self.peers.items() if v is not None]
        return min(times, key=lambda kv: kv[1]) if times else None


def _try(fn: Callable[[], Callable[[], Any]], repeat: int) -> Optional[float]:
    """Times the callable that `fn` builds; None when its library is not installed."""
    try:
        work = fn()
    except ImportError:
        return None
    return median_time(work, repeat)


def _ort_collector(method: str, x: np.ndarray) -> Callable[[], Any]:
    from onnxruntime.quantization.calibrate import HistogramCollector

    def run() -> Any:
        c = HistogramCollector(
            method=method,
            symmetric=True,
            num_bins=2048,
            num_quantized_bins=128,
            percentile=99.99,
            scenario="same",
        )
        with contextlib.redirect_stdout(io.StringIO()):
            c.collect({"x": [x]})
            return c.compute_collection_result()

    return run


def _ort_quantize(x: np.ndarray) -> Callable[[], Any]:
    """ONNX Runtime's quant_utils: range, parameters and codes."""
    from onnx import TensorProto
    from onnxruntime.quantization import quant_utils as qu

    def run() -> Any:
        qmin, qmax = qu.get_qmin_qmax_for_qType(TensorProto.INT8, symmetric=True)
        zp, s = qu.compute_scale_zp(x.min(), x.max(), qmin, qmax, symmetric=True)
        return qu.quantize_nparray(TensorProto.INT8, x, s, zp)

    return run


def _ort_quantize_given(x: np.ndarray, scale: float) -> Callable[[], Any]:
    """ONNX Runtime's quant_utils.quantize_nparray with the scale given."""
    from onnx import TensorProto
    from onnxruntime.quantization import quant_utils as qu

    s, zp = np.float32(scale), np.int8(0)
    return lambda: qu.quantize_nparray(TensorProto.INT8, x, s, zp)


def _gguf(x: np.ndarray, name: str) -> Callable[[], Any]:
    from gguf import GGMLQuantizationType, quants

    t = getattr(GGMLQuantizationType, name)
    return lambda: quants.quantize(x, t)


def _gguf_dequantize(blocks: np.ndarray, name: str) -> Callable[[], Any]:
    from gguf import GGMLQuantizationType, quants

    t = getattr(GGMLQuantizationType, name)
    rows = blocks.reshape(N, -1)
    return lambda: quants.dequantize(rows, t)


def _torch() -> Any:
    import warnings

    import torch

    torch.set_num_threads(rq.threads())
    warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated", category=UserWarning)
    return torch


def _torch_per_tensor(x: np.ndarray, scale: float) -> Callable[[], Any]:
    """torch.quantize_per_tensor with the scale given."""
    torch = _torch()
    tx = torch.from_numpy(x)
    return lambda: torch.quantize_per_tensor(tx, scale, 0, torch.qint8)


def _torch_per_tensor_fresh(x: np.ndarray) -> Callable[[], Any]:
    """torch computing the range (amax) and then quantize_per_tensor."""
    torch = _torch()
    tx = torch.from_numpy(x)
    return lambda: torch.quantize_per_tensor(tx, float(tx.abs().max()) / 127, 0, torch.qint8)


def _torch_per_channel(x: np.ndarray, scales: np.ndarray) -> Callable[[], Any]:
    """torch.quantize_per_channel with the scales given."""
    torch = _torch()
    tx = torch.from_numpy(x)
    s = torch.from_numpy(scales.astype(np.float64))
    z = torch.zeros(x.shape[0], dtype=torch.long)
    return lambda: torch.quantize_per_channel(tx, s, z, 0, torch.qint8)


def _torch_per_channel_fresh(x: np.ndarray) -> Callable[[], Any]:
    """torch computing each row's range (amax) and then quantize_per_channel."""
    torch = _torch()
    tx = torch.from_numpy(x)
    z = torch.zeros(x.shape[0], dtype=torch.long)

    def run() -> Any:
        s = (tx.abs().amax(dim=1) / 127).double()
        return torch.quantize_per_channel(tx, s, z, 0, torch.qint8)

    return run


def _torch_observer() -> Any:
    """torch's HistogramObserver for the same target as rxquant's row: INT8, symmetric, per tensor."""
    import torch

    return torch.ao.quantization.HistogramObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)


def _torch_histogram_observer(x: np.ndarray) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(rq.threads())
    tx = torch.from_numpy(x)

    def go() -> Any:
        o = _torch_observer()
        o(tx)
        return o.calculate_qparams()

    return go


def np_int8_given(x: np.ndarray, s: Any) -> np.ndarray:
    return np.clip(np.rint(x / s), -127, 127).astype(np.int8)


def np_int8_tensor(x: np.ndarray) -> np.ndarray:
    s = np.abs(x).max() / 127
    return np.clip(np.rint(x / s), -127, 127).astype(np.int8)


def np_int8_channel(x: np.ndarray) -> np.ndarray:
    s = np.abs(x).max(1, keepdims=True) / 127
    return np.clip(np.rint(x / s), -127, 127).astype(np.int8)


def np_int4_group_packed(x: np.ndarray) -> np.ndarray:
    g = x.reshape(-1, 32)
    lo, hi = np.minimum(g.min(1, keepdims=True), 0), np.maximum(g.max(1, keepdims=True), 0)
    s = (hi - lo) / 15
    s[s == 0] = 1
    z = np.rint(-lo / s)
    q = np.clip(np.rint(g / s) + z, 0, 15).astype(np.uint8).reshape(-1)
    return q[0::2] | (q[1::2] << 4)


def np_metrics(x: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    a, b = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    e = a - b
    return (
        float(np.sum(a * a) / np.sum(e * e)),
        float(a @ b),
        float(np.mean(e * e)),
        float(np.mean(np.abs(e))),
        float(np.abs(e).max()),
    )


def parallel_copy_bw(x: np.ndarray, threads: int, repeat: int, fresh: bool = False) -> float:
    """The machine's memory bandwidth as a STREAM-like copy: ``x`` copied into a buffer of its
    size by ``threads`` threads, each ``np.copyto`` on its own contiguous slice (numpy releases
    the GIL while copying). Bytes read + written per second. ``fresh``: into a new array each
    time, as a kernel that returns a new array writes, its pages faulted in by the copy."""
    from concurrent.futures import ThreadPoolExecutor

    src = x.reshape(-1)
    dst = np.empty_like(src)
    parts = list(zip(np.array_split(src, threads), np.array_split(dst, threads)))
    with ThreadPoolExecutor(threads) as pool:

        def go() -> None:
            if fresh:
                out = np.empty_like(src)
                list(
                    pool.map(
                        lambda ab: np.copyto(ab[1], ab[0]),
                        zip(np.array_split(src, threads), np.array_split(out, threads)),
                    )
                )
            else:
                list(pool.map(lambda ab: np.copyto(ab[1], ab[0]), parts))

        t = median_time(go, repeat)
    return 2 * src.nbytes / t


#: Kernels of the thread-scaling curve: (name, bytes read + written by the kernel).
SCALING = (
    ("INT8 per tensor, scale given", 5 * N * N),
    ("torch.quantize_per_tensor, scale given", 5 * N * N),
    ("INT8 per channel, scales given", 5 * N * N),
    ("INT4 groups of 32 + packing", 9 * N * N // 2),
    ("dequantize INT8 per channel", 5 * N * N),
    ("dequantize INT8 per channel into an existing array (out=)", 5 * N * N),
    ("metrics", 8 * N * N),
    ("MSE calibration (16M values)", None),
    ("parallel copy (np.copyto)", 8 * N * N),
)


def scaling_point(repeat: int) -> dict[str, Optional[float]]:
    """The SCALING kernels' medians at this process's thread count (RAYON_NUM_THREADS)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, N), dtype=np.float32)
    big = rng.laplace(size=1 << 24).astype(np.float32)
    per_t, per_c = rq.Scheme("int8"), rq.Scheme("int8", axis=0)
    qp_t, qp_c = rq.calibrate(x, "minmax", per_t), rq.calibrate(x, "minmax", per_c)
    q, _ = rq.quantize(x, per_c, qp_c)
    y = rq.dequantize(q, qp_c)
    dst = np.empty_like(y)
    g32 = rq.Scheme("int4", symmetric=False, group_size=32)
    out: dict[str, Optional[float]] = {}
    calls: dict[str, Callable[[], Any]] = {
        SCALING[0][0]: lambda: rq.quantize(x, per_t, qp_t),
        SCALING[2][0]: lambda: rq.quantize(x, per_c, qp_c),
        SCALING[3][0]: lambda: rq.quantize(x, g32, pack=True),
        SCALING[4][0]: lambda: rq.dequantize(q, qp_c),
        SCALING[5][0]: lambda: rq.dequantize(q, qp_c, out=dst),
        SCALING[6][0]: lambda: rq.metrics(x, y),
        SCALING[7][0]: lambda: rq.calibrate(big, "mse", FULL8),
    }
    try:
        torch_fn = _torch_per_tensor(x, float(qp_t.scale.reshape(-1)[0]))
    except ImportError:
        out[SCALING[1][0]] = None
    else:  # the target's pair in turns: this machine drifts between one timing and the next
        ours = calls.pop(SCALING[0][0])
        out[SCALING[0][0]], out[SCALING[1][0]] = alternating_times(ours, torch_fn, 3 * repeat)
    for name, fn in calls.items():
        out[name] = median_time(fn, repeat)
    out[SCALING[-1][0]] = 2 * x.nbytes / parallel_copy_bw(x, rq.threads(), repeat)
    return out


def scaling_process(repeat: int, **env: str) -> dict[str, Optional[float]]:
    """``scaling_point`` in a new process with ``env`` added to the environment (rayon's pool is
    global to a process, and so is the C allocator's behaviour)."""
    import json

    cmd = [sys.executable, __file__, "--scaling-point", str(repeat)]
    r = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def thread_scaling(repeat: int) -> dict[int, dict[str, Optional[float]]]:
    """``scaling_point`` at 1, 2, 4, ... threads up to all logical CPUs, each in a subprocess."""
    cpus = os.cpu_count() or 1
    counts = sorted({min(1 << k, cpus) for k in range(cpus.bit_length() + 1)})
    return {threads: scaling_process(repeat, RAYON_NUM_THREADS=str(threads)) for threads in counts}


#: glibc told to keep the memory a process frees (no mmap for large blocks, no trimming of the heap):
#: a new array then reuses the last one's pages instead of faulting in fresh ones. A process-wide
#: choice of the user's (the memory is not given back to the system), measured, not made here.
KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def process_time(cmd: list[str], repeat: int, env: Optional[dict[str, str]] = None) -> float:
    """Median wall time of a new process running ``cmd`` (start-up included)."""
    return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), repeat)


def whole_file_rows(repeat: int) -> Optional[dict[str, Any]]:
    """MiniLM, whole files, each tool a new process with the same threads: `rxquant quantize`
    (nearest and mse) against `llama-quantize` (GGUF Q4_0, Q4_K, IQ4_NL, when `make interop` built it) and
    ONNX Runtime's MatMulNBitsQuantizer RTN (ONNX, INT4 asymmetric blocks of 32); plus the
    Python start-up share (`python -c pass`, and importing rxquant's CLI)."""
    import rxquant.gguf as rg
    from rxquant.models.bert_onnx import export_bert

    d = minilm_dir()
    if d is None:
        return None
    # rxquant's modules as bytecode, as an installed package has them (pip compiles them on
    # install; a source checkout run with PYTHONDONTWRITEBYTECODE=1 would compile every module
    # at each start, 15 ms here).
    compileall.compile_dir(str(Path(rq.__file__).parent), quiet=1)
    threads = str(rq.threads())
    env = dict(os.environ, RAYON_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    py = sys.executable
    rows: list[tuple[str, Optional[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        gsrc, gout, lout = Path(tmp) / "f32.gguf", Path(tmp) / "q.gguf", Path(tmp) / "l.gguf"
        rg.quantize_file(d, gsrc, type="f32")
        osrc, oout = Path(tmp) / "m.onnx", Path(tmp) / "q.onnx"
        export_bert(d, osrc)
        rx = [py, "-m", "rxquant", "quantize"]
        bin_dir = llama_cpp_bin()

        def run(cmd: list[str]) -> Callable[[], Any]:
            return lambda: subprocess.run(cmd, check=True, capture_output=True, env=env)

        for ty in ("Q4_0", "Q4_K", "IQ4_NL"):
            ours = rx + [str(gsrc), "-o", str(gout), "--type", ty, "-q"]
            t_llama: Optional[float] = None
            if bin_dir is not None:  # in turns: the two differ by less than this machine's drift
                llama = [str(bin_dir / "llama-quantize"), "--pure", str(gsrc), str(lout), ty, threads]
                t_ours, t_llama = alternating_times(run(ours), run(llama), 2 * repeat)
            else:
                t_ours = process_time(ours, repeat, env)
            rows.append((f"GGUF F32 -> {ty}, rxquant quantize --rounding nearest", t_ours))
            rows.append((f"GGUF F32 -> {ty}, llama-quantize --pure", t_llama))
        cmd = rx + [str(gsrc), "-o", str(gout), "--type", "q4_0", "--rounding", "mse", "-q"]
        rows.append(("GGUF F32 -> Q4_0, rxquant quantize --rounding mse", process_time(cmd, repeat, env)))
        for rounding in ("nearest", "mse"):
            cmd = rx + [str(osrc), "-o", str(oout), "--precision", "int4", "--granularity", "group:32",
                        "--asymmetric", "--rounding", rounding, "-q"]  # fmt: skip
            what = f"ONNX -> INT4 asym g32, rxquant quantize --rounding {rounding}"
            rows.append((what, process_time(cmd, repeat, env)))
        ort = (
            "import logging, onnx, sys; logging.disable(logging.INFO); "
            "from onnxruntime.quantization.matmul_nbits_quantizer import "
            "DefaultWeightOnlyQuantConfig as C, MatMulNBitsQuantizer as Q; "
            "q = Q(onnx.load(sys.argv[1]), algo_config=C(block_size=32, is_symmetric=False)); "
            "q.process(); q.model.save_model_to_file(sys.argv[2])"
        )
        try:
            t_ort: Optional[float] = process_time([py, "-c", ort, str(osrc), str(oout)], repeat, env)
        except subprocess.CalledProcessError:
            t_ort = None
        rows.append(("ONNX -> INT4 asym g32, ONNX Runtime MatMulNBitsQuantizer RTN", t_ort))
    startup = {
        "python -c pass": process_time([py, "-c", "pass"], repeat, env),
        "python -c 'import numpy'": process_time([py, "-c", "import numpy"], repeat, env),
        "python -c 'import rxquant.apps.cli'": process_time(
            [py, "-c", "import rxquant.apps.cli"], repeat, env
        ),
        "python -c 'import onnxruntime.quantization'": process_time(
            [py, "-c", "import onnxruntime.quantization"], repeat, env
        ),
    }
    return {"rows": rows, "startup": startup, "threads": threads}


def mse_quality(big: np.ndarray) -> Optional[dict[str, float]]:
    """Reconstruction error (MSE) of INT8 per-tensor fake quantization of ``big`` with rxquant's
    MSE parameters, with torch's HistogramObserver's, and with min-max."""
    try:
        import torch
    except ImportError:
        return None
    t = torch.from_numpy(big)
    o = _torch_observer()
    o(t)
    ts, tz = o.calculate_qparams()
    y_torch = torch.fake_quantize_per_tensor_affine(t, float(ts), int(tz), o.quant_min, o.quant_max).numpy()
    y_rx = rq.fake_quantize(big, qparams=rq.calibrate(big, "mse", FULL8))
    y_mm = rq.fake_quantize(big, qparams=rq.calibrate(big, "minmax", FULL8))

    def err(y: np.ndarray) -> float:
        return float(np.mean((big.astype(np.float64) - y) ** 2))

    return {"rxquant mse": err(y_rx), "torch HistogramObserver": err(y_torch), "min-max": err(y_mm)}


#: The peers a target compares rxquant with directly: timed in turns with rxquant, as in
#: ``scaling_point``, so that drift between two timings cannot decide the comparison (one run
#: here timed torch's HistogramObserver at 105 ms against 38-41 ms alone, its fresh tensors'
#: page faults slower then).
IN_TURNS = frozenset({"torch.quantize_per_tensor", "torch HistogramObserver"})


def timed_row(
    work: str,
    ours: Callable[[], Any],
    moved: Optional[int],
    peers: dict[str, Callable[[], Callable[[], Any]]],
    repeat: int,
    few: int,
) -> Row:
    """A main-table row: rxquant's median and each peer's (``_try``), or rxquant and an
    ``IN_TURNS`` peer timed in turns when the row has one and it is installed."""
    row = Row(work, 0.0, moved, {k: _try(b, few) for k, b in peers.items() if k not in IN_TURNS})
    name = next((k for k in peers if k in IN_TURNS), None)
    paired = None
    if name is not None:
        try:
            paired = peers[name]()
        except ImportError:
            row.peers[name] = None
    if name is None or paired is None:
        row.rxquant_s = median_time(ours, repeat)
    else:
        row.rxquant_s, row.peers[name] = alternating_times(ours, paired, 3 * repeat)
        row.alone = (median_time(ours, repeat), median_time(paired, repeat))
        row.notes = "rxquant and torch timed in turns; back to back: rxquant {:.2f}, torch {:.2f} ms".format(
            *(t * 1e3 for t in row.alone)
        )
    return row


def cold_call(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """``call`` (the out= dequantize: fixed buffers, no allocation, no page faults) as its first
    call after 1 s idle, median of three, against its warm median: what ``common.WARMUP_S`` keeps
    out of the tables. A machine whose cores wake in microseconds shows the two equal."""
    warm = median_time(call, repeat)
    firsts = []
    for _ in range(3):
        time.sleep(1.0)
        t = time.perf_counter()
        call()
        firsts.append(time.perf_counter() - t)
    return float(np.median(firsts)), warm


def run(repeat: int = 7, write_docs: bool = True, docs: Optional[Path] = None) -> dict[str, Any]:
    import rxquant.gguf as rg

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, N), dtype=np.float32)
    big = rng.laplace(size=1 << 24).astype(np.float32)
    nb = x.nbytes
    dst = np.empty_like(x)
    t_copy = median_time(lambda: np.copyto(dst, x), repeat * 3)
    copy_bw1 = 2 * nb / t_copy
    copy_bw = parallel_copy_bw(x, rq.threads(), repeat * 3)
    copy_bw_fresh = parallel_copy_bw(x, rq.threads(), repeat * 3, fresh=True)
    rows: list[Row] = []

    per_t, per_c = rq.Scheme("int8"), rq.Scheme("int8", axis=0)
    g32 = rq.Scheme("int4", symmetric=False, axis=-1, group_size=32)
    q8g = rq.Scheme("int8", axis=-1, group_size=32)
    q, qp = rq.quantize(x, per_c)
    y = rq.dequantize(q, qp)
    cold = cold_call(lambda: rq.dequantize(q, qp, out=dst), repeat)
    b40 = rg.quantize_tensor(x, "Q4_0")
    s_col = qp.scale[:, None]
    qp_t = rq.calibrate(x, "minmax", per_t)
    s_t = float(qp_t.scale.reshape(-1)[0])
    few = max(2, repeat // 3)
    # (work, rxquant call, bytes moved or None, {peer: builder of the peer's call})
    table: list[tuple[str, Callable[[], Any], Optional[int], dict[str, Callable[[], Callable[[], Any]]]]] = [
        (
            "INT8 quantize per tensor 4096x4096, scale given",
            lambda: rq.quantize(x, per_t, qp_t),
            nb + nb // 4,
            {
                "numpy": lambda: lambda: np_int8_given(x, s_t),
                "onnxruntime quant_utils.quantize_nparray": lambda: _ort_quantize_given(x, s_t),
                "torch.quantize_per_tensor": lambda: _torch_per_tensor(x, s_t),
            },
        ),
        (
            "INT8 per tensor 4096x4096, range + scale + quantize",
            lambda: rq.quantize(x, per_t),
            2 * nb + nb // 4,
            {
                "numpy": lambda: lambda: np_int8_tensor(x),
                "onnxruntime quant_utils": lambda: _ort_quantize(x),
                "torch amax + quantize_per_tensor": lambda: _torch_per_tensor_fresh(x),
            },
        ),
        (
            "INT8 quantize per channel 4096x4096, scales given",
            lambda: rq.quantize(x, per_c, qp),
            nb + nb // 4,
            {
                "numpy": lambda: lambda: np_int8_given(x, s_col),
                "torch.quantize_per_channel": lambda: _torch_per_channel(x, qp.scale),
            },
        ),
        (
            "INT8 per channel 4096x4096, ranges + scales + quantize",
            lambda: rq.quantize(x, per_c),
            2 * nb + nb // 4,
            {
                "numpy": lambda: lambda: np_int8_channel(x),
                "torch amax + quantize_per_channel": lambda: _torch_per_channel_fresh(x),
            },
        ),
        (
            "INT8 symmetric groups of 32 (Q8_0-like) 4096x4096",
            lambda: rq.quantize(x, q8g),
            nb + nb // 4,  # one read: each chunk's ranges, parameters and codes come from cache
            {"gguf Q8_0": lambda: _gguf(x, "Q8_0")},
        ),
        (
            "INT4 groups of 32 + packing 4096x4096",
            lambda: rq.quantize(x, g32, pack=True),
            nb + nb // 8,  # one read, as above
            {"numpy": lambda: lambda: np_int4_group_packed(x), "gguf Q4_0": lambda: _gguf(x, "Q4_0")},
        ),
        (
            "llama.cpp Q4_0 blocks 4096x4096 (rxquant.gguf.quantize_tensor, bit for bit ggml's)",
            lambda: rg.quantize_tensor(x, "Q4_0"),
            nb + nb * 18 // 128,
            {"gguf Q4_0": lambda: _gguf(x, "Q4_0")},
        ),
        (
            "llama.cpp Q8_0 blocks 4096x4096 (rxquant.gguf.quantize_tensor, bit for bit ggml's)",
            lambda: rg.quantize_tensor(x, "Q8_0"),
            nb + nb * 34 // 128,
            {"gguf Q8_0": lambda: _gguf(x, "Q8_0")},
        ),
        (
            "llama.cpp Q4_0 blocks 4096x4096 back to float32 (rxquant.gguf.dequantize_tensor)",
            lambda: rg.dequantize_tensor(b40, "Q4_0", x.shape),
            nb * 18 // 128 + nb,
            {"gguf Q4_0": lambda: _gguf_dequantize(b40, "Q4_0")},
        ),
        (
            "llama.cpp Q4_0 blocks 4096x4096 back to float32 into an existing array (out=)",
            lambda: rg.dequantize_tensor(b40, "Q4_0", x.shape, out=dst),
            nb * 18 // 128 + nb,
            {},  # the gguf package has no out=: its row is the one above
        ),
        (
            "dequantize INT8 per channel 4096x4096",
            lambda: rq.dequantize(q, qp),
            nb // 4 + nb,
            {"numpy": lambda: lambda: q.astype(np.float32) * s_col},
        ),
        (
            "dequantize INT8 per channel 4096x4096 into an existing array (out=)",
            lambda: rq.dequantize(q, qp, out=dst),
            nb // 4 + nb,
            {"numpy": lambda: lambda: np.multiply(q, s_col, out=dst)},
        ),
        (
            "metrics (SQNR, cosine, MSE, MAE, max) 4096x4096",
            lambda: rq.metrics(x, y),
            2 * nb,
            {"numpy (float64)": lambda: lambda: np_metrics(x, y)},
        ),
        (
            "entropy calibration, 16M values",
            lambda: rq.calibrate(big, "entropy"),
            None,
            {"onnxruntime HistogramCollector": lambda: _ort_collector("entropy", big)},
        ),
        (
            "percentile calibration, 16M values",
            lambda: rq.calibrate(big, "percentile", exact=False),
            None,
            {"onnxruntime HistogramCollector": lambda: _ort_collector("percentile", big)},
        ),
        (
            "MSE calibration, 16M values (INT8 per tensor, -128..127 as torch's qint8)",
            lambda: rq.calibrate(big, "mse", FULL8),
            None,
            {"torch HistogramObserver": lambda: _torch_histogram_observer(big)},
        ),
        (
            "histogram (range + 2048 bins), 16M values",
            lambda: rq.Observer("percentile", "int8").update(big),
            big.nbytes,
            {"numpy np.histogram": lambda: lambda: np.histogram(np.abs(big), 2048)},
        ),
    ]
    for work, ours, moved, peers in table:
        rows.append(timed_row(work, ours, moved, peers, repeat, few))
    e2e = end_to_end()
    if e2e:
        rows.append(e2e)
    rows += data_aware_rows(repeat)
    rows += gguf_rows(repeat)
    files = whole_file_rows(max(3, repeat // 2))
    rows += onnx_rows(repeat)
    flat = x.reshape(-1)  # the same 64 MiB np.copyto moved, for the histogram-speed target
    t_hist64 = median_time(lambda: rq.Observer("percentile", "int8").update(flat), repeat)
    result = {
        "rows": rows,
        "copy_bw": copy_bw,
        "copy_bw_fresh": copy_bw_fresh,
        "copy_bw1": copy_bw1,
        "cold": cold,
        "t_copy": t_copy,
        "scaling": thread_scaling(repeat),
        "kept_memory": scaling_process(repeat, **KEEP_FREED),
        "files": files,
        "mse_quality": mse_quality(big),
        "t_hist64": t_hist64,
        "mse_cost": mse_over_minmax(),
        "minilm_gptq": minilm_statistics_and_gptq(),
        "threaded": threaded_feeding(repeat),
    }
    text = render(result)
    print(text)
    if write_docs:
        out = docs or Path(__file__).resolve().parents[1] / "docs"
        write(out, text, result)
    return result


def end_to_end() -> Optional[Row]:
    """`rxquant quantize` on MiniLM against reading and writing the same file with safetensors."""
    d = minilm_dir()
    if d is None:
        return None
    src = d / "model.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.safetensors"

        def quantize() -> None:
            cli_main(
                ["quantize", str(src), "-o", str(out), "--precision", "int8", "--method", "minmax", "--quiet"]
            )

        def copy() -> None:
            from safetensors.numpy import load_file, save_file

            save_file(load_file(str(src)), str(Path(tmp) / "copy.safetensors"))

        with contextlib.redirect_stdout(io.StringIO()):
            t = median_time(quantize, 3)
        peer = median_time(copy, 3)
    return Row(
        "end to end: quantize MiniLM (int8/channel) vs safetensors read+write",
        t,
        None,
        {"safetensors load_file + save_file": peer},
        "the peer only copies; the ratio is the cost of quantizing over plain I/O",
    )


def data_aware_rows(repeat: int) -> list[Row]:
    """GPTQ of a 4096x4096 layer (groups of 128, H given) against the numpy GPTQ of
    tests/reference.py, and the Hessian observer against numpy's x.T @ x, same inputs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, N), dtype=np.float32)
    w = (rng.standard_normal((N, N)) * 0.02).astype(np.float32)
    h = rq.HessianObserver().update(x).hessian()
    s = rq.Scheme("int4", symmetric=False, group_size=128)
    qmin, qmax = s.qrange
    few = max(1, repeat // 3)
    t_ref = median_time(lambda: reference.gptq(w, h, qmin, qmax, False, group=128, mse=True), 1, warmup=0)
    return [
        Row(
            "GPTQ 4096x4096, INT4 asym groups of 128 (MSE clip search), Hessian given",
            median_time(lambda: rq.gptq(w, s, h), few),
            None,
            {"numpy GPTQ, same search (tests/reference.py, float64)": t_ref},
        ),
        Row(
            "Hessian observer update, inputs (2048, 4096) float32",
            median_time(lambda: rq.HessianObserver().update(x), repeat),
            None,
            {"numpy x.T @ x (float32)": median_time(lambda: x.T @ x, repeat)},
            "numpy's product is BLAS (syrk on the triangle); rxquant sums blocks in float64",
        ),
    ]


def llama_cpp_bin() -> Optional[Path]:
    """llama.cpp's tools: $LLAMA_CPP_BIN, or what `make interop` built."""
    built = Path(__file__).resolve().parents[1] / ".cache/llama.cpp/build/bin"
    for p in (os.environ.get("LLAMA_CPP_BIN"), built):
        if p and (Path(p) / "llama-quantize").is_file():
            return Path(p)
    return None


def gguf_rows(repeat: int) -> list[Row]:
    """MiniLM as an F32 GGUF: opening it (rxquant's reader against the gguf package's), and
    quantizing it GGUF to GGUF with llama.cpp's rounding (rxquant in-process and its command line
    against llama-quantize, same file, same threads)."""
    import gguf

    import rxquant.gguf as rg
    from rxquant.formats.gguf_file import GgufFile

    d = minilm_dir()
    if d is None:
        return []
    rows = []
    bin_dir = llama_cpp_bin()
    threads = str(rq.threads())
    few = max(3, repeat // 2)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "f32.gguf", Path(tmp) / "q.gguf"
        rg.quantize_file(d, src, type="f32")
        rows.append(
            Row(
                "open MiniLM's F32 GGUF (30,522-token vocabulary)",
                median_time(lambda: GgufFile(src), repeat),
                None,
                {"gguf.GGUFReader": median_time(lambda: gguf.GGUFReader(str(src)), few)},
            )
        )

        def process(cmd: list[str]) -> float:
            return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), few)

        for ty in ("Q4_0", "Q4_K"):
            t_cli = process(
                [sys.executable, "-m", "rxquant", "quantize", str(src), "-o", str(out), "--type", ty, "-q"]
            )
            peers: dict[str, Optional[float]] = {"llama-quantize --pure (process)": None}
            if bin_dir is not None:
                peers["llama-quantize --pure (process)"] = process(
                    [str(bin_dir / "llama-quantize"), "--pure", str(src), str(out), ty, threads]
                )
            rows.append(
                Row(
                    f"MiniLM F32 GGUF -> {ty} GGUF, nearest (rxquant.gguf.quantize_file)",
                    median_time(lambda ty=ty: rg.quantize_file(src, out, type=ty), few),
                    None,
                    peers,
                    f"`rxquant quantize` as a process: {t_cli * 1e3:.0f} ms (Python start-up and imports)",
                )
            )
    return rows


def onnx_rows(repeat: int) -> list[Row]:
    """MiniLM as ONNX (rxquant's exporter), INT4 asymmetric blocks of 32 rounded to nearest:
    rxquant.onnx.quantize_model against ONNX Runtime's MatMulNBitsQuantizer (RTN), each loading,
    quantizing and saving the same file."""
    import logging

    import rxquant.onnx as ro
    from rxquant.models.bert_onnx import export_bert

    d = minilm_dir()
    if d is None:
        return []
    few = max(3, repeat // 2)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "m.onnx", Path(tmp) / "q.onnx"
        export_bert(d, src)
        scheme = rq.Scheme("int4", symmetric=False, group_size=32)
        t_nosync: Optional[float] = None
        try:
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import (
                DefaultWeightOnlyQuantConfig,
                MatMulNBitsQuantizer,
            )
        except ImportError:
            t_rx, t_ort = median_time(lambda: ro.quantize_model(src, out, scheme), few), None
        else:
            logging.disable(logging.INFO)
            cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False)

            def ort_rtn() -> None:
                q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
                q.process()
                q.model.save_model_to_file(str(Path(tmp) / "ort.onnx"))

            t_rx, t_ort = alternating_times(lambda: ro.quantize_model(src, out, scheme), ort_rtn, 2 * few)
            # The same race with rxquant's fsync skipped: what durability costs here.
            with mock.patch("rxquant.formats.onnx_model.os.fsync"):
                t_nosync, _ = alternating_times(lambda: ro.quantize_model(src, out, scheme), ort_rtn, 2 * few)
        note = "timed in turns; rxquant syncs the file to disk before renaming it into place, "
        note += "ONNX Runtime writes in place"
        if t_nosync is not None:
            note += f"; rxquant with the sync skipped: {t_nosync * 1e3:.0f} ms"
        return [
            Row(
                "MiniLM ONNX -> INT4 asym blocks of 32, nearest (load, quantize, save)",
                t_rx,
                None,
                {"onnxruntime MatMulNBitsQuantizer RTN": t_ort},
                note,
            )
        ]


def threaded_feeding(repeat: int) -> list[tuple[str, float, float]]:
    """Feeding one observer 64 batches of 512x1024 from 8 threads against one thread:
    (what, serial s, 8 threads s)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    bs = [rng.laplace(size=(512, 1024)).astype(np.float32) for _ in range(64)]

    def feed(make: Callable[[], Any], threads: int) -> Callable[[], Any]:
        def go() -> None:
            obs = make()
            if threads == 1:
                for b in bs:
                    obs.update(b)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(obs.update, bs))

        return go

    out = []
    for what, make in (
        ("Observer('entropy', 'int8')", lambda: rq.Observer("entropy", "int8")),
        ("HessianObserver", rq.HessianObserver),
    ):
        out.append((what, median_time(feed(make, 1), repeat), median_time(feed(make, 8), repeat)))
    return out


def minilm_statistics_and_gptq() -> Optional[tuple[float, float]]:
    """Wall time of `rxquant statistics` (128 sentences) and `rxquant quantize --rounding gptq` of
    MiniLM's encoder (INT4 asymmetric groups of 32), each a new process."""
    d = minilm_dir()
    if d is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        stats = str(Path(tmp) / "s.safetensors")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rxquant", "statistics", str(d), "-o", stats], check=True,
                       capture_output=True)  # fmt: skip
        t_stats = time.perf_counter() - t
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "rxquant", "quantize", str(d / "model.safetensors"), "-o",
               str(Path(tmp) / "q.safetensors"), "--precision", "int4", "--granularity", "group:32",
               "--asymmetric", "--rounding", "gptq", "--statistics", stats, "--include",
               r"encoder\.layer\.\d+\..*\.weight", "--quiet"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return t_stats, time.perf_counter() - t


def mse_over_minmax(repeat: int = 3) -> Optional[tuple[float, float]]:
    """Wall time of `rxquant quantize` (a new process, start-up included) on MiniLM, INT4 groups of
    32, with --method minmax and with --method mse: (minmax s, mse s)."""
    d = minilm_dir()
    if d is None:
        return None
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("minmax", "mse"):
            cmd = [sys.executable, "-m", "rxquant", "quantize", str(d / "model.safetensors"), "-o",
                   str(Path(tmp) / "q.safetensors"), "--precision", "int4", "--granularity", "group:32",
                   "--method", method, "--quiet"]  # fmt: skip
            out.append(
                median_time(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True), repeat)
            )
    return out[0], out[1]


def render(r: dict[str, Any]) -> str:
    lines = [
        f"machine: {os.cpu_count()} logical CPUs, {cpu_model()}; rxquant threads: {rq.threads()} "
        "(peers get the same: torch.set_num_threads, OMP_NUM_THREADS; OpenMP threads sleep between "
        "calls, OMP_WAIT_POLICY=PASSIVE, so that a peer's spinning threads do not slow the next timing)",
        f"memory bandwidth, copy of 64 MiB (read + write): {r['copy_bw'] / 1e9:.2f} GB/s with "
        f"{rq.threads()} threads (the roofline below), {r['copy_bw1'] / 1e9:.2f} GB/s single-threaded; "
        f"into a new array each time, its pages faulted in as a kernel's new output's are: "
        f"{r['copy_bw_fresh'] / 1e9:.2f} GB/s with {rq.threads()} threads",
        "",
        "| work | rxquant (ms) | fastest peer | peer (ms) | speed-up | of parallel copy bandwidth |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in r["rows"]:
        best = row.fastest_peer()
        peer = (
            f"{best[0]} | {best[1] * 1e3:.2f} | {best[1] / row.rxquant_s:.1f}x"
            if best
            else ("(none installed) | | " if row.peers else "(no peer does this) | | ")
        )
        roof = f"{row.bytes_moved / row.rxquant_s / r['copy_bw'] * 100:.0f}%" if row.bytes_moved else ""
        lines.append(f"| {row.work} | {row.rxquant_s * 1e3:.2f} | {peer} | {roof} |")
    lines += ["", "All peers, medians (ms; 'missing' = not installed here):", ""]
    for row in r["rows"]:
        peers = (
            ", ".join(f"{k}: {'missing' if v is None else f'{v * 1e3:.2f}'}" for k, v in row.peers.items())
            or "no peer does this"
        )
        lines.append(f"- {row.work}: {peers}" + (f" ({row.notes})" if row.notes else ""))
    lines += ["", *render_scaling(r["scaling"])]
    if r.get("files"):
        lines += ["", *render_files(r["files"])]
    if r.get("mse_quality"):
        q = r["mse_quality"]
        lines += [
            "",
            "MSE calibration quality, INT8 per tensor on the same 16M Laplace values (reconstruction MSE): "
            + ", ".join(f"{k} {v:.4g}" for k, v in q.items()),
        ]
    lines += [
        "",
        f"histogram speed / np.copyto speed (same 64 MiB of float32): {r['t_copy'] / r['t_hist64']:.2f} "
        "(target >= 0.5)",
    ]
    for what, serial, threaded in r.get("threaded", []):
        lines.append(
            f"{what}: 64 batches of 512x1024 from 8 threads {threaded * 1e3:.1f} ms, from one "
            f"{serial * 1e3:.1f} ms ({serial / threaded:.2f}x; {os.cpu_count()} CPUs)"
        )
    if r.get("minilm_gptq"):
        st, gq = r["minilm_gptq"]
        lines.append(
            f"MiniLM data-aware: rxquant statistics (128 sentences) {st:.1f} s + rxquant quantize "
            f"--rounding gptq (36 layers) {gq:.1f} s = {st + gq:.1f} s (target < 60 s)"
        )
    if r.get("mse_cost"):
        mm, mse = r["mse_cost"]
        lines.append(
            f"rxquant quantize MiniLM --precision int4 --granularity group:32 (process wall time): "
            f"--method minmax {mm:.2f} s, --method mse {mse:.2f} s ({mse / mm:.2f}x; target <= 3)"
        )
    return "\n".join(lines)


def scaling_pct(point: dict[str, Optional[float]], name: str) -> Optional[float]:
    """A thread-scaling row's share (%) of the parallel copy bandwidth measured in the same process."""
    t, copy, moved = point.get(name), point.get(SCALING[-1][0]), dict(SCALING).get(name)
    if not (t and copy and moved) or name == SCALING[-1][0]:
        return None
    return moved / t / (8 * N * N / copy) * 100


def render_scaling(sc: dict[Any, dict[str, Optional[float]]]) -> list[str]:
    counts = sorted(sc, key=int)
    lines = [
        "Thread scaling (ms, medians; each thread count a new process; % = of the parallel copy "
        "bandwidth at the same thread count):",
        "",
        "| kernel | " + " | ".join(f"{c} thread{'s' if int(c) > 1 else ''}" for c in counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    for name, _ in SCALING:
        cells = []
        for c in counts:
            t, share = sc[c].get(name), scaling_pct(sc[c], name)
            if t is None:
                cells.append("missing")
            elif share is not None:
                cells.append(f"{t * 1e3:.2f} ({share:.0f}%)")
            else:
                cells.append(f"{t * 1e3:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_files(f: dict[str, Any]) -> list[str]:
    lines = [
        f"Whole files, MiniLM, each a new process with {f['threads']} threads (wall time, medians):",
        "",
        "| job | seconds |",
        "|---|---:|",
    ]
    for what, t in f["rows"]:
        lines.append(f"| {what} | {'not built/installed' if t is None else f'{t:.3f}'} |")
    lines += ["", "Python start-up share: " + ", ".join(f"{k} {v:.3f} s" for k, v in f["startup"].items())]
    return lines


def analysis(r: dict[str, Any]) -> str:
    """The reading of this run's tables: every number below is taken from `r`."""
    import textwrap

    def row(prefix: str) -> Row:
        return next(x for x in r["rows"] if x.work.startswith(prefix))

    def pct(x: Row) -> float:
        return (x.bytes_moved or 0) / x.rxquant_s / r["copy_bw"] * 100

    def peer(x: Row) -> float:
        best = x.fastest_peer()
        return best[1] if best else float("nan")

    def over_copy(rows: list[Row]) -> str:
        """Why rows can pass the copy's bandwidth (read-mostly kernels, software prefetch)."""
        if not rows:
            return "No row passes it in this run. "
        names = "; ".join(f'"{x.work}" {pct(x):.0f}%' for x in rows)
        return (
            f"Rows above 100% ({names}) move bytes faster than the copy, for two reasons: a copy's "
            "write first reads the destination's cache line (read for ownership, so it moves three "
            "bytes for the two counted), while these kernels write a quarter of what they read or "
            "nothing; and they prefetch 8 KiB ahead in software, where numpy's copy relies on the "
            "hardware prefetcher. Rows that read their input twice (a range pass, then the codes) "
            "count both reads. So the copy is the bandwidth a plain streaming loop gets, not a hard "
            "ceiling. "
        )

    def roofline_misses(kernels: dict[str, tuple[float, str]]) -> str:
        """The kernels under the 60% target, each with what bounds it."""
        missed = [f"{name} ({why})" for name, (p, why) in kernels.items() if p < 60]
        if not missed:
            return "Every element-wise kernel reaches the 60% target in this run."
        return "Under the 60% target in this run: " + "; ".join(missed) + "."

    def bullet(text: str) -> str:
        return textwrap.fill(text, 100, initial_indent="- ", subsequent_indent="  ")

    sc = r["scaling"]
    counts = sorted(sc, key=int)
    g4 = [(c, v) for c in counts if (v := scaling_pct(sc[c], "INT4 groups of 32 + packing")) is not None]
    ours, theirs = "INT8 per tensor, scale given", "torch.quantize_per_tensor, scale given"
    pairs = [(c, sc[c][ours], sc[c][theirs]) for c in counts if sc[c].get(ours) and sc[c].get(theirs)]
    vs_torch = "; ".join(
        f"{c} thread{'s' if int(c) > 1 else ''}: {a * 1e3:.2f} against {b * 1e3:.2f} ms" for c, a, b in pairs
    )
    behind = [c for c, a, b in pairs if a > b]
    given = row("INT8 quantize per tensor 4096x4096, scale given")
    given_c = row("INT8 quantize per channel 4096x4096, scales given")
    groups = [row("INT8 symmetric groups of 32"), row("INT4 groups of 32 + packing")]
    ggml_rows = [row("llama.cpp Q4_0 blocks"), row("llama.cpp Q8_0 blocks")]
    deq, met, hist = row("dequantize INT8"), row("metrics"), row("histogram")
    deq_out = row("dequantize INT8 per channel 4096x4096 into")
    gdeq, gdeq_out = (
        row("llama.cpp Q4_0 blocks 4096x4096 back"),
        row("llama.cpp Q4_0 blocks 4096x4096 back to float32 into"),
    )
    mse_row, hess = row("MSE calibration"), row("Hessian observer")
    new_deq = "dequantize INT8 per channel"
    onnx_row = next((x for x in r["rows"] if x.work.startswith("MiniLM ONNX")), None)
    q = r.get("mse_quality") or {}
    fresh_pages = (
        "its 64 MiB output is a new array, whose fresh pages (too large for the allocator to keep "
        "between calls) the copy into an existing buffer never faults in: a copy into a new array "
        f"runs at {r['copy_bw_fresh'] / r['copy_bw'] * 100:.0f}% of the roofline in this run "
        f"(64 MiB copied into a new array: {2 * 4 * N * N / r['copy_bw_fresh'] * 1e3:.2f} ms, against "
        f"{deq.rxquant_s * 1e3:.2f} ms for the INT8 dequantize into a new array)"
    )
    parts = [
        "Targets (issue 17): INT8 per-tensor quantize with a given scale at least as fast as "
        "`torch.quantize_per_tensor` at every thread count; element-wise kernels at >= 60% of the "
        "parallel copy bandwidth at all cores; MSE calibration >= 10x torch's HistogramObserver with "
        "an error at least as small; `rxquant quantize` on MiniLM no slower than `llama-quantize` and "
        "ONNX Runtime's RTN, Python start-up included. This machine is a shared 2-core VM: the same "
        "row moves by 10-40% between runs (and more: whole runs differ in bandwidth), so compare rows "
        "of one run, and rerun before drawing conclusions from one ratio.",
    ]
    bullets = [
        '**Fair rows.** Quantize rows come in pairs: "scale(s) given" hands every tool the same '
        'parameters and times only the codes; "range + scale + quantize" lets every tool compute its own.',
        "**Warm-up.** Every timing (rxquant's, each peer's and the copy's) follows at least "
        f"{WARMUP_S:.1f} s of warm-up calls: on this VM a multi-threaded call right after idle or "
        "single-threaded work (such as the previous row's peers) runs slower until the host has "
        "woken every vCPU. The `out=` dequantize, which allocates nothing, took "
        f"{r['cold'][0] * 1e3:.1f} ms as the first call after 1 s idle against {r['cold'][1] * 1e3:.1f} "
        "ms warm in this run. A user's first call after a pause pays that here, not on a machine "
        "whose cores wake in microseconds.",
        f"**Per-tensor INT8 against torch**, scale given: {given.rxquant_s * 1e3:.2f} against "
        f"{peer(given) * 1e3:.2f} ms in the main table"
        + (
            " (timed in turns; back to back, rxquant {:.2f} against torch {:.2f} ms)".format(
                *(t * 1e3 for t in given.alone)
            )
            if given.alone
            else ""
        )
        + f"; in the thread-scaling rows {vs_torch}. "
        + (
            "Torch is ahead "
            + " and ".join(
                (["in the main table"] if given.rxquant_s > peer(given) else [])
                + ([f"at {', '.join(map(str, behind))} thread(s) in the scaling rows"] if behind else [])
            )
            + " in this run: the target is missed there. "
            if behind or given.rxquant_s > peer(given)
            else "rxquant is ahead at every thread count in this run. "
        )
        + "Torch multiplies by `1/s`; rxquant's AVX2 kernel multiplies too, but only where the product "
        "provably rounds like `x / s`, and divides elsewhere, so its codes stay bit-identical to ONNX "
        "Runtime's QuantizeLinear and `numpy.rint(x / s)` (`rust/src/quant_avx2.rs`).",
        "**Roofline.** The bandwidth column is against a multi-threaded copy into an existing buffer "
        "(all rxquant threads, numpy's `copyto` on slices, the GIL released). "
        + over_copy([x for x in r["rows"] if x.bytes_moved and pct(x) > 100])
        + f"Quantize with given parameters reaches {pct(given):.0f}%; the per-group kernels "
        f"(Q8_0-like, INT4 g32 with packing) {min(map(pct, groups)):.0f}-{max(map(pct, groups)):.0f}%; "
        f"llama.cpp's Q4_0 and Q8_0 blocks {pct(ggml_rows[0]):.0f}% and {pct(ggml_rows[1]):.0f}%; "
        f"dequantize {pct(deq):.0f}% ({pct(deq_out):.0f}% into an existing array, `out=`); llama.cpp's "
        f"Q4_0 blocks back to float32 {pct(gdeq):.0f}% ({pct(gdeq_out):.0f}% with `out=`); metrics "
        f"{pct(met):.0f}%; the histogram {pct(hist):.0f}%. "
        + roofline_misses(
            {
                "quantize with given parameters": (
                    min(pct(given), pct(given_c)),
                    "no bound of its own: one loop per scale, per tensor or per row; in the "
                    "thread-scaling rows of this run it takes "
                    + ", ".join(
                        f"{sc[c][k] * 1e3:.2f} ms ({k}, {c} thread{'s' if int(c) > 1 else ''})"
                        for c in counts
                        for k in (ours, "INT8 per channel, scales given")
                        if sc[c].get(k)
                    )
                    + ", to compare with the main table's rows (this machine drifts between timings)",
                ),
                "the per-group kernels": (
                    min(map(pct, groups)),
                    "one pass in AVX2 intrinsics, eight groups of 32 at a time: a range fold, two "
                    "float64 divisions per group (parameters equal to ONNX Runtime's bit for bit) "
                    "and tie-checked codes, more arithmetic per byte than a copy's"
                    + (
                        "; the same INT4 call reaches "
                        + ", ".join(f"{v:.0f}% at {c} thread{'s' if int(c) > 1 else ''}" for c, v in g4)
                        + " in the thread-scaling rows (each thread count a fresh process)"
                        if g4
                        else ""
                    ),
                ),
                "llama.cpp's Q4_0/Q8_0 blocks": (
                    min(map(pct, ggml_rows)),
                    "a range, a float16 scale and the codes for every 32 values, in AVX2 "
                    "intrinsics, more arithmetic per byte than a copy's",
                ),
                "dequantize (INT8, and llama.cpp's Q4_0 blocks)": (
                    min(pct(deq), pct(gdeq)),
                    "four bytes or more written for each byte read, and " + fresh_pages + "; into "
                    "an existing array (`out=`) it does not pay for them",
                ),
                "metrics": (pct(met), "six float64 sums per value, to match numpy's float64 to 1e-12"),
                "the histogram": (
                    pct(hist),
                    "one pass: bins and range in vectors, and one scalar increment (a load and a "
                    "store to a count) per value, interleaved with the next values' binning",
                ),
            }
        ),
        "**New arrays.** A kernel that returns a new array also faults in its output's fresh pages, "
        "which the operating system zeroes on first touch; on this VM what that costs varies from "
        "process to process. Dequantize INT8 per channel into a new array took "
        f"{deq.rxquant_s * 1e3:.2f} ms in the main table and "
        + ", ".join(
            f"{sc[c][new_deq] * 1e3:.2f} ms at {c} thread{'s' if int(c) > 1 else ''}"
            for c in counts
            if sc[c].get(new_deq)
        )
        + " in the thread-scaling processes, against "
        f"{deq_out.rxquant_s * 1e3:.2f} ms into an existing array in the main table. Passing `out=` "
        "(dequantize, `rxquant.gguf.dequantize_tensor`) reuses a buffer and skips that cost"
        + (
            "; so does a process whose C allocator keeps the memory it frees: with glibc's "
            + " ".join(f"`{k}={v}`" for k, v in KEEP_FREED.items())
            + f" (at {rq.threads()} threads) the call into a new array took "
            f"{r['kept_memory'][new_deq] * 1e3:.2f} ms and into an existing one "
            f"{r['kept_memory'][new_deq + ' into an existing array (out=)'] * 1e3:.2f} ms. That is a "
            "choice for the whole process (its freed memory is not given back to the system), so "
            "rxquant leaves it to the user."
            if r.get("kept_memory") and r["kept_memory"].get(new_deq)
            else "."
        ),
        f"**MSE calibration** is {peer(mse_row) / mse_row.rxquant_s:.1f}x torch's HistogramObserver here "
        + ("(target 10x: met)" if peer(mse_row) / mse_row.rxquant_s >= 10 else "(target 10x: missed)")
        + (
            f" timed in turns with it; back to back, rxquant {mse_row.alone[0] * 1e3:.2f} against torch "
            f"{mse_row.alone[1] * 1e3:.2f} ms ({mse_row.alone[1] / mse_row.alone[0]:.1f}x)"
            if mse_row.alone
            else ""
        )
        + (
            f", with a reconstruction error of {q['rxquant mse']:.4g} against torch's "
            f"{q['torch HistogramObserver']:.4g} on the same grid (-128..127). "
            if q
            else ". "
        )
        + f"Its time is one histogram pass that also finds the range ({hist.rxquant_s * 1e3:.1f} ms in "
        "the histogram row; power-of-two bins widen exactly as the range grows, docs/calibration.md) "
        f"and the clip search; 10x would be {peer(mse_row) / 10 * 1e3:.1f} ms for 16M values, and "
        f"reading them once at the copy bandwidth takes {4 * N * N / r['copy_bw'] * 1e3:.1f} ms before "
        "one histogram increment per value.",
    ]
    if r.get("files"):
        files, start = dict(r["files"]["rows"]), r["files"]["startup"]
        rx_o = files.get("ONNX -> INT4 asym g32, rxquant quantize --rounding nearest")
        ort = files.get("ONNX -> INT4 asym g32, ONNX Runtime MatMulNBitsQuantizer RTN")
        imp = start.get("python -c 'import rxquant.apps.cli'")
        text = "**Whole files, as processes.** "
        if rx_o and ort:
            text += f"ONNX: rxquant {rx_o:.3f} s against ONNX Runtime's RTN {ort:.3f} s. "
        for ty in ("Q4_0", "Q4_K", "IQ4_NL"):
            rx_g = files.get(f"GGUF F32 -> {ty}, rxquant quantize --rounding nearest")
            ll = files.get(f"GGUF F32 -> {ty}, llama-quantize --pure")
            if rx_g and ll:
                text += f"GGUF {ty}: rxquant {rx_g:.3f} s against `llama-quantize` {ll:.3f} s "
                text += f"({ll / rx_g:.2f}x"
                text += ", missed). " if rx_g > ll else "). "
        if imp:
            text += (
                f"Importing rxquant's CLI takes {imp:.3f} s; requantizing a GGUF file imports no numpy "
                "(the tensors go from the source's memory map to the Rust core and back as bytes), "
                "and rxquant syncs the file to disk before renaming it into place, which "
                "`llama-quantize` does not. "
            )
        text += (
            "`--rounding mse` for GGUF Q4_0 searches each block's scale; the cheaper data-aware choice "
            "is `--rounding gptq` with statistics."
        )
        bullets.append(text)
    if onnx_row and onnx_row.fastest_peer():
        bullets.append(
            f"**ONNX in-process** (load, quantize, save; the two tools timed in turns): rxquant "
            f"{onnx_row.rxquant_s * 1e3:.0f} ms against ONNX Runtime's RTN {peer(onnx_row) * 1e3:.0f} ms"
            + (" (missed). " if onnx_row.rxquant_s > peer(onnx_row) else ". ")
            + "rxquant syncs the file to disk before renaming it into place, which ONNX Runtime does "
            "not; the row's note gives rxquant's time with the sync skipped."
        )
    bullets.append(
        f"**Hessian observer** is {peer(hess) / hess.rxquant_s:.1f}x numpy's BLAS `x.T @ x`: it sums "
        "float32 blocks of 4096 rows into float64 (numpy's product is one float32 syrk). That is a "
        "deliberate precision choice; the GPU path (docs/gpu.md) is where the product should go on big "
        "layers."
    )
    body = "\n\n".join(textwrap.fill(p, 100) for p in parts)
    return (
        "## Reading the tables, and where targets are missed\n\n"
        + body
        + "\n\n"
        + "\n".join(bullet(b) for b in bullets)
        + "\n"
    )


def write(docs: Path, text: str, r: dict[str, Any]) -> None:
    docs.mkdir(exist_ok=True)
    body = (
        "# Performance\n\nWritten by `make bench` (`python benches/compare.py`, also `rxquant bench`). "
        "Every number below comes from one run of that script on the machine it names; rerun it to "
        "get yours. The roofline column is (bytes read + bytes written) / time / the machine's parallel "
        "copy bandwidth (a STREAM-like copy on all rxquant threads). Rows marked 'given' time the "
        "same work on both sides (parameters given to every tool); 'range + scale + quantize' rows "
        "time every tool computing its own parameters.\n\n"
        + text
        + "\n\n![speed-ups](performance.png)\n\n"
        + analysis(r)
    )
    # Keep the section benches/streaming_memory.py writes (it takes minutes, so it runs apart).
    from streaming_memory import BEGIN, END

    old = (docs / "performance.md").read_text() if (docs / "performance.md").exists() else ""
    if BEGIN in old and END in old:
        body += "\n" + BEGIN + old.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    with atomic_open(docs / "performance.md") as f:
        f.write(body)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart written")
        return
    rows = [(row.work, row.fastest_peer()[1] / row.rxquant_s) for row in r["rows"] if row.fastest_peer()]
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(9, 0.45 * len(rows) + 5.5), gridspec_kw={"height_ratios": [0.45 * len(rows) + 1.2, 4]}
    )
    ax.barh([w for w, _ in rows][::-1], [v for _, v in rows][::-1], color="#c0392b")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the fastest installed peer (log scale)")
    ax.set_title(f"rxquant vs peers, {os.cpu_count()} CPUs")
    sc = r["scaling"]
    counts = sorted(sc, key=int)
    for name, moved in SCALING:
        ts = [sc[c].get(name) for c in counts]
        if moved and all(t is not None for t in ts):
            ax2.plot([int(c) for c in counts], [moved / t / 1e9 for t in ts], marker="o", label=name)
    ax2.set_xlabel("threads")
    ax2.set_ylabel("GB/s (bytes read + written)")
    ax2.set_xscale("log", base=2)
    ax2.legend(fontsize=7)
    ax2.set_title("thread scaling")
    fig.tight_layout()
    fig.savefig(docs / "performance.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        # The peers' OpenMP threads (torch, ONNX Runtime) spin for a while after each call, and on
        # a machine with few cores that spinning takes the CPU from whatever is timed next (it
        # doubled rxquant's per-tensor time when timed in turns with torch). Passive threads sleep
        # at once; the setting must be there before a runtime starts, so the script restarts.
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if sys.argv[1:2] == ["--scaling-point"]:  # one point of the thread-scaling curve
        import json

        print(json.dumps(scaling_point(int(sys.argv[2]))))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-docs", action="store_true", help="print only")
    a = ap.parse_args()
    run(repeat=a.repeat, write_docs=not a.no_docs)
