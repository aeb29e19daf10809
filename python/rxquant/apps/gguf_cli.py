"""The GGUF side of the command line: ``quantize`` to a ``.gguf`` output (or from a GGUF input),
``inspect`` and ``verify`` of GGUF files. :mod:`rxquant.apps.cli` routes here."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import gguf as rg
from ..core.block_types import BLOCK_TYPES
from ..formats.gguf_file import FLOAT_TYPES, GgufFile, is_gguf
from ..formats.gguf_mixes import MIXES
from .console import UsageError, emit, finite, human_size, sqnr_report, wrote
from .options import refuse_device, refuse_given
from .progress import PerItem

if TYPE_CHECKING:
    import numpy as np

# numpy and what needs it are imported in the functions that use them: `quantize` of a GGUF file
# by nearest or mse rounding runs without it (see rxquant.formats.gguf_file).


def cmd_quantize_gguf(args: argparse.Namespace, fallbacks: set[str]) -> int:
    """``rxquant quantize SRC -o OUT.gguf --type T | --budget B``: see :func:`rxquant.gguf.quantize_file`."""
    src = Path(args.file)
    if not str(args.output).lower().endswith(".gguf"):
        raise UsageError(f"{src} is a GGUF file; the output must be a .gguf file too, not {args.output}")
    refuse_given(
        UsageError,
        (
            ("--plan", args.plan),
            ("--precision", args.precision),
            ("--granularity", args.granularity),
            ("--asymmetric", args.asymmetric or None),
            ("--method", args.method_given),
            ("--include", args.include),
            ("--exclude", args.exclude),
        ),
        "{apply} to rxquant's safetensors output; a GGUF file takes --type (a llama.cpp type such as "
        "q4_k) or --budget",
    )
    refuse_device(args, UsageError, "GGUF quantization")
    if args.type is None and args.budget is None:
        raise UsageError(
            "a GGUF output needs --type (one llama.cpp type, e.g. q4_k) or --budget (e.g. 4.8bpw)"
        )
    if args.type is not None and args.budget is not None:
        raise UsageError(
            f"give --type {args.type} (every tensor that type) or --budget {args.budget} (types chosen "
            "per tensor), not both"
        )
    if "channel" in fallbacks:
        raise UsageError("--fallback channel applies to group sizes; GGUF types fall back as llama.cpp does")
    if args.imatrix and args.statistics:
        raise UsageError("give --imatrix or --statistics, not both")
    stats_path = args.imatrix or args.statistics
    # llama-quantize's --imatrix weights its rounding by the matrix: the same here, unless asked.
    rounding = args.rounding or ("importance" if args.imatrix else "nearest")
    if rounding in ("importance", "gptq") and stats_path is None:
        raise UsageError(f"--rounding {rounding} needs --statistics (or a llama.cpp --imatrix)")
    if rounding == "nearest" and stats_path is not None and args.budget is None:
        raise UsageError(
            "--statistics/--imatrix are used by --rounding importance or gptq (or to plan a --budget)"
        )
    if os.path.isdir(args.output):
        raise UsageError(f"output {args.output} is a directory; give a file name")
    stats = None
    if stats_path is not None:
        from ..formats.statistics import Statistics

        try:
            stats = Statistics(stats_path)
        except (ValueError, ImportError) as e:
            raise UsageError(str(e)) from None
        if rounding == "gptq" and stats.kind != "hessian":
            raise UsageError(f"--rounding gptq needs Hessians; {stats_path} holds only {stats.kind}")
    if args.type is not None and args.type.upper() not in (*rg.OUTPUT_TYPES, *MIXES):
        known = ", ".join(t.lower() for t in rg.OUTPUT_TYPES)
        mixes = ", ".join(t.lower() for t in MIXES)
        hint = ""
        if re.fullmatch(r"(IQ\d\w*|Q[2-6]_K(_\w+)?|TQ\d_0|MXFP4\w*)", args.type.upper()):
            hint = " (a llama.cpp type or mix rxquant does not write)"
        raise UsageError(
            f"unknown --type {args.type!r}{hint}; llama.cpp types rxquant writes: {known}; llama-quantize's "
            f"mixes: {mixes}"
        )
    # The library's refusals of the request (a RequestError) exit 2, like the command line's own.
    with PerItem("quantizing", quiet=args.quiet or args.json) as tick:
        res = rg.quantize_file(
            src,
            args.output,
            type=args.type,
            budget=args.budget,
            rounding=rounding,
            statistics=stats,
            fallback_nearest="nearest" in fallbacks,
            allow_requantize=args.allow_requantize,
            progress=tick,
        )
    src_bytes = os.path.getsize(src) if src.is_file() else os.path.getsize(src / "model.safetensors")
    types = Counter(t.type for t in res.tensors if t.type != t.source_type)
    q = sum(types.values())
    done = "converted" if types and all(t in FLOAT_TYPES for t in types) else "quantized"
    lines = [f"{wrote(args.output, res.bytes, src_bytes)}, {q} tensors {done}, {len(res.tensors) - q} kept"]
    if types:
        lines.append("types: " + ", ".join(f"{t} x{n}" for t, n in types.most_common()))
    if not math.isnan(res.bits_per_weight):
        bpw = res.bits_per_weight
        lines.append(f"{bpw:.3f} bits a weight over the quantized tensors; rounding: {rounding}")
    groups: dict[tuple[str, str], list[str]] = {}
    for t in res.fallbacks:
        groups.setdefault((t.type, t.reason or ""), []).append(t.name)
    for (used, reason), names in groups.items():
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        lines.append(f"fallback: {used} for {len(names)} tensor(s) ({reason}): {', '.join(names[:3])}{more}")
    data = {
        "output": str(args.output),
        "bytes": res.bytes,
        "source_bytes": src_bytes,
        "bits_per_weight": None if math.isnan(res.bits_per_weight) else res.bits_per_weight,
        "tensors": [vars(t) | {"shape": list(t.shape)} for t in res.tensors],
        "fallbacks": [{"tensor": t.name, "used": t.type, "reason": t.reason} for t in res.fallbacks],
    }
    emit(args, data, "\n".join(lines))
    return 0


def cmd_inspect_gguf(args: argparse.Namespace) -> int:
    f = GgufFile(args.file)
    rows: list[dict[str, Any]] = [
        {"name": n, "type": t.type, "shape": list(t.shape), "bytes": t.nbytes} for n, t in f.tensors.items()
    ]
    total = sum(r["bytes"] for r in rows)
    lines = [
        f"GGUF {f.arch}: {len(f.fields)} key-value pairs, {len(rows)} tensors, {human_size(total)} of data"
    ]
    lines.append(f"{'tensor':<44} {'type':>6} {'shape':>16} {'size':>10}")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['name'][:44]:<44} {r['type']:>6} {shape:>16} {human_size(r['bytes']):>10}")
    types = Counter(r["type"] for r in rows)
    lines.append("types: " + ", ".join(f"{t} x{n}" for t, n in types.most_common()))
    meta = {k: _short(fl.value) for k, fl in f.fields.items() if not k.startswith("tokenizer.ggml.")}
    data = {"file": str(args.file), "arch": f.arch, "metadata": meta, "tensors": rows, "total_bytes": total}
    emit(args, data, "\n".join(lines))
    return 0


def _short(v: Any) -> Any:
    return f"[{len(v)} values]" if isinstance(v, list) and len(v) > 16 else v


def _block_types(f: GgufFile) -> list[str]:
    """The block-quantized types of ``f``'s tensors, sorted."""
    return sorted({t.type for t in f.tensors.values() if t.type in BLOCK_TYPES})


def _reference(path: str) -> tuple[dict[str, Callable[[], np.ndarray]], Optional[GgufFile]]:
    """The original tensors by GGUF name: a GGUF file (returned too), or a BERT folder /
    model.safetensors."""
    p = Path(path)
    if is_gguf(p):
        f = GgufFile(p)
        return {n: t.read_f32 for n, t in f.tensors.items()}, f
    from ..models.bert_gguf import bert_gguf

    folder = p if p.is_dir() else p.parent
    b = bert_gguf(folder)
    return {t.name: t.read_f32 for t in b.tensors}, None


def cmd_verify_gguf(args: argparse.Namespace) -> int:
    """Per-tensor SQNR and cosine of a quantized GGUF file against the original (GGUF, or the
    safetensors model it was converted from)."""
    import numpy as np

    from ..core.arrays import sum_squares
    from ..core.errors import naming
    from ..core.ops import metrics

    got = GgufFile(args.quantized)
    ref, original = _reference(args.original)
    rows = []
    sx = se = 0.0
    for n, t in got.tensors.items():
        if n not in ref:
            raise ValueError(f"{n!r} is in {args.quantized} but not in {args.original}")
        x = np.asarray(ref[n](), np.float32)
        y = t.read_f32()
        if x.shape != y.shape:
            raise ValueError(f"{n}: shape {y.shape} in {args.quantized}, {x.shape} in {args.original}")
        with naming(n):
            m = metrics(x, y)
        sx += sum_squares(x)
        se += m.mse * m.count
        rows.append({"tensor": n, "type": t.type, "sqnr_db": finite(m.sqnr_db), "cosine": m.cosine})
    emit(args, *sqnr_report(rows, sx, se, "tensors", column="type"))
    if original is not None and _block_types(original) and not _block_types(got):
        # Legitimate for a file decoded to F16/F32, but far more often the two names swapped: the
        # report then reads as the reverse comparison.
        print(
            f"rxquant: note: the original {args.original} holds quantized tensors "
            f"({', '.join(_block_types(original))}) and {args.quantized} none; were the two swapped? "
            "(verify ORIGINAL QUANTIZED)",
            file=sys.stderr,
        )
    return 0
