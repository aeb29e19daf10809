"""Where an operation runs under ``device="auto"``: on the device only where it is predicted to
finish first, transfers included, from figures measured once per device and cached.

A GPU's win is arithmetic, not bandwidth: element-wise work on arrays in host memory moves every
byte across the bus, which is no faster than the CPU reading it from RAM, while products such as
``XᵀX`` do thousands of operations per byte moved. So each operation describes its work
(:class:`Work`: bytes in and out, flops, host-only flops), and :func:`prefer_device` compares the
predicted times from the measured figures (``OpenClDevice.measure()`` and ``measure_cpu()``,
well under a second on a GPU). The device must be predicted at least :data:`MARGIN` faster.

The figures are cached in ``$XDG_CACHE_HOME/rxquant/devices.json`` (``~/.cache`` by default),
keyed by platform, device and driver; ``RXQUANT_DEVICE_CACHE`` names another file, or ``off`` to
measure in every process. A record is stale, and measured again, when rxquant's version, the
driver, the CPU thread count or the month it was taken in no longer match. A device whose
measurement fails is not used again by ``auto`` in this process.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import native
from .atomic import write_json

#: The device must be predicted this much faster than the CPU (0.9: at least 10%) to be used.
MARGIN = 0.9
#: Records older than this are measured again (seconds).
MAX_AGE = 30 * 24 * 3600.0
CACHE_ENV = "RXQUANT_DEVICE_CACHE"


@dataclass(frozen=True)
class Work:
    """What an operation moves and computes. ``kind``: ``elementwise`` (one upload, kernels, one
    download), ``streamed`` (chunks through pinned buffers, transfers overlapped) or ``matrix``.
    ``host_flops`` run on the CPU whichever device is chosen (GPTQ's column loop)."""

    kind: str
    bytes_in: float
    bytes_out: float
    flops: float = 0.0
    host_flops: float = 0.0

    @classmethod
    def elementwise(cls, bytes_in: float, bytes_out: float) -> Work:
        return cls("elementwise", bytes_in, bytes_out)

    @classmethod
    def streamed(cls, bytes_in: float, bytes_out: float) -> Work:
        return cls("streamed", bytes_in, bytes_out)

    @classmethod
    def hessian(cls, rows: int, features: int) -> Work:
        """One batch of ``XᵀX`` (the lower half of ``2 rows in²`` flops)."""
        f = float(features)
        return cls("matrix", 4.0 * rows * f, 8.0 * f * f, flops=rows * f * f)

    @classmethod
    def gptq(cls, rows: int, cols: int, block: int = 128) -> Work:
        """GPTQ of a ``(rows, cols)`` weight: the block updates (``rows cols²`` flops) on the
        device; the column loop inside each block stays on the host."""
        r, c = float(rows), float(cols)
        return cls(
            "matrix", 8.0 * r * c + 4.0 * c * c, 4.0 * r * c, flops=r * c * c, host_flops=2.0 * r * c * block
        )

    @classmethod
    def layer_error(cls, rows: int, cols: int) -> Work:
        r, c = float(rows), float(cols)
        return cls("matrix", 4.0 * r * c + 4.0 * c * c, 0.0, flops=2.0 * r * c * c)


def cpu_seconds(w: Work, cpu: dict[str, float]) -> float:
    """Predicted time on the CPU path."""
    if w.kind == "matrix":
        return (w.flops + w.host_flops) / (cpu["gemm_gflops"] * 1e9)
    return w.bytes_in / (cpu["quantize_gbs"] * 1e9)


def device_seconds(w: Work, dev: dict[str, float], cpu: dict[str, float]) -> float:
    """Predicted time on the device, transfers and launch latency included."""
    lat = dev["latency_s"]
    if w.kind == "streamed":
        return lat + w.bytes_in / (dev["stream_gbs"] * 1e9)
    down = min(dev["download_gbs"], dev["pageable_upload_gbs"]) * 1e9
    moved = lat + w.bytes_in / (dev["pageable_upload_gbs"] * 1e9) + w.bytes_out / down
    if w.kind == "matrix":
        return moved + w.flops / (dev["gemm_gflops"] * 1e9) + w.host_flops / (cpu["gemm_gflops"] * 1e9)
    return moved + (w.bytes_in + w.bytes_out) / (dev["quantize_gbs"] * 1e9)


def prefer_device(w: Work, dev: dict[str, float], cpu: dict[str, float]) -> bool:
    """Whether the device is predicted at least :data:`MARGIN` faster than the CPU."""
    return device_seconds(w, dev, cpu) < MARGIN * cpu_seconds(w, cpu)


def break_even(dev: dict[str, float], cpu: dict[str, float]) -> dict[str, Optional[str]]:
    """The smallest sizes (powers of two) at which ``auto`` takes the device, per operation; None
    where it never does up to 2^34 bytes or 2^16 features."""

    def first(make: Any, sizes: Any, label: Any) -> Optional[str]:
        for s in sizes:
            if prefer_device(make(s), dev, cpu):
                return str(label(s))
        return None

    mib = [1 << k for k in range(10, 35)]
    side = [1 << k for k in range(4, 17)]
    return {
        "quantize (float32 in host memory)": first(
            lambda b: Work.streamed(b, b / 4), mib, lambda b: f"{b / 2**20:.0f} MiB"
        ),
        "element-wise kernels (one transfer each way)": first(
            lambda b: Work.elementwise(b, b / 4), mib, lambda b: f"{b / 2**20:.0f} MiB"
        ),
        "XᵀX of 4096 rows": first(lambda f: Work.hessian(4096, f), side, lambda f: f"{f} features"),
        "GPTQ of a square layer": first(lambda n: Work.gptq(n, n), side, lambda n: f"{n} x {n}"),
        "layer error of a square layer": first(
            lambda n: Work.layer_error(n, n), side, lambda n: f"{n} x {n}"
        ),
    }


def cache_path() -> Optional[Path]:
    """The cache file, or None when ``RXQUANT_DEVICE_CACHE=off``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rxquant" / "devices.json"


def device_key(dev: dict[str, Any]) -> str:
    return f"{dev.get('platform', '')} | {dev.get('name', '')} | {dev.get('driver_version', '')}"


_MEMO: dict[str, dict[str, Any]] = {}
_FAILED: dict[str, str] = {}
_LOCK = threading.Lock()
#: How many measurements this process ran (tests check that a fresh cache is not measured again).
measurements = 0


def _fresh(rec: Any) -> bool:
    try:
        return (
            rec["rxquant"] == native.__version__
            and rec["threads"] == native.threads()
            and time.time() - float(rec["measured_at"]) < MAX_AGE
            and all(math.isfinite(v) and v > 0 for v in rec["device"].values())
            and all(math.isfinite(v) and v > 0 for v in rec["cpu"].values())
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _read(path: Optional[Path]) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def failed(dev: dict[str, Any]) -> Optional[str]:
    """Why this device's measurement failed in this process, or None."""
    return _FAILED.get(device_key(dev))


def mark_failed(dev: dict[str, Any], why: str) -> None:
    """Keeps ``auto`` off this device for the rest of the process."""
    with _LOCK:
        _FAILED[device_key(dev)] = why
        _MEMO.pop(device_key(dev), None)


def figures(dev: dict[str, Any], handle: Any, *, remeasure: bool = False) -> Optional[dict[str, Any]]:
    """The device's record ``{"device": ..., "cpu": ..., "measured_at": ..., ...}``: from this
    process, the cache, or measured now (and cached). None if the device failed to measure."""
    key = device_key(dev)
    with _LOCK:
        if key in _FAILED:
            return None
        if key in _MEMO and not remeasure:
            return _MEMO[key]
        path = cache_path()
        cached = _read(path)
        rec = cached.get(key)
        if remeasure or not _fresh(rec):
            global measurements
            measurements += 1
            try:
                measured = {k: float(v) for k, v in dict(handle.measure()).items()}
                cpu = {k: float(v) for k, v in dict(native.measure_cpu()).items() if k != "threads"}
            except native.DeviceError as e:
                _FAILED[key] = str(e)
                return None
            rec = {
                "device": measured,
                "cpu": cpu,
                "threads": native.threads(),
                "rxquant": native.__version__,
                "measured_at": time.time(),
            }
            if path is not None:
                cached[key] = rec
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_json(path, cached)
                except OSError:
                    pass  # a read-only home: the figures still serve this process
        _MEMO[key] = rec
        return rec


def forget() -> None:
    """Drops this process's figures and failures (the cache file stays)."""
    with _LOCK:
        _MEMO.clear()
        _FAILED.clear()
