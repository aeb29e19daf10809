"""Peak memory of `rxquant quantize`, `rxquant analyze` and `rxquant plan` on a generated 4 GiB
safetensors checkpoint, measured with `/usr/bin/time -v` (or getrusage when it is missing).

The checkpoint has 2-D tensors of 4096x4096 and 11008x4096 (a 7B model's attention and MLP
shapes), in bfloat16 by default. It is generated tensor by tensor and deleted afterwards.
Targets: quantize under 1 GiB; analyze and plan under 1.5 GiB.

Run: python benches/streaming_memory.py [--gib 4] [--dtype bf16|f32] [--dir /tmp] [--only plan]
     [--write-docs]   (puts the lines it prints into docs/performance.md's memory section)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = ((4096, 4096), (11008, 4096))
#: The lines between these markers of docs/performance.md belong to this script (benches/compare.py
#: keeps them when it rewrites the rest).
BEGIN, END = "<!-- streaming_memory.py: begin -->", "<!-- streaming_memory.py: end -->"


def write_docs(lines: list[str]) -> None:
    """Replaces (or appends) the memory section of docs/performance.md."""
    from pathlib import Path

    from common import write_section

    text = "\n".join(
        [
            "## Peak memory of whole checkpoints",
            "",
            f"`python benches/streaming_memory.py --write-docs` ({os.cpu_count()} logical CPUs; each "
            "command a new process, peak resident memory by `/usr/bin/time -v`):",
            "",
            "```",
            *lines,
            "```",
        ]
    )
    write_section(Path(__file__).resolve().parents[1] / "docs" / "performance.md", BEGIN, END, text)


def bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 (round to nearest even), little-endian bytes."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def generate(path: str, gib: float, dtype: str) -> tuple[int, int]:
    """Writes a safetensors file one tensor at a time (never holding the whole file); returns
    (bytes, tensors)."""
    item = 2 if dtype == "bf16" else 4
    shapes: list[tuple[int, int]] = []
    total = 0
    while total < gib * 2**30:
        s = SHAPES[len(shapes) % 2]
        shapes.append(s)
        total += s[0] * s[1] * item
    header, off = {}, 0
    for i, (r, c) in enumerate(shapes):
        size = r * c * item
        header[f"layers.{i}.weight"] = {
            "dtype": "BF16" if dtype == "bf16" else "F32",
            "shape": [r, c],
            "data_offsets": [off, off + size],
        }
        off += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for r, c in shapes:
            w = rng.standard_normal((r, c), dtype=np.float32) * 0.02
            f.write(bf16_bytes(w) if dtype == "bf16" else w.tobytes())
    return os.path.getsize(path), len(shapes)


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak resident GiB, how) of one command; exits with its error if it fails."""
    t = time.perf_counter()
    if shutil.which("/usr/bin/time"):
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        peak_kib, how = (int(m.group(1)) if m else -1), "/usr/bin/time -v"
    else:
        r = subprocess.run(cmd, capture_output=True, text=True)
        peak_kib, how = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "getrusage"
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:4])} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return elapsed, peak_kib / 2**20, how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--precision", default="int8", help="quantize: the precision")
    ap.add_argument("--method", default=None, help="calibration method (default: the CLI's)")
    ap.add_argument("--only", choices=["quantize", "analyze", "plan"], action="append")
    ap.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    args = ap.parse_args()
    printed: list[str] = []
    work = tempfile.mkdtemp(prefix="rxquant-stream-", dir=args.dir)
    try:
        src = os.path.join(work, "big.safetensors")
        t = time.perf_counter()
        size, n = generate(src, args.gib, args.dtype)
        took = time.perf_counter() - t
        printed.append(
            f"generated {size / 2**30:.2f} GiB ({n} {args.dtype} tensors of 4096x4096 and 11008x4096) "
            f"in {took:.1f} s"
        )
        print(printed[-1])
        rx = [sys.executable, "-m", "rxquant"]
        method = ["--method", args.method] if args.method else []
        runs = {
            "quantize": (
                [*rx, "quantize", src, "-o", os.path.join(work, "q.safetensors")]
                + ["--precision", args.precision, *method, "--quiet"],
                1.0,
            ),
            "analyze": ([*rx, "analyze", src, *method, "--quiet", "--json"], 1.5),
            "plan": (
                [*rx, "plan", src, "--budget", "4.5bpw", "-o", os.path.join(work, "p.json")]
                + [*method, "--quiet"],
                1.5,
            ),
        }
        for name, (cmd, target) in runs.items():
            if args.only and name not in args.only:
                continue
            elapsed, peak, how = measure(cmd)
            shown = " ".join(cmd[3:]).replace(src, "big.safetensors").replace(work + os.sep, "")
            printed.append(
                f"rxquant {shown}: {elapsed:.1f} s, peak resident memory {peak:.3f} GiB ({how}; "
                f"target < {target} GiB)"
            )
            print(printed[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.write_docs:
        write_docs(printed)


if __name__ == "__main__":
    main()
