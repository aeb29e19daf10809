"""The functional API: calibrate, quantize, dequantize, fake-quantize, INT4 packing and metrics.

Every function checks its input here (dtype, contiguity) and runs the math in the Rust core with
the GIL released. A C-contiguous float32/float16/float64 input is never copied.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

import numpy as np

from . import native
from .arrays import as_code_array, as_float_array, check_out
from .calibration import calibrate
from .costs import Work
from .devices import backend, run
from .qparams import QParams
from .scheme import Scheme, as_flag, as_shape, check_fits

SchemeLike = Union[Scheme, str, None]


def _check_qparams(qp: QParams, shape: tuple[int, ...], scheme: Optional[Scheme]) -> None:
    if not isinstance(qp, QParams):
        raise TypeError(f"qparams must be a QParams, got {type(qp).__name__}")
    if tuple(shape) != qp.shape:
        raise ValueError(
            f"tensor has shape {tuple(shape)}, but the quantization parameters are for {qp.shape}"
        )
    if scheme is not None and scheme != qp.scheme:
        raise ValueError(f"scheme {scheme} differs from the parameters' scheme {qp.scheme}")


def quantize(
    x: Any,
    scheme: SchemeLike = None,
    qparams: Optional[QParams] = None,
    *,
    ignore_nonfinite: bool = False,
    pack: bool = False,
    device: Optional[str] = None,
    importance: Optional[Any] = None,
) -> tuple[np.ndarray, QParams]:
    """Quantizes ``x``; returns ``(codes, qparams)``.

    Codes are int8 for symmetric schemes and uint8 for asymmetric ones. With ``pack=True`` (INT4
    only) they are packed two to a byte (see :func:`pack_int4`). FP16 returns a float16 array and
    counts values saturated at ±65504 in ``qparams.overflow`` (with a RuntimeWarning); FP32 copies.
    NaN/Inf raise a ValueError with their count and first index; ``ignore_nonfinite=True`` leaves
    them out of the range (NaN codes as the zero point, ±Inf saturate).
    Without ``qparams`` the range is calibrated with min-max. ``device``: ``"cpu"`` (default),
    ``"auto"``, ``"opencl"`` or ``"opencl:N"`` (see :mod:`rxquant.devices`).

    ``importance`` (a weight ``(out, in, ...)``; a vector of ``prod(shape[1:])`` values
    ``E[x_j^2]``, e.g. :meth:`HessianObserver.importance` or llama.cpp's importance matrix):
    each cell's clip is searched on the data for the least importance-weighted squared error
    ``sum_j E[x_j^2] (w_j - w'_j)^2`` (per tensor, per channel along axis 0, or groups along the
    last axis). It replaces ``qparams`` and runs on the CPU.
    """
    ignore_nonfinite, pack = as_flag("ignore_nonfinite", ignore_nonfinite), as_flag("pack", pack)
    a = as_float_array(x)
    s = qparams.scheme if (qparams is not None and scheme is None) else Scheme.coerce(scheme)
    if pack and s.precision != "int4":
        raise ValueError(f"pack=True needs int4, the scheme is {s.precision}")
    if not s.is_integer:
        return _quantize_float(a, s, ignore_nonfinite)
    check_fits(s, a.shape)
    if importance is not None:
        if qparams is not None:
            raise ValueError("give either qparams or importance, not both")
        qparams = calibrate(a, "mse", s, importance=importance, ignore_nonfinite=ignore_nonfinite)
        device = "cpu"
    out_bytes = (a.size + 1) // 2 if pack else a.size
    if qparams is None and (
        backend(device, Work.elementwise(a.nbytes, out_bytes)) is None or a.dtype == np.float32
    ):
        on = _finite_on(device, a, Work.elementwise(a.nbytes, out_bytes))
        return _quantize_minmax(a, s, pack, ignore_nonfinite, on)
    on = _finite_on(device, a, Work.streamed(a.nbytes, out_bytes))
    if qparams is None:
        qparams = calibrate(a, "minmax", s, ignore_nonfinite=ignore_nonfinite, device=device)
    _check_qparams(qparams, a.shape, s)
    qp, spec = qparams, s.spec()

    def on_device(be: Any) -> np.ndarray:
        return be.quantize(a, spec, qp.scale, qp.zero_point, pack)

    def on_cpu() -> np.ndarray:
        return native.quantize(a, spec, qp.scale, qp.zero_point, ignore_nonfinite, pack)

    return run(on, on_device, on_cpu, Work.streamed(a.nbytes, out_bytes)), qparams


def _quantize_minmax(
    a: np.ndarray, s: Scheme, pack: bool, ignore_nonfinite: bool, device: Optional[str]
) -> tuple[np.ndarray, QParams]:
    """Min-max parameters and codes in one call: on a device from one upload of ``a``; on the
    CPU in one pass for groups along the last axis."""

    def result(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> tuple[np.ndarray, QParams]:
        return q, QParams(s, scale, zp, a.shape, extra={"method": "minmax"})

    return run(
        device,
        lambda be: result(*be.quantize_minmax(a, s.spec(), pack)),
        lambda: result(*native.quantize_minmax(a, s.spec(), ignore_nonfinite, pack)),
        Work.elementwise(a.nbytes, (a.size + 1) // 2 if pack else a.size),
    )


def _finite_on(device: Optional[str], a: np.ndarray, work: Work) -> Optional[str]:
    """``device``, or the CPU when ``a`` has NaN/Inf: the CPU path reports them (or handles them
    under ``ignore_nonfinite``) by its rules, which the element-wise kernels do not check. The
    scan only runs when ``device`` resolves to an OpenCL device for ``work``."""
    if backend(device, work) is None or bool(np.isfinite(a).all()):
        return device
    return "cpu"


def _quantize_float(a: np.ndarray, s: Scheme, ignore_nonfinite: bool) -> tuple[np.ndarray, QParams]:
    empty = np.zeros((0,), np.float32)
    if s.precision == "fp32":
        if not ignore_nonfinite:
            native.metrics(a, a)  # raises on NaN/Inf with count and index
        return a.astype(np.float32, copy=True), QParams(s, empty, empty.astype(np.int32), a.shape)
    out, overflow = native.to_fp16(a, ignore_nonfinite)
    if overflow:
        warnings.warn(
            f"{overflow} value(s) beyond ±65504 were saturated to the largest float16",
            RuntimeWarning,
            stacklevel=3,
        )
    return out, QParams(s, empty, empty.astype(np.int32), a.shape, overflow=overflow)


def dequantize(
    q: Any,
    qparams: QParams,
    *,
    packed: bool = False,
    device: Optional[str] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Reconstructs float32 values ``(q - zero_point) * scale`` in ``qparams.shape``.

    ``packed=True`` reads INT4 codes packed two to a byte. ``out``: a C-contiguous float32 array
    of ``qparams.shape`` to write the values into (and return), so that a loop can reuse one
    buffer instead of paying for a new array's pages on every call.
    """
    if not isinstance(qparams, QParams):
        raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
    packed = as_flag("packed", packed)
    if out is not None:
        out = check_out(out, tuple(qparams.shape))
    s = qparams.scheme
    if not s.is_integer:
        a = as_float_array(q, "q")
        _check_qparams(qparams, a.shape, None)
        if out is None:
            return a.astype(np.float32)
        np.copyto(out, a)
        return out
    c = as_code_array(q)
    if packed:
        if s.precision != "int4":
            raise ValueError(f"packed codes need an int4 scheme, got {s.precision}")
        need = (math.prod(qparams.shape) + 1) // 2
        if c.dtype != np.uint8 or c.size != need:
            raise ValueError(
                f"packed INT4 data for shape {qparams.shape} must be {need} uint8 bytes, got {c.size}"
            )
        c = c.reshape(-1)
    else:
        _check_qparams(qparams, c.shape, None)
        want = np.int8 if s.symmetric else np.uint8
        if c.dtype != want:
            raise TypeError(
                f"codes of a {'symmetric' if s.symmetric else 'asymmetric'} scheme must be "
                f"{np.dtype(want).name}, got dtype {c.dtype}"
            )
    args = (s.spec(), qparams.scale, qparams.zero_point)

    def on_device(be: Any) -> np.ndarray:
        y = be.dequantize(c, *args)
        if out is None:
            return y
        np.copyto(out, y.reshape(out.shape))
        return out

    return run(
        "cpu" if packed else device,
        on_device,
        lambda: native.dequantize(c, list(qparams.shape), *args, packed, out),
        Work.elementwise(c.nbytes, 4 * c.size),
    )


def fake_quantize(
    x: Any,
    scheme: SchemeLike = None,
    qparams: Optional[QParams] = None,
    *,
    ignore_nonfinite: bool = False,
    return_mask: bool = False,
    device: Optional[str] = None,
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Quantizes and dequantizes in one pass, returning float32 in the shape of ``x``.

    With ``return_mask`` also returns the straight-through-estimator mask (True where the value
    lies inside the clamping range): the gradient is ``grad_out * mask``.
    """
    ignore_nonfinite = as_flag("ignore_nonfinite", ignore_nonfinite)
    return_mask = as_flag("return_mask", return_mask)
    a = as_float_array(x)
    s = qparams.scheme if (qparams is not None and scheme is None) else Scheme.coerce(scheme)
    if not s.is_integer:
        q, _ = _quantize_float(a, s, ignore_nonfinite)
        y = q.astype(np.float32)
        return (y, np.ones(a.shape, bool)) if return_mask else y
    check_fits(s, a.shape)
    if qparams is None:
        qparams = calibrate(a, "minmax", s, ignore_nonfinite=ignore_nonfinite, device=device)
    _check_qparams(qparams, a.shape, s)
    args = (s.spec(), qparams.scale, qparams.zero_point)
    work = Work.elementwise(a.nbytes, 5 * a.size)
    y, mask = run(
        _finite_on(device, a, work),
        lambda be: be.fake_quantize(a, *args),
        lambda: native.fake_quantize(a, *args, ignore_nonfinite, return_mask),
        work,
    )
    return (y, mask) if return_mask else y


def pack_int4(values: Any) -> np.ndarray:
    """Packs INT4 codes two to a byte: element ``2i`` in the low nibble, ``2i+1`` in the high one.

    int8 input is signed (``-8..7``), uint8 unsigned (``0..15``); values outside raise a
    ValueError. The input is flattened in C order; odd lengths are padded with a zero nibble.
    """
    a = np.asarray(values)
    if a.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise TypeError(
            f"pack_int4 takes int8 (signed, -8..7) or uint8 (unsigned, 0..15) values, got dtype {a.dtype}"
        )
    return native.pack_int4(np.ascontiguousarray(a))


def unpack_int4(packed: Any, shape: Union[int, tuple[int, ...]], signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_int4`: returns ``prod(shape)`` codes (int8 if ``signed``, else uint8)."""
    dims = as_shape(shape)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed INT4 data must be uint8, got dtype {p.dtype}")
    return native.unpack_int4(np.ascontiguousarray(p).reshape(-1), list(dims), as_flag("signed", signed))


@dataclass(frozen=True)
class Metrics:
    """Error of a reconstruction against its reference (sums in float64)."""

    sqnr_db: float
    cosine: float
    mse: float
    mae: float
    max_abs_error: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metrics(x: Any, y: Any, *, device: Optional[str] = None) -> Metrics:
    """SQNR (dB, ``inf`` for an exact match), cosine, MSE, MAE and max error of ``y`` against ``x``.

    On an OpenCL ``device`` the sums are float32 per work-group and float64 across them: within
    1e-6 relative of the CPU's float64 sums.
    """
    a, b = as_float_array(x, "x"), as_float_array(y, "y")
    work = Work.elementwise(a.nbytes + b.nbytes, 0)
    return Metrics(**run(device, lambda be: be.metrics(a, b), lambda: native.metrics(a, b), work))
