"""The seed's API: ``AdaptiveQuantizer`` and its factory functions, over the Rust core."""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Optional, Union

import numpy as np

from ..analysis.planner import Budget, Evaluate, Plan, candidate_options, parse_budget, plan
from ..analysis.sensitivity import HessianVectorProduct, LayerQuantizationStats, layer_stats
from ..core import ops
from ..core.arrays import as_float_array
from ..core.atomic import PathLike, write_json
from ..core.calibration import calibrate
from ..core.devices import backend, device_name, get_rocm_status, opencl_devices
from ..core.gptq import gptq
from ..core.hardware import GpuFamily
from ..core.hardware import gpu_family as _family  # `gpu_family` is also a parameter name below
from ..core.hessian import HessianObserver
from ..core.qparams import QParams
from ..core.scheme import Scheme, as_flag
from ..core.types import CalibrationMethod, QuantizationPrecision
from .config import SCHEMA_VERSION, QuantizationConfig, read_config_file
from .report import format_report, report_dict

DEVICE_HELP = "auto, cpu, opencl or opencl:N"
Scale = Union[float, np.ndarray]


class AdaptiveQuantizer:
    """Quantizes tensors, analyzes layer sensitivity and plans mixed precision.

    ``device``: ``"auto"`` (per operation, an OpenCL GPU where measured faster, else the CPU),
    ``"cpu"``, ``"opencl"`` or ``"opencl:N"``; calibration's min/max and histogram passes,
    quantization, dequantization and fake quantization run there (see :mod:`rxquant.devices`
    for the fallback rules).
    """

    def __init__(
        self, gpu_family: str = "polaris", config: Optional[QuantizationConfig] = None, device: str = "auto"
    ) -> None:
        self.gpu: GpuFamily = _family(gpu_family)
        self.gpu_family = self.gpu.name
        self.config = config or QuantizationConfig()
        backend(device)  # resolve now: an explicit OpenCL device that cannot open raises here
        self.device = device
        self.device_name = device_name(device)
        self.layer_params: dict[str, QParams] = {}
        self.layer_stats: dict[str, LayerQuantizationStats] = {}
        self.last_plan: Optional[Plan] = None

    # ------------------------------------------------------------ schemes

    def scheme_for(
        self, precision: Optional[Any] = None, axis: Optional[int] = None, shape: tuple[int, ...] = ()
    ) -> Scheme:
        """The scheme the config implies for ``precision`` (default: the config's) and a tensor of
        ``shape``: per channel along axis 0 for 2+ dims when ``per_channel``; groups of
        ``group_size`` over the input dimension (``in*kh*kw`` for conv weights). A group size the
        shape cannot hold raises a ValueError naming both, never a silent change of scheme."""
        p = QuantizationPrecision.parse(precision or self.config.precision)
        c = self.config
        if axis is None and c.per_channel and len(shape) >= 2:
            axis = 0
        group = c.group_size if p.is_integer and len(shape) >= 1 else None
        if group:
            axis = -1
        s = Scheme(p.value, symmetric=c.symmetric, axis=axis, group_size=group)
        why = s.fits(shape) if shape else None
        if why:
            raise ValueError(f"the config's scheme ({s.describe()}) does not fit this tensor: {why}")
        return s

    def _qparams(self, w: np.ndarray, scheme: Scheme, method: CalibrationMethod) -> QParams:
        opts = {"percentile": self.config.percentile} if method is CalibrationMethod.PERCENTILE else {}
        return calibrate(w, method.core_name, scheme, device=self.device, **opts)

    # ------------------------------------------------------------ quantization

    def quantize_tensor(
        self,
        tensor: Any,
        precision: Optional[Any] = None,
        method: Optional[Any] = None,
        layer_name: Optional[str] = None,
        rounding: str = "nearest",
        activations: Optional[Any] = None,
    ) -> tuple[np.ndarray, Scale, Union[int, np.ndarray]]:
        """Returns ``(q, scale, zero_point)``; a float scale and int zero point per tensor.

        With ``layer_name`` the parameters are recorded (for export) or, if a loaded config has
        that layer, reused: the result is then bit-identical to the exporting quantizer's.
        FP16/FP32 return the converted array with scale 1.0 and zero point 0.

        ``rounding``: ``nearest`` (default), ``importance`` (the clip search weighted by
        ``E[x²]``) or ``gptq`` (error-compensating rounding, :func:`rxquant.gptq`); the last two
        need ``activations``: the layer's inputs ``(..., in)``, or a ``HessianObserver`` of them.
        Data-aware rounding runs on the CPU and chooses parameters with mse (minmax if asked).
        Its parameters are recorded under ``layer_name`` like any others; a loaded config reuses
        them with rounding to nearest (GPTQ's compensation needs the activations again).
        """
        w = as_float_array(tensor, "tensor")
        m = CalibrationMethod.parse(method or self.config.calibration_method)
        if rounding != "nearest":
            return self._quantize_data_aware(w, precision, m, layer_name, rounding, activations)
        if (
            layer_name is not None
            and layer_name in self.layer_params
            and precision is None
            and method is None
        ):
            qp = self.layer_params[layer_name]
            q, _ = ops.quantize(w, qp.scheme, qp, device=self.device)
        else:
            s = self.scheme_for(precision, shape=w.shape)
            qp = self._qparams(w, s, m) if s.is_integer else None
            q, qp = ops.quantize(w, s, qp, device=self.device)
        if layer_name is not None:
            self.layer_params[layer_name] = qp
        return q, _scalar(qp.scale, 1.0), _scalar(qp.zero_point, 0)

    def _quantize_data_aware(
        self,
        w: np.ndarray,
        precision: Optional[Any],
        m: CalibrationMethod,
        layer_name: Optional[str],
        rounding: str,
        activations: Optional[Any],
    ) -> tuple[np.ndarray, Scale, Union[int, np.ndarray]]:
        if rounding not in ("importance", "gptq"):
            raise ValueError(f"unknown rounding {rounding!r}; expected nearest, importance or gptq")
        if activations is None:
            raise ValueError(f"{rounding} rounding needs the layer's activations (its inputs)")
        s = self.scheme_for(precision, shape=w.shape)
        if not s.is_integer:
            raise ValueError(f"{rounding} rounding needs int8 or int4, got {s.precision}")
        obs = (
            activations if isinstance(activations, HessianObserver) else HessianObserver().update(activations)
        )
        if rounding == "gptq":
            q, qp = gptq(w, s, obs.hessian(), method="minmax" if m is CalibrationMethod.MINMAX else "mse")
        else:
            q, qp = ops.quantize(w, s, importance=obs.importance())
        if layer_name is not None:
            self.layer_params[layer_name] = qp
        return q, _scalar(qp.scale, 1.0), _scalar(qp.zero_point, 0)

    def quantize_tensor_per_channel(
        self, tensor: Any, axis: int = 0, precision: Optional[Any] = None, method: Optional[Any] = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-channel quantization along ``axis``: returns ``(q, scales, zero_points)``."""
        w = as_float_array(tensor, "tensor")
        s = self.scheme_for(precision, axis=axis, shape=w.shape)
        s = Scheme(s.precision, s.symmetric, axis, None, s.full_range)
        if not s.is_integer:
            raise ValueError(f"per-channel quantization needs int8 or int4, got {s.precision}")
        qp = self._qparams(w, s, CalibrationMethod.parse(method or self.config.calibration_method))
        q, qp = ops.quantize(w, s, qp, device=self.device)
        return q, qp.scale, qp.zero_point

    def dequantize_tensor(
        self,
        q: Any,
        scale: Any,
        zero_point: Any = 0,
        axis: Optional[int] = None,
        group_size: Optional[int] = None,
    ) -> np.ndarray:
        """Float32 ``(q - zero_point) * scale``; ``axis``/``group_size`` say how scales map."""
        c = np.asarray(q)
        if c.dtype.kind == "f":
            return c.astype(np.float32)
        sc = np.asarray(scale, np.float32)
        if axis is None and sc.ndim == 1 and sc.size > 1:
            axis = 0
        prec = (
            "int8" if c.dtype in (np.int8, np.uint8) and (np.abs(c.astype(np.int16)) > 15).any() else "int4"
        )
        prec = self.scheme_for().precision if self.scheme_for().is_integer and prec == "int4" else prec
        s = Scheme(prec, symmetric=c.dtype == np.int8, axis=axis, group_size=group_size)
        zp = np.broadcast_to(np.asarray(zero_point, np.int32), sc.shape)
        return ops.dequantize(c, QParams(s, sc, zp, c.shape))

    def fake_quantize(
        self, weights: Any, precision: Optional[Any] = None, method: Optional[Any] = None
    ) -> np.ndarray:
        """Quantize-dequantize in one pass (float32 out). Its gradient is the clipped
        straight-through estimator: see :meth:`fake_quantize_with_mask`."""
        return self.fake_quantize_with_mask(weights, precision, method)[0]

    def fake_quantize_with_mask(
        self, weights: Any, precision: Optional[Any] = None, method: Optional[Any] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fake-quantized weights and the STE mask: ``grad_w = grad_out * mask``."""
        w = as_float_array(weights, "weights")
        s = self.scheme_for(precision, shape=w.shape)
        qp = (
            self._qparams(w, s, CalibrationMethod.parse(method or self.config.calibration_method))
            if s.is_integer
            else None
        )
        y, mask = ops.fake_quantize(w, s, qp, return_mask=True, device=self.device)
        return y, mask

    def pack_int4(self, values: Any) -> np.ndarray:
        """Two INT4 codes per byte (element 2i in the low nibble); see :func:`rxquant.pack_int4`."""
        return ops.pack_int4(values)

    def unpack_int4(self, packed: Any, original_shape: Any, signed: bool = True) -> np.ndarray:
        return ops.unpack_int4(packed, original_shape, signed)

    # ------------------------------------------------------------ sensitivity and planning

    def analyze_layer_sensitivity(
        self,
        weights: Any,
        layer_name: str,
        compute_hessian: bool = False,
        activations: Optional[Any] = None,
        hessian_vector_product: Optional[HessianVectorProduct] = None,
        precision: Optional[Any] = None,
        method: Optional[Any] = None,
    ) -> LayerQuantizationStats:
        """Quantizes ``weights`` and measures the error (see :class:`LayerQuantizationStats`).

        The Hessian comes from ``activations`` (inputs ``[n, in_features]`` or ``E[x^2]``) or from
        Hutchinson's estimator on ``hessian_vector_product``; without either it is not computed.
        """
        w = as_float_array(weights, "weights")
        p = QuantizationPrecision.parse(precision or self.config.precision)
        m = CalibrationMethod.parse(method or self.config.calibration_method)
        s = self.scheme_for(p, shape=w.shape)
        opts = {"percentile": self.config.percentile} if m is CalibrationMethod.PERCENTILE else {}
        stats, _ = layer_stats(
            w,
            layer_name,
            s,
            p,
            m,
            compute_hessian=compute_hessian,
            activations=activations,
            hessian_vector_product=hessian_vector_product,
            calibrate_opts=opts,
            device=self.device,
        )
        self.layer_stats[layer_name] = stats
        if s.is_integer:
            self.layer_params[layer_name] = self._qparams(w, s, m)
        return stats

    def get_optimal_precision(
        self, sensitivity: Union[float, LayerQuantizationStats], accuracy_threshold: float = 0.01
    ) -> QuantizationPrecision:
        """The seed's rule: sensitivity below the threshold gives INT8, below twice it FP16, else FP32."""
        s = (
            sensitivity.sensitivity_score
            if isinstance(sensitivity, LayerQuantizationStats)
            else float(sensitivity)
        )
        if s < accuracy_threshold:
            return QuantizationPrecision.INT8
        return QuantizationPrecision.FP16 if s < 2 * accuracy_threshold else QuantizationPrecision.FP32

    def optimize_mixed_precision(
        self,
        layer_weights: dict[str, Any],
        accuracy_threshold: float = 0.01,
        memory_budget_gb: float = 8.0,
        *,
        budget: Optional[Budget] = None,
        mode: str = "threshold",
        activations: Optional[dict[str, Any]] = None,
        evaluate: Optional[Evaluate] = None,
        progress: bool = True,
    ) -> dict[str, QuantizationPrecision]:
        """Chooses a precision per layer within the memory budget; returns ``{name: precision}``.

        ``memory_budget_gb`` is in GB (10^9 bytes); ``budget`` overrides it and also takes
        ``"6GB"``, ``"5.5GiB"`` or ``"4.5bpw"``. ``mode="threshold"`` is the seed's rule;
        ``mode="optimal"`` minimizes the total predicted error exactly. The full plan (bytes,
        errors, bound) is kept in ``self.last_plan``. An impossible budget raises a ValueError
        that states the smallest reachable size.
        """
        if not layer_weights:
            self.last_plan = Plan(mode, "none", 0, [], 0.0, True)
            return {}
        weights = {k: as_float_array(v, k) for k, v in layer_weights.items()}
        total = sum(w.size for w in weights.values())
        nbytes = parse_budget(budget if budget is not None else memory_budget_gb * 1e9, total)
        method = self.config.calibration_method
        options, measure = candidate_options(
            weights, self.gpu, method, activations, evaluate, progress, device=self.device
        )
        sens = {}
        for name, w in weights.items():
            sens[name] = self.analyze_layer_sensitivity(
                w, name, activations=(activations or {}).get(name), precision=QuantizationPrecision.INT8
            ).sensitivity_score
        self.last_plan = plan(options, nbytes, mode, accuracy_threshold, sens, measure)
        return self.last_plan.precision_map

    # ------------------------------------------------------------ config files and reports

    def export_quantization_config(self, path: PathLike) -> None:
        """Writes config, GPU family and every recorded layer's parameters as JSON (atomically)."""
        layers = {}
        for name, qp in self.layer_params.items():
            d = qp.to_dict()
            st = self.layer_stats.get(name)
            if st is not None:
                d["sqnr_db"] = st.sqnr_db if math.isfinite(st.sqnr_db) else None
                d["memory_reduction"] = st.memory_reduction
            layers[name] = d
        write_json(
            path,
            {
                "schema_version": SCHEMA_VERSION,
                "gpu_family": self.gpu_family,
                "config": self.config.to_dict(),
                "layers": layers,
            },
        )

    def load_quantization_config(self, path: PathLike) -> None:
        """Reads a file written by :meth:`export_quantization_config`, validating every field."""
        cfg, family, layers = read_config_file(path)
        self.config = cfg
        self.gpu = _family(family)
        self.gpu_family = self.gpu.name
        self.layer_params = layers

    def report_dict(self) -> dict[str, Any]:
        return report_dict(self.layer_stats, self.last_plan)

    def to_dict(self) -> dict[str, Any]:
        return self.report_dict()

    def report_json(self) -> str:
        """The report's data as JSON (the same as :meth:`to_dict`)."""
        return json.dumps(self.report_dict(), indent=2, allow_nan=False, default=lambda o: None)

    def generate_quantization_report(self) -> str:
        """A text table: one row per analyzed layer (at the precision it was analyzed at), totals,
        and the last mixed-precision plan's choice per layer (what ``optimize_mixed_precision``
        returned)."""
        return format_report(self.layer_stats, self.gpu, self.config, self.last_plan)


def _scalar(a: np.ndarray, default: Any) -> Any:
    if a.size == 0:
        return default
    return a.item() if a.ndim == 0 else a


def create_quantizer_for_gpu(family: str, aggressive: bool = False) -> AdaptiveQuantizer:
    """A quantizer with the family's recommended precision; ``aggressive`` picks INT4 (groups of 32)."""
    fam = _family(family)
    if as_flag("aggressive", aggressive):
        cfg = QuantizationConfig(precision=QuantizationPrecision.INT4, group_size=32, per_channel=True)
    else:
        cfg = QuantizationConfig(precision=fam.recommended_precision, per_channel=True)
    return AdaptiveQuantizer(gpu_family=fam.name, config=cfg)


def benchmark_calibration_methods(
    tensor: Any,
    precision: Any = QuantizationPrecision.INT8,
    repeat: int = 3,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Runs each calibration method on ``tensor``: median time (ms), SQNR (dB) and MAE."""
    w = as_float_array(tensor, "tensor")
    p = QuantizationPrecision.parse(precision)
    out = {}
    for m in CalibrationMethod:
        times = []
        for _ in range(repeat):
            t = timer()
            qp = calibrate(w, m.core_name, Scheme(p.value))
            times.append(timer() - t)
        met = ops.metrics(w, ops.fake_quantize(w, qparams=qp))
        out[m.value] = {"time_ms": float(np.median(times) * 1e3), "sqnr_db": met.sqnr_db, "mae": met.mae}
    return out


class ROCmQuantizer(AdaptiveQuantizer):
    """The seed's GPU quantizer: an AdaptiveQuantizer on the best GPU backend available.

    No HIP kernels exist; on an AMD card the OpenCL device of that card is used (OpenCL GPU number
    ``device_id``), and without one the CPU. ``backend`` says which was chosen, and why.
    """

    def __init__(
        self, gpu_family: str = "polaris", device_id: int = 0, config: Optional[QuantizationConfig] = None
    ):
        gpus = [d for d in opencl_devices()[0] if d["type"] == "gpu"]
        if device_id < len(gpus):
            device, why = f"opencl:{gpus[device_id]['index']}", f"OpenCL GPU {gpus[device_id]['name']}"
        else:
            rocm = get_rocm_status()
            device = "cpu"
            why = f"CPU: no OpenCL GPU number {device_id} ({len(gpus)} found); ROCm: {rocm['reason'] or 'ok'}"
        super().__init__(gpu_family=gpu_family, config=config, device=device)
        self.backend = why
