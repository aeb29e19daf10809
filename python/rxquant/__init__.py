"""rxquant: weight and activation quantization with a fast Rust core.

>>> import numpy as np, rxquant
>>> w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
>>> q, qp = rxquant.quantize(w, rxquant.Scheme("int8", axis=0))
>>> rxquant.metrics(w, rxquant.dequantize(q, qp)).sqnr_db > 35
True
"""

from ._rxquant import __version__, threads
from .calibration import Observer, calibrate
from .devices import DeviceError, get_rocm_status
from .gpu import GPU_FAMILIES
from .ops import (
    Metrics,
    dequantize,
    fake_quantize,
    metrics,
    pack_int4,
    quantize,
    unpack_int4,
)
from .planner import Plan, parse_budget
from .quantizer import (
    AdaptiveQuantizer,
    ROCmQuantizer,
    benchmark_calibration_methods,
    create_quantizer_for_gpu,
)
from .scheme import QParams, Scheme
from .types import CalibrationMethod, LayerQuantizationStats, QuantizationConfig, QuantizationPrecision

__all__ = [
    "__version__",
    "AdaptiveQuantizer",
    "CalibrationMethod",
    "DeviceError",
    "GPU_FAMILIES",
    "LayerQuantizationStats",
    "Plan",
    "ROCmQuantizer",
    "QuantizationConfig",
    "QuantizationPrecision",
    "benchmark_calibration_methods",
    "create_quantizer_for_gpu",
    "get_rocm_status",
    "parse_budget",
    "Metrics",
    "Observer",
    "QParams",
    "Scheme",
    "calibrate",
    "dequantize",
    "fake_quantize",
    "metrics",
    "pack_int4",
    "quantize",
    "threads",
    "unpack_int4",
]
