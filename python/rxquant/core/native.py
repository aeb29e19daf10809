"""The compiled Rust module ``rxquant._rxquant``, as the rest of the package sees it.

This is the one module that imports it: the layers above use these names, so the import graph
(and import-linter, which sees only Python files) shows each use of the native code as a use of
the core layer.
"""

from rxquant._rxquant import (
    DeviceError,
    HessianObserver,
    Observer,
    OpenClDevice,
    SafetensorsFile,
    __version__,
    affine_groups,
    calibrate,
    calibrate_weighted,
    dequantize,
    fake_quantize,
    ggml_dequantize,
    ggml_gptq,
    ggml_quantize,
    ggml_types,
    gptq,
    measure_cpu,
    metrics,
    opencl_devices,
    pack_int4,
    quantize,
    quantize_minmax,
    rocm_status,
    threads,
    to_fp16,
    unpack_int4,
)

__all__ = [
    "DeviceError",
    "HessianObserver",
    "Observer",
    "OpenClDevice",
    "SafetensorsFile",
    "__version__",
    "affine_groups",
    "calibrate",
    "calibrate_weighted",
    "dequantize",
    "fake_quantize",
    "ggml_dequantize",
    "ggml_gptq",
    "ggml_quantize",
    "ggml_types",
    "gptq",
    "measure_cpu",
    "metrics",
    "opencl_devices",
    "pack_int4",
    "quantize",
    "quantize_minmax",
    "rocm_status",
    "threads",
    "to_fp16",
    "unpack_int4",
]
