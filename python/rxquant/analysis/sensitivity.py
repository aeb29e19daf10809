"""Per-layer quantization error and a real Hessian: from activation statistics (the diagonal
``2 E[x_j^2]`` of a linear layer's reconstruction loss) or Hutchinson's estimator on a
Hessian-vector product. Never from the weights alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..core.arrays import as_float_array
from ..core.calibration import calibrate
from ..core.gptq import gptq, output_error
from ..core.ops import dequantize, metrics, quantize
from ..core.scheme import Scheme
from ..core.types import CalibrationMethod, QuantizationPrecision

HessianVectorProduct = Callable[[np.ndarray], np.ndarray]
ROUNDINGS = ("nearest", "importance", "gptq")


def _gptq_method(method: CalibrationMethod) -> str:
    """GPTQ chooses each cell's parameters with mse or minmax; other methods map to mse."""
    return "minmax" if method is CalibrationMethod.MINMAX else "mse"


@dataclass
class LayerQuantizationStats:
    """Quantization error of one layer at one precision.

    ``sensitivity_score`` is a normalized error: the data-aware relative output error
    ``sum_ij E[x_j^2] (W - W')_ij^2 / sum_ij E[x_j^2] W_ij^2`` when activation statistics are
    given, else the relative weight error ``sum (w - w')^2 / sum w^2`` (= 10^(-SQNR/10)).
    ``hessian_trace`` is None unless activations or a Hessian-vector product were given.
    """

    layer_name: str
    precision: QuantizationPrecision
    calibration_method: CalibrationMethod
    num_params: int
    sensitivity_score: float
    sqnr_db: float
    cosine_similarity: float
    quantization_error: float  # mean absolute error
    mse: float
    max_error: float
    memory_reduction: float  # 1 - stored bytes / fp32 bytes
    bytes_fp32: int
    bytes_quantized: int
    hessian_trace: Optional[float] = None
    hessian_method: Optional[str] = None
    data_aware_error: Optional[float] = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["calibration_method"] = self.calibration_method.value
        return d


def input_energy(activations: Any, in_features: int) -> np.ndarray:
    """Per-input-channel ``E[x_j^2]`` from inputs ``[n, in_features]`` (or the vector itself)."""
    a = as_float_array(activations, "activations").astype(np.float64)
    if a.ndim == 1:
        e = a
    elif a.ndim == 2:
        e = np.mean(a * a, axis=0)
    else:
        raise ValueError(
            f"activations must be [n, in_features] inputs or an E[x^2] vector, got shape {a.shape}"
        )
    if e.shape != (in_features,):
        raise ValueError(
            f"activation statistics have {e.shape[0]} channels, the weight has {in_features} inputs"
        )
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("E[x^2] must be finite and non-negative")
    return e


def data_aware_error(w: np.ndarray, w_hat: Optional[np.ndarray], energy: np.ndarray) -> float:
    """Expected output error ``sum_ij E[x_j^2] (W - W')_ij^2`` of a linear layer ``y = W x``
    (with ``w_hat=None``: the output energy ``sum_ij E[x_j^2] W_ij^2``). Float64 sums over blocks
    of rows, so a large layer needs no float64 copy of itself."""
    a = w.reshape(-1, energy.size)
    b = None if w_hat is None else w_hat.reshape(-1, energy.size)
    rows = max(1, (1 << 20) // max(1, energy.size))
    total = 0.0
    for i in range(0, a.shape[0], rows):
        d = a[i : i + rows].astype(np.float64)
        if b is not None:
            d -= b[i : i + rows]
        total += float(np.sum(d * d @ energy))
    return total


def hutchinson_trace(hvp: HessianVectorProduct, n: int, samples: int = 32, seed: int = 0) -> float:
    """Hutchinson's estimator ``E[v^T H v]`` with Rademacher vectors ``v``."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(samples):
        v = rng.choice(np.array([-1.0, 1.0], np.float32), size=n)
        hv = np.asarray(hvp(v), dtype=np.float64).ravel()
        if hv.size != n:
            raise ValueError(f"hessian_vector_product returned {hv.size} values for a vector of {n}")
        total += float(v @ hv)
    return total / samples


def layer_stats(
    weights: Any,
    layer_name: str,
    scheme: Scheme,
    precision: QuantizationPrecision,
    method: CalibrationMethod,
    *,
    compute_hessian: bool = False,
    activations: Optional[Any] = None,
    hessian_vector_product: Optional[HessianVectorProduct] = None,
    hutchinson_samples: int = 32,
    calibrate_opts: Optional[dict[str, Any]] = None,
    device: Optional[str] = None,
    rounding: str = "nearest",
    hessian: Optional[np.ndarray] = None,
) -> tuple[LayerQuantizationStats, np.ndarray]:
    """Quantizes ``weights`` with ``scheme`` and measures the error; returns (stats, dequantized).
    Calibration, quantization and the metrics run on ``device`` (see :mod:`rxquant.devices`).

    ``rounding``: ``nearest`` (calibrate with ``method``, then round), ``importance`` (the clip
    search weighted by ``E[x²]`` from ``activations``) or ``gptq`` (needs ``hessian``, ``2 XᵀX /
    N``). With a ``hessian`` the data-aware error is the layer's output error
    ``tr((W - W') H (W - W')ᵀ) / 2``; with ``activations`` only, its diagonal part."""
    w = as_float_array(weights, "weights")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    e = None
    if activations is not None or hessian is not None:
        if w.ndim < 2:
            raise ValueError(f"input statistics need a weight [out, in, ...], got shape {w.shape}")
        n_in = int(np.prod(w.shape[1:]))
        e = input_energy(activations, n_in) if activations is not None else np.diag(hessian) / 2.0
    if scheme.is_integer and rounding == "gptq":
        if hessian is None:
            raise ValueError(f"gptq rounding of {layer_name} needs its Hessian (2 XᵀX / N)")
        q, qp = gptq(w, scheme, hessian, method=_gptq_method(method))
        w_hat = dequantize(q, qp)
    elif scheme.is_integer and rounding == "importance":
        if e is None:
            raise ValueError(f"importance rounding of {layer_name} needs its input statistics E[x^2]")
        q, qp = quantize(w, scheme, importance=e)
        w_hat = dequantize(q, qp)
    elif scheme.is_integer:
        qp = calibrate(w, method.core_name, scheme, device=device, **(calibrate_opts or {}))
        q, qp = quantize(w, scheme, qp, device=device)
        w_hat = dequantize(q, qp, device=device)
    else:
        q, qp = quantize(w, scheme)
        w_hat = np.asarray(q, np.float32)
    m = metrics(w, w_hat, device=device)
    rel = 10.0 ** (-m.sqnr_db / 10.0)  # sum (w - w')^2 / sum w^2; 0 for an exact match
    stats = LayerQuantizationStats(
        layer_name=layer_name,
        precision=precision,
        calibration_method=method,
        num_params=int(w.size),
        sensitivity_score=rel,
        sqnr_db=m.sqnr_db,
        cosine_similarity=m.cosine,
        quantization_error=m.mae,
        mse=m.mse,
        max_error=m.max_abs_error,
        memory_reduction=1.0 - qp.nbytes / max(1, w.size * 4),
        bytes_fp32=int(w.size * 4),
        bytes_quantized=qp.nbytes,
    )
    if hessian is not None:
        stats.data_aware_error = output_error(w, w_hat, hessian)
        ref = output_error(w, np.zeros_like(w), hessian)
        stats.sensitivity_score = stats.data_aware_error / ref if ref > 0 else 0.0
        stats.hessian_trace = float(w.shape[0] * np.trace(hessian))
        stats.hessian_method = "inputs: 2 XᵀX / N of the linear layer's reconstruction loss"
    elif e is not None:
        stats.data_aware_error = data_aware_error(w, w_hat, e)
        ref = data_aware_error(w, None, e)
        stats.sensitivity_score = stats.data_aware_error / ref if ref > 0 else 0.0
        # Hessian of E||(W - W')x||^2: for each of the `out` rows, diag 2 E[x_j^2].
        stats.hessian_trace = float(2.0 * w.shape[0] * np.sum(e))
        stats.hessian_method = "activations: diag 2E[x_j^2] of the linear layer's reconstruction loss"
    elif hessian_vector_product is not None:
        stats.hessian_trace = hutchinson_trace(hessian_vector_product, w.size, hutchinson_samples)
        stats.hessian_method = f"Hutchinson, {hutchinson_samples} Rademacher vectors"
    elif compute_hessian:
        stats.notes.append("Hessian trace not computed: it needs activations or a hessian_vector_product")
    return stats, w_hat
