"""The AdaptiveQuantizer's configuration and its config files (versioned JSON, validated on load)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..core.atomic import PathLike
from ..core.qparams import QParams
from ..core.scheme import as_flag, as_group_size, as_real
from ..core.types import CalibrationMethod, QuantizationPrecision

SCHEMA_VERSION = 1


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
        if self.group_size is not None:
            self.group_size = as_group_size(self.group_size)
        # Hand-edited config files: "false" is a truthy string, and "99" is not a percentile.
        self.symmetric = as_flag("symmetric", self.symmetric)
        self.per_channel = as_flag("per_channel", self.per_channel)
        self.enable_qat = as_flag("enable_qat", self.enable_qat)
        self.percentile = as_real("percentile", self.percentile)
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")

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


def read_config_file(path: PathLike) -> tuple[QuantizationConfig, str, dict[str, QParams]]:
    """``(config, gpu family name, per-layer parameters)`` from a file written by
    ``AdaptiveQuantizer.export_quantization_config``; every field is validated."""
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f, parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            raise ValueError(f"{os.fspath(path)} is not valid JSON: {e}") from None
    return validate_config(d)


def _reject_constant(name: str) -> None:
    raise ValueError(f"config contains {name}; scales must be finite numbers")


def validate_config(d: Any) -> tuple[QuantizationConfig, str, dict[str, QParams]]:
    """Checks a parsed config file; see :func:`read_config_file`."""
    if not isinstance(d, dict):
        raise ValueError("config must be a JSON object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"unknown config schema_version {version!r}; this rxquant reads version {SCHEMA_VERSION}"
        )
    for key, typ in (("gpu_family", str), ("config", dict), ("layers", dict)):
        if key not in d:
            raise ValueError(f"config is missing the field {key!r}")
        if not isinstance(d[key], typ):
            raise ValueError(f"config field {key!r} must be a {typ.__name__}, got {type(d[key]).__name__}")
    try:
        cfg = QuantizationConfig.from_dict(d["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"config: {e}") from None
    layers = {}
    for name, ld in d["layers"].items():
        if not isinstance(ld, dict):
            raise ValueError(f"layer {name!r} must be an object")
        try:
            layers[name] = QParams.from_dict(ld)
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    return cfg, d["gpu_family"], layers
