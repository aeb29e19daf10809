"""Schemes (what to quantize to) and quantization parameters (the result of calibration)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

PRECISIONS = ("int8", "int4", "fp16", "fp32")


@dataclass(frozen=True)
class Scheme:
    """How to quantize a tensor.

    - ``precision``: ``"int8"``, ``"int4"``, ``"fp16"`` or ``"fp32"``.
    - ``symmetric``: signed grid with zero point 0 (INT8 ``-127..127``, INT4 ``-7..7``; with
      ``full_range`` ``-128..127`` / ``-8..7``). Asymmetric: unsigned grid with a zero point
      (INT8 ``0..255``, INT4 ``0..15``).
    - ``axis=None``: per tensor. ``axis=k``: per channel along axis ``k`` (negative allowed).
      ``axis=k, group_size=G``: per group of ``G`` consecutive elements along ``k``.
    """

    precision: str = "int8"
    symmetric: bool = True
    axis: Optional[int] = None
    group_size: Optional[int] = None
    full_range: bool = False

    def __post_init__(self) -> None:
        p = str(self.precision).lower()
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "precision", p)
        if self.group_size is not None:
            if int(self.group_size) <= 0:
                raise ValueError(f"group_size must be a positive integer, got {self.group_size}")
            if self.axis is None:
                object.__setattr__(self, "axis", -1)

    @classmethod
    def coerce(cls, scheme: Union[Scheme, str, None]) -> Scheme:
        """Accepts a Scheme, a precision name, or None (INT8 symmetric per tensor)."""
        if scheme is None:
            return cls()
        if isinstance(scheme, Scheme):
            return scheme
        if isinstance(scheme, str):
            return cls(precision=scheme)
        raise TypeError(f"scheme must be a Scheme or a precision name, got {type(scheme).__name__}")

    @property
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.axis is None:
            return "tensor"
        return "channel" if self.group_size is None else "group"

    @property
    def is_integer(self) -> bool:
        return self.precision in ("int8", "int4")

    @property
    def bits(self) -> int:
        return {"int8": 8, "int4": 4, "fp16": 16, "fp32": 32}[self.precision]

    @property
    def qrange(self) -> tuple[int, int]:
        """The integer grid ``(qmin, qmax)``; ``(0, 0)`` for float precisions."""
        if not self.is_integer:
            return (0, 0)
        half = 1 << (self.bits - 1)
        if not self.symmetric:
            return (0, 2 * half - 1)
        return (-half, half - 1) if self.full_range else (-(half - 1), half - 1)

    @property
    def scale_dtype(self) -> str:
        """How scales are stored: float16 for INT4 (4.625 bits a weight at group 32 with 4-bit
        zero points), float32 for INT8."""
        return "float16" if self.precision == "int4" else "float32"

    def n_params(self, shape: tuple[int, ...]) -> int:
        """Number of scale/zero-point pairs for a tensor of ``shape``."""
        if not self.is_integer:
            return 0
        if self.axis is None:
            return 1
        n = math.prod(shape)
        dim = shape[self.axis]
        if self.group_size is None:
            return dim
        return n // self.group_size if dim % self.group_size == 0 else -1

    def stored_bytes(self, shape: tuple[int, ...]) -> int:
        """Exact bytes of the stored form: codes (INT4 packed two to a byte), scales in
        ``scale_dtype`` and, for asymmetric grids, zero points (INT4: two to a byte)."""
        n = math.prod(shape)
        data = (n * self.bits + 7) // 8
        if not self.is_integer:
            return data
        p = self.n_params(tuple(shape))
        if p < 0:
            raise ValueError(
                f"group size {self.group_size} does not divide dimension {self.axis} of {tuple(shape)}"
            )
        scales = p * (2 if self.scale_dtype == "float16" else 4)
        zeros = 0 if self.symmetric else (p + 1) // 2 if self.precision == "int4" else p
        return data + scales + zeros

    def spec(self) -> tuple[str, bool, bool, Optional[int], Optional[int]]:
        """The tuple form the compiled module takes."""
        return (self.precision, self.symmetric, self.full_range, self.axis, self.group_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "symmetric": self.symmetric,
            "axis": self.axis,
            "group_size": self.group_size,
            "full_range": self.full_range,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scheme:
        return cls(
            **{k: d[k] for k in ("precision", "symmetric", "axis", "group_size", "full_range") if k in d}
        )


def fit_scheme(scheme: Scheme, shape: tuple[int, ...]) -> Scheme:
    """Adapts a family candidate to a tensor: per-channel needs 2+ dims; groups need a divisor."""
    if scheme.axis is None:
        return scheme
    if len(shape) < 2:
        return Scheme(scheme.precision, scheme.symmetric, None, None, scheme.full_range)
    if scheme.group_size and shape[scheme.axis] % scheme.group_size:
        return Scheme(scheme.precision, scheme.symmetric, 0, None, scheme.full_range)
    return scheme


@dataclass
class QParams:
    """Quantization parameters of one tensor: ``x ~ (q - zero_point) * scale``.

    ``scale`` (float32) and ``zero_point`` (int32) have the parameter-grid shape: ``()`` per tensor,
    ``(C,)`` per channel, the tensor's shape with the grouped axis divided by ``group_size`` per
    group. ``shape`` is the tensor's shape. ``overflow`` counts FP16 values saturated at ±65504.
    """

    scheme: Scheme
    scale: np.ndarray
    zero_point: np.ndarray
    shape: tuple[int, ...]
    overflow: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scale = np.asarray(self.scale, dtype=np.float32, order="C")
        self.zero_point = np.asarray(self.zero_point, dtype=np.int32, order="C")
        self.shape = tuple(int(s) for s in self.shape)

    def clip_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The real interval each parameter covers: ``((qmin - z) * s, (qmax - z) * s)``."""
        qmin, qmax = self.scheme.qrange
        z = self.zero_point.astype(np.float32)
        return ((qmin - z) * self.scale, (qmax - z) * self.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; floats keep full precision (float32 -> Python float is exact)."""
        return {
            "scheme": self.scheme.to_dict(),
            "shape": list(self.shape),
            "scale": self.scale.astype(np.float64).tolist(),
            "zero_point": self.zero_point.tolist(),
            "overflow": int(self.overflow),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QParams:
        """Inverse of :meth:`to_dict`, with validation of values."""
        for key in ("scheme", "shape", "scale", "zero_point"):
            if key not in d:
                raise ValueError(f"quantization parameters are missing the field {key!r}")
        scale = np.asarray(d["scale"], dtype=np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad = scale[~(np.isfinite(scale) & (scale > 0))].ravel()[:3].tolist()
            raise ValueError(f"scales must be positive finite numbers, got {bad}")
        return cls(
            scheme=Scheme.from_dict(d["scheme"]),
            scale=scale.astype(np.float32),
            zero_point=np.asarray(d["zero_point"], dtype=np.int32),
            shape=tuple(d["shape"]),
            overflow=int(d.get("overflow", 0)),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the stored form of this tensor (see :meth:`Scheme.stored_bytes`)."""
        return self.scheme.stored_bytes(self.shape)
