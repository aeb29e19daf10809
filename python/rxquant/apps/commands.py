"""The commands on rxquant's own files (safetensors checkpoints in, rxquant's safetensors format
out): inspect, analyze, plan, quantize, statistics, verify, and devices, bench, demo.
:mod:`rxquant.apps.cli` parses the command line and routes GGUF and ONNX work to
:mod:`~rxquant.apps.gguf_cli` and :mod:`~rxquant.apps.onnx_cli` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..analysis.planner import Option, candidate_options, parse_budget, plan, unit_hint
from ..analysis.sensitivity import layer_stats
from ..core.arrays import sum_squares
from ..core.atomic import write_json
from ..core.devices import describe
from ..core.errors import naming
from ..core.hardware import gpu_family
from ..core.ops import metrics
from ..core.scheme import Scheme
from ..core.types import CalibrationMethod, QuantizationPrecision
from ..formats.checkpoint import Checkpoint, LazyTensors, select
from ..formats.quantized import Entry, load_quantized, predicted_size, stored_entries, write_quantized
from ..formats.statistics import Statistics
from ..models.bert import Bert, collect_statistics
from ..models.sentences import CALIBRATION
from .console import UsageError, allowed_fallbacks, emit, finite, human_size, progress_bar, sqnr_report, wrote
from .demo import run_demo
from .onnx_cli import cmd_statistics_onnx
from .options import refuse_given

# ------------------------------------------------------------------ inputs


def _source(path: str) -> Checkpoint:
    """A checkpoint to analyze or quantize; an rxquant quantized file is refused (its tensors are
    codes and scales, not weights)."""
    ck = Checkpoint(path)
    if ck.metadata().get("format") == "rxquant":
        raise UsageError(
            f"{path} is an rxquant quantized file (codes and scales, not weights); "
            "give the original checkpoint instead"
        )
    return ck


def _regex(option: str, value: Optional[str]) -> Optional[str]:
    if value is not None:
        try:
            re.compile(value)
        except re.error as e:
            raise UsageError(f"{option} {value!r} is not a valid regular expression: {e}") from None
    return value


def _selected(args: argparse.Namespace, ck: Checkpoint) -> list[str]:
    names = select(ck, _regex("--include", args.include), _regex("--exclude", args.exclude))
    if not names:
        raise UsageError(f"no tensor of {args.file} is selected (floating, 2+ dims, --include/--exclude)")
    return names


def _family_and_weights(args: argparse.Namespace) -> tuple[Any, Checkpoint, LazyTensors]:
    """The GPU family, the checkpoint, and the selected tensors as a lazy mapping: each is read
    from the memory-mapped file when used, so analysis holds one tensor at a time."""
    ck = _source(args.file)
    return gpu_family(args.gpu), ck, ck.tensors(_selected(args, ck))


# ------------------------------------------------------------------ commands


def cmd_inspect(args: argparse.Namespace) -> int:
    ck = Checkpoint(args.file)
    entries = stored_entries(ck)
    if entries is not None:
        return _inspect_quantized(args, ck, entries)
    chosen = set(select(ck))
    rows: list[dict[str, Any]] = []
    for n in ck.names():
        dt, shape = ck.info(n)
        rows.append(
            {"name": n, "dtype": dt, "shape": list(shape), "bytes": ck.nbytes(n), "quantize": n in chosen}
        )
    total = sum(r["bytes"] for r in rows)
    lines = _tensor_table(rows, 52, "default", lambda r: "quantize" if r["quantize"] else "keep")
    lines.append(f"{len(rows)} tensors, {human_size(total)}; {len(chosen)} selected for quantization")
    emit(args, {"file": str(args.file), "tensors": rows, "total_bytes": total}, "\n".join(lines))
    return 0


def _tensor_table(
    rows: list[dict[str, Any]], width: int, column: str, value: Callable[[Any], str]
) -> list[str]:
    """``inspect``'s table: each row's name, dtype, shape and size, then ``column`` (``value(row)``)."""
    lines = [f"{'tensor':<{width}} {'dtype':>5} {'shape':>16} {'size':>10}  {column}"]
    for r in rows:
        shape, size = "x".join(map(str, r["shape"])) or "()", human_size(r["bytes"])
        lines.append(f"{r['name'][:width]:<{width}} {r['dtype']:>5} {shape:>16} {size:>10}  {value(r)}")
    return lines


def _inspect_quantized(args: argparse.Namespace, ck: Checkpoint, entries: list[Entry]) -> int:
    """An rxquant file: each source tensor, how it is stored (from the file's metadata) and the
    bytes of its stored arrays (codes, scales, zero points), rather than those arrays one by one."""
    rows: list[dict[str, Any]] = []
    for e in entries:
        s = e.scheme
        integer = s is not None and s.is_integer
        stored = "kept" if s is None else s.describe()
        if integer:
            stored += f", {e.method} calibration" + (
                f", {e.rounding} rounding" if e.rounding != "nearest" else ""
            )
        rows.append(
            {
                "name": e.name,
                "dtype": e.dtype,
                "shape": list(e.shape),
                "bytes": sum(ck.nbytes(name) for name, _, _ in e.outputs()),
                "scheme": s.to_dict() if s is not None else None,
                "method": e.method if integer else None,
                "rounding": e.rounding if integer else None,
                "stored": stored,
            }
        )
    total = sum(r["bytes"] for r in rows)
    lines = _tensor_table(rows, 44, "stored as", lambda r: r["stored"])
    n = sum(r["scheme"] is not None for r in rows)
    lines.append(
        f"an rxquant quantized file: {len(rows)} tensors, {human_size(total)}; {n} quantized or converted"
    )
    data = {"file": str(args.file), "format": "rxquant", "tensors": rows, "total_bytes": total}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    family, _, weights = _family_and_weights(args)
    method = CalibrationMethod.parse(args.method)
    bar = progress_bar(args, len(weights) * len(family.candidates), "analyzing")
    rows, skipped = [], []
    for name in weights:
        w = weights[name]
        for cname, s in family.candidates:
            why = s.fits(w.shape)
            if why:
                skipped.append({"tensor": name, "candidate": cname, "reason": why})
                bar.update(1)
                continue
            precision = QuantizationPrecision.parse(s.precision)
            with naming(name):
                st, _ = layer_stats(w, name, s, precision, method, device=args.device)
            rows.append(
                {
                    "tensor": name,
                    "candidate": cname,
                    "bytes": s.stored_bytes(w.shape),
                    "sqnr_db": finite(st.sqnr_db),
                    "cosine": st.cosine_similarity,
                    "relative_error": st.sensitivity_score,
                }
            )
            bar.update(1)
        del w
    bar.close()
    lines = [f"{'tensor':<48} {'candidate':<13} {'bytes':>11} {'SQNR dB':>8} {'rel. error':>11}"]
    for r in rows:
        sq = f"{r['sqnr_db']:8.2f}" if r["sqnr_db"] is not None else f"{'inf':>8}"
        lines.append(
            f"{r['tensor'][:48]:<48} {r['candidate']:<13} {r['bytes']:>11,} {sq} {r['relative_error']:11.3e}"
        )
    for r in skipped:
        lines.append(f"not offered: {r['candidate']} for {r['tensor']}: {r['reason']}")
    data = {"file": str(args.file), "gpu": family.name, "rows": rows, "not_offered": skipped}
    emit(args, data, "\n".join(lines))
    return 0


def _statistics(args: argparse.Namespace, weights: LazyTensors) -> Optional[Statistics]:
    """The --statistics file, checked against the selected tensors: each must have statistics
    of the right width (or, with --fallback nearest, be rounded to nearest without them)."""
    rounding = getattr(args, "rounding", None) or "nearest"
    if args.statistics is None:
        if rounding != "nearest":
            raise UsageError(
                f"--rounding {rounding} needs --statistics (a file of the layers' input statistics)"
            )
        return None
    try:
        stats = Statistics(args.statistics)
    except (ValueError, ImportError) as e:
        raise UsageError(str(e)) from None
    missing = []
    for n in weights:
        shape = weights.shape(n)
        if n not in stats:
            missing.append(n)
            continue
        want = math.prod(shape[1:])
        if stats[n].features != want:
            raise UsageError(
                f"the statistics in {args.statistics} for {n} have {stats[n].features} inputs; the tensor "
                f"{tuple(shape)} has {want}"
            )
        if rounding == "gptq" and stats.kind != "hessian":
            raise UsageError(f"--rounding gptq needs Hessians; {args.statistics} holds only {stats.kind}")
    names = list(weights)
    if names and len(missing) == len(names):
        raise UsageError(stats.covers_none(names))
    allowed = "nearest" in allowed_fallbacks(args) and rounding != "nearest"
    if missing and not allowed:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        hint = "; or --fallback nearest to round them to nearest" if rounding != "nearest" else ""
        raise UsageError(
            f"{args.statistics} has no statistics for {missing[0]}{more}; select the tensors it covers with "
            f"--include/--exclude{hint}"
        )
    return stats


def _entries_for(ck: Checkpoint, schemes: Mapping[str, Optional[Scheme]], method: str) -> list[Entry]:
    """One entry per tensor of ``ck``: the scheme given for it, or pass-through (fp32 of an F32
    tensor is pass-through; of another float dtype, a float32 copy)."""
    entries = []
    for n in ck.names():
        dt, shape = ck.info(n)
        s = schemes.get(n)
        if s is not None and s.precision == "fp32" and dt == "F32":
            s = None
        entries.append(Entry(n, s, method, dt, shape))
    return entries


def _file_plan(
    ck: Checkpoint,
    options: dict[str, list[Option]],
    budget: int,
    mode: str,
    measure: str,
    method: str,
    given: str,
) -> tuple[Any, int]:
    """A plan whose whole output file (kept tensors, codes, scales, zero points, header) is at
    most ``budget`` bytes (``given`` as the user wrote it). The layers get the budget minus the
    rest; the header depends a little on the choices, so the plan is redone with a smaller share
    until the exact predicted size fits. Returns (plan, predicted file bytes)."""
    kept = sum(ck.nbytes(n) for n in ck.names() if n not in options)
    smallest = {n: min(opts, key=lambda o: o.bytes) for n, opts in options.items()}
    floor = predicted_size(_entries_for(ck, {n: o.scheme for n, o in smallest.items()}, method))
    if floor > budget:
        raise UsageError(
            f"budget of {budget:,} bytes cannot be met{unit_hint(given)}: the smallest file this checkpoint "
            f"can become is {floor:,} bytes ({kept:,} of them tensors that are kept as they are)"
        )
    overhead = floor - sum(o.bytes for o in smallest.values())
    room = budget - overhead
    for _ in range(8):
        p = plan(options, room, mode, error_measure=measure)
        schemes = {c.layer: next(o.scheme for o in options[c.layer] if o.name == c.choice) for c in p.layers}
        size = predicted_size(_entries_for(ck, schemes, method))
        if size <= budget:
            return p, size
        room -= size - budget
    raise RuntimeError(f"internal error: no plan within {budget:,} bytes after 8 rounds")


def cmd_plan(args: argparse.Namespace) -> int:
    family, ck, weights = _family_and_weights(args)
    stats = _statistics(args, weights)
    total = sum(math.prod(weights.shape(n)) for n in weights)
    budget = parse_budget(args.budget, total)  # a RequestError (exit 2) when it cannot be read
    per_weight = str(args.budget).strip().lower().endswith("bpw")
    method = CalibrationMethod.parse(args.method)
    bar = progress_bar(args, len(weights) * len(family.candidates), "measuring candidates")
    options, measure = candidate_options(
        weights, family, method, progress=bar, device=args.device, statistics=stats, rounding=args.rounding
    )
    bar.close()
    if per_weight:
        p = plan(options, budget, args.mode, error_measure=measure)
        schemes = {c.layer: next(o.scheme for o in options[c.layer] if o.name == c.choice) for c in p.layers}
        file_bytes = predicted_size(_entries_for(ck, schemes, args.method))
        what = (
            f"budget {args.budget} over the {len(weights)} quantized tensors ({total:,} weights): "
            f"{budget:,} bytes for their codes, scales and zero points; the kept tensors and the "
            "header come on top"
        )
    else:
        p, file_bytes = _file_plan(ck, options, budget, args.mode, measure, args.method, args.budget)
        what = f"budget {human_size(budget)} for the whole output file (kept tensors and header included)"
    p.notes.append(f"method={args.method}")
    p.notes.append(what)
    out = args.output or f"{Path(args.file).name.removesuffix('.safetensors').removesuffix('.npz')}.plan.json"
    d = p.to_dict()
    d["budget_kind"] = "bits_per_weight" if per_weight else "file"
    d["method"] = args.method
    d["rounding"] = args.rounding
    d["predicted_file_bytes"] = file_bytes
    write_json(out, d)
    lines = [f"{'tensor':<52} {'choice':<13} {'bytes':>11} {'pred. error':>12}"]
    for c in p.layers:
        lines.append(f"{c.layer[:52]:<52} {c.choice:<13} {c.bytes:>11,} {c.error:12.4e}")
    lines.append(what)
    lines.append(
        f"quantized tensors {human_size(p.total_bytes)} ({d['bits_per_weight']:.3f} bits a weight), "
        f"output file {human_size(file_bytes)}; predicted error {p.total_error:.4e} ({measure}), "
        f"optimal: {p.optimal}"
    )
    lines.append(f"plan written to {out}")
    emit(args, {**d, "plan_file": out}, "\n".join(lines))
    return 0


def _read_plan(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not an rxquant plan: it is not JSON ({e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not an rxquant plan: it is not text") from None
    if not isinstance(d, dict) or d.get("schema_version") != 1 or not isinstance(d.get("layers"), list):
        raise UsageError(f"{path} is not an rxquant plan (no schema_version 1 with a list of layers)")
    return d


def _scheme_from_args(args: argparse.Namespace) -> Scheme:
    """The scheme of --precision, --granularity and --asymmetric. Symmetric INT4 and INT8 use the
    signed scale (all 2^bits codes, llama.cpp's Q4_0 rule): measured on MiniLM it beats the
    restricted grid and Q4_0 at the same size (docs/accuracy.md)."""
    g = args.granularity
    sym = not args.asymmetric
    if args.precision == "fp16":
        return Scheme("fp16")
    kw: dict[str, Any] = {"symmetric": sym, "signed_scale": sym}
    if g == "tensor":
        return Scheme(args.precision, **kw)
    if g == "channel":
        return Scheme(args.precision, axis=0, **kw)
    m = re.fullmatch(r"group:(\d+)", g)
    if m and int(m.group(1)) > 0:
        return Scheme(args.precision, axis=-1, group_size=int(m.group(1)), **kw)
    raise UsageError(f"bad --granularity {g!r}; use tensor, channel or group:N (N > 0)")


def _entries(
    args: argparse.Namespace, ck: Checkpoint
) -> tuple[list[Entry], list[dict[str, Any]], Any, Optional[Statistics]]:
    """Entries for `quantize`, the per-tensor fallbacks taken, the plan (if any) and the
    statistics (if any)."""
    chosen = _selected(args, ck)
    schemes: dict[str, Optional[Scheme]] = {}
    fallbacks: list[dict[str, Any]] = []
    plan_d = None
    if args.plan:
        plan_d = _read_plan(args.plan)
        args.method = args.method or plan_d.get("method") or "mse"
        args.rounding = args.rounding or plan_d.get("rounding") or "nearest"
        table = dict(gpu_family(args.gpu).candidates)
        choice = {c.get("layer"): c.get("choice") for c in plan_d["layers"]}
        missing = [n for n in choice if n not in ck.names()]
        if missing:
            raise UsageError(f"{args.plan} plans tensors that {args.file} does not have: {missing[:3]}")
        for n in chosen:
            if n not in choice:
                continue
            if choice[n] not in table:
                raise UsageError(
                    f"{args.plan} chooses {choice[n]!r} for {n!r}, not a candidate of --gpu {args.gpu}"
                )
            schemes[n] = table[choice[n]]
    else:
        scheme = _scheme_from_args(args)
        bad = [(n, ck.info(n)[1], scheme.fits(ck.info(n)[1])) for n in chosen]
        bad = [b for b in bad if b[2]]
        if bad and "channel" not in allowed_fallbacks(args):
            n, shape, why = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise UsageError(
                f"{scheme.describe()} does not fit tensor {n} {tuple(shape)}{more}: {why}; choose a "
                "group size that divides it, --exclude it, or pass --fallback channel to quantize such "
                "tensors per channel"
            )
        for n in chosen:
            schemes[n] = scheme
        for n, shape, why in bad:
            sub = Scheme(scheme.precision, scheme.symmetric, 0, None, scheme.full_range, scheme.signed_scale)
            schemes[n] = sub
            fallbacks.append({"tensor": n, "shape": list(shape), "reason": why, "used": sub.describe()})
    args.rounding = args.rounding or "nearest"
    stats = _statistics(args, ck.tensors([n for n, s in schemes.items() if s is not None and s.is_integer]))
    entries = _entries_for(ck, schemes, args.method)
    for e in entries:
        if e.scheme is not None and e.scheme.is_integer and e.scheme.fits(e.shape):
            raise UsageError(f"{e.scheme.describe()} does not fit tensor {e.name}: {e.scheme.fits(e.shape)}")
        if e.scheme is not None and e.scheme.is_integer:
            e.rounding = args.rounding
            if args.rounding != "nearest" and (stats is None or e.name not in stats):
                e.rounding = "nearest"  # allowed by --fallback nearest (checked in _statistics)
                fallbacks.append(
                    {
                        "tensor": e.name,
                        "shape": list(e.shape),
                        "reason": "no input statistics",
                        "used": "nearest",
                    }
                )
    return entries, fallbacks, plan_d, stats


#: Output names of other formats, which a safetensors output must not take, and what to do.
OTHER_FORMATS = {
    ".onnx": "ONNX output comes from an ONNX model (`rxquant quantize model.onnx -o q.onnx`)",
    ".npz": "name it .safetensors (rxquant reads .npz, and writes safetensors)",
    ".pt": "name it .safetensors (rxquant writes safetensors, not PyTorch files)",
    ".pth": "name it .safetensors (rxquant writes safetensors, not PyTorch files)",
    ".bin": "name it .safetensors (rxquant writes safetensors, not PyTorch files)",
}


def cmd_quantize(args: argparse.Namespace) -> int:
    """rxquant's safetensors output (GGUF and ONNX outputs are routed to their own modules)."""
    opts = (
        ("--type", args.type),
        ("--imatrix", args.imatrix),
        ("--format", args.format),
        ("--zero-points", args.zero_points),
        ("--embeddings", args.embeddings or None),
    )
    if args.budget:
        raise UsageError(
            f"--budget applies to GGUF output (name the output *.gguf); for rxquant's safetensors "
            f"format, `rxquant plan {args.file} --budget {args.budget} -o plan.json` chooses each "
            "tensor's precision, then `rxquant quantize --plan plan.json` writes it"
        )
    refuse_given(
        UsageError,
        (*opts, ("--allow-requantize", args.allow_requantize or None)),
        "{apply} to GGUF output; name the output *.gguf (or use --precision/--granularity for "
        "rxquant's safetensors format)",
    )
    if args.plan:
        refuse_given(
            UsageError,
            (
                ("--precision", args.precision),
                ("--granularity", args.granularity),
                ("--asymmetric", args.asymmetric or None),
            ),  # fmt: skip
            f"{{do_not}} apply with --plan {args.plan}: the plan chooses each tensor's scheme (edit "
            "it, or run `rxquant plan` again)",
        )
    if args.rounding == "mse":
        raise UsageError(
            "--rounding mse is for GGUF types; for safetensors output --method mse chooses the clip"
        )
    suffix = Path(args.output).suffix.lower()
    if suffix in OTHER_FORMATS:
        raise UsageError(
            f"{args.output} would hold rxquant's safetensors format under a {suffix} name; "
            f"{OTHER_FORMATS[suffix]}"
        )
    args.precision = args.precision or "int8"
    args.granularity = args.granularity or "channel"
    ck = _source(args.file)
    entries, fallbacks, plan_d, stats = _entries(args, ck)
    out = args.output
    if os.path.isdir(out):
        raise UsageError(f"output {out} is a directory; give a file name")
    expected = predicted_size(entries)
    if plan_d and plan_d.get("budget_kind") == "file" and expected > plan_d.get("budget_bytes", expected):
        raise UsageError(
            f"{args.plan} budgets {plan_d['budget_bytes']:,} bytes for the file, but with these options the "
            f"file would be {expected:,} bytes (run `rxquant plan` again with the same --include/--exclude)"
        )
    bar = progress_bar(args, len(entries), "quantizing")
    written = write_quantized(
        ck, out, entries, progress=lambda e: bar.update(1), device=args.device, statistics=stats
    )
    bar.close()
    src = sum(ck.nbytes(n) for n in ck.names())
    q = sum(1 for e in entries if e.scheme is not None)
    lines = [f"{wrote(out, written, src)}, {q} tensors quantized, {len(entries) - q} kept"]
    rounded = sorted({e.rounding for e in entries if e.scheme is not None and e.scheme.is_integer})
    if rounded and rounded != ["nearest"]:
        lines.append(f"rounding: {args.rounding} with the statistics in {args.statistics}")
    for f in fallbacks:
        lines.append(f"fallback: {f['tensor']} {tuple(f['shape'])} quantized {f['used']}: {f['reason']}")
    data = {
        "output": out,
        "bytes": written,
        "predicted_bytes": expected,
        "source_bytes": src,
        "quantized_tensors": q,
        "fallbacks": fallbacks,
    }
    emit(args, data, "\n".join(lines))
    return 0


def cmd_statistics(args: argparse.Namespace) -> int:
    """Input statistics of a BERT-family model (config.json, tokenizer.json, model.safetensors),
    run by rxquant's numpy forward pass on sentences."""
    if args.sentences:
        lines = Path(args.sentences).read_text(encoding="utf-8").splitlines()
        sentences = [ln.strip() for ln in lines if ln.strip()]
        if not sentences:
            raise UsageError(f"{args.sentences} has no sentences (one per line)")
    else:
        sentences = list(CALIBRATION)
    if str(args.model_dir).lower().endswith(".onnx"):
        return cmd_statistics_onnx(args, sentences)
    folder = Path(args.model_dir)
    if folder.is_file() and folder.name == "model.safetensors":
        folder = folder.parent  # the model folder's weights, as GGUF conversion reads them
    if not folder.exists():
        raise UsageError(f"{folder} does not exist: give a BERT-family model folder")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: give a BERT-family model folder (or an .onnx model)")
    for need in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (folder / need).is_file():
            raise UsageError(f"{folder} has no {need}: give a BERT-family model folder")
    ck = Checkpoint(folder / "model.safetensors")
    try:
        model = Bert(folder, {n: ck.read(n) for n in ck.names()})
    except KeyError as e:
        raise UsageError(f"{folder} is not a BERT-family model this forward pass runs: missing {e}") from None
    stats = collect_statistics(model, sentences, path=args.output, kind=args.kind)
    size = os.path.getsize(args.output)
    lines = [f"{len(stats)} layers, {len(sentences)} sentences ({next(iter(stats.values())).count} tokens)"]
    lines.append(f"wrote {args.output}: {human_size(size)} ({args.kind})")
    data = {"output": args.output, "layers": len(stats), "sentences": len(sentences), "bytes": size}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    ref = Checkpoint(args.original)
    got = load_quantized(args.quantized)
    rows = []
    sx = se = 0.0
    for n, y in got.items():
        if n not in ref.names():
            raise ValueError(f"{n!r} is in {args.quantized} but not in {args.original}")
        dt, _ = ref.info(n)
        if dt not in ("F32", "F16", "BF16", "F64"):
            continue
        x = ref.read_f32(n)
        y = np.asarray(y, np.float32)
        if y.shape != x.shape:
            raise ValueError(
                f"tensor {n!r} has shape {x.shape} in {args.original} but {y.shape} in {args.quantized}: "
                "not the checkpoint it was quantized from"
            )
        with naming(n):
            m = metrics(x, y, device=args.device)
        sx += sum_squares(x)
        se += m.mse * m.count
        rows.append(
            {"tensor": n, "sqnr_db": finite(m.sqnr_db), "cosine": m.cosine, "max_abs_error": m.max_abs_error}
        )
    emit(args, *sqnr_report(rows, sx, se, "floating tensors"))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    d = describe()
    c, cl, ro = d["cpu"], d["opencl"], d["rocm"]
    lines = [
        f"CPU: {c['model']}, {c['logical_cpus']} logical CPUs; rxquant uses {c['rxquant_threads']} threads"
    ]
    lines.append("OpenCL:" + ("" if cl["devices"] else f" none ({cl['reason']})"))
    for dv in cl["devices"]:
        lines.append(
            f"  opencl:{dv['index']}  {dv['name']} [{dv['type']}] on {dv['platform']}, "
            f"{dv['compute_units']} compute units, {dv['opencl_c_version']}, work-group {dv['work_group']}"
        )
    hip = f"HIP {ro['hip_version']} ({ro['library']})" if ro["hip_available"] else "HIP runtime not loaded"
    lines.append(f"ROCm/HIP: {hip}")
    for dv in ro["devices"]:
        lines.append(
            f"  hip:{dv['index']}  {dv['name']} {dv['gfx_target'] or ''} {dv['compute_units'] or '?'} CUs"
        )
    for g in ro["kfd_gpus"]:
        lines.append(
            f"  kfd node {g['node']}: {g['name']} {g['gfx_target']}, {g['compute_units']} compute units"
        )
    if ro["reason"]:
        lines.append(f"  {ro['reason']}")
    lines.append(f"compute: {d['compute']}")
    if "figures" in d:
        f, cpu = d["figures"]["device"], d["figures"]["cpu"]
        lines.append(
            f"  measured: upload {f['upload_gbs']:.1f} GB/s pinned "
            f"({f['pageable_upload_gbs']:.1f} pageable), "
            f"download {f['download_gbs']:.1f} GB/s, device memory {f['memory_gbs']:.0f} GB/s, "
            f"quantize kernel {f['quantize_gbs']:.0f} GB/s, streamed quantize {f['stream_gbs']:.1f} GB/s, "
            f"product {f['gemm_gflops']:.0f} GFLOP/s, latency {f['latency_s'] * 1e6:.0f} us"
        )
        lines.append(
            f"  cpu ({d['figures']['threads']} threads): quantize {cpu['quantize_gbs']:.1f} GB/s, "
            f"XᵀX {cpu['gemm_gflops']:.0f} GFLOP/s"
        )
        lines.append("  the device is used from:")
        for op, size in d["break_even"].items():
            lines.append(f"    {op}: {size or 'never (the cpu is predicted faster at every size)'}")
    emit(args, d, "\n".join(lines))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs benches/compare.py of a source checkout (the benchmarks are not part of the package),
    as its own process: it sets the peers' thread settings before any runtime starts."""
    import subprocess

    script = Path(__file__).resolve().parents[3] / "benches" / "compare.py"
    if not script.is_file():
        raise UsageError(
            "rxquant bench runs benches/compare.py from a source checkout of rxquant; "
            f"none was found beside this installation ({script})"
        )
    argv = [str(script), "--repeat", str(args.repeat)] + ([] if args.write_docs else ["--no-docs"])
    return subprocess.run([sys.executable, *argv], check=False).returncode


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(quiet=args.quiet, as_json=args.json)
    return 0
