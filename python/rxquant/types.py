"""The seed's public types: precisions, calibration methods, the quantizer config and layer stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional


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


@dataclass
class QuantizationConfig:
    """Defaults of an AdaptiveQuantizer."""

    precision: QuantizationPrecision = QuantizationPrecision.INT8
    calibration_method: CalibrationMethod = CalibrationMethod.PERCENTILE
    symmetric: bool = True
    per_channel: bool = False
    group_size: Optional[int] = None
    percentile: float = 99.99
    enable_qat: bool = False

    def __post_init__(self) -> None:
        self.precision = QuantizationPrecision.parse(self.precision)
        self.calibration_method = CalibrationMethod.parse(self.calibration_method)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["calibration_method"] = self.calibration_method.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizationConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


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
