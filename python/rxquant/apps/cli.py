"""The ``rxquant`` command line: inspect, analyze, plan, quantize, verify, devices, demo.

Exit codes: 0 success, 1 failure (one line on stderr, no traceback), 2 usage error.
Progress bars appear only on a terminal and never with ``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..analysis.planner import candidate_options, parse_budget, plan
from ..analysis.sensitivity import layer_stats
from ..core import native
from ..core.devices import DeviceError, describe
from ..core.hardware import gpu_family
from ..core.ops import metrics
from ..core.scheme import Scheme, fit_scheme
from ..core.types import CalibrationMethod, QuantizationPrecision
from ..formats.checkpoint import Checkpoint, LazyTensors, select
from ..formats.quantized import Entry, load_quantized, predicted_size, write_quantized
from .demo import run_demo

__version__ = native.__version__


def _progress(args: argparse.Namespace, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=True if args.quiet else None, leave=False, file=sys.stderr)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, allow_nan=False, default=_json_default) if args.json else text)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


# ------------------------------------------------------------------ commands


def cmd_inspect(args: argparse.Namespace) -> int:

    ck = Checkpoint(args.file)
    chosen = set(select(ck))
    rows = []
    for n in ck.names():
        dt, shape = ck.info(n)
        rows.append(
            {"name": n, "dtype": dt, "shape": list(shape), "bytes": ck.nbytes(n), "quantize": n in chosen}
        )
    total = sum(r["bytes"] for r in rows)
    lines = [f"{'tensor':<52} {'dtype':>5} {'shape':>16} {'size':>10}  default"]
    for r in rows:
        lines.append(
            f"{r['name'][:52]:<52} {r['dtype']:>5} {'x'.join(map(str, r['shape'])) or '()':>16} "
            f"{_size(r['bytes']):>10}  {'quantize' if r['quantize'] else 'keep'}"
        )
    lines.append(f"{len(rows)} tensors, {_size(total)}; {len(chosen)} selected for quantization")
    if ck.metadata().get("format") == "rxquant":
        lines.append("this is an rxquant quantized file")
    _emit(args, {"file": str(args.file), "tensors": rows, "total_bytes": total}, "\n".join(lines))
    return 0


def _family_and_weights(args: argparse.Namespace) -> tuple[Any, LazyTensors]:
    """The GPU family and the selected tensors as a lazy mapping: each is read from the
    memory-mapped file when used, so analysis holds one tensor at a time."""
    ck = Checkpoint(args.file)
    names = select(ck, args.include, args.exclude)
    if not names:
        raise ValueError(f"no tensor of {args.file} is selected (floating, 2+ dims, include/exclude)")
    return gpu_family(args.gpu), ck.tensors(names)


def cmd_analyze(args: argparse.Namespace) -> int:
    family, weights = _family_and_weights(args)
    method = CalibrationMethod.parse(args.method)
    bar = _progress(args, len(weights) * len(family.candidates), "analyzing")
    rows = []
    for name in weights:
        w = weights[name]
        for cname, scheme in family.candidates:
            s = fit_scheme(scheme, w.shape)
            precision = QuantizationPrecision.parse(s.precision)
            st, _ = layer_stats(w, name, s, precision, method, device=args.device)
            rows.append(
                {
                    "tensor": name,
                    "candidate": cname,
                    "bytes": s.stored_bytes(w.shape),
                    "sqnr_db": _finite(st.sqnr_db),
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
    _emit(args, {"file": str(args.file), "gpu": family.name, "rows": rows}, "\n".join(lines))
    return 0


def _load_stats(path: Optional[str], weights: LazyTensors) -> Optional[dict[str, np.ndarray]]:
    """Per-layer E[x^2] vectors keyed by weight name, from .npz or safetensors (docs/format.md)."""
    if path is None:
        return None
    ck = Checkpoint(path)
    stats = {}
    for n in ck.names():
        if n in weights:
            e = ck.read_f32(n)
            shape = weights.shape(n)
            if e.ndim != 1 or len(shape) != 2 or e.shape[0] != shape[1]:
                raise ValueError(
                    f"calibration statistics for {n!r} must be a vector of {shape[-1]} "
                    f"E[x^2] values, got shape {e.shape}"
                )
            stats[n] = e
    if not stats:
        raise ValueError(f"{path} has no statistics for the selected tensors (keys must be weight names)")
    return stats


def cmd_plan(args: argparse.Namespace) -> int:
    family, weights = _family_and_weights(args)
    stats = _load_stats(args.calibration, weights)
    total = sum(math.prod(weights.shape(n)) for n in weights)
    budget = parse_budget(args.budget, total)
    method = CalibrationMethod.parse(args.method)
    options, measure = candidate_options(
        weights, family, method, stats, progress=not args.quiet, device=args.device
    )
    p = plan(options, budget, args.mode, error_measure=measure)
    p.notes.append(f"method={args.method}")
    out = args.output or (os.path.splitext(str(args.file))[0] + ".plan.json")
    p.save(out)
    d = p.to_dict()
    lines = [f"{'tensor':<52} {'choice':<13} {'bytes':>11} {'pred. error':>12}"]
    for c in p.layers:
        lines.append(f"{c.layer[:52]:<52} {c.choice:<13} {c.bytes:>11,} {c.error:12.4e}")
    lines.append(
        f"predicted size {_size(p.total_bytes)} of {_size(d['total_bytes_fp32'])} fp32 "
        f"({d['bits_per_weight']:.3f} bits a weight; budget {_size(budget)}), "
        f"predicted error {p.total_error:.4e} ({measure}), optimal: {p.optimal}"
    )
    lines.append(f"plan written to {out}")
    _emit(args, {**d, "plan_file": out}, "\n".join(lines))
    return 0


def _entries(args: argparse.Namespace, ck: Any) -> list[Any]:
    chosen = select(ck, args.include, args.exclude)
    plan_choice: dict[str, dict[str, Any]] = {}
    method = args.method
    if args.plan:
        with open(args.plan, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("schema_version") != 1 or "layers" not in d:
            raise ValueError(f"{args.plan} is not an rxquant plan (schema_version 1 with layers)")
        plan_choice = {c["layer"]: c for c in d["layers"]}
        chosen = [n for n in chosen if n in plan_choice]
    entries = []
    table = dict(gpu_family(args.gpu).candidates)
    for n in ck.names():
        dt, shape = ck.info(n)
        scheme = None
        if n in chosen:
            if args.plan:
                cname = plan_choice[n]["choice"]
                if cname not in table:
                    raise ValueError(f"plan chooses unknown candidate {cname!r} for {n!r}")
                scheme = fit_scheme(table[cname], shape)
            else:
                scheme = fit_scheme(_scheme_from_args(args), shape)
            if scheme.precision == "fp32":
                scheme = None if dt == "F32" else Scheme("fp32")
        entries.append(Entry(n, scheme, method, dt, shape))
    return entries


def _scheme_from_args(args: argparse.Namespace) -> Any:
    g = args.granularity
    sym = not args.asymmetric
    if g == "tensor":
        return Scheme(args.precision, symmetric=sym)
    if g == "channel":
        return Scheme(args.precision, symmetric=sym, axis=0)
    if g.startswith("group:"):
        try:
            size = int(g.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad granularity {g!r}; use tensor, channel or group:N") from None
        return Scheme(args.precision, symmetric=sym, axis=-1, group_size=size)
    raise ValueError(f"bad granularity {g!r}; use tensor, channel or group:N")


def cmd_quantize(args: argparse.Namespace) -> int:
    ck = Checkpoint(args.file)
    entries = _entries(args, ck)
    out = args.output
    if os.path.isdir(out):
        raise IsADirectoryError(f"output {out} is a directory; give a file name")
    expected = predicted_size(entries)
    bar = _progress(args, sum(1 for _ in entries), "quantizing")
    written = write_quantized(ck, out, entries, progress=lambda e: bar.update(1), device=args.device)
    bar.close()
    src = sum(ck.nbytes(n) for n in ck.names())
    q = sum(1 for e in entries if e.scheme is not None)
    text = (
        f"wrote {out}: {_size(written)} (from {_size(src)}, {src / max(written, 1):.2f}x smaller), "
        f"{q} tensors quantized, {len(entries) - q} kept"
    )
    _emit(
        args,
        {
            "output": out,
            "bytes": written,
            "predicted_bytes": expected,
            "source_bytes": src,
            "quantized_tensors": q,
        },
        text,
    )
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
        m = metrics(x, np.asarray(y, np.float32).reshape(x.shape), device=args.device)
        sx += float(np.sum(x.astype(np.float64) ** 2))
        se += m.mse * m.count
        rows.append(
            {"tensor": n, "sqnr_db": _finite(m.sqnr_db), "cosine": m.cosine, "max_abs_error": m.max_abs_error}
        )
    total = 10 * math.log10(sx / se) if se > 0 else math.inf
    lines = [f"{'tensor':<52} {'SQNR dB':>8} {'cosine':>10}"]
    for r in rows:
        sq = f"{r['sqnr_db']:8.2f}" if r["sqnr_db"] is not None else f"{'exact':>8}"
        lines.append(f"{r['tensor'][:52]:<52} {sq} {r['cosine']:10.6f}")
    lines.append(f"total (energy-weighted) SQNR {total:.2f} dB over {len(rows)} floating tensors")
    _emit(args, {"tensors": rows, "total_sqnr_db": _finite(total)}, "\n".join(lines))
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
    _emit(args, d, "\n".join(lines))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs benches/compare.py of a source checkout (the benchmarks are not part of the package)."""
    import runpy

    script = Path(__file__).resolve().parents[3] / "benches" / "compare.py"
    if not script.is_file():
        raise FileNotFoundError(
            "rxquant bench runs benches/compare.py from a source checkout of rxquant; "
            f"none was found beside this installation ({script})"
        )
    argv = [str(script), "--repeat", str(args.repeat)] + ([] if args.write_docs else ["--no-docs"])
    saved = sys.argv
    try:
        sys.argv = argv
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(quiet=args.quiet, as_json=args.json)
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    dev = argparse.ArgumentParser(add_help=False)
    dev.add_argument(
        "--device",
        default="auto",
        help="auto (an OpenCL GPU if there is one, else the CPU), cpu, opencl or opencl:N",
    )
    sel = argparse.ArgumentParser(add_help=False, parents=[dev])
    sel.add_argument("--include", help="regex: only tensors whose name matches")
    sel.add_argument("--exclude", help="regex: skip tensors whose name matches")
    sel.add_argument(
        "--gpu", default="polaris", help="GPU family whose candidates to use (polaris, vega, navi)"
    )
    sel.add_argument(
        "--method",
        default="mse",
        choices=["minmax", "percentile", "entropy", "mse"],
        help="calibration method (default mse)",
    )

    p = argparse.ArgumentParser(prog="rxquant", description="Quantize tensors and checkpoints.")
    p.add_argument("--version", action="version", version=f"rxquant {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("inspect", parents=[common], help="tensors, dtypes and sizes of a checkpoint")
    s.add_argument("file")
    s.set_defaults(func=cmd_inspect)
    s = sub.add_parser(
        "analyze", parents=[common, sel], help="sensitivity per tensor and candidate precision"
    )
    s.add_argument("file")
    s.set_defaults(func=cmd_analyze)
    s = sub.add_parser("plan", parents=[common, sel], help="mixed-precision plan within a budget")
    s.add_argument("file")
    s.add_argument("--budget", required=True, help="bytes or e.g. 60MB, 5.5GiB, 4.5bpw")
    s.add_argument("--calibration", help="per-layer E[x^2] statistics (.npz or .safetensors)")
    s.add_argument("--mode", default="optimal", choices=["optimal", "threshold"])
    s.add_argument("-o", "--output", help="plan JSON (default: FILE.plan.json)")
    s.set_defaults(func=cmd_plan)
    s = sub.add_parser("quantize", parents=[common, sel], help="write a quantized safetensors file")
    s.add_argument("file")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--plan", help="a plan JSON from `rxquant plan`")
    s.add_argument("--precision", default="int8", choices=["int8", "int4", "fp16"])
    s.add_argument("--granularity", default="channel", help="tensor, channel or group:N (default channel)")
    s.add_argument("--asymmetric", action="store_true", help="unsigned grid with a zero point")
    s.set_defaults(func=cmd_quantize)
    s = sub.add_parser("verify", parents=[common, dev], help="per-tensor SQNR and cosine of a quantized file")
    s.add_argument("original")
    s.add_argument("quantized")
    s.set_defaults(func=cmd_verify)
    s = sub.add_parser("devices", parents=[common], help="CPU threads and GPU backends")
    s.set_defaults(func=cmd_devices)
    s = sub.add_parser("bench", parents=[common], help="time rxquant against the installed peers")
    s.add_argument("--repeat", type=int, default=7)
    s.add_argument(
        "--write-docs", action="store_true", help="also write docs/performance.md (source checkout)"
    )
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("demo", parents=[common], help="quantize all-MiniLM-L6-v2 and report fidelity")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns 0 on success, 1 on failures, 2 on usage errors (argparse)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("rxquant: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, KeyError, DeviceError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rxquant: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
