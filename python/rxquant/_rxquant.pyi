"""Type stub of the compiled module (private; use the functions in `rxquant`)."""

from typing import Any, Optional

import numpy as np

SchemeSpec = tuple[str, bool, bool, Optional[int], Optional[int]]

__version__: str

def threads() -> int: ...
def minmax_qparams(
    x: np.ndarray, spec: SchemeSpec, ignore_nonfinite: bool
) -> tuple[np.ndarray, np.ndarray]: ...
def quantize(
    x: np.ndarray,
    spec: SchemeSpec,
    scale: np.ndarray,
    zero_point: np.ndarray,
    ignore_nonfinite: bool,
    pack: bool,
) -> np.ndarray: ...
def dequantize(
    q: np.ndarray, shape: list[int], spec: SchemeSpec, scale: np.ndarray, zero_point: np.ndarray, packed: bool
) -> np.ndarray: ...
def fake_quantize(
    x: np.ndarray,
    spec: SchemeSpec,
    scale: np.ndarray,
    zero_point: np.ndarray,
    ignore_nonfinite: bool,
    return_mask: bool,
) -> tuple[np.ndarray, Optional[np.ndarray]]: ...
def to_fp16(x: np.ndarray, ignore_nonfinite: bool) -> tuple[np.ndarray, int]: ...
def pack_int4(values: np.ndarray) -> np.ndarray: ...
def unpack_int4(packed: np.ndarray, shape: list[int], signed: bool) -> np.ndarray: ...
def metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]: ...

OptsSpec = tuple[int, float, Optional[float], Optional[bool], int, bool]

def calibrate(
    x: np.ndarray, method: str, spec: SchemeSpec, opts: OptsSpec
) -> tuple[np.ndarray, np.ndarray]: ...

class Observer:
    def __init__(self, method: str, spec: SchemeSpec, opts: OptsSpec) -> None: ...
    def update(self, x: np.ndarray) -> None: ...
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
