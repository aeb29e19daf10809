"""What hardware rxquant can see: CPU threads, OpenCL platforms and devices, and ROCm/HIP status
(the KFD topology and the HIP runtime, both looked up at run time; nothing is needed to import).

`backend(device)` resolves ``device="auto" | "cpu" | "opencl" | "opencl:N"`` for the functional
API and AdaptiveQuantizer: ``auto`` takes an OpenCL *GPU* when there is one (never a CPU OpenCL
device such as PoCL, which is slower than rayon); an explicit ``opencl`` takes the first OpenCL
device, PoCL included. `run` executes on the chosen device: any :class:`DeviceError` (the device
cannot open, a build or launch fails, it runs out of memory) falls back to the CPU with a warning
under ``auto`` and is raised under an explicit ``opencl``. Kernels use the work-group size of
the device's family in :data:`rxquant.core.hardware.GPU_FAMILIES`.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from typing import Any, Callable, Optional, TypeVar

from . import native
from .hardware import cpu_model, work_group_size

DeviceError = native.DeviceError
T = TypeVar("T")


def get_rocm_status(kfd_root: Optional[str] = None) -> dict[str, Any]:
    """HIP runtime (loaded, version), its devices with gfx target and compute units (from the KFD
    topology), the KFD's GPUs, and the reason when nothing is found."""
    return dict(native.rocm_status(kfd_root))


def opencl_devices() -> tuple[list[dict[str, Any]], Optional[str]]:
    """OpenCL devices (``opencl:N`` order) and, when there are none, why."""
    try:
        devs = list(native.opencl_devices())
    except RuntimeError as e:
        return [], str(e)
    return devs, None if devs else "no OpenCL device on any platform"


def describe() -> dict[str, Any]:
    cl, why = opencl_devices()
    for dv in cl:
        dv["work_group"] = work_group_size(dv["name"])
    gpus = [x for x in cl if x["type"] == "gpu"]
    auto = f"opencl:{gpus[0]['index']} ({gpus[0]['name']})" if gpus else "cpu (no OpenCL GPU)"
    return {
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count(), "rxquant_threads": native.threads()},
        "opencl": {"devices": cl, "reason": why},
        "rocm": get_rocm_status(),
        "compute": f"device='auto' runs on {auto}",
    }


_OPEN: dict[int, Any] = {}
_OPEN_LOCK = threading.Lock()


def _open(dev: dict[str, Any]) -> Any:
    """The process's one handle of an OpenCL device (opened once, shared by threads: its
    kernels run with the GIL released and may be called from several threads at once)."""
    with _OPEN_LOCK:
        if dev["index"] not in _OPEN:
            _OPEN[dev["index"]] = native.OpenClDevice(dev["index"], work_group_size(dev["name"]))
        return _OPEN[dev["index"]]


def check_device(device: Optional[str]) -> str:
    """``device`` in lower case, if it is one of auto, cpu, opencl, opencl:N; else a ValueError."""
    d = (device or "cpu").lower()
    if d not in ("auto", "cpu") and not re.fullmatch(r"opencl(?::\d+)?", d):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, opencl or opencl:N")
    return d


def backend(device: Optional[str]) -> Optional[Any]:
    """The OpenCL device for ``device``, or None for the CPU (see the module docs)."""
    d = check_device(device)
    if d == "cpu":
        return None
    m = re.fullmatch(r"opencl(?::(\d+))?", d)
    devs, why = opencl_devices()
    gpus = [x for x in devs if x["type"] == "gpu"]
    if d == "auto":
        if not gpus:
            _warn_broken_opencl(why)
            return None
        try:
            return _open(gpus[0])
        except DeviceError as e:
            _fallback(gpus[0]["name"], e)
            return None
    if m and m.group(1) is not None:
        i = int(m.group(1))
        if i >= len(devs):
            raise DeviceError(f"no OpenCL device opencl:{i} ({len(devs)} found{': ' + why if why else ''})")
        return _open(devs[i])
    if not devs:
        raise DeviceError(f"device='opencl' but there is no OpenCL device: {why}")
    return _open((gpus or devs)[0])


_WARNED: set[str] = set()


def _warn_broken_opencl(why: Optional[str]) -> None:
    """Under ``auto``, an OpenCL loader that finds no platform is a broken driver setup, worth one
    warning per process; no loader at all, or platforms with only CPU devices, is just no GPU."""
    if why and not why.startswith("no OpenCL loader") and why not in _WARNED and "platform" in why:
        _WARNED.add(why)
        msg = f"OpenCL is installed but unusable ({why}); using the CPU"
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _fallback(name: str, e: Exception) -> None:
    warnings.warn(f"OpenCL device {name} failed ({e}); using the CPU", RuntimeWarning, stacklevel=4)


def run(device: Optional[str], on_device: Callable[[Any], T], on_cpu: Callable[[], T]) -> T:
    """``on_device(backend)`` on the device ``device`` resolves to, else ``on_cpu()``; under
    ``auto`` a DeviceError falls back to ``on_cpu()`` with a RuntimeWarning."""
    be = backend(device)
    if be is None:
        return on_cpu()
    try:
        return on_device(be)
    except DeviceError as e:
        if (device or "").lower() != "auto":
            raise
        _fallback(be.name, e)
        return on_cpu()


def device_name(device: Optional[str]) -> str:
    """What ``device`` resolves to, as ``cpu`` or ``opencl:N (name)``."""
    be = backend(device)
    return "cpu" if be is None else f"opencl ({be.name})"
