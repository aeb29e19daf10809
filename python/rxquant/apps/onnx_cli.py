"""The ONNX side of the command line: ``quantize`` of an ``.onnx`` model and ``statistics`` of
one run by ONNX Runtime. :mod:`rxquant.apps.cli` routes here."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections import Counter
from pathlib import Path

from .. import onnx as ro
from ..core.scheme import Scheme
from ..formats.statistics import Statistics
from .console import UsageError, emit, finite, human_size, sqnr_report, wrote
from .options import refuse_device, refuse_given
from .progress import PerItem


def _scheme(args: argparse.Namespace) -> Scheme:
    precision = args.precision or "int4"
    if precision not in ("int4", "int8"):
        raise UsageError(
            f"ONNX Runtime's weight-only operators take --precision int4 or int8, not {precision}"
        )
    g = args.granularity or "group:32"
    sym = not args.asymmetric
    if g == "channel":  # one scale per output: a per-axis DequantizeLinear (--format qdq)
        return Scheme(precision, symmetric=sym, signed_scale=sym, axis=0)
    m = re.fullmatch(r"group:(\d+)", g)
    if not m or int(m.group(1)) <= 0:
        raise UsageError(
            f"ONNX weight-only quantization is blockwise (--granularity group:N) or, with --format qdq, "
            f"per output channel (--granularity channel), not {g!r}"
        )
    return Scheme(precision, symmetric=sym, signed_scale=sym, axis=-1, group_size=int(m.group(1)))


def cmd_quantize_onnx(args: argparse.Namespace, fallbacks: set[str]) -> int:
    """``rxquant quantize model.onnx -o model.q.onnx``: see :func:`rxquant.onnx.quantize_model`."""
    if not str(args.output).lower().endswith(".onnx"):
        raise UsageError(
            f"{args.file} is an ONNX model; the output must be an .onnx file too, not {args.output}"
        )
    refuse_given(
        UsageError,
        (
            ("--plan", args.plan),
            ("--type", args.type),
            ("--budget", args.budget),
            ("--imatrix", args.imatrix),
            ("--method", args.method_given),
            ("--include", args.include),
            ("--exclude", args.exclude),
            ("--allow-requantize", args.allow_requantize or None),
        ),
        "{do_not} apply to ONNX models; they take --precision, --granularity group:N, --asymmetric, "
        "--rounding, --statistics, --format, --zero-points, --embeddings",
    )
    refuse_device(args, UsageError, "ONNX quantization")
    if "channel" in fallbacks:
        raise UsageError(
            "--fallback channel does not apply to ONNX models: choose a group size that divides them"
        )
    scheme = _scheme(args)
    rounding = args.rounding or "nearest"
    if rounding in ("importance", "gptq") and args.statistics is None:
        raise UsageError(f"--rounding {rounding} needs --statistics (rxquant statistics MODEL.onnx ...)")
    zero_points = args.zero_points or "int"
    stats = None
    if args.statistics is not None:
        try:
            stats = Statistics(args.statistics)
        except (ValueError, ImportError) as e:
            raise UsageError(str(e)) from None
    if os.path.isdir(args.output):
        raise UsageError(f"output {args.output} is a directory; give a file name")
    ops = ("MatMul", "Gemm", "Gather") if args.embeddings else ("MatMul", "Gemm")
    # The library's refusals of the request (a RequestError) exit 2, like the command line's own.
    with PerItem("quantizing", quiet=args.quiet or args.json) as tick:
        res = ro.quantize_model(
            args.file,
            args.output,
            scheme,
            rounding=rounding,
            statistics=stats,
            format=args.format or ("qdq" if scheme.group_size is None else "matmulnbits"),
            op_types=ops,
            zero_points=zero_points,
            fallback_nearest="nearest" in fallbacks,
            progress=tick,
        )
    became = Counter(r.became for r in res.quantized)
    lines = [
        f"{wrote(args.output, res.bytes, res.source_bytes)}; {scheme.describe()}, rounding {rounding}",
        "quantized: " + ", ".join(f"{n} weights -> {op}" for op, n in became.most_common()),
    ]
    for r in res.quantized:
        if r.reason:
            lines.append(f"fallback: {r.name}: {r.reason}")
    reasons = Counter(r.reason for r in res.left)
    for why, n in reasons.most_common():
        names = [r.nodes[0] for r in res.left if r.reason == why]
        more = f" and {n - 2} more" if n > 2 else ""
        lines.append(f"left as it was: {n} node(s) ({why}): {', '.join(names[:2])}{more}")
    data = {
        "output": str(args.output),
        "bytes": res.bytes,
        "source_bytes": res.source_bytes,
        "quantized": [vars(r) | {"shape": list(r.shape)} for r in res.quantized],
        "left": [vars(r) | {"shape": list(r.shape)} for r in res.left],
    }
    emit(args, data, "\n".join(lines))
    return 0


def cmd_statistics_onnx(args: argparse.Namespace, sentences: list[str]) -> int:
    """Input statistics of an ONNX text model run by ONNX Runtime: ``--tokenizer`` (a
    tokenizer.json or its folder) turns sentences into ``input_ids``/``attention_mask`` feeds
    (and ``token_type_ids`` when the model takes them)."""
    from ..models.bert_onnx import sentence_feeds

    tok = Path(args.tokenizer) if args.tokenizer else Path(args.model_dir).parent
    folder = tok if tok.is_dir() else tok.parent
    if not (folder / "tokenizer.json").is_file():
        raise UsageError(f"{folder} has no tokenizer.json: give --tokenizer for the ONNX model's inputs")
    feeds = sentence_feeds(folder, sentences)
    stats = ro.collect_statistics(args.model_dir, feeds, path=args.output, kind=args.kind)
    n = sum(len(f["input_ids"]) for f in feeds)
    lines = [f"{len(stats)} weights, {n} sentences, run by ONNX Runtime"]
    lines.append(f"wrote {args.output}: {human_size(os.path.getsize(args.output))} ({args.kind})")
    emit(args, {"output": args.output, "layers": len(stats), "sentences": n}, "\n".join(lines))
    return 0


def cmd_inspect_onnx(args: argparse.Namespace) -> int:
    """``rxquant inspect model.onnx``: the initializers, which weights ``quantize`` would turn into
    blocks (MatMul/Gemm; ``--embeddings`` adds Gather tables), and why the others stay."""
    from ..formats.onnx_model import QUANTIZED_INPUTS, load_model, onnx_package

    onnx = onnx_package()
    model = load_model(args.file)
    chosen, left = ro.weights(model)
    why = {w.name: w.reason for w in left}
    # The initializers of weights quantized already (a quantized model's), by their role.
    for n in model.graph.node:
        for i, role in QUANTIZED_INPUTS.get(n.op_type, {}).items():
            if i < len(n.input) and n.input[i]:
                why.setdefault(n.input[i], f"quantized already: {role} of {n.op_type}")
    rows = []
    for t in model.graph.initializer:
        shape = [int(d) for d in t.dims]
        name = onnx.TensorProto.DataType.Name(t.data_type)
        bits = (
            4
            if name in ("INT4", "UINT4", "FLOAT4E2M1")
            else 8 * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        )
        action = "quantize" if t.name in chosen else "keep"
        rows.append(
            {
                "name": t.name,
                "dtype": name,
                "shape": shape,
                "bytes": -(-math.prod(shape) * bits // 8),
                "default": action,
                "reason": why.get(t.name),
            }
        )
    ops = Counter(n.op_type for n in model.graph.node)
    total = sum(r["bytes"] for r in rows)
    lines = [f"{'tensor':<52} {'dtype':>8} {'shape':>14} {'size':>10}  default"]
    for r in rows:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        what = r["default"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(f"{r['name'][:52]:<52} {r['dtype']:>8} {shape:>14} {human_size(r['bytes']):>10}  {what}")
    lines.append(
        f"{len(rows)} initializers, {human_size(total)}; {len(chosen)} weights selected for quantization"
    )
    lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in ops.most_common()))
    data = {"file": str(args.file), "tensors": rows, "total_bytes": total, "ops": dict(ops)}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_verify_onnx(args: argparse.Namespace) -> int:
    """``rxquant verify model.onnx model.q.onnx``: per-weight SQNR and cosine of each quantized
    weight (MatMulNBits, blockwise DequantizeLinear or GatherBlockQuantized, decoded as ONNX
    Runtime defines them) against the original's float initializer."""
    import numpy as np

    from ..core.arrays import sum_squares
    from ..core.errors import naming
    from ..core.ops import metrics
    from ..formats.onnx_model import decoded_weights, load_model, to_array

    original = load_model(args.original)
    ref = {t.name: t for t in original.graph.initializer}
    # Weights a Gemm reads transposed are stored [N, K]; the decoded ones are [K, N].
    transposed = {
        n.input[1]
        for n in original.graph.node
        if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute)
    }
    got = decoded_weights(load_model(args.quantized))
    if not got:
        swapped = (
            f"; the original {args.original} has them: were the two swapped? (verify ORIGINAL QUANTIZED)"
            if decoded_weights(original)
            else ""
        )
        raise UsageError(
            f"{args.quantized} has no MatMulNBits, blockwise DequantizeLinear or GatherBlockQuantized "
            f"weights to compare{swapped}"
        )
    rows = []
    sx = se = 0.0
    for name, (op, y) in got.items():
        if name not in ref:
            if name in decoded_weights(original):
                raise UsageError(
                    f"verify ORIGINAL QUANTIZED: {name!r} is quantized in the original {args.original} too; "
                    "give the float model it was quantized from first"
                )
            raise ValueError(
                f"{name!r} is quantized in {args.quantized} but is not an initializer of {args.original}"
            )
        x = to_array(ref[name]).astype(np.float32)
        if name in transposed and x.ndim == 2 and op != "GatherBlockQuantized":
            x = np.ascontiguousarray(x.T)
        if x.shape != y.shape:
            raise ValueError(
                f"weight {name!r} has shape {x.shape} in {args.original} but decodes to {y.shape} in "
                f"{args.quantized}: not the model it was quantized from"
            )
        with naming(name):
            m = metrics(x, y)
        sx += sum_squares(x)
        se += m.mse * m.count
        rows.append(
            {
                "tensor": name,
                "sqnr_db": finite(m.sqnr_db),
                "cosine": m.cosine,
                "max_abs_error": m.max_abs_error,
            }
        )
    emit(args, *sqnr_report(rows, sx, se, "quantized weights"))
    return 0
