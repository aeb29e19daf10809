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


def minmax_qparams(x, precision, symmetric, axis=None, group=None, full_range=False):
    """Returns (scale, zp) arrays in rxquant's grid shape."""
    qmin, qmax = qrange(precision, symmetric, full_range)
    x = np.asarray(x, np.float32)
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
