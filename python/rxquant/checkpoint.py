"""Checkpoints in and out: safetensors (memory-mapped, sharded with an index), .npz, and the
rxquant quantized safetensors format (docs/format.md), written streamed and atomically."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from . import _rxquant
from ._io import atomic_open
from .calibration import calibrate
from .ops import dequantize, pack_int4, quantize, unpack_int4
from .scheme import QParams, Scheme

FORMAT_VERSION = 1
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
NUMPY_TO_ST = {
    "float32": "F32",
    "float16": "F16",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
}
ST_TO_NUMPY = {v: k for k, v in NUMPY_TO_ST.items()}
PathLike = Union[str, "os.PathLike[str]"]


class Checkpoint:
    """Read-only view of a checkpoint: one safetensors file, a sharded set, or an .npz file.

    ``FILE`` may be a ``.safetensors`` file, a shard ``model-0000k-of-0000n.safetensors`` or an
    ``*.index.json`` (the whole set is opened), or an ``.npz``.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(
                f"{self.path} is a directory; give a .safetensors, .index.json or .npz file"
            )
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._files: dict[str, Any] = {}
        self._where: dict[str, str] = {}
        self._npz: Optional[Any] = None
        if self.path.suffix == ".npz":
            self._open_npz()
        else:
            index = self._index_path()
            if index is not None:
                self._open_index(index)
            else:
                self._add(self.path)

    def _index_path(self) -> Optional[Path]:
        if self.path.name.endswith(".index.json"):
            return self.path
        m = re.fullmatch(r"(.*)-\d{5}-of-\d{5}\.safetensors", self.path.name)
        if m:
            cand = self.path.with_name(f"{m.group(1)}.safetensors.index.json")
            if cand.exists():
                return cand
        return None

    def _open_index(self, index: Path) -> None:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index} is not a safetensors index (expected a 'weight_map'): {e}") from None
        for shard in dict.fromkeys(weight_map.values()):
            self._add(index.parent / shard)
        missing = set(weight_map) - set(self._where)
        if missing:
            raise ValueError(f"{index} lists tensors missing from its shards: {sorted(missing)[:3]}")

    def _add(self, file: Path) -> None:
        f = _rxquant.SafetensorsFile(str(file))
        key = str(file)
        self._files[key] = f
        for name in f.names():
            self._where[name] = key

    def _open_npz(self) -> None:
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            names = list(self._npz.files)
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path} is not a readable .npz file: {e}") from None
        self._where = {n: "npz" for n in names}

    def names(self) -> list[str]:
        return list(self._where)

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in self._files.values():
            out.update(f.metadata())
        return out

    def info(self, name: str) -> tuple[str, tuple[int, ...]]:
        """``(dtype, shape)`` with safetensors dtype names (``F32``, ``BF16``, ``I64``, ...)."""
        if self._npz is not None:
            a = self._npz[name]
            dt = NUMPY_TO_ST.get(a.dtype.name)
            if dt is None:
                raise ValueError(f"tensor {name!r} has unsupported dtype {a.dtype}")
            return dt, tuple(a.shape)
        dt, shape = self._files[self._where[name]].info(name)
        return dt, tuple(shape)

    def read_f32(self, name: str) -> np.ndarray:
        """A floating tensor as float32 (F16/BF16/F64 converted)."""
        if self._npz is not None:
            return np.asarray(self._npz[name], dtype=np.float32)
        return self._files[self._where[name]].read_f32(name)

    def read_raw(self, name: str) -> bytes:
        """The tensor's bytes as stored (little-endian), for pass-through."""
        if self._npz is not None:
            return np.ascontiguousarray(self._npz[name]).tobytes()
        return self._files[self._where[name]].read_raw(name).tobytes()

    def read(self, name: str) -> np.ndarray:
        """A tensor as numpy (BF16 converted to float32)."""
        dt, shape = self.info(name)
        if dt in FLOAT_DTYPES and dt != "F64":
            return (
                self.read_f32(name)
                if dt == "BF16"
                else np.frombuffer(self.read_raw(name), ST_TO_NUMPY[dt]).reshape(shape)
            )
        return np.frombuffer(self.read_raw(name), ST_TO_NUMPY.get(dt, "uint8")).reshape(shape)

    def nbytes(self, name: str) -> int:
        dt, shape = self.info(name)
        return math.prod(shape) * {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4}.get(
            dt, 2 if dt in ("F16", "BF16", "I16", "U16") else 1
        )


def select(ckpt: Checkpoint, include: Optional[str] = None, exclude: Optional[str] = None) -> list[str]:
    """Tensors to quantize: floating with 2+ dims (norms and biases stay), filtered by regexes."""
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    out = []
    for n in ckpt.names():
        dt, shape = ckpt.info(n)
        if dt not in FLOAT_DTYPES or len(shape) < 2:
            continue
        if inc and not inc.search(n) or exc and exc.search(n):
            continue
        out.append(n)
    return out


# ------------------------------------------------------------------ the quantized format


@dataclass
class Entry:
    """One source tensor and how it is stored."""

    name: str
    scheme: Optional[Scheme]  # None: passed through unchanged
    method: str
    dtype: str
    shape: tuple[int, ...]

    def outputs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Stored tensors: (name, safetensors dtype, shape)."""
        s, n = self.scheme, math.prod(self.shape)
        if s is None or s.precision == "fp32" and self.dtype == "F32":
            return [(self.name, self.dtype, self.shape)]
        if s.precision == "fp32":
            return [(self.name, "F32", self.shape)]
        if s.precision == "fp16":
            return [(self.name, "F16", self.shape)]
        p = s.n_params(self.shape)
        grid = _grid(s, self.shape)
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


def _grid(s: Scheme, shape: tuple[int, ...]) -> tuple[int, ...]:
    if s.axis is None:
        return ()
    if s.group_size is None:
        return (shape[s.axis],)
    g = list(shape)
    g[s.axis] //= s.group_size
    return tuple(g)


def _itemsize(dt: str) -> int:
    return {
        "F64": 8,
        "I64": 8,
        "U64": 8,
        "F32": 4,
        "I32": 4,
        "U32": 4,
        "F16": 2,
        "BF16": 2,
        "I16": 2,
        "U16": 2,
    }.get(dt, 1)


def _header(entries: list[Entry]) -> bytes:
    tensors: dict[str, Any] = {}
    offset = 0
    for e in entries:
        for name, dt, shape in e.outputs():
            size = math.prod(shape) * _itemsize(dt)
            tensors[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
    meta = {
        "format_version": FORMAT_VERSION,
        "tensors": {
            e.name: {
                "scheme": e.scheme.to_dict() if e.scheme else None,
                "method": e.method,
                "shape": list(e.shape),
                "dtype": e.dtype,
            }
            for e in entries
        },
    }
    header = {"__metadata__": {"format": "rxquant", "rxquant": json.dumps(meta)}, **tensors}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data start to 8 bytes
    return len(raw).to_bytes(8, "little") + raw


def predicted_size(entries: list[Entry]) -> int:
    """Bytes of the output file (header included)."""
    data = sum(math.prod(s) * _itemsize(dt) for e in entries for _, dt, s in e.outputs())
    return len(_header(entries)) + data


def _store_scale(qp: QParams) -> QParams:
    """INT4 scales are stored as float16: round them first (kept positive and finite), so that
    the codes are computed with exactly the scale the file holds."""
    if qp.scheme.scale_dtype != "float16":
        return qp
    s16 = np.clip(qp.scale, 2.0**-14, 65504.0).astype(np.float16).astype(np.float32)
    return QParams(qp.scheme, s16, qp.zero_point, qp.shape)


def quantize_entry(
    e: Entry, x: np.ndarray, calib: Optional[dict[str, Any]] = None, device: Optional[str] = None
) -> list[np.ndarray]:
    """The stored arrays of one tensor, in ``Entry.outputs()`` order (computed on ``device``)."""
    s = e.scheme
    assert s is not None and s.precision not in ("fp32",)
    if s.precision == "fp16":
        return [quantize(x, s)[0]]
    qp = _store_scale(calibrate(x, e.method, s, device=device, **(calib or {})))
    packed = s.precision == "int4"
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
) -> int:
    """Streams the quantized file: header first, then one tensor at a time (atomic). Returns bytes.
    Calibration and quantization run on ``device`` (see :mod:`rxquant.devices`)."""
    header = _header(entries)
    written = len(header)
    with atomic_open(out_path, "wb") as f:
        f.write(header)
        for e in entries:
            if e.scheme is None or (e.scheme.precision == "fp32" and e.dtype == "F32"):
                arrays: list[Any] = [ckpt.read_raw(e.name)]
            elif e.scheme.precision == "fp32":
                arrays = [ckpt.read_f32(e.name)]
            else:
                arrays = quantize_entry(e, ckpt.read_f32(e.name), device=device)
            for (name, dt, shape), a in zip(e.outputs(), arrays):
                b = a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes()
                want = math.prod(shape) * _itemsize(dt)
                if len(b) != want:
                    raise RuntimeError(f"internal error: {name} has {len(b)} bytes, the header says {want}")
                f.write(b)
                written += len(b)
            if progress:
                progress(e)
    return written


@dataclass
class QuantizedTensor:
    """A stored tensor: codes, parameters, and whether the codes are packed INT4."""

    q: np.ndarray
    qparams: QParams
    packed: bool

    def dequantize(self) -> np.ndarray:
        return dequantize(self.q, self.qparams, packed=self.packed)


def load_quantized(path: PathLike, dequantize: bool = True) -> dict[str, Any]:
    """Reads an rxquant file: float32 arrays (``dequantize=True``) or :class:`QuantizedTensor`
    objects for quantized tensors; other tensors as stored."""
    ck = Checkpoint(path)
    md = ck.metadata()
    if md.get("format") != "rxquant" or "rxquant" not in md:
        raise ValueError(f"{path} is not an rxquant quantized file (no rxquant metadata)")
    meta = json.loads(md["rxquant"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {meta.get('format_version')!r}; this rxquant reads {FORMAT_VERSION}"
        )
    out: dict[str, Any] = {}
    for name, t in meta["tensors"].items():
        shape = tuple(t["shape"])
        s = Scheme.from_dict(t["scheme"]) if t["scheme"] else None
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
