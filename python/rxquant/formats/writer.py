"""Writing safetensors files streamed: the header first (every size is known from dtypes and
shapes), then one tensor at a time, so no tensor waits in memory for the others; the file is
written atomically (see :mod:`rxquant.core.atomic`)."""

from __future__ import annotations

import json
from types import TracebackType
from typing import IO, Any, Optional, Union

import numpy as np

from ..core.atomic import PathLike, atomic_open
from .checkpoint import tensor_nbytes

# (name, safetensors dtype, shape)
TensorSpec = tuple[str, str, tuple[int, ...]]


def header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The 8-byte length and JSON header of a file holding ``specs`` in this order."""
    tensors: dict[str, Any] = {}
    offset = 0
    for name, dt, shape in specs:
        size = tensor_nbytes(dt, shape)
        tensors[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps({"__metadata__": metadata, **tensors}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data start to 8 bytes
    return len(raw).to_bytes(8, "little") + raw


def file_size(specs: list[TensorSpec], metadata: dict[str, str]) -> int:
    """Bytes of the file :class:`SafetensorsWriter` writes for ``specs``."""
    return len(header(specs, metadata)) + sum(tensor_nbytes(dt, s) for _, dt, s in specs)


class SafetensorsWriter:
    """``with SafetensorsWriter(path, specs, metadata) as w: w.write(array)`` once per spec, in
    order. Sizes are checked; a missing tensor or an error leaves no file behind."""

    def __init__(self, path: PathLike, specs: list[TensorSpec], metadata: dict[str, str]) -> None:
        self.specs = list(specs)
        self._head = header(self.specs, metadata)
        self._ctx = atomic_open(path, "wb")
        self._f: Optional[IO[Any]] = None
        self._next = 0
        self.bytes = 0

    def __enter__(self) -> SafetensorsWriter:
        self._f = self._ctx.__enter__()
        self._f.write(self._head)
        self.bytes = len(self._head)
        return self

    def write(self, data: Union[bytes, np.ndarray]) -> None:
        """Writes the next tensor's bytes (a C-ordered array or raw little-endian bytes)."""
        assert self._f is not None, "use SafetensorsWriter as a context manager"
        if self._next >= len(self.specs):
            raise RuntimeError("internal error: more tensors written than the header lists")
        name, dt, shape = self.specs[self._next]
        b = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
        want = tensor_nbytes(dt, shape)
        if len(b) != want:
            raise RuntimeError(f"internal error: {name} has {len(b)} bytes, the header says {want}")
        self._f.write(b)
        self.bytes += len(b)
        self._next += 1

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Optional[bool]:
        if kind is None and self._next != len(self.specs):
            exc = RuntimeError(f"internal error: {len(self.specs) - self._next} tensor(s) were not written")
            self._ctx.__exit__(type(exc), exc, None)
            raise exc
        return self._ctx.__exit__(kind, exc, tb)
