"""The rxquant quantized format (docs/format.md): a safetensors file with codes, scales and zero
points per tensor and the schemes in its metadata, written streamed and atomically, and read back."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..core.atomic import PathLike, refuse_overwriting
from ..core.calibration import calibrate
from ..core.errors import RequestError, naming
from ..core.gptq import gptq
from ..core.ops import dequantize, pack_int4, quantize, unpack_int4
from ..core.qparams import QParams
from ..core.scheme import Scheme, as_flag
from .checkpoint import Checkpoint
from .writer import SafetensorsWriter, TensorSpec, file_size

FORMAT_VERSION = 1


@dataclass
class Entry:
    """One source tensor and how it is stored."""

    name: str
    scheme: Optional[Scheme]  # None: passed through unchanged
    method: str
    dtype: str
    shape: tuple[int, ...]
    rounding: str = "nearest"  # or "importance", "gptq" (needs the layer's input statistics)

    def outputs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Stored tensors: (name, safetensors dtype, shape)."""
        s, n = self.scheme, math.prod(self.shape)
        if s is None or s.precision == "fp32" and self.dtype == "F32":
            return [(self.name, self.dtype, self.shape)]
        if s.precision == "fp32":
            return [(self.name, "F32", self.shape)]
        if s.precision == "fp16":
            return [(self.name, "F16", self.shape)]
        grid = s.grid(self.shape)
        p = math.prod(grid)
        packed = s.precision == "int4"
        out = [
            (
                f"{self.name}.qweight",
                "U8" if packed or not s.symmetric else "I8",
                ((n + 1) // 2,) if packed else self.shape,
            ),
            (f"{self.name}.scale", "F16" if s.scale_dtype == "float16" else "F32", grid),
        ]
        if not s.symmetric:
            out.append((f"{self.name}.zero_point", "U8", ((p + 1) // 2,) if packed else grid))
        return out


def _specs_and_metadata(entries: list[Entry]) -> tuple[list[TensorSpec], dict[str, str]]:
    meta = {
        "format_version": FORMAT_VERSION,
        "tensors": {
            e.name: {
                "scheme": e.scheme.to_dict() if e.scheme else None,
                "method": e.method,
                "rounding": e.rounding if e.scheme and e.scheme.is_integer else None,
                "shape": list(e.shape),
                "dtype": e.dtype,
            }
            for e in entries
        },
    }
    return [o for e in entries for o in e.outputs()], {"format": "rxquant", "rxquant": json.dumps(meta)}


def predicted_size(entries: list[Entry]) -> int:
    """Bytes of the output file (header included)."""
    return file_size(*_specs_and_metadata(entries))


def _store_scale(qp: QParams) -> QParams:
    """INT4 scales are stored as float16: round them first (magnitudes kept in float16's normal
    range, signs kept), so that the codes are computed with exactly the scale the file holds."""
    if qp.scheme.scale_dtype != "float16":
        return qp
    mag = np.clip(np.abs(qp.scale), 2.0**-14, 65504.0)
    s16 = np.copysign(mag, qp.scale).astype(np.float16).astype(np.float32)
    return QParams(qp.scheme, s16, qp.zero_point, qp.shape)


def quantize_entry(
    e: Entry,
    x: np.ndarray,
    calib: Optional[dict[str, Any]] = None,
    device: Optional[str] = None,
    stats: Optional[Any] = None,
) -> list[np.ndarray]:
    """The stored arrays of one tensor, in ``Entry.outputs()`` order (computed on ``device``).
    ``stats`` (with ``hessian`` and ``importance``) is the layer's input statistics, needed by
    the ``importance`` and ``gptq`` roundings."""
    s = e.scheme
    assert s is not None and s.precision not in ("fp32",)
    if s.precision == "fp16":
        return [quantize(x, s)[0]]
    packed = s.precision == "int4"
    if e.rounding != "nearest" and stats is None:
        raise RequestError(f"{e.rounding} rounding of {e.name} needs its input statistics")
    if e.rounding == "gptq":
        if stats.hessian is None:
            raise RequestError(
                f"gptq rounding of {e.name} needs a Hessian; the statistics have only importance"
            )
        method = "minmax" if e.method == "minmax" else "mse"
        q, qp = gptq(x, s, stats.hessian, method=method, pack=packed, f16_scales=s.scale_dtype == "float16")
    else:
        if e.rounding == "importance":
            qp = _store_scale(calibrate(x, "mse", s, importance=stats.importance))
        else:
            qp = _store_scale(calibrate(x, e.method, s, device=device, **(calib or {})))
        q, _ = quantize(x, s, qp, pack=packed, device=device)
    out = [q, qp.scale.astype(np.float16 if s.scale_dtype == "float16" else np.float32)]
    if not s.symmetric:
        zp = qp.zero_point.astype(np.uint8)
        out.append(pack_int4(zp.reshape(-1)) if packed else zp)
    return out


def write_quantized(
    ckpt: Checkpoint,
    out_path: PathLike,
    entries: list[Entry],
    progress: Optional[Callable[[Entry], None]] = None,
    device: Optional[str] = None,
    statistics: Optional[Mapping[str, Any]] = None,
) -> int:
    """Streams the quantized file: header first, then one tensor at a time (atomic). Returns bytes.
    Calibration and quantization run on ``device`` (see :mod:`rxquant.devices`); entries with
    ``importance`` or ``gptq`` rounding take their layer's input statistics from ``statistics``
    (read one layer at a time)."""
    refuse_overwriting(out_path, *ckpt.files())
    specs, metadata = _specs_and_metadata(entries)
    with SafetensorsWriter(out_path, specs, metadata) as w:
        for e in entries:
            if e.scheme is None or (e.scheme.precision == "fp32" and e.dtype == "F32"):
                arrays: list[Any] = [ckpt.read_raw(e.name)]
            elif e.scheme.precision == "fp32":
                arrays = [ckpt.read_f32(e.name)]
            else:
                stats = statistics[e.name] if e.rounding != "nearest" and statistics is not None else None
                with naming(e.name):
                    arrays = quantize_entry(e, ckpt.read_f32(e.name), device=device, stats=stats)
            for a in arrays:
                w.write(a)
            if progress:
                progress(e)
    return w.bytes


@dataclass
class QuantizedTensor:
    """A stored tensor: codes, parameters, and whether the codes are packed INT4."""

    q: np.ndarray
    qparams: QParams
    packed: bool

    def dequantize(self) -> np.ndarray:
        return dequantize(self.q, self.qparams, packed=self.packed)


def stored_entries(ck: Checkpoint) -> Optional[list[Entry]]:
    """The entries an rxquant file was written from (its metadata: each tensor's scheme, method,
    rounding, shape and source dtype), or None for a file rxquant did not quantize."""
    md = ck.metadata()
    if md.get("format") != "rxquant" or "rxquant" not in md:
        return None
    try:
        meta = json.loads(md["rxquant"])
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{ck.path} has format_version {version!r}; this rxquant reads {FORMAT_VERSION}")
        return [
            Entry(
                name,
                Scheme.from_dict(t["scheme"]) if t["scheme"] else None,
                t["method"],
                t["dtype"],
                tuple(t["shape"]),
                t.get("rounding") or "nearest",
            )
            for name, t in meta["tensors"].items()
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if str(ck.path) in str(e):
            raise
        raise ValueError(
            f"{ck.path}: its rxquant metadata cannot be read ({type(e).__name__}: {e})"
        ) from None


def load_quantized(path: PathLike, dequantize: bool = True) -> dict[str, Any]:
    """Reads an rxquant file: float32 arrays (``dequantize=True``) or :class:`QuantizedTensor`
    objects for quantized tensors; other tensors as stored."""
    dequantize = as_flag("dequantize", dequantize)
    ck = Checkpoint(path)
    entries = stored_entries(ck)
    if entries is None:
        raise ValueError(f"{path} is not an rxquant quantized file (no rxquant metadata)")
    out: dict[str, Any] = {}
    for e in entries:
        name, shape, s = e.name, e.shape, e.scheme
        if s is None or not s.is_integer:
            out[name] = ck.read(name).astype(np.float32) if s is not None else ck.read(name)
            continue
        scale = ck.read_f32(f"{name}.scale").astype(np.float32)
        grid = scale.shape
        if s.symmetric:
            zp = np.zeros(grid, np.int32)
        else:
            z = ck.read(f"{name}.zero_point")
            zp = (unpack_int4(z, grid, signed=False) if s.precision == "int4" else z.reshape(grid)).astype(
                np.int32
            )
        packed = s.precision == "int4"
        q = ck.read(f"{name}.qweight")
        if not packed and s.symmetric:
            q = q.view(np.int8)
        qt = QuantizedTensor(q, QParams(s, scale, zp, shape), packed)
        out[name] = qt.dequantize() if dequantize else qt
    return out
