"""Slow, plain-numpy references written from the formulas (ONNX Runtime conventions), for tests."""

from __future__ import annotations

import numpy as np

TINY = np.finfo(np.float32).tiny


def qrange(precision: str, symmetric: bool, full_range: bool = False) -> tuple[int, int]:
    half = 128 if precision == "int8" else 8
    if not symmetric:
        return 0, 2 * half - 1
    return (-half, half - 1) if full_range else (-(half - 1), half - 1)


def scale_zp(rmin: float, rmax: float, qmin: int, qmax: int, symmetric: bool) -> tuple[np.float32, int]:
    rmin, rmax = np.float32(rmin), np.float32(rmax)
    if not (np.isfinite(rmin) and np.isfinite(rmax)) or rmin > rmax:
        return np.float32(1.0), 0
    if rmin == rmax and rmin != 0:
        return np.float32(abs(rmin)), (0 if symmetric or rmin > 0 else qmin + 1)
    lo, hi = np.float64(min(rmin, 0)), np.float64(max(rmax, 0))
    if symmetric:
        a = max(abs(lo), abs(hi))
        lo, hi = -a, a
    scale = (hi - lo) / (qmax - qmin)
    if scale < TINY:
        return np.float32(1.0), 0
    zp = np.rint((qmin + qmax) / 2.0) if symmetric else np.rint(qmin - lo / scale)
    return np.float32(scale), int(np.clip(zp, qmin, qmax))


def _blocks(x: np.ndarray, axis, group):
    """Views x as (grid..., members): returns (moved array reshaped, grid shape in moved order)."""
    if axis is None:
        return x.reshape(1, -1), ()
    a = axis % x.ndim
    m = np.moveaxis(x, a, -1)
    if group is None:  # per channel: (C, rest)
        return np.moveaxis(x, a, 0).reshape(x.shape[a], -1), (x.shape[a],)
    g = m.reshape(m.shape[:-1] + (m.shape[-1] // group, group))
    return g.reshape(-1, group), m.shape[:-1] + (m.shape[-1] // group,)


def conv_view(shape, axis, group):
    """Groups along the last axis of a 3+-dim tensor run over the flattened input dimension:
    the 2-D shape they are taken in, or None."""
    if group is not None and axis is not None and len(shape) >= 3 and axis % len(shape) == len(shape) - 1:
        return (shape[0], int(np.prod(shape[1:])))
    return None


def minmax_qparams(x, precision, symmetric, axis=None, group=None, full_range=False):
    """Returns (scale, zp) arrays in rxquant's grid shape."""
    qmin, qmax = qrange(precision, symmetric, full_range)
    x = np.asarray(x, np.float32)
    if conv_view(x.shape, axis, group):
        x = x.reshape(conv_view(x.shape, axis, group))
    rows, grid = _blocks(x, axis, group)
    pairs = [
        scale_zp(r.min() if r.size else np.inf, r.max() if r.size else -np.inf, qmin, qmax, symmetric)
        for r in rows
    ]
    scale = np.array([p[0] for p in pairs], np.float32)
    zp = np.array([p[1] for p in pairs], np.int32)
    if axis is None:
        return scale.reshape(()), zp.reshape(())
    if group is None:
        return scale, zp
    a = axis % x.ndim
    return (np.moveaxis(scale.reshape(grid), -1, a), np.moveaxis(zp.reshape(grid), -1, a))


def broadcast_params(p: np.ndarray, shape, axis, group) -> np.ndarray:
    """Expands a parameter grid to one value per element."""
    if axis is None:
        return np.broadcast_to(p, shape)
    a = axis % len(shape)
    if group is None:
        view = [1] * len(shape)
        view[a] = shape[a]
        return np.broadcast_to(p.reshape(view), shape)
    flat = conv_view(shape, axis, group)
    if flat:
        return np.repeat(p.reshape(flat[0], -1), group, axis=1).reshape(shape)
    return np.repeat(p, group, axis=a)


def quantize(x, scale, zp, qmin, qmax, axis=None, group=None) -> np.ndarray:
    x = np.asarray(x, np.float32)
    s = broadcast_params(scale, x.shape, axis, group).astype(np.float32)
    z = broadcast_params(zp, x.shape, axis, group).astype(np.int64)
    return np.clip(np.rint(x / s).astype(np.int64) + z, qmin, qmax)


def dequantize(q, scale, zp, axis=None, group=None) -> np.ndarray:
    s = broadcast_params(scale, q.shape, axis, group).astype(np.float32)
    z = broadcast_params(zp, q.shape, axis, group).astype(np.int64)
    return (q.astype(np.int64) - z).astype(np.float32) * s


def pack_int4(v: np.ndarray) -> np.ndarray:
    flat = v.reshape(-1).astype(np.int64) & 0xF
    if flat.size % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def sqnr_db(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    e = np.sum((x - y) ** 2)
    return float("inf") if e == 0 else float(10 * np.log10(np.sum(x * x) / e))


# ---- calibration references (float64, straight from the formulas) ----


def abs_histogram(x: np.ndarray, bins: int = 2048) -> tuple[np.ndarray, float]:
    a = np.abs(np.asarray(x, np.float64)).ravel()
    amax = float(a.max())
    counts, _ = np.histogram(a, bins=bins, range=(0.0, amax))
    return counts.astype(np.float64), amax / bins


def percentile_threshold(x: np.ndarray, pct: float) -> float:
    return float(np.percentile(np.abs(np.asarray(x, np.float64)), pct))


def percentile_bracket(x: np.ndarray, pct: float) -> tuple[float, float]:
    """The order statistics of |x| around the percentile's rank, by either convention
    (numpy's (n-1)q position or a histogram's n*q count)."""
    a = np.sort(np.abs(np.asarray(x, np.float64)).ravel())
    q = pct / 100
    return float(a[int(np.floor(q * (a.size - 1)))]), float(a[min(a.size - 1, int(np.ceil(q * a.size)))])


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Zero bins get eps counts taken evenly from the nonzero ones; then normalize."""
    zeros = d == 0
    nz = (~zeros).sum()
    d = np.where(zeros, eps, d - eps * zeros.sum() / nz)
    return d / d.sum()


def entropy_threshold(x: np.ndarray, levels: int = 128, bins: int = 2048) -> float:
    """TensorRT: candidates i = levels..bins on the |x| histogram, P with the tail folded into the last
    bin, Q = i bins merged into `levels` groups and spread over P's nonzero bins, argmin KL(P||Q)."""
    c, w = abs_histogram(x, bins)
    best, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        p = c[:i].copy()
        p[-1] += c[i:].sum()
        q = np.zeros(i)
        g = i // levels
        for j in range(levels):
            start, stop = j * g, (i if j == levels - 1 else (j + 1) * g)
            nz = p[start:stop] > 0
            if nz.any():
                q[start:stop][nz] = c[start:stop].sum() / nz.sum()
        if q.sum() == 0:
            continue
        ps, qs = _smooth(p), _smooth(q)
        m = ps > 0
        kl = float(np.sum(ps[m] * np.log(ps[m] / qs[m])))
        if kl < best_kl:
            best, best_kl = i, kl
    return best * w


def _sq_error_antiderivative(x: np.ndarray, s: float, kmax: int) -> np.ndarray:
    """F(x) = integral over [0, x] of (t - Q(t))^2: Q rounds to steps of s, saturating at kmax*s."""
    k = np.minimum(np.floor(x / s + 0.5), kmax)
    inner = s**3 / 24 + (k - 1) * s**3 / 12 + ((x - k * s) ** 3 + (s / 2) ** 3) / 3
    return np.where(k == 0, x**3 / 3, inner)


def mse_threshold_hist(x: np.ndarray, qmax: int = 127, bins: int = 2048) -> float:
    """Exact zeros left out; other values spread evenly over their bin; every bin edge T = k*w is tried."""
    a = np.abs(np.asarray(x, np.float64)).ravel()
    amax = float(a.max())
    c, _ = np.histogram(a[a != 0], bins=bins, range=(0.0, amax))
    w = amax / bins
    edges = np.arange(bins + 1) * w
    errs = []
    for k in range(1, bins + 1):
        s = float(np.float32(k * w / qmax))
        f = _sq_error_antiderivative(edges, s, qmax)
        errs.append(np.sum(c * (f[1:] - f[:-1]) / w))
    return (int(np.argmin(errs)) + 1) * w


def fake_quant_sym(x: np.ndarray, t: float, qmax: int = 127) -> np.ndarray:
    s = np.float32(t / qmax)
    return (np.clip(np.rint(x / s), -qmax, qmax) * s).astype(np.float32)
