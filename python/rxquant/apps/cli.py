"""The ``rxquant`` command line: inspect, analyze, statistics, plan, quantize, verify, devices,
bench, demo.

Exit codes: 0 success; 1 a failure while working (one line on stderr, no traceback); 2 a request
that cannot be done as asked (a bad option, a regex that does not compile, a group size that does
not fit a tensor, a file that is not what the option needs). A request is never changed silently:
it is refused with a message naming the tensor, value or file, or, where an option allows a
substitute (``--fallback channel``), the substitute is reported per tensor.
Progress shows as a bar on a terminal, as a line per tenth of the work otherwise, never with
``--quiet``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

from ..core.errors import RequestError
from ..core.hardware import GPU_FAMILIES
from ..core.native import DeviceError, __version__
from ..formats.gguf_file import is_gguf
from .console import UsageError, WarningLog, allowed_fallbacks

# The commands' modules are imported when one runs (see `_command`): the GGUF side starts without
# numpy, which `rxquant quantize model.gguf` never needs (docs/performance.md: start-up share).


# ------------------------------------------------------------------ parser


def _fallback_arg(value: str) -> str:
    parts = set(value.split(","))
    if not parts <= {"none", "channel", "nearest"} or ("none" in parts and len(parts) > 1):
        raise argparse.ArgumentTypeError(f"{value!r}: use none, channel, nearest or channel,nearest")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    dev = argparse.ArgumentParser(add_help=False)
    dev.add_argument(
        "--device",
        default="auto",
        help="where calibration, quantization and metrics run: auto (per operation, an OpenCL GPU "
        "where its measured figures predict it faster, else the CPU), cpu, opencl or opencl:N "
        "(default auto)",
    )
    sel = argparse.ArgumentParser(add_help=False, parents=[dev])
    sel.add_argument("--include", help="regex: only tensors whose name matches")
    sel.add_argument("--exclude", help="regex: skip tensors whose name matches")
    sel.add_argument(
        "--gpu",
        default="polaris",
        choices=sorted(GPU_FAMILIES),
        help="GPU family whose candidate formats to use (default polaris)",
    )
    sel.add_argument(
        "--method",
        choices=["minmax", "percentile", "entropy", "mse"],
        help="calibration method (default mse: the clip with the least squared error; with --plan, the "
        "plan's method)",
    )

    p = argparse.ArgumentParser(prog="rxquant", description="Quantize tensors and checkpoints.")
    p.add_argument("--version", action="version", version=f"rxquant {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    file_help = (
        "a .safetensors file, a shard or *.index.json of a sharded checkpoint, an .npz, or a model folder "
        "(its model.safetensors)"
    )
    s = sub.add_parser("inspect", parents=[common], help="tensors, dtypes and sizes of a checkpoint")
    s.add_argument(
        "file", help=file_help + " (also an rxquant quantized file), a .gguf file or an .onnx model"
    )
    s.set_defaults(func="cmd_inspect")
    s = sub.add_parser(
        "analyze", parents=[common, sel], help="sensitivity per tensor and candidate precision"
    )
    s.add_argument("file", help=file_help)
    s.set_defaults(func="cmd_analyze")
    s = sub.add_parser(
        "plan",
        parents=[common, sel],
        help="mixed-precision plan within a budget",
        description="Choose a candidate format per tensor so the model fits the budget with the least "
        "predicted error. Reads one tensor at a time. A byte budget (60MB, 5.5GiB) caps the whole output "
        "file; a bits-per-weight budget (4.5bpw) counts the quantized tensors' codes, scales and zero "
        "points.",
    )
    s.add_argument("file", help=file_help)
    s.add_argument(
        "--budget",
        required=True,
        help="bytes or 60MB, 5.5GiB (the whole output file), or 4.5bpw (bits a quantized weight)",
    )
    s.add_argument(
        "--statistics",
        "--calibration",
        dest="statistics",
        help="the layers' input statistics (rxquant statistics file, llama.cpp imatrix .gguf/.dat, or "
        ".npz/.safetensors E[x^2] vectors): errors become the layers' output errors",
    )
    s.add_argument(
        "--rounding",
        choices=["nearest", "importance", "gptq"],
        default="nearest",
        help="how each candidate is rounded when measured: nearest (default), importance (E[x^2]-weighted "
        "clip search) or gptq (needs Hessians in --statistics)",
    )
    s.add_argument(
        "--mode",
        default="optimal",
        choices=["optimal", "threshold"],
        help="optimal: least total predicted error (exact knapsack); threshold: the seed's rule",
    )
    s.add_argument(
        "-o", "--output", help="plan JSON to write (default: FILE's name with .plan.json, in this folder)"
    )
    s.set_defaults(func="cmd_plan")
    s = sub.add_parser(
        "quantize",
        parents=[common, sel],
        help="write a quantized safetensors, GGUF or ONNX file",
        description="Quantize a checkpoint into rxquant's safetensors format (--precision, --granularity), "
        "or into a GGUF file llama.cpp runs (output *.gguf; --type or --budget). A GGUF input, or a "
        "BERT-family model folder / its model.safetensors with a .gguf output, takes the GGUF path; an .onnx "
        "model becomes one ONNX Runtime runs (MatMulNBits or DequantizeLinear; --format).",
    )
    s.add_argument(
        "file",
        help=file_help + "; a .gguf file (a BERT-family folder can also become GGUF); or an .onnx model",
    )
    s.add_argument(
        "-o", "--output", required=True, help="the quantized .safetensors, .gguf or .onnx file to write"
    )
    s.add_argument("--plan", help="a plan JSON from `rxquant plan` (it sets each tensor's scheme)")
    s.add_argument(
        "--precision",
        choices=["int8", "int4", "fp16"],
        help="storage format of the selected tensors (default int8; safetensors output)",
    )
    s.add_argument(
        "--granularity",
        help="tensor, channel (one scale per output row) or group:N (N consecutive inputs; conv weights "
        "group their flattened in*kh*kw); default channel (safetensors output), group:32 (ONNX output, "
        "which takes group:N or channel)",
    )
    s.add_argument(
        "--type",
        help="GGUF output: one llama.cpp type for every tensor llama.cpp quantizes (q4_0, q4_1, q5_0, q5_1, "
        "q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs; f16, bf16 or f32 to convert; as llama-quantize "
        "--pure), or "
        "llama-quantize's mix of types per tensor (q2_k_s, which needs statistics, q3_k_s, q3_k_m, q3_k_l, "
        "q4_k_s, q4_k_m, q5_k_s, q5_k_m); rows a K type (or iq4_xs) cannot hold fall back as in llama.cpp",
    )
    s.add_argument(
        "--budget",
        help="GGUF output: choose a type per tensor within 4.8bpw (bits a quantized weight) or a file size "
        "(60MB) with the least predicted error",
    )
    s.add_argument(
        "--imatrix",
        help="GGUF output: llama.cpp's importance matrix (.gguf or .dat) as statistics; without "
        "--rounding it means --rounding importance, as for llama-quantize",
    )
    s.add_argument(
        "--format",
        choices=["matmulnbits", "qdq"],
        help="ONNX output: com.microsoft MatMulNBits (default) or DequantizeLinear (opset 21) before the "
        "MatMul (the default with --granularity channel, which MatMulNBits cannot hold)",
    )
    s.add_argument(
        "--zero-points",
        choices=["int", "float"],
        help="ONNX MatMulNBits, --asymmetric: int (packed, default, as ONNX Runtime's RTN) or float (a free "
        "offset per block, as its HQQ; with --rounding mse or importance; more bytes)",
    )
    s.add_argument(
        "--embeddings", action="store_true", help="ONNX: also quantize Gather tables (GatherBlockQuantized)"
    )
    s.add_argument(
        "--allow-requantize",
        action="store_true",
        help="GGUF input: allow requantizing tensors that are already quantized (loses quality)",
    )
    s.add_argument(
        "--asymmetric",
        action="store_true",
        help="unsigned grid with a zero point (default: symmetric, signed scale using all codes)",
    )
    s.add_argument(
        "--statistics",
        help="the layers' input statistics for --rounding importance or gptq (rxquant statistics file, "
        "llama.cpp imatrix .gguf/.dat, or .npz/.safetensors E[x^2] vectors)",
    )
    s.add_argument(
        "--rounding",
        choices=["nearest", "mse", "importance", "gptq"],
        help="nearest (default; with --plan, the plan's; with --imatrix, importance; for GGUF llama.cpp's "
        "own rounding), mse (GGUF: "
        "least-squares block parameters), importance (search weighted by E[x^2]) or gptq "
        "(error-compensating rounding; needs Hessians)",
    )
    s.add_argument(
        "--fallback",
        default="none",
        type=_fallback_arg,
        help="substitutes allowed, reported per tensor: none (default: refuse), channel (per channel where "
        "the group size does not fit), nearest (round to nearest where there are no statistics), or "
        "channel,nearest",
    )
    s.set_defaults(func="cmd_quantize")
    s = sub.add_parser(
        "statistics",
        parents=[common],
        help="input statistics of a BERT-family model's layers, for data-aware rounding",
        description="Runs a BERT-family model (a folder with config.json, tokenizer.json and "
        "model.safetensors) in numpy on calibration sentences and writes each linear layer's input "
        "statistics. For other models use rxquant.torch.collect_statistics.",
    )
    s.add_argument("model_dir", help="the model folder, or an .onnx model (run by ONNX Runtime)")
    s.add_argument("--tokenizer", help="ONNX model: tokenizer.json (or its folder) for the sentences")
    s.add_argument("-o", "--output", required=True, help="the statistics .safetensors file to write")
    s.add_argument(
        "--sentences", help="a text file with one calibration sentence per line (default: rxquant's 128)"
    )
    s.add_argument(
        "--kind",
        choices=["hessian", "importance"],
        default="hessian",
        help="hessian (2 XᵀX/N, for gptq; default) or importance (E[x^2] only, much smaller)",
    )
    s.set_defaults(func="cmd_statistics")
    s = sub.add_parser("verify", parents=[common, dev], help="per-tensor SQNR and cosine of a quantized file")
    s.add_argument(
        "original",
        help="the checkpoint that was quantized (for GGUF: the source GGUF or model folder; for ONNX: "
        "the float model)",
    )
    s.add_argument("quantized", help="the rxquant quantized file, the quantized GGUF file or ONNX model")
    s.set_defaults(func="cmd_verify")
    s = sub.add_parser("devices", parents=[common], help="CPU threads and GPU backends")
    s.set_defaults(func="cmd_devices")
    s = sub.add_parser(
        "bench", parents=[common], help="time rxquant against the installed peers (source checkout)"
    )
    s.add_argument("--repeat", type=int, default=7, help="timed runs per row, median shown (default 7)")
    s.add_argument(
        "--write-docs", action="store_true", help="also write docs/performance.md (source checkout)"
    )
    s.set_defaults(func="cmd_bench")
    s = sub.add_parser("demo", parents=[common], help="quantize all-MiniLM-L6-v2 and report fidelity")
    s.set_defaults(func="cmd_demo")
    return p


def _command(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function that runs ``args.command``: GGUF and ONNX files go to their own modules."""
    if args.command in ("analyze", "plan"):
        f = str(args.file)
        reads = f"{args.command} reads safetensors checkpoints (and .npz); {f} is"
        if is_gguf(f):
            raise UsageError(
                f"{reads} a GGUF file: `rxquant quantize {f} -o q.gguf --budget 4.8bpw` chooses its types "
                "per tensor"
            )
        if f.lower().endswith(".onnx"):
            raise UsageError(f"{reads} an ONNX model: `rxquant quantize {f} -o q.onnx` quantizes it")
    if args.command == "quantize" and str(args.file).lower().endswith(".onnx"):
        from .onnx_cli import cmd_quantize_onnx

        return lambda a: cmd_quantize_onnx(a, allowed_fallbacks(a))
    if args.command == "quantize" and (str(args.output).lower().endswith(".gguf") or is_gguf(args.file)):
        from .gguf_cli import cmd_quantize_gguf

        return lambda a: cmd_quantize_gguf(a, allowed_fallbacks(a))
    if args.command == "inspect" and str(args.file).lower().endswith(".onnx"):
        from .onnx_cli import cmd_inspect_onnx

        return cmd_inspect_onnx
    pair = (args.original, args.quantized) if args.command == "verify" else ()
    if any(str(f).lower().endswith(".onnx") for f in pair):
        if not all(str(f).lower().endswith(".onnx") for f in pair):
            raise UsageError("verify compares an ONNX model with an ONNX model: give both as .onnx files")
        from .onnx_cli import cmd_verify_onnx

        return cmd_verify_onnx
    if args.command == "inspect" and (is_gguf(args.file) or str(args.file).lower().endswith(".gguf")):
        from .gguf_cli import cmd_inspect_gguf

        return cmd_inspect_gguf
    if args.command == "verify" and any(
        is_gguf(f) or str(f).lower().endswith(".gguf") for f in (args.quantized, args.original)
    ):
        q = Path(args.quantized)
        if q.is_file() and not (is_gguf(q) or q.name.lower().endswith(".gguf")):
            raise UsageError(
                f"verify ORIGINAL QUANTIZED compares a quantized GGUF file with its original (GGUF, or "
                f"the model folder it was converted from); {q} is not GGUF"
            )
        from .gguf_cli import cmd_verify_gguf

        return cmd_verify_gguf
    from . import commands

    return getattr(commands, args.func)  # type: ignore[no-any-return]


def _input_files(args: argparse.Namespace) -> list[Path]:
    """The files the command reads: its input files, a sharded checkpoint's index and shards, a
    model folder's configuration and weights."""
    files: list[Path] = []
    for attr in ("file", "model_dir", "plan", "statistics", "imatrix"):
        value = getattr(args, attr, None)
        p = Path(value) if value else None
        if p is None or not p.exists():
            continue
        if p.is_dir() or p.name.endswith((".safetensors", ".index.json")):
            # Imports numpy: not for GGUF inputs.
            from ..formats.checkpoint import model_folder_files, source_files

            files += model_folder_files(p) if p.is_dir() else source_files(p)
        else:
            files.append(p)
    return files


def check_output(args: argparse.Namespace) -> None:
    """Refuses an ``--output`` that is one of the command's own input files."""
    out = getattr(args, "output", None)
    if out:
        from ..core.atomic import refuse_overwriting

        refuse_overwriting(out, *_input_files(args))  # a RequestError: exit 2


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns 0 on success, 1 on failures, 2 on requests that cannot be done as asked.
    Warnings print as the command line's own lines (:class:`~.console.WarningLog`)."""
    with warnings.catch_warnings():
        log = WarningLog()
        if not sys.warnoptions:
            # Every RuntimeWarning (what rxquant warns with) reaches the log, which shows each
            # message once; the other categories keep Python's filters, and `-W` options are the
            # user's.
            warnings.simplefilter("always", RuntimeWarning)
        warnings.showwarning = log.show
        try:
            return _main(argv)
        finally:
            log.summary()


def _main(argv: Optional[list[str]]) -> int:
    args = build_parser().parse_args(argv)
    args.method_given = getattr(args, "method", None)
    if hasattr(args, "method") and args.method is None and not getattr(args, "plan", None):
        args.method = "mse"
    try:
        if getattr(args, "device", "auto") not in ("auto", "cpu"):
            from ..core.devices import check_device  # its module probes GPUs: imported when asked

            try:
                check_device(args.device)
            except ValueError as e:
                raise UsageError(f"--device: {e}") from None
        check_output(args)
        return int(_command(args)(args))
    except KeyboardInterrupt:
        print("rxquant: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except RequestError as e:  # the command line's own refusals and the library's
        print(f"rxquant: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`rxquant inspect big.safetensors | head`): stop quietly, as other
        # tools do, and keep Python's exit-time flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, ValueError, TypeError, KeyError, DeviceError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rxquant: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
