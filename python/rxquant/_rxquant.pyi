"""Type stub of the compiled module (private; use the functions in `rxquant`)."""

import os
from typing import Any, Optional, Union, final

import numpy as np

__all__ = [
    "__version__",
    "quantize",
    "quantize_minmax",
    "dequantize",
    "fake_quantize",
    "to_fp16",
    "pack_int4",
    "unpack_int4",
    "transpose",
    "metrics",
    "threads",
    "calibrate",
    "Observer",
    "SafetensorsFile",
    "rocm_status",
    "opencl_devices",
    "measure_cpu",
    "OpenClDevice",
    "DeviceError",
    "HessianObserver",
    "gptq",
    "calibrate_weighted",
    "affine_groups",
    "ggml_types",
    "ggml_quantize",
    "ggml_quantize_file",
    "ggml_dequantize",
    "ggml_gptq",
    "gguf_layout",
]

_SchemeSpec = tuple[str, bool, bool, bool, Optional[int], Optional[int]]

__version__: str

def threads() -> int: ...
def quantize(
    x: np.ndarray,
    spec: _SchemeSpec,
    scale: np.ndarray,
    zero_point: np.ndarray,
    ignore_nonfinite: bool,
    pack: bool,
) -> np.ndarray: ...
def quantize_minmax(
    x: np.ndarray, spec: _SchemeSpec, ignore_nonfinite: bool, pack: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def dequantize(
    q: np.ndarray,
    shape: list[int],
    spec: _SchemeSpec,
    scale: np.ndarray,
    zero_point: np.ndarray,
    packed: bool,
    out: Optional[np.ndarray] = None,
) -> np.ndarray: ...
def fake_quantize(
    x: np.ndarray,
    spec: _SchemeSpec,
    scale: np.ndarray,
    zero_point: np.ndarray,
    ignore_nonfinite: bool,
    return_mask: bool,
) -> tuple[np.ndarray, Optional[np.ndarray]]: ...
def to_fp16(x: np.ndarray, ignore_nonfinite: bool) -> tuple[np.ndarray, int]: ...
def pack_int4(values: np.ndarray) -> np.ndarray: ...
def unpack_int4(packed: np.ndarray, shape: list[int], signed: bool) -> np.ndarray: ...
def transpose(a: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray: ...
def metrics(x: np.ndarray, y: np.ndarray, device: Optional[OpenClDevice] = None) -> dict[str, float]: ...

_OptsSpec = tuple[int, float, Optional[float], Optional[bool], int, bool]

def calibrate(
    x: np.ndarray, method: str, spec: _SchemeSpec, opts: _OptsSpec, device: Optional[OpenClDevice] = None
) -> tuple[np.ndarray, np.ndarray]: ...

@final
class Observer:
    def __new__(cls, method: str, spec: _SchemeSpec, opts: _OptsSpec) -> Observer: ...
    def update(self, x: np.ndarray, device: Optional[OpenClDevice] = None) -> None: ...
    def merge(self, other: Observer) -> None: ...
    def qparams(self) -> tuple[np.ndarray, np.ndarray]: ...
    @property
    def batches(self) -> int: ...
    def state(self) -> dict[str, Any]: ...
    def set_state(
        self,
        grid: Optional[list[int]],
        min: np.ndarray,
        max: np.ndarray,
        hist_lo: np.ndarray,
        hist_width: np.ndarray,
        hist_zeros: np.ndarray,
        counts: np.ndarray,
        batches: int,
    ) -> None: ...

@final
class SafetensorsFile:
    def __new__(cls, path: str) -> SafetensorsFile: ...
    def names(self) -> list[str]: ...
    def metadata(self) -> dict[str, str]: ...
    def info(self, name: str) -> tuple[str, list[int]]: ...
    def read_f32(self, name: str) -> np.ndarray: ...
    def read_raw(self, name: str) -> np.ndarray: ...

def rocm_status(kfd_root: Optional[str] = None) -> dict[str, Any]: ...
def opencl_devices() -> list[dict[str, Any]]: ...
def measure_cpu() -> dict[str, float]: ...

class DeviceError(RuntimeError): ...

@final
class OpenClDevice:
    def __new__(cls, index: Optional[int] = None, work_group: int = 64) -> OpenClDevice: ...
    @property
    def name(self) -> str: ...
    @property
    def work_group(self) -> int: ...
    @property
    def exact_division(self) -> bool: ...
    @property
    def is_gpu(self) -> bool: ...
    @property
    def tiles(self) -> tuple[int, int, int]: ...
    def measure(self) -> dict[str, float]: ...
    def start_trace(self) -> None: ...
    def take_trace(self) -> list[tuple[str, float]]: ...
    def layer_error(self, d: np.ndarray, hessian: np.ndarray) -> float: ...
    def calibrate(
        self, x: np.ndarray, method: str, spec: _SchemeSpec, opts: _OptsSpec
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def observe(self, observer: Observer, x: np.ndarray) -> None: ...
    def metrics(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]: ...
    def quantize(
        self, x: np.ndarray, spec: _SchemeSpec, scale: np.ndarray, zero_point: np.ndarray, pack: bool = False
    ) -> np.ndarray: ...
    def quantize_minmax(
        self, x: np.ndarray, spec: _SchemeSpec, pack: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def dequantize(
        self, q: np.ndarray, spec: _SchemeSpec, scale: np.ndarray, zero_point: np.ndarray
    ) -> np.ndarray: ...
    def fake_quantize(
        self, x: np.ndarray, spec: _SchemeSpec, scale: np.ndarray, zero_point: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

def gptq(
    w: np.ndarray,
    spec: _SchemeSpec,
    hessian: np.ndarray,
    damp: float,
    block_size: int,
    act_order: bool,
    method: str,
    opts: _OptsSpec,
    pack: bool,
    f16_scales: bool,
    device: Optional[OpenClDevice] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]: ...
def calibrate_weighted(
    x: np.ndarray, spec: _SchemeSpec, importance: np.ndarray, opts: _OptsSpec
) -> tuple[np.ndarray, np.ndarray]: ...
def affine_groups(
    x: np.ndarray, group: int, nmax: int, importance: Optional[np.ndarray] = None, f16: bool = False
) -> tuple[np.ndarray, np.ndarray]: ...
def ggml_types() -> list[tuple[str, int, int, int]]: ...
def ggml_quantize(
    x: np.ndarray, ty: str, row: int, rounding: str, importance: Optional[np.ndarray] = None
) -> np.ndarray: ...
def ggml_quantize_file(
    path: Union[str, os.PathLike[str]],
    offset: int,
    count: int,
    src: str,
    ty: str,
    row: int,
    rounding: str,
) -> bytes: ...
def ggml_dequantize(data: np.ndarray, ty: str, n: int, out: Optional[np.ndarray] = None) -> np.ndarray: ...
def gguf_layout(
    path: Union[str, os.PathLike[str]],
) -> tuple[
    int,
    list[tuple[str, int, int, int, Optional[int]]],
    list[tuple[str, list[int], int, int]],
    int,
]: ...
def ggml_gptq(
    w: np.ndarray,
    ty: str,
    hessian: np.ndarray,
    rounding: str,
    importance: Optional[np.ndarray],
    damp: float,
    block_size: int,
    act_order: bool,
) -> tuple[np.ndarray, int, float]: ...

@final
class HessianObserver:
    def __new__(cls) -> HessianObserver: ...
    def update(self, x: np.ndarray, device: Optional[OpenClDevice] = None) -> None: ...
    def merge(self, other: HessianObserver) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def features(self) -> Optional[int]: ...
    def hessian(self) -> np.ndarray: ...
    def importance(self) -> np.ndarray: ...
    def state(self) -> tuple[Optional[int], int, np.ndarray]: ...
    def set_state(self, features: Optional[int], count: int, sum: np.ndarray) -> None: ...
