"""What hardware rxquant can see: CPU threads, OpenCL platforms and devices, and ROCm/HIP status
(the KFD topology and the HIP runtime, both looked up at run time; nothing is needed to import).

This build computes on the CPU only: it detects GPUs but runs no GPU kernels yet.
"""

from __future__ import annotations

import os
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
