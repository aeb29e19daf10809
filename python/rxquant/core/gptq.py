"""GPTQ: rounding that compensates each column's error on the columns not yet quantized, using
the layer's input statistics, so that the layer's output (not its weight) stays close. The
algorithm runs in the Rust core (see ``rust/src/gptq.rs``); this is its numpy front."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np

from . import native
from .arrays import as_float_array
from .calibration import options_spec
from .costs import Work
from .devices import run
from .qparams import QParams
from .scheme import Scheme, as_flag, as_int, as_real, check_fits


def gptq(
    w: Any,
    scheme: Union[Scheme, str],
    hessian: Any,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    method: str = "mse",
    pack: bool = False,
    f16_scales: bool = False,
    device: Optional[str] = "auto",
) -> tuple[np.ndarray, QParams]:
    """GPTQ-quantizes ``w`` (``(out, in)``; a conv weight ``(out, in, kh, kw)`` is taken as
    ``(out, in*kh*kw)``) with ``hessian`` = ``2 XᵀX / N`` of the layer's inputs (``(in, in)``,
    from :class:`rxquant.HessianObserver`). Returns ``(codes, qparams)`` exactly as
    :func:`rxquant.quantize` does, so packing, files and ``load_quantized`` are unchanged.

    The scheme is per tensor, per channel along axis 0 (one scale per output) or in groups along
    the input axis. ``damp`` (a fraction of the mean of ``diag H``) makes a singular ``H``
    (fewer samples than inputs) usable; inputs with ``H_ii = 0`` get weight 0. ``act_order``
    quantizes columns by decreasing ``H_ii`` with static groups (same layout). ``method`` chooses
    each cell's clip range (``mse`` or ``minmax``) on the already-updated weights. With
    ``H = I`` the result equals round-to-nearest with the same method. ``f16_scales`` rounds each
    scale to float16 as soon as it is chosen (as files store INT4 scales), so the codes are
    computed with the stored scale.

    ``device``: where the block updates (``rows · in²`` flops) run; ``auto`` takes a GPU where its
    measured figures predict it faster (:mod:`rxquant.core.costs`). The device adds the same
    products in another order, so a weight within float32 rounding of a step may get the
    neighbouring code (on random layers, under one code in a thousand).
    """
    s = Scheme.coerce(scheme)
    damp, block_size = as_real("damp", damp), as_int("block_size", block_size)
    act_order, pack = as_flag("act_order", act_order), as_flag("pack", pack)
    f16_scales = as_flag("f16_scales", f16_scales)
    if not s.is_integer:
        raise ValueError(f"gptq needs int8 or int4, got {s.precision}")
    if pack and s.precision != "int4":
        raise ValueError(f"pack=True needs int4, the scheme is {s.precision}")
    a = as_float_array(w, "w")
    if a.ndim < 2:
        raise ValueError(f"gptq needs a weight of 2+ dimensions (out, in, ...), got shape {a.shape}")
    check_fits(s, a.shape)
    rows, cols = a.shape[0], math.prod(a.shape[1:])
    h = np.ascontiguousarray(np.asarray(hessian, dtype=np.float64))
    if h.shape != (cols, cols):
        raise ValueError(
            f"the Hessian has shape {h.shape}; a weight of shape {a.shape} has {cols} inputs "
            f"and needs ({cols}, {cols})"
        )
    flat = flat_scheme(s, a.shape)
    w2 = np.ascontiguousarray(a.reshape(rows, cols), dtype=np.float32)
    args = (
        w2,
        flat.spec(),
        h,
        damp,
        block_size,
        act_order,
        str(method),
        options_spec(),
        pack,
        f16_scales,
    )
    q, scale, zp, dead, damping = run(
        device,
        lambda be: native.gptq(*args, be),
        lambda: native.gptq(*args),
        Work.gptq(rows, cols, block_size),
    )
    if not pack:
        q = q.reshape(a.shape)
    extra = {"method": f"gptq+{method}", "dead_inputs": int(dead), "damping": float(damping)}
    return q, QParams(s, scale.reshape(s.grid(a.shape)), zp.reshape(s.grid(a.shape)), a.shape, extra=extra)


def output_error(w: Any, w_hat: Any, hessian: Any, *, device: Optional[str] = "auto") -> float:
    """The layer's output error ``‖X (W − W')ᵀ‖² / N = tr((W − W') H (W − W')ᵀ) / 2`` for
    ``H = 2 XᵀX / N`` (float32 products, float64 sum; rows in blocks). ``device``: where the
    product runs (``auto`` by measured cost)."""
    a = as_float_array(w, "w")
    rows = a.shape[0]
    d = a.reshape(rows, -1).astype(np.float32) - np.asarray(w_hat, np.float32).reshape(rows, -1)
    cols = d.shape[1]
    h64 = np.ascontiguousarray(np.asarray(hessian, np.float64))
    if h64.shape != (cols, cols):
        raise ValueError(f"the Hessian has shape {h64.shape}; the weight has {cols} inputs")
    d = np.ascontiguousarray(d)
    return float(
        run(
            device,
            lambda be: be.layer_error(d, h64),
            lambda: _output_error_cpu(d, h64),
            Work.layer_error(rows, cols),
        )
    )


def _output_error_cpu(d: np.ndarray, hessian: np.ndarray) -> float:
    rows = d.shape[0]
    h = np.asarray(hessian, np.float32)
    total = 0.0
    step = max(1, (1 << 22) // max(1, h.shape[0]))
    for i in range(0, rows, step):
        b = d[i : i + step]
        total += float(np.sum((b @ h) * b, dtype=np.float64))
    return total / 2.0


def flat_scheme(s: Scheme, shape: tuple[int, ...]) -> Scheme:
    """``s`` for the 2-D view ``(out, in*kh*kw)`` of a weight of ``shape``: per tensor, per channel
    along axis 0, or groups along the (flattened) input axis; other layouts are refused."""
    if s.axis is None:
        return s
    a = s.axis % len(shape)
    if s.group_size is None and a == 0:
        axis = 0
    elif s.group_size is not None and a == len(shape) - 1:
        axis = -1
    else:
        raise ValueError(
            f"data-aware rounding quantizes per tensor, per output channel (axis 0) or in groups along the "
            f"input axis (the last); {s.describe()} on axis {s.axis} of shape {tuple(shape)} is neither"
        )
    return Scheme(s.precision, s.symmetric, axis, s.group_size, s.full_range, s.signed_scale)
