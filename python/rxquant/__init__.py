"""rxquant: weight and activation quantization with a fast Rust core.

>>> import numpy as np, rxquant
>>> w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
>>> q, qp = rxquant.quantize(w, rxquant.Scheme("int8", axis=0))
>>> rxquant.metrics(w, rxquant.dequantize(q, qp)).sqnr_db > 35
True

The package is layered; each layer imports only the ones below it (checked by import-linter,
see ``.importlinter``):

- ``rxquant.apps``: the command line and the demo;
- ``rxquant.adaptive``: the seed's API (``AdaptiveQuantizer``, its config files and reports);
  ``rxquant.gguf``: llama.cpp's block formats and GGUF files (imported on use);
- ``rxquant.analysis`` (layer sensitivity, the mixed-precision planner), ``rxquant.models`` (a
  numpy BERT forward and its input statistics), ``rxquant.torch`` (PyTorch, optional): side by
  side, independent of each other;
- ``rxquant.formats``: checkpoints in, quantized and statistics files out;
- ``rxquant.core``: schemes, the functional ops, calibration, GPTQ and input statistics, devices,
  hardware facts; thin over the compiled module ``rxquant._rxquant``.

Everything public is importable from here and listed in ``__all__``. Each name is imported on
first use (as pydantic does), so ``import rxquant`` and the command line load only what they use:
requantizing a GGUF file never imports numpy.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .core.native import __version__

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` imports these
    from .adaptive.config import QuantizationConfig
    from .adaptive.quantizer import (
        AdaptiveQuantizer,
        ROCmQuantizer,
        benchmark_calibration_methods,
        create_quantizer_for_gpu,
    )
    from .analysis.planner import Plan, parse_budget
    from .analysis.sensitivity import LayerQuantizationStats
    from .core.calibration import Observer, calibrate
    from .core.devices import DeviceError, get_rocm_status
    from .core.errors import RequestError
    from .core.gptq import gptq
    from .core.hardware import GPU_FAMILIES, GpuFamily
    from .core.hessian import HessianObserver
    from .core.native import threads
    from .core.ops import (
        Metrics,
        dequantize,
        fake_quantize,
        metrics,
        pack_int4,
        quantize,
        unpack_int4,
    )
    from .core.qparams import QParams
    from .core.scheme import Scheme
    from .core.types import CalibrationMethod, QuantizationPrecision
    from .formats.checkpoint import Checkpoint
    from .formats.quantized import QuantizedTensor, load_quantized

# Each public name and the module that defines it (a test checks these against the imports above).
_EXPORTS = {
    "QuantizationConfig": ".adaptive.config",
    "AdaptiveQuantizer": ".adaptive.quantizer",
    "ROCmQuantizer": ".adaptive.quantizer",
    "benchmark_calibration_methods": ".adaptive.quantizer",
    "create_quantizer_for_gpu": ".adaptive.quantizer",
    "Plan": ".analysis.planner",
    "parse_budget": ".analysis.planner",
    "LayerQuantizationStats": ".analysis.sensitivity",
    "Observer": ".core.calibration",
    "calibrate": ".core.calibration",
    "DeviceError": ".core.devices",
    "get_rocm_status": ".core.devices",
    "RequestError": ".core.errors",
    "gptq": ".core.gptq",
    "GPU_FAMILIES": ".core.hardware",
    "GpuFamily": ".core.hardware",
    "HessianObserver": ".core.hessian",
    "threads": ".core.native",
    "Metrics": ".core.ops",
    "dequantize": ".core.ops",
    "fake_quantize": ".core.ops",
    "metrics": ".core.ops",
    "pack_int4": ".core.ops",
    "quantize": ".core.ops",
    "unpack_int4": ".core.ops",
    "QParams": ".core.qparams",
    "Scheme": ".core.scheme",
    "CalibrationMethod": ".core.types",
    "QuantizationPrecision": ".core.types",
    "Checkpoint": ".formats.checkpoint",
    "QuantizedTensor": ".formats.quantized",
    "load_quantized": ".formats.quantized",
}

__all__ = [
    "__version__",
    "AdaptiveQuantizer",
    "CalibrationMethod",
    "Checkpoint",
    "DeviceError",
    "GPU_FAMILIES",
    "GpuFamily",
    "HessianObserver",
    "LayerQuantizationStats",
    "Metrics",
    "Observer",
    "Plan",
    "QParams",
    "QuantizationConfig",
    "QuantizationPrecision",
    "QuantizedTensor",
    "ROCmQuantizer",
    "RequestError",
    "Scheme",
    "benchmark_calibration_methods",
    "calibrate",
    "create_quantizer_for_gpu",
    "dequantize",
    "fake_quantize",
    "get_rocm_status",
    "gptq",
    "load_quantized",
    "metrics",
    "pack_int4",
    "parse_budget",
    "quantize",
    "threads",
    "unpack_int4",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rxquant' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
