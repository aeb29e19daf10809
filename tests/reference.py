"""Slow, plain-numpy references written from the formulas (ONNX Runtime conventions), for tests."""

from __future__ import annotations

import math

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
        x, axis = x.reshape(conv_view(x.shape, axis, group)), -1  # the last axis, named either way
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


def hist_width(amax: float, bins: int = 2048) -> float:
    """Bin width of rxquant's |x| histograms (rust/src/hist.rs): the smallest power of two 2^e
    (e >= -126) with floor(amax / 2^e) < bins, so that bins of every batch's layout nest."""
    e = max(-126, math.floor(math.log2(amax / bins))) if amax > 0 else -126
    while math.floor(amax / 2.0**e) >= bins:
        e += 1
    return 2.0**e


def abs_histogram(x: np.ndarray, bins: int = 2048) -> tuple[np.ndarray, float]:
    """Counts of |x| in bins [i w, (i + 1) w) from 0, w = hist_width(max |x|)."""
    a = np.abs(np.asarray(x, np.float64)).ravel()
    w = hist_width(float(a.max()), bins)
    counts = np.bincount(np.floor(a / w).astype(np.int64), minlength=bins)
    return counts.astype(np.float64), w


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
    c, w = abs_histogram(x[x != 0], bins)
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


def params_minmax(v: np.ndarray, qmin: int, qmax: int, symmetric: bool, signed_scale: bool = False):
    """(scale, zero point) of each row of ``v`` by min-max: ONNX Runtime's rule, or llama.cpp's
    signed scale (the value of largest magnitude over qmin)."""
    lo, hi = v.min(axis=1), v.max(axis=1)
    if signed_scale:
        m = np.where(hi > -lo, hi, lo)
        s = (m / qmin).astype(np.float32)
        s = np.where(np.abs(s) < np.finfo(np.float32).tiny, np.float32(1), s)
        return s, np.zeros(len(v), np.int64)
    pairs = [scale_zp(float(a), float(b), qmin, qmax, symmetric) for a, b in zip(lo, hi)]
    return np.array([p[0] for p in pairs], np.float32), np.array([p[1] for p in pairs], np.int64)


def _fq_error(v, lo, hi, qmin, qmax, symmetric, signed_scale):
    """Squared error per row of fake-quantizing rows of v with per-row clip ranges [lo, hi]."""
    lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    if signed_scale:
        s = np.where(hi > -lo, hi, lo) / qmin
        z = np.zeros_like(s)
    elif symmetric:
        s = 2 * np.maximum(hi, -lo) / (qmax - qmin)
        z = np.zeros_like(s)
    else:
        s = (hi - lo) / (qmax - qmin)
        z = np.clip(np.rint(qmin - lo / np.where(s == 0, 1, s)), qmin, qmax)
    s = np.where(np.abs(s) < TINY, 1.0, s)
    q = np.clip(np.rint(v / s[:, None]) + z[:, None], qmin, qmax)
    return np.sum((v - (q - z[:, None]) * s[:, None]) ** 2, axis=1)


def params_mse(v: np.ndarray, qmin: int, qmax: int, symmetric: bool, signed_scale: bool = False):
    """The MSE clip search of rxquant in numpy, rows at once: 50 fractions of the range, 21 around
    the best; asymmetric grids shrink both ends, then refine each end twice. Returns per-row
    (scale, zero point) of the chosen ranges by the same rules as params_minmax."""
    v = np.asarray(v, np.float32)
    mn, mx = np.minimum(v.min(axis=1), 0), np.maximum(v.max(axis=1), 0)
    rows = np.arange(len(v))

    def best(cands, rng):
        errs = np.stack([_fq_error(v, *rng(c), qmin, qmax, symmetric, signed_scale) for c in cands])
        return (
            np.stack(cands)[np.argmin(errs, axis=0), rows]
            if np.ndim(cands[0])
            else np.asarray(cands)[np.argmin(errs, axis=0)]
        )

    coarse = [np.full(len(v), k * 0.02, np.float32) for k in range(1, 51)]

    def fine(c):
        return [np.clip(c - 0.02 + j * 0.002, 1e-3, 1.0).astype(np.float32) for j in range(21)]

    if symmetric and not signed_scale:
        amax = np.maximum(-mn, mx)
        rng = lambda a: (-amax * a, amax * a)  # noqa: E731
        a = best(fine(best(coarse, rng)), rng)
        lo, hi = -amax * a, amax * a
    elif signed_scale:
        rng = lambda a: (mn * a, mx * a)  # noqa: E731
        a = best(fine(best(coarse, rng)), rng)
        lo, hi = mn * a, mx * a
    else:
        a = best(coarse, lambda a: (mn * a, mx * a))
        lo, hi = mn * a, mx * a
        for _ in range(2):
            b = best(fine(hi / np.maximum(mx, TINY)), lambda b, lo=lo: (lo, mx * b))
            hi = mx * b
            c = best(fine(lo / np.minimum(mn, -TINY)), lambda c, hi=hi: (mn * c, hi))
            lo = mn * c
    lo, hi = np.maximum(lo, v.min(axis=1)), np.minimum(hi, v.max(axis=1))
    lo, hi = np.minimum(lo, hi), np.maximum(hi, lo)
    return params_minmax(np.stack([lo, hi], axis=1), qmin, qmax, symmetric, signed_scale)


def gptq(w, h, qmin, qmax, symmetric, signed_scale=False, group=None, damp=0.01, block=128, mse=False):
    """GPTQ in float64 numpy (Frantar et al., 2022, as rxquant runs it): dead inputs zeroed, H
    dampened, U = upper Cholesky factor of H^-1, columns in blocks; per-row parameters from the
    original weight, or per group on the updated columns when the group's first column is reached
    (min-max, or with ``mse`` the clip search of params_mse). Returns (codes, scale, zero_point)
    in rxquant's layout."""
    params = params_mse if mse else params_minmax
    W = np.asarray(w, np.float64).copy()
    H = np.asarray(h, np.float64).copy()
    rows, cols = W.shape
    dead = np.diag(H) == 0
    H[dead, :] = 0
    H[:, dead] = 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[np.diag_indices(cols)] += damp * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    if group:
        block = -(-block // group) * group
        scale = np.zeros((rows, cols // group), np.float32)
        zp = np.zeros((rows, cols // group), np.int64)
    else:
        s_row, z_row = params(np.asarray(w, np.float32), qmin, qmax, symmetric, signed_scale)
    Q = np.zeros((rows, cols), np.int64)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].copy()
        Err = np.zeros((rows, i2 - i1))
        for i in range(i2 - i1):
            c = i1 + i
            if group and c % group == 0:
                sg, zg = params_minmax(
                    W1[:, i : i + group].astype(np.float32), qmin, qmax, symmetric, signed_scale
                )
                scale[:, c // group], zp[:, c // group] = sg, zg
            s, z = (scale[:, c // group], zp[:, c // group]) if group else (s_row, z_row)
            s64 = s.astype(np.float64)
            q = np.clip(np.rint((W1[:, i].astype(np.float32) / s).astype(np.float64)) + z, qmin, qmax)
            Q[:, c] = q
            e = (W1[:, i] - (q - z) * s64) / U[c, c]
            W1[:, i:] -= np.outer(e, U[c, c:i2])
            Err[:, i] = e
        W[:, i2:] -= Err @ U[i1:i2, i2:]
    if group:
        return Q, scale, zp
    return Q, s_row, z_row


# ------------------------------------------------------------------ ggml's K-type reference quantizers
# Ports of ggml-quants.c's quantize_row_q{4,5,6}_K_ref (numpy, one super-block at a time) in
# float32 with C's left-to-right sums; they return the decoded values, for comparing errors with
# rxquant's "nearest" (the same algorithm, in Rust).

F32 = np.float32


def _f16(v) -> np.float32:
    return F32(np.float16(F32(v)))


def _sum(a: np.ndarray) -> np.float32:
    """C's ``for (...) s += a[i]`` in float32 (numpy's sum is pairwise)."""
    return np.add.accumulate(np.asarray(a, F32), dtype=F32)[-1]


def _nearest(v) -> np.ndarray:
    return np.rint(np.asarray(v, F32)).astype(np.int64)


def _make_qkx2_quants(nmax, x, w, rmin, rdelta, nstep, use_mad=False):
    def cost(d):
        return np.abs(d) if use_mad else d**2

    mn, mx = F32(x.min()), F32(x.max())
    mn = min(mn, F32(0))
    if mx == mn:
        return F32(0), -mn
    sum_w, sum_x = _sum(w), _sum(w * x)
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1) / iscale
    q = np.clip(_nearest(iscale * (x - mn)), 0, nmax).astype(F32)
    best = _sum(w * cost(scale * q + mn - x))
    for i in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(i) + F32(nmax)) / (mx - mn)
        q = np.clip(_nearest(iscale * (x - mn)), 0, nmax).astype(F32)
        sl, sl2, sxl = _sum(w * q), _sum(w * q * q), _sum(w * q * x)
        dd = sum_w * sl2 - sl * sl
        if dd > 0:
            s = (sum_w * sxl - sum_x * sl) / dd
            m = (sl2 * sum_x - sl * sxl) / dd
            if m > 0:
                m, s = F32(0), sxl / sl2
            err = _sum(w * cost(s * q + m - x))
            if err < best:
                best, scale, mn = err, s, m
    return scale, -mn


def _make_qx_quants(nmax, x):
    amax = F32(0)
    mx = F32(0)
    for v in x:  # the first value of largest magnitude
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < 1e-15:
        return F32(0)
    w = x * x
    iscale = F32(-nmax) / mx
    q = np.clip(_nearest(iscale * x), -nmax, nmax - 1).astype(F32)
    sumlx, suml2 = _sum(w * x * q), _sum(w * q * q)
    scale = sumlx / suml2 if suml2 else F32(0)
    best = scale * sumlx
    for i in [*range(-9, 0), *range(1, 10)]:
        iscale = -(F32(nmax) + F32(0.1) * F32(i)) / mx
        q = np.clip(_nearest(iscale * x), -nmax, nmax - 1).astype(F32)
        sumlx, suml2 = _sum(w * x * q), _sum(w * q * q)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


def _make_q3_quants(nmax, x):
    """ggml's ``make_q3_quants`` with ``do_rmse``: nearest codes from the largest magnitude, then
    single codes moved while the ``x²``-weighted least-squares fit improves (at most 5 passes)."""
    amax = F32(0)
    mx = F32(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < 1e-15:
        return F32(0)
    iscale = F32(-nmax) / mx
    q = [int(np.clip(_nearest(iscale * v), -nmax, nmax - 1)) for v in x]
    sumlx, suml2 = F32(0), F32(0)
    for v, c in zip(x, q):
        w = v * v
        sumlx += w * v * F32(c)
        suml2 += w * F32(c) * F32(c)
    for _ in range(5):
        changed = False
        for i, v in enumerate(x):
            w = v * v
            slx = sumlx - w * v * F32(q[i])
            if slx > 0:
                sl2 = suml2 - w * F32(q[i]) * F32(q[i])
                new = int(np.clip(_nearest(v * sl2 / slx), -nmax, nmax - 1))
                if new != q[i]:
                    slx += w * v * F32(new)
                    sl2 += w * F32(new) * F32(new)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        q[i], sumlx, suml2, changed = new, slx, sl2, True
        if not changed:
            break
    return sumlx / suml2 if suml2 > 0 else F32(0)


def ggml_k_reference(x: np.ndarray, type_name: str) -> np.ndarray:
    """The values ggml's ``quantize_row_{q2,q3,q4,q5,q6}_K_ref`` stores ``x`` (multiple of 256) as."""
    out = np.empty(x.size, np.float64)
    x = x.reshape(-1, 256).astype(F32)
    for b, xb in enumerate(x):
        y = np.zeros(256, F32)
        if type_name == "Q2_K":
            scales, mins = np.zeros(16, F32), np.zeros(16, F32)
            for j in range(16):
                s = xb[16 * j : 16 * j + 16]
                scales[j], mins[j] = _make_qkx2_quants(3, s, np.abs(s), -0.5, 0.1, 15, use_mad=True)
            d = _f16(scales.max() / F32(15)) if scales.max() > 0 else F32(0)
            dmin = _f16(mins.max() / F32(15)) if mins.max() > 0 else F32(0)
            inv_s = F32(15) / scales.max() if scales.max() > 0 else F32(0)
            inv_m = F32(15) / mins.max() if mins.max() > 0 else F32(0)
            for j in range(16):
                dj, dm = d * F32(int(_nearest(inv_s * scales[j]))), dmin * F32(int(_nearest(inv_m * mins[j])))
                s = xb[16 * j : 16 * j + 16]
                q = np.clip(_nearest((s + dm) / dj), 0, 3).astype(F32) if dj else np.zeros(16, F32)
                y[16 * j : 16 * j + 16] = dj * q - dm
        elif type_name in ("Q4_K", "Q5_K"):
            nmax, rmin, nstep = (15, -1.0, 20) if type_name == "Q4_K" else (31, -0.5, 15)
            scales, mins = np.zeros(8, F32), np.zeros(8, F32)
            for j in range(8):
                s = xb[32 * j : 32 * j + 32]
                w = np.sqrt(_sum(s * s) / F32(32)) + np.abs(s)
                scales[j], mins[j] = _make_qkx2_quants(nmax, s, w, rmin, 0.1, nstep)
            inv_s = F32(63) / scales.max() if scales.max() > 0 else F32(0)
            inv_m = F32(63) / mins.max() if mins.max() > 0 else F32(0)
            d, dmin = _f16(scales.max() / F32(63)), _f16(mins.max() / F32(63))
            for j in range(8):
                ls = min(63, int(_nearest(inv_s * scales[j])))
                lm = min(63, int(_nearest(inv_m * mins[j])))
                dj, dm = d * F32(ls), dmin * F32(lm)
                s = xb[32 * j : 32 * j + 32]
                q = np.clip(_nearest((s + dm) / dj), 0, nmax).astype(F32) if dj else np.zeros(32, F32)
                y[32 * j : 32 * j + 32] = dj * q - dm
        elif type_name == "Q3_K":
            scales = np.array([_make_q3_quants(4, xb[16 * i : 16 * i + 16]) for i in range(16)], F32)
            k = int(np.argmax(np.abs(scales)))
            if scales[k] == 0:
                out[256 * b : 256 * b + 256] = 0
                continue
            iscale = F32(-32) / scales[k]
            d = _f16(F32(1) / iscale)
            for j in range(16):
                sc = min(31, max(-32, int(_nearest(iscale * scales[j]))))
                dj = d * F32(sc)
                s = xb[16 * j : 16 * j + 16]
                q = np.clip(_nearest(s / dj), -4, 3).astype(F32) if dj else np.zeros(16, F32)
                y[16 * j : 16 * j + 16] = dj * q
        else:
            scales = np.array([_make_qx_quants(32, xb[16 * i : 16 * i + 16]) for i in range(16)], F32)
            k = int(np.argmax(np.abs(scales)))
            if abs(scales[k]) < 1e-15:
                out[256 * b : 256 * b + 256] = 0
                continue
            iscale = F32(-128) / scales[k]
            d = _f16(F32(1) / iscale)
            for j in range(16):
                sc = min(127, int(_nearest(iscale * scales[j])))
                dj = d * F32(sc)
                s = xb[16 * j : 16 * j + 16]
                q = np.clip(_nearest(s / dj), -32, 31).astype(F32) if dj else np.zeros(16, F32)
                y[16 * j : 16 * j + 16] = dj * q
        out[256 * b : 256 * b + 256] = y
    return out


# ------------------------------------------------------------------ ggml's IQ4 quantizer
# A port of ggml-quants.c's quantize_row_iq4_nl_impl as llama-quantize runs it without an
# importance matrix (quantize_iq4_nl / quantize_iq4_xs: ntry 7, each value weighted by its
# square), in float32 with C's left-to-right sums; it returns the decoded values.

IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], F32)


def _best_index_int8(y: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8`` over the IQ4 levels, elementwise: the ends past the grid, else
    the level below or above ``y``, whichever is nearer (above on a tie, and for NaN)."""
    y = np.asarray(y, F32)
    mu = np.clip(np.searchsorted(IQ4_LEVELS, y, side="right"), 1, 15)
    below = (y - IQ4_LEVELS[mu - 1]) < (IQ4_LEVELS[mu] - y)
    i = np.where(below, mu - 1, mu)
    return np.where(y <= IQ4_LEVELS[0], 0, np.where(y >= IQ4_LEVELS[15], 15, i))


def ggml_iq4_reference(x: np.ndarray, type_name: str) -> np.ndarray:
    """The values llama-quantize stores ``x`` as in IQ4_NL (blocks of 32) or IQ4_XS (256)."""
    sb = 32 if type_name == "IQ4_NL" else 256
    out = np.empty(x.size, np.float64)
    for b, xb in enumerate(x.reshape(-1, sb).astype(F32)):
        scales = np.zeros(sb // 32, F32)
        max_scale, amax_scale = F32(0), F32(0)
        for ib in range(sb // 32):
            s = xb[32 * ib : 32 * ib + 32]
            j = int(np.argmax(np.abs(s)))  # the first of the largest magnitude
            amax, mx = np.abs(s[j]), s[j]
            if amax < F32(1e-15):
                continue
            w = s * s

            def sums(inv: np.float32, s: np.ndarray = s, w: np.ndarray = w) -> tuple:
                q = IQ4_LEVELS[_best_index_int8(inv * s)]
                return _sum(w * q * s), _sum(w * q * q)

            sqx, sq2 = sums(F32(1) / (-mx / IQ4_LEVELS[0]))
            d = sqx / sq2 if sq2 > 0 else F32(0)
            best = d * sqx
            for itry in range(-7, 8):
                sqx, sq2 = sums(F32(itry - 127) / mx)
                if sq2 > 0 and sqx * sqx > best * sq2:
                    d = sqx / sq2
                    best = d * sqx
            scales[ib] = d
            if abs(d) > amax_scale:
                amax_scale, max_scale = abs(d), d
        y = np.zeros(sb, F32)
        if sb == 32:
            inv = F32(1) / scales[0] if scales[0] else F32(0)
            y[:] = _f16(scales[0]) * IQ4_LEVELS[_best_index_int8(inv * xb)]
        else:
            d = -max_scale / F32(32)
            inv = F32(1) / d if d else F32(0)
            for ib in range(8):
                s = xb[32 * ib : 32 * ib + 32]
                ls = int(np.clip(_nearest(inv * scales[ib]), -32, 31))
                dl = d * F32(ls)
                idl = F32(1) / dl if dl else F32(0)
                y[32 * ib : 32 * ib + 32] = (_f16(d) * F32(ls)) * IQ4_LEVELS[_best_index_int8(idl * s)]
        out[b * sb : (b + 1) * sb] = y
    return out
