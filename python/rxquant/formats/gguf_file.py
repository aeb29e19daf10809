"""GGUF files (llama.cpp's container): reading memory-maps the file and locates its key-value
pairs without decoding them (see :class:`GgufFile` for why not ``gguf.GGUFReader``); writing is
streamed (the header with every tensor's type and size first, then one tensor at a time) and
atomic (see :mod:`rxquant.core.atomic`). Type names, sizes and the architectures' tensor names
come from the ``gguf`` package, llama.cpp's own.

Reading, planning and writing need no numpy (it is imported where a tensor is decoded to an
array): requantizing a GGUF file starts without its import, which alone takes most of
``llama-quantize``'s whole run on a small model.

Also here: llama.cpp's rule for which tensors a single-type quantization touches and the types
it falls back to (``src/llama-quant.cpp``: ``tensor_allows_quantization`` and
``tensor_type_fallback``), and the mapping between Hugging Face and GGUF tensor names.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core import native
from ..core.atomic import PathLike, atomic_open
from ..core.block_types import BLOCK_TYPES

if TYPE_CHECKING:
    import numpy as np

# Float types rxquant reads and writes besides the block types.
FLOAT_TYPES = ("F32", "F16", "BF16")

# llama.cpp's ``general.file_type`` for a file whose quantized tensors are all of one type.
FILE_TYPES = {"F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
              "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30,
              # llama-quantize's mixes (rxquant.formats.gguf_mixes)
              "Q2_K_S": 21, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
              "Q5_K_S": 16, "Q5_K_M": 17}  # fmt: skip

# What llama.cpp quantizes: names ending in "weight", minus these (llama-quant.cpp).
_NOT_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)  # fmt: skip
_NOT_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
# A type's fallback where rows are not whole super-blocks of 256 (then F16 if that fails too).
_FALLBACK = {
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL",
}  # fmt: skip


def gguf_package() -> Any:
    """The gguf package, imported on first use: it takes about 30 ms, which every CLI command
    would pay (rxquant reads GGUF files itself)."""
    try:
        import gguf
    except ImportError:  # pragma: no cover - a dependency; a clear message all the same
        raise ImportError("GGUF files need the gguf package: pip install gguf") from None
    return gguf


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp's quantizer would quantize this tensor: 2+ dimensions, a name ending in
    ``weight``, and not a norm, position or token-type embedding or one of its small tensors."""
    if len(shape) < 2 or not name.endswith("weight"):
        return False
    return name not in _NOT_QUANTIZED_NAMES and not any(s in name for s in _NOT_QUANTIZED)


@dataclass(frozen=True)
class TypeChoice:
    """The type a tensor gets and, when it is not the one asked for, why."""

    type: str
    reason: Optional[str] = None


def type_for(name: str, shape: tuple[int, ...], wanted: str) -> Optional[TypeChoice]:
    """llama.cpp's type for one tensor when the whole file is quantized to ``wanted`` (as
    ``llama-quantize --pure``): None where the tensor is not quantized; a K type on rows that are
    not whole super-blocks falls back to Q4_0/Q5_0/Q5_1/Q8_0 (IQ4_XS to IQ4_NL), and any type to
    F16 where even that does not fit."""
    if not allows_quantization(name, shape):
        return None
    return fitted(wanted, shape)


def fitted(wanted: str, shape: tuple[int, ...]) -> TypeChoice:
    """``wanted``, or llama.cpp's fallback where the rows are not whole blocks of it
    (``tensor_type_fallback``): Q4_0/Q5_0/Q5_1/Q8_0 for the K types, IQ4_NL for IQ4_XS, then F16."""
    t = BLOCK_TYPES[wanted]
    if t.fits(shape):
        return TypeChoice(t.name)
    why = f"rows of {shape[-1]} are not whole blocks of {t.block_size}"
    fb = _FALLBACK.get(t.name)
    if fb is not None and BLOCK_TYPES[fb].fits(shape):
        return TypeChoice(fb, why)
    return TypeChoice("F16", why)


def hf_to_gguf_names(arch: str, blocks: int) -> Callable[[str], Optional[str]]:
    """A function from a Hugging Face tensor name (``encoder.layer.0.attention.self.query.weight``)
    to its GGUF name (``blk.0.attn_q.weight``) for ``arch`` (as ``gguf.MODEL_ARCH`` names it), or
    None where the architecture has no such tensor."""
    g = gguf_package()
    try:
        model_arch = next(a for a, n in g.MODEL_ARCH_NAMES.items() if n == arch)
    except StopIteration:
        raise ValueError(f"the gguf package knows no architecture {arch!r}") from None
    tmap = g.get_tensor_name_map(model_arch, blocks)

    def to_gguf(name: str) -> Optional[str]:
        for prefix in ("", "bert.", "model."):
            if prefix and not name.startswith(prefix):
                continue
            mapped = tmap.get_name(name[len(prefix) :], try_suffixes=(".weight", ".bias"))
            if mapped is not None:
                return str(mapped)
        return None

    return to_gguf


# ------------------------------------------------------------------ the container

# GGUF value types (gguf.GGUFValueType): struct formats of the fixed-size ones.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# The value types and the quantization version rxquant writes itself (the gguf package's
# GGUFValueType.UINT32 / .STRING and GGML_QUANT_VERSION; a test checks that they agree).
UINT32, STRING = 4, _STRING
GGML_QUANT_VERSION = 2
_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# Tensors from this size on are written by a thread while the next one is quantized.
_BACKGROUND_BYTES = 1 << 20


@dataclass
class Field:
    """One key-value pair: its value type, the encoded value (type tag included) as stored, and
    for arrays the item type. ``value`` decodes it."""

    key: str
    vtype: int
    raw: bytes
    sub: Optional[int] = None

    @property
    def value(self) -> Any:
        v, _ = _decode(self.raw, 4, self.vtype)
        return v

    @classmethod
    def of(cls, key: str, value: Any, vtype: int, sub: Optional[int] = None) -> Field:
        """A pair from a Python value (``vtype``/``sub`` as ``gguf.GGUFValueType`` numbers)."""
        if sub is None and int(vtype) == _ARRAY:
            sub = gguf_package().GGUFValueType.get_type(value[0])  # as the gguf writer infers it
        sub = None if sub is None else int(sub)
        return cls(key, int(vtype), struct.pack("<I", int(vtype)) + _encode(value, int(vtype), sub), sub)


def _encode(value: Any, vtype: int, sub: Optional[int]) -> bytes:
    if vtype in _SCALAR:
        return struct.pack("<" + _SCALAR[vtype], value)
    if vtype == _STRING:
        b = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return struct.pack("<Q", len(b)) + b
    if vtype == _ARRAY:
        if sub is None:
            raise ValueError("an array value needs its item type")
        items = list(value)
        head = struct.pack("<IQ", sub, len(items))
        if sub in _SCALAR:
            return head + struct.pack(f"<{len(items)}{_SCALAR[sub]}", *items)
        return head + b"".join(_encode(v, sub, None) for v in items)
    raise ValueError(f"unknown GGUF value type {vtype}")


def _decode(buf: Any, pos: int, vtype: int) -> tuple[Any, int]:
    """The value of type ``vtype`` at ``pos`` of ``buf`` and the position after it."""
    if vtype in _SCALAR:
        f = "<" + _SCALAR[vtype]
        return struct.unpack_from(f, buf, pos)[0], pos + struct.calcsize(f)
    if vtype == _STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8", errors="replace"), pos + 8 + n
    if vtype == _ARRAY:
        sub, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if sub in _SCALAR:
            size = struct.calcsize(_SCALAR[sub])
            return list(struct.unpack_from(f"<{n}{_SCALAR[sub]}", buf, pos)), pos + n * size
        out = []
        for _ in range(n):
            v, pos = _decode(buf, pos, sub)
            out.append(v)
        return out, pos
    raise ValueError(f"unknown GGUF value type {vtype}")


# The ggml types rxquant reads and writes itself, (id, values a block, bytes a block): the floats
# and the core's table, so these need no import of the gguf package; others are looked up there.
_OWN_TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "BF16": (30, 1, 2)} | {
    n: (t.ggml_id, t.block_size, t.type_size) for n, t in BLOCK_TYPES.items()
}
_OWN_NAMES = {v[0]: n for n, v in _OWN_TYPES.items()}


def _type_id(type_name: str) -> int:
    own = _OWN_TYPES.get(type_name)
    return own[0] if own else int(gguf_package().GGMLQuantizationType[type_name])


def _type_name(type_id: int) -> str:
    if type_id in _OWN_NAMES:
        return _OWN_NAMES[type_id]
    try:
        return str(gguf_package().GGMLQuantizationType(type_id).name)
    except ValueError:
        raise ValueError(f"unknown ggml type {type_id}") from None


def _type_nbytes(type_name: str, shape: tuple[int, ...]) -> int:
    own = _OWN_TYPES.get(type_name)
    if own:
        block, size = own[1:]
    else:
        g = gguf_package()
        block, size = g.GGML_QUANT_SIZES[g.GGMLQuantizationType[type_name]]
    return math.prod(shape) // block * size


@dataclass
class GgufTensor:
    """One tensor of a GGUF file: ``shape`` in numpy order (rows first; GGUF lists it reversed),
    ``type`` as ggml names it (``F32``, ``Q4_K``), its stored bytes (``data``, memory-mapped)
    and where they lie in the file (``path``, ``offset``)."""

    name: str
    type: str
    shape: tuple[int, ...]
    nbytes: int
    data: memoryview
    path: str
    offset: int

    @property
    def raw(self) -> np.ndarray:
        """The stored bytes as a read-only uint8 array (no copy)."""
        import numpy as np

        return np.frombuffer(self.data, np.uint8)

    def read_f32(self) -> np.ndarray:
        """The tensor as float32 (decoded if quantized)."""
        import numpy as np

        from ..core.blocks import dequantize_tensor

        raw = self.raw
        if self.type == "F32":
            return raw.view(np.float32).reshape(self.shape)
        if self.type == "F16":
            return raw.view(np.float16).astype(np.float32).reshape(self.shape)
        if self.type in BLOCK_TYPES:
            return dequantize_tensor(raw, self.type, self.shape)
        g = gguf_package()
        try:
            qt = g.GGMLQuantizationType[self.type]
            block, size = g.GGML_QUANT_SIZES[qt]
            out = g.quants.dequantize(raw.reshape(-1, self.shape[-1] // block * size), qt)
        except (NotImplementedError, KeyError):
            raise ValueError(f"tensor {self.name} is {self.type}, which rxquant cannot decode") from None
        return np.asarray(out, np.float32).reshape(self.shape)


class GgufFile:
    """A GGUF file (version 2 or 3, little-endian), memory-mapped: its key-value pairs and tensors.

    Read by rxquant rather than ``gguf.GGUFReader``: that reader decodes every key-value pair into
    numpy views (0.5 s for a 30k-token vocabulary, three times the whole of ``llama-quantize`` on
    MiniLM); here pairs are located, kept as bytes and decoded only when asked. The tests check
    that both readers agree. Not a GGUF file: a ValueError naming it."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                # mmap refuses an empty file in its own words ("cannot mmap an empty file").
                empty = os.fstat(f.fileno()).st_size == 0
                data = None if empty else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {self.path}: {e}") from None
        if data is None:
            raise ValueError(f"{self.path} is not a GGUF file rxquant reads: it is empty")
        try:
            self._parse(memoryview(data))
        except (struct.error, ValueError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path} is not a GGUF file rxquant reads: {e}") from None

    def _parse(self, buf: memoryview) -> None:
        # The header is walked by the Rust core (a 30,522-token vocabulary in a fraction of a
        # millisecond); each pair keeps its bytes, decoded by `Field.value` when asked.
        _version, pairs, records, end = native.gguf_layout(self.path)
        self.fields: dict[str, Field] = {
            key: Field(key, vtype, bytes(buf[start:stop]), sub) for key, vtype, start, stop, sub in pairs
        }
        align = self.fields.get("general.alignment")
        self.alignment = int(align.value) if align is not None else _DEFAULT_ALIGNMENT
        if self.alignment <= 0:
            raise ValueError(f"general.alignment is {self.alignment}")
        start = end + (-end % self.alignment)
        self.tensors: dict[str, GgufTensor] = {}
        for name, dims, type_id, offset in records:
            shape, type_name = tuple(int(d) for d in reversed(dims)), _type_name(type_id)
            n = _type_nbytes(type_name, shape)
            at = start + offset
            if at + n > len(buf):
                raise ValueError(f"tensor {name} runs past the end of the file")
            self.tensors[name] = GgufTensor(name, type_name, shape, n, buf[at : at + n], self.path, at)

    @property
    def arch(self) -> str:
        return str(self.value("general.architecture", ""))

    def value(self, key: str, default: Any = None) -> Any:
        f = self.fields.get(key)
        return default if f is None else f.value


# ------------------------------------------------------------------ writing


@dataclass
class TensorOut:
    """A tensor to write: its name, numpy shape and ggml type (F32, F16, a block type, or any
    type whose bytes are passed through)."""

    name: str
    shape: tuple[int, ...]
    type: str

    @property
    def nbytes(self) -> int:
        return _type_nbytes(self.type, self.shape)


class GgufWriter:
    """``with GgufWriter(path, fields, tensors) as w: w.write(data)`` once per tensor, in order:
    the header, key-value pairs and tensor table are written first (every size is known), then
    each tensor as it comes, aligned. Written atomically; nothing is left behind on error."""

    def __init__(
        self,
        path: PathLike,
        fields: list[Field],
        tensors: list[TensorOut],
        alignment: int = _DEFAULT_ALIGNMENT,
    ) -> None:
        self.path = os.fspath(path)
        self.fields = fields
        self.tensors = list(tensors)
        self.alignment = alignment
        self._ctx = atomic_open(self.path, "wb")
        self._f: Any = None
        self._next = 0
        self.bytes = 0
        self._job: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def header(self) -> bytes:
        """The header, key-value pairs and tensor table, padded to the alignment."""
        head = bytearray(_MAGIC + struct.pack("<IQQ", 3, len(self.tensors), len(self.fields)))
        keys = set()
        for f in self.fields:
            if f.key in keys:
                raise ValueError(f"key {f.key} appears twice")
            keys.add(f.key)
            k = f.key.encode("utf-8")
            head += struct.pack("<Q", len(k)) + k + f.raw
        offset = 0
        for t in self.tensors:
            k = t.name.encode("utf-8")
            head += struct.pack("<Q", len(k)) + k
            head += struct.pack(f"<I{len(t.shape)}Q", len(t.shape), *reversed(t.shape))
            head += struct.pack("<IQ", _type_id(t.type), offset)
            offset += t.nbytes + (-t.nbytes % self.alignment)
        head += b"\0" * (-len(head) % self.alignment)
        return bytes(head)

    def file_size(self) -> int:
        return len(self.header()) + sum(t.nbytes + (-t.nbytes % self.alignment) for t in self.tensors)

    def __enter__(self) -> GgufWriter:
        head = self.header()
        self._f = self._ctx.__enter__()
        self._f.write(head)
        self.bytes = len(head)
        return self

    def write(self, data: Any) -> None:
        """Writes the next tensor: uint8 blocks for a block type, else the values' bytes (an
        array, bytes or any buffer)."""
        if self._next >= len(self.tensors):
            raise ValueError("every tensor of the GGUF file has been written already")
        t = self.tensors[self._next]
        view = memoryview(data)
        if not view.c_contiguous:
            import numpy as np

            view = memoryview(np.ascontiguousarray(data))
        if view.nbytes != t.nbytes:
            raise ValueError(
                f"tensor {t.name} ({t.type}, shape {t.shape}) needs {t.nbytes} bytes, got {view.nbytes}"
            )
        self._wait()
        pad = -view.nbytes % self.alignment
        if view.nbytes >= _BACKGROUND_BYTES:
            # Written by a thread while the caller quantizes the next tensor (the write and the
            # quantization both run without the GIL); one write at a time, in order.
            self._job = threading.Thread(target=self._put, args=(view, pad), daemon=True)
            self._job.start()
        else:
            self._put(view, pad)
        self.bytes += view.nbytes + pad
        self._next += 1

    def _put(self, view: memoryview, pad: int) -> None:
        try:
            self._f.write(view.cast("B") if view.ndim else view)
            self._f.write(b"\0" * pad)
        except BaseException as e:  # raised in the caller's thread by `_wait`
            self._error = e

    def _wait(self) -> None:
        """Waits for the write in flight; its error, if any, is raised here."""
        if self._job is not None:
            self._job.join()
            self._job = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._wait()
        except BaseException as e:
            if exc_type is None:
                self._ctx.__exit__(type(e), e, e.__traceback__)
                raise
        if exc_type is None and self._next != len(self.tensors):
            err = ValueError(f"GGUF writer closed before tensor {self.tensors[self._next].name} was written")
            self._ctx.__exit__(ValueError, err, None)
            raise err
        self._ctx.__exit__(exc_type, exc, tb)


def is_gguf(path: PathLike) -> bool:
    """Whether ``path`` is a file starting with GGUF's magic bytes."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"
