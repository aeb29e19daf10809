"""Peak memory of `rxquant quantize` on a generated 4 GiB safetensors checkpoint (64 float32
tensors of 4096x4096), measured with `/usr/bin/time -v` (or getrusage when it is missing).
Target: under 1 GiB. The checkpoint is generated tensor by tensor and deleted afterwards.

Run: python benches/streaming_memory.py [--gib 4] [--dir /tmp]
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


def generate(path: str, n_tensors: int, rows: int = 4096, cols: int = 4096) -> int:
    """Writes a safetensors file one tensor at a time (never holding the whole file)."""
    size = rows * cols * 4
    header = {
        f"layer{i}.weight": {
            "dtype": "F32",
            "shape": [rows, cols],
            "data_offsets": [i * size, (i + 1) * size],
        }
        for i in range(n_tensors)
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for _ in range(n_tensors):
            f.write(rng.standard_normal((rows, cols), dtype=np.float32).tobytes())
    return os.path.getsize(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--precision", default="int8")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rxquant-stream-", dir=args.dir)
    try:
        src, out = os.path.join(work, "big.safetensors"), os.path.join(work, "big.q.safetensors")
        n = max(1, round(args.gib * 2**30 / (4096 * 4096 * 4)))
        t = time.perf_counter()
        size = generate(src, n)
        took = time.perf_counter() - t
        print(f"generated {size / 2**30:.2f} GiB ({n} tensors of 4096x4096 float32) in {took:.1f} s")
        cmd = [
            sys.executable,
            "-m",
            "rxquant",
            "quantize",
            src,
            "-o",
            out,
            "--precision",
            args.precision,
            "--method",
            "minmax",
            "--quiet",
        ]
        t = time.perf_counter()
        if shutil.which("/usr/bin/time"):
            r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
            peak_kib, how = (int(m.group(1)) if m else -1), "/usr/bin/time -v"
        else:
            r = subprocess.run(cmd, capture_output=True, text=True)
            peak_kib, how = (
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                "getrusage (no /usr/bin/time)",
            )
        elapsed = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"rxquant quantize failed: {r.stderr.strip().splitlines()[-1]}")
        out_gib = os.path.getsize(out) / 2**30
        print(f"rxquant quantize --precision {args.precision}: {elapsed:.1f} s, output {out_gib:.2f} GiB")
        print(f"peak resident memory ({how}): {peak_kib / 2**20:.3f} GiB (target < 1 GiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
