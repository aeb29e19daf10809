"""Quantization parameters, the result of calibration: scales and zero points in the shape of a
scheme's parameter grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scheme import Scheme


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
        """The real interval each parameter covers, low end first: ``(qmin - z) * s`` to
        ``(qmax - z) * s`` (swapped for negative signed scales)."""
        qmin, qmax = self.scheme.qrange
        z = self.zero_point.astype(np.float32)
        a, b = (qmin - z) * self.scale, (qmax - z) * self.scale
        return (np.minimum(a, b), np.maximum(a, b))

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
        scheme = Scheme.from_dict(d["scheme"])
        scale = np.asarray(d["scale"], dtype=np.float64)
        ok = np.isfinite(scale) & ((scale != 0) if scheme.signed_scale else (scale > 0))
        if not np.all(ok):
            bad = scale[~ok].ravel()[:3].tolist()
            kind = "nonzero" if scheme.signed_scale else "positive"
            raise ValueError(f"scales must be {kind} finite numbers, got {bad}")
        return cls(
            scheme=scheme,
            scale=scale.astype(np.float32),
            zero_point=np.asarray(d["zero_point"], dtype=np.int32),
            shape=tuple(d["shape"]),
            overflow=int(d.get("overflow", 0)),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the stored form of this tensor (see :meth:`Scheme.stored_bytes`)."""
        return self.scheme.stored_bytes(self.shape)
