"""The vocabulary every layer shares: storage precisions and calibration methods (the seed's names)."""

from __future__ import annotations

from enum import Enum
from typing import Any


class QuantizationPrecision(Enum):
    """Storage precision of a tensor."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}[self.value]

    @property
    def compression_ratio(self) -> float:
        """Size reduction against FP32 (codes only): 1, 2, 4, 8."""
        return 32 / self.bits

    @property
    def qmin(self) -> int:
        """Smallest code of the signed full-range grid (0 for float precisions)."""
        return -(1 << (self.bits - 1)) if self.is_integer else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.is_integer else 0

    @property
    def is_integer(self) -> bool:
        return self in (QuantizationPrecision.INT8, QuantizationPrecision.INT4)

    @classmethod
    def parse(cls, value: Any) -> QuantizationPrecision:
        if isinstance(value, QuantizationPrecision):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown precision {value!r}; expected one of {names}") from None


class CalibrationMethod(Enum):
    """How the clipping range is chosen (see docs/calibration.md)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    KL_DIVERGENCE = "kl"
    MSE = "mse"

    @property
    def core_name(self) -> str:
        """The name `rxquant.calibrate` takes."""
        return "entropy" if self is CalibrationMethod.KL_DIVERGENCE else self.value

    @classmethod
    def parse(cls, value: Any) -> CalibrationMethod:
        if isinstance(value, CalibrationMethod):
            return value
        v = str(value).lower()
        if v in ("entropy", "kl_divergence"):
            return cls.KL_DIVERGENCE
        try:
            return cls(v)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown calibration method {value!r}; expected one of {names}") from None
