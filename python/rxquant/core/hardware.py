"""Hardware as data: the GPU family table (the numbers device choice, the planner and the
factory use) and the CPU's name."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .scheme import Scheme
from .types import QuantizationPrecision


@dataclass(frozen=True)
class GpuFamily:
    name: str
    examples: str
    wavefront_size: int
    tflops_fp32: float
    tflops_fp16: float
    memory_bandwidth_gbs: float
    fp16_acceleration: bool
    recommended_precision: QuantizationPrecision
    candidates: tuple[tuple[str, Scheme], ...]
    # OpenCL work-group size for rxquant's kernels: a multiple of the wavefront.
    work_group_size: int = 64
    # Lower-case fragments of the OpenCL device names of this family (ROCm reports the gfx
    # target, Mesa and AMD's legacy driver the chip name).
    device_names: tuple[str, ...] = ()


def _candidates(*names: str) -> tuple[tuple[str, Scheme], ...]:
    table = {
        "int4_g32": Scheme("int4", symmetric=False, axis=-1, group_size=32),
        "int4_g32_sym": Scheme("int4", axis=-1, group_size=32, signed_scale=True),
        "int4_g64": Scheme("int4", symmetric=False, axis=-1, group_size=64),
        "int4_g128": Scheme("int4", symmetric=False, axis=-1, group_size=128),
        "int4_g128_sym": Scheme("int4", axis=-1, group_size=128, signed_scale=True),
        "int8_channel": Scheme("int8", axis=0, signed_scale=True),
        "fp16": Scheme("fp16"),
        "fp32": Scheme("fp32"),
    }
    return tuple((n, table[n]) for n in names)


# Every family dequantizes these the same way (INT4 groups: 4 + 16/G bits a weight, +4/G with
# zero points; INT8 per output channel); the planner picks among them per layer.
CANDIDATES = (
    "int4_g32",
    "int4_g32_sym",
    "int4_g64",
    "int4_g128",
    "int4_g128_sym",
    "int8_channel",
    "fp16",
    "fp32",
)

# Public spec-sheet numbers (AMD): RX 580 (Polaris 20), Vega 64, RX 5700 XT (Navi 10).
GPU_FAMILIES: dict[str, GpuFamily] = {
    "polaris": GpuFamily(
        "polaris",
        "RX 470/480/570/580 (gfx803)",
        64,
        6.17,
        6.17,
        256.0,
        False,
        QuantizationPrecision.INT8,
        _candidates(*CANDIDATES),
        64,
        ("gfx803", "polaris", "ellesmere", "baffin", "lexa"),
    ),
    "vega": GpuFamily(
        "vega",
        "Vega 56/64 (gfx900)",
        64,
        12.66,
        25.3,
        484.0,
        True,
        QuantizationPrecision.FP16,
        _candidates(*CANDIDATES),
        64,
        ("gfx900", "gfx906", "vega"),
    ),
    "navi": GpuFamily(
        "navi",
        "RX 5600/5700 (gfx1010)",
        32,
        9.75,
        19.5,
        448.0,
        True,
        QuantizationPrecision.FP16,
        _candidates(*CANDIDATES),
        64,
        ("gfx1010", "gfx1011", "gfx1012", "navi"),
    ),
}

# Work-group size for OpenCL devices of no listed family (a multiple of 32 and 64 wavefronts).
DEFAULT_WORK_GROUP = 64


def family_of_device(device_name: str) -> Optional[GpuFamily]:
    """The family whose OpenCL device names match ``device_name``, if any."""
    name = device_name.lower()
    return next((f for f in GPU_FAMILIES.values() if any(k in name for k in f.device_names)), None)


def work_group_size(device_name: str) -> int:
    """The OpenCL work-group size for a device, from its family in the table."""
    fam = family_of_device(device_name)
    return fam.work_group_size if fam else DEFAULT_WORK_GROUP


def gpu_family(name: str) -> GpuFamily:
    """The family's data; an unknown name raises a ValueError listing the known ones."""
    key = str(name).lower()
    if key not in GPU_FAMILIES:
        raise ValueError(f"unknown GPU family {name!r}; known families: {', '.join(sorted(GPU_FAMILIES))}")
    return GPU_FAMILIES[key]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform  # 1.4 ms of every command's start-up; needed only here

    return platform.processor() or platform.machine()
