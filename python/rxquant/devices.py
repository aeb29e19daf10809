"""What hardware rxquant can see: CPU threads, OpenCL platforms and devices, and ROCm/HIP status
(the KFD topology and the HIP runtime, both looked up at run time; nothing is needed to import).

`backend(device)` resolves ``device="auto" | "cpu" | "opencl" | "opencl:N"`` for the functional
API and AdaptiveQuantizer: ``auto`` takes an OpenCL *GPU* when there is one (never a CPU OpenCL
device such as PoCL, which is slower than rayon) and falls back to the CPU with a warning if it
fails; an explicit ``opencl`` (the first OpenCL device, PoCL included) raises instead.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Optional

from . import _rxquant


def get_rocm_status(kfd_root: Optional[str] = None) -> dict[str, Any]:
    """HIP runtime (loaded, version), its devices with gfx target and compute units (from the KFD
    topology), the KFD's GPUs, and the reason when nothing is found."""
    return dict(_rxquant.rocm_status(kfd_root))


def opencl_devices() -> tuple[list[dict[str, Any]], Optional[str]]:
    """OpenCL devices (``opencl:N`` order) and, when there are none, why."""
    try:
        devs = list(_rxquant.opencl_devices())
    except RuntimeError as e:
        return [], str(e)
    return devs, None if devs else "no OpenCL device on any platform"


def describe() -> dict[str, Any]:
    from . import threads
    from .bench import cpu_model

    cl, why = opencl_devices()
    return {
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count(), "rxquant_threads": threads()},
        "opencl": {"devices": cl, "reason": why},
        "rocm": get_rocm_status(),
        "compute": "cpu (this build runs no GPU kernels)",
    }


_OPEN: dict[int, Any] = {}


def _open(index: int) -> Any:
    if index not in _OPEN:
        _OPEN[index] = _rxquant.OpenClDevice(index)
    return _OPEN[index]


def backend(device: Optional[str]) -> Optional[Any]:
    """The OpenCL device for ``device``, or None for the CPU (see the module docs)."""
    d = (device or "cpu").lower()
    if d == "cpu":
        return None
    if d == "auto":
        devs, _ = opencl_devices()
        gpus = [x for x in devs if x["type"] == "gpu"]
        if not gpus:
            return None
        try:
            return _open(gpus[0]["index"])
        except (ValueError, RuntimeError) as e:
            warnings.warn(
                f"OpenCL GPU {gpus[0]['name']} failed ({e}); using the CPU", RuntimeWarning, stacklevel=3
            )
            return None
    m = re.fullmatch(r"opencl(?::(\d+))?", d)
    if not m:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, opencl or opencl:N")
    if m.group(1) is not None:
        return _open(int(m.group(1)))
    devs, why = opencl_devices()
    if not devs:
        raise RuntimeError(f"device='opencl' but there is no OpenCL device: {why}")
    gpus = [x for x in devs if x["type"] == "gpu"]
    return _open((gpus or devs)[0]["index"])


def device_name(device: Optional[str]) -> str:
    """What ``device`` resolves to, as ``cpu`` or ``opencl:N (name)``."""
    be = backend(device)
    return "cpu" if be is None else f"opencl ({be.name})"
