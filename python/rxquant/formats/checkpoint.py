"""Reading checkpoints: safetensors (memory-mapped, sharded with an index) and .npz, one tensor at a
time, plus the dtype names both use."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core import native
from ..core.atomic import PathLike

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
    "complex64": "C64",
}
ST_TO_NUMPY = {v: k for k, v in NUMPY_TO_ST.items()}


def index_of(path: Path) -> Optional[Path]:
    """The ``*.index.json`` of the sharded set that ``path`` (the index or a shard) belongs to."""
    if path.name.endswith(".index.json"):
        return path
    m = re.fullmatch(r"(.*)-\d{5}-of-\d{5}\.safetensors", path.name)
    if m:
        cand = path.with_name(f"{m.group(1)}.safetensors.index.json")
        if cand.exists():
            return cand
    return None


def source_files(path: PathLike) -> list[Path]:
    """The files a checkpoint at ``path`` is read from: the file itself, and for a sharded set its
    index and every shard it lists (an index that cannot be read lists none)."""
    p = Path(path)
    index = index_of(p)
    if index is None:
        return [p]
    try:
        shards = json.loads(index.read_text())["weight_map"].values()
        listed = [index.parent / s for s in dict.fromkeys(shards)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []
    return list(dict.fromkeys([p, index, *listed]))


#: What a model folder is read from besides its weights (``model.safetensors``): the model
#: and tokenizer configuration, and sentence-transformers' module list.
MODEL_FOLDER_FILES = ("config.json", "tokenizer.json", "modules.json")


def _weights_in(folder: Path) -> Path:
    """``model.safetensors`` in ``folder``, or the sharded set's index where only that exists."""
    weights = folder / "model.safetensors"
    if not weights.exists() and (folder / "model.safetensors.index.json").exists():
        return folder / "model.safetensors.index.json"
    return weights


def folder_weights(folder: PathLike) -> Path:
    """The weights a model folder is read from (:func:`_weights_in`); a folder without them is
    refused, naming both files looked for."""
    weights = _weights_in(Path(folder))
    if not weights.exists():
        raise IsADirectoryError(
            f"{folder} is a directory without model.safetensors or model.safetensors.index.json; "
            "give a .safetensors, .index.json or .npz file, or a model folder"
        )
    return weights


def model_folder_files(folder: PathLike) -> list[Path]:
    """The files a model folder is read from (those that exist): its configuration files and its
    weights, with a sharded set's index and shards. Other files in it (an earlier output) are
    not among them."""
    d = Path(folder)
    weights = _weights_in(d)
    files = [d / n for n in MODEL_FOLDER_FILES] + (source_files(weights) if weights.exists() else [])
    return [f for f in files if f.exists()]


class Checkpoint:
    """Read-only view of a checkpoint: one safetensors file, a sharded set, or an .npz file.

    ``FILE`` may be a ``.safetensors`` file, a shard ``model-0000k-of-0000n.safetensors`` or an
    ``*.index.json`` (the whole set is opened), an ``.npz``, or a model folder (its
    ``model.safetensors`` or ``model.safetensors.index.json``, as :func:`model_folder_files`).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = folder_weights(self.path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._files: dict[str, Any] = {}
        self._where: dict[str, str] = {}
        self._npz: Optional[Any] = None
        if self.path.suffix == ".npz":
            self._open_npz()
        else:
            index = index_of(self.path)
            if index is not None:
                self._open_index(index)
            else:
                self._add(self.path)

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
        f = native.SafetensorsFile(str(file))
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

    def files(self) -> list[Path]:
        """The files this checkpoint reads: the file given, and a sharded set's index and shards."""
        return [self.path] if self._npz is not None else source_files(self.path)

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
                raise ValueError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot store")
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
            # numpy keeps an array's byte order as saved; safetensors stores little-endian.
            a = self._npz[name]
            return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
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
        return tensor_nbytes(dt, shape)

    def tensors(self, names: list[str]) -> LazyTensors:
        """``names`` as a read-only mapping to float32 arrays, each read when accessed."""
        return LazyTensors(self, names)


class LazyTensors(Mapping[str, np.ndarray]):
    """Float32 tensors of a checkpoint, read from the (memory-mapped) file on each access and
    never cached: a caller that takes one tensor at a time and lets it go holds one in memory,
    however large the file. ``shape(name)`` costs no read."""

    def __init__(self, ckpt: Checkpoint, names: list[str]) -> None:
        self._ckpt = ckpt
        self._names = list(dict.fromkeys(names))
        have = set(ckpt.names())
        missing = [n for n in self._names if n not in have]
        if missing:
            raise KeyError(f"{ckpt.path} has no tensor named {missing[0]!r}")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._ckpt.read_f32(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._ckpt.info(name)[1]


#: Bits per element of safetensors' dtypes wider or narrower than a byte (the rest are 8).
_BITS = {
    "F64": 64, "C64": 64, "I64": 64, "U64": 64,
    "F32": 32, "I32": 32, "U32": 32,
    "F16": 16, "BF16": 16, "I16": 16, "U16": 16,
    "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
}  # fmt: skip


def tensor_nbytes(dt: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of safetensors dtype ``dt``: sub-byte types (FP4, FP6) pack their
    elements, and safetensors requires whole bytes."""
    return math.prod(shape) * _BITS.get(dt, 8) // 8


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
