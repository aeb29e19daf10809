"""What hardware rxquant can see: CPU threads, OpenCL platforms and devices, and ROCm/HIP status
(the KFD topology and the HIP runtime, both looked up at run time; nothing is needed to import).

`backend(device, work)` resolves ``device="auto" | "cpu" | "opencl" | "opencl:N"`` for the
functional API and AdaptiveQuantizer. ``auto`` considers an OpenCL *GPU* (never a CPU OpenCL
device such as PoCL, which shares the cores rayon already uses) and takes it for an operation
only where its measured figures predict it faster than the CPU, transfers included
(:mod:`rxquant.core.costs`): element-wise work on host arrays usually stays on the CPU, matrix
products go to the GPU. An explicit ``opencl`` takes the first OpenCL device, PoCL included,
for every operation. `run` executes on the chosen device: any :class:`DeviceError` (the device
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

from . import costs, native
from .costs import Work
from .hardware import cpu_model, work_group_size

DeviceError = native.DeviceError
T = TypeVar("T")


def get_rocm_status(kfd_root: Optional[str] = None) -> dict[str, Any]:
    """HIP runtime (loaded, version), its devices with gfx target and compute units (from the KFD
    topology), the KFD's GPUs, and the reason when nothing is found."""
    return dict(native.rocm_status(kfd_root))


_LISTED: Optional[tuple[list[dict[str, Any]], Optional[str]]] = None


def opencl_devices() -> tuple[list[dict[str, Any]], Optional[str]]:
    """OpenCL devices (``opencl:N`` order) and, when there are none, why (listed once per
    process: platforms do not come and go while it runs)."""
    global _LISTED
    if _LISTED is None:
        try:
            devs = list(native.opencl_devices())
            _LISTED = devs, None if devs else "no OpenCL device on any platform"
        except RuntimeError as e:
            _LISTED = [], str(e)
    devs, why = _LISTED
    return [dict(d) for d in devs], why


def describe(measure: bool = True) -> dict[str, Any]:
    """What is there, and for the GPU ``auto`` considers, its measured figures (cached, or
    measured now when ``measure``) and the sizes from which ``auto`` uses it."""
    cl, why = opencl_devices()
    for dv in cl:
        dv["work_group"] = work_group_size(dv["name"])
    gpus = [x for x in cl if x["type"] == "gpu"]
    out: dict[str, Any] = {
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count(), "rxquant_threads": native.threads()},
        "opencl": {"devices": cl, "reason": why},
        "rocm": get_rocm_status(),
    }
    if not gpus:
        out["compute"] = "device='auto' runs on the cpu (no OpenCL GPU)"
        return out
    g = gpus[0]
    rec = None
    if measure:
        try:
            rec = costs.figures(g, _open(g))
        except DeviceError as e:
            costs.mark_failed(g, str(e))
    if rec is None:
        why_not = costs.failed(g) or "not measured"
        out["compute"] = f"device='auto' runs on the cpu (opencl:{g['index']} {g['name']}: {why_not})"
        return out
    out["figures"] = rec
    out["break_even"] = costs.break_even(rec["device"], rec["cpu"])
    out["compute"] = (
        f"device='auto' runs each operation on opencl:{g['index']} ({g['name']}) where its measured "
        "figures predict it faster than the cpu, transfers included, else on the cpu"
    )
    return out


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
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be a string (auto, cpu, opencl or opencl:N), got {device!r}")
    d = (device or "cpu").lower()
    if d not in ("auto", "cpu") and not re.fullmatch(r"opencl(?::\d+)?", d):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, opencl or opencl:N")
    return d


def backend(device: Optional[str], work: Optional[Work] = None) -> Optional[Any]:
    """The OpenCL device for ``device``, or None for the CPU (see the module docs). Under
    ``auto``, ``work`` is what the operation moves and computes; without it the operation is
    taken as element-wise work on host arrays."""
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
        g = gpus[0]
        if costs.failed(g):
            return None
        try:
            handle = _open(g)
        except DeviceError as e:
            costs.mark_failed(g, str(e))
            _fallback(g["name"], e)
            return None
        rec = costs.figures(g, handle)
        if rec is None:
            _fallback(g["name"], RuntimeError(f"its measurement failed: {costs.failed(g)}"))
            return None
        w = work if work is not None else Work.elementwise(1 << 20, 1 << 20)
        return handle if costs.prefer_device(w, rec["device"], rec["cpu"]) else None
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


def run(
    device: Optional[str],
    on_device: Callable[[Any], T],
    on_cpu: Callable[[], T],
    work: Optional[Work] = None,
) -> T:
    """``on_device(backend)`` on the device ``device`` resolves to for ``work``, else
    ``on_cpu()``; under ``auto`` a DeviceError falls back to ``on_cpu()`` with a RuntimeWarning."""
    be = backend(device, work)
    if be is None:
        return on_cpu()
    try:
        return on_device(be)
    except DeviceError as e:
        if (device or "").lower() != "auto":
            raise
        _fallback(be.name, e)
        return on_cpu()


def device_name(device: Optional[str], work: Optional[Work] = None) -> str:
    """What ``device`` resolves to for ``work``, as ``cpu`` or ``opencl (name)``."""
    be = backend(device, work)
    return "cpu" if be is None else f"opencl ({be.name})"
