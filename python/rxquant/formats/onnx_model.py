"""ONNX models, read and written with the ``onnx`` package (external data for models over 2 GB),
and the initializers of ONNX Runtime's weight-only quantized operators laid out as ONNX Runtime
defines them:

- ``com.microsoft::MatMulNBits``: B ``[N, k_blocks, blob]`` uint8, each column's codes along K,
  ``bits`` per value, low bits first; scales ``[N * k_blocks]``; zero points ``[N, ceil(k_blocks *
  bits / 8)]`` packed the same way (absent: ``2^(bits-1)``);
- ``DequantizeLinear`` (opset 21, blocked along axis 0): INT4/UINT4 or INT8/UINT8 ``[K, N]``,
  scale and zero point ``[K / block, N]``;
- ``com.microsoft::GatherBlockQuantized``: uint8 rows packed like MatMulNBits' columns (rxquant's),
  or INT4/UINT4 tensors (ONNX Runtime's quantizer); scales and zero points blocked along
  ``quantize_axis``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

from ..core import native
from ..core.atomic import PathLike, cannot_create, current_umask, out_of_room

TWO_GB = 2**31


def onnx_package() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover
        raise ImportError("ONNX models need the onnx package: pip install onnx") from None
    return onnx


def load_model(path: PathLike) -> Any:
    """The model at ``path`` with its external data; not an ONNX model: a ValueError naming it."""
    onnx = onnx_package()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model {p} does not exist")
    try:
        model = _parse_mapped(onnx, p)
    except Exception:  # an empty file, a text format, a corrupt one: onnx.load's own handling
        try:
            model = onnx.load(str(p))
        except Exception as e:  # the protobuf decoder raises its own DecodeError
            raise ValueError(f"{p} is not an ONNX model the onnx package reads: {e}") from None
    if not model.graph.node and not model.graph.initializer:
        raise ValueError(f"{p} is not an ONNX model: it has no graph")
    return model


def _parse_mapped(onnx: Any, p: Path) -> Any:
    """What ``onnx.load`` returns for a binary model, parsed from a memory map of the file
    instead of a copy of it in memory (which cost as much as the parse: 93 -> 50 ms for MiniLM's
    90 MB); the decoder copies what it keeps, so the map is closed after it."""
    import mmap

    model = onnx.ModelProto()
    with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        model.ParseFromString(memoryview(m))
    onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))  # as onnx.load
    return model


def save_model(model: Any, path: PathLike) -> int:
    """Writes ``model`` atomically (a temp folder beside ``path``, then renames), its tensors as
    external data (``<name>.data`` beside it) when the model is over 2 GB. Returns the bytes."""
    onnx = onnx_package()
    path = Path(path)
    folder = path.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    big = _byte_size(model) >= TWO_GB
    with out_of_room(path), _temp_dir(folder, path) as tmp:
        out = tmp / path.name
        if big:
            onnx.save_model(
                model,
                str(out),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
            )
        elif any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            onnx.save_model(model, str(out))  # writes the external tensors it still refers to
        else:
            # The bytes onnx.save_model writes, without its walk of every node's attributes for
            # external data (load_model brings external data into memory).
            out.write_bytes(model.SerializeToString())
        files = sorted(tmp.iterdir(), key=lambda f: f == out)  # the data first, the model last
        mode = 0o666 & ~current_umask()
        total = 0
        for f in files:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, mode)
            total += f.stat().st_size
            os.replace(f, folder / f.name)
    return total


def _byte_size(model: Any) -> int:
    """The serialized size, or at least that of the tensors' bytes; sized by protobuf only near
    the limit (sizing walks the whole message)."""
    tensors = sum(8 * math.prod(t.dims) for t in model.graph.initializer)  # 8 bytes a value at most
    if tensors < TWO_GB // 2:
        return tensors
    try:
        return int(model.ByteSize())
    except Exception:  # protobuf refuses to size messages over 2 GB
        return TWO_GB


@contextlib.contextmanager
def _temp_dir(folder: Path, path: Path) -> Iterator[Path]:
    """A new folder in ``folder`` for writing ``path``, removed with what is left in it."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".rxquant-", dir=folder))
    except OSError as e:
        raise cannot_create(path, folder, e) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def to_array(tensor: Any) -> np.ndarray:
    return np.asarray(onnx_package().numpy_helper.to_array(tensor))


def consumers(graph: Any) -> dict[str, list[tuple[Any, int]]]:
    """For each value name: the nodes (and input positions) that read it, subgraphs included."""
    out: dict[str, list[tuple[Any, int]]] = {}

    def walk(g: Any) -> None:
        for node in g.node:
            for i, name in enumerate(node.input):
                out.setdefault(name, []).append((node, i))
            for a in node.attribute:
                for sub in [a.g] if a.HasField("g") else list(a.graphs):
                    walk(sub)

    walk(graph)
    return out


# ------------------------------------------------------------------ layouts


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes ``[rows, n]`` packed along the last axis, low bits first (4 bits: two a
    byte; 8 bits: as they are). ``n`` is padded to whole bytes with zeros."""
    c = np.ascontiguousarray(codes, dtype=np.uint8)
    if bits == 8:
        return c
    if bits != 4:
        raise ValueError(f"packing {bits}-bit codes is not supported (4 or 8)")
    if c.ndim and c.shape[-1] % 2 == 0:  # rows of whole bytes: the native packer (checks 0..15)
        return native.pack_int4(c).reshape(*c.shape[:-1], c.shape[-1] // 2)
    if c.shape[-1] % 2:
        c = np.concatenate([c, np.zeros((*c.shape[:-1], 1), np.uint8)], axis=-1)
    return (c[..., 0::2] & 0x0F) | ((c[..., 1::2] & 0x0F) << 4)


def matmulnbits_tensors(
    codes: np.ndarray, scale: np.ndarray, zero_point: Optional[np.ndarray], bits: int, block: int
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """MatMulNBits' ``B``, ``scales`` and ``zero_points`` from unsigned codes ``[N, K]`` (the
    weight as ``out x in``), scales and zero points ``[N, K / block]``. Integer zero points are
    packed like the codes; float ones (the scales' type) are stored as they are, one per block."""
    n, k = codes.shape
    nb = k // block
    b = pack_bits(codes, bits).reshape(n, nb, block * bits // 8)
    zp = zero_point
    if zp is not None:
        zp = zp.reshape(-1) if zp.dtype.kind == "f" else pack_bits(zp.astype(np.uint8), bits).reshape(n, -1)
    return b, np.ascontiguousarray(scale.reshape(-1)), zp


def int4_tensor(name: str, values: np.ndarray, signed: bool) -> Any:
    """An ONNX INT4/UINT4 tensor of ``values`` (its shape kept), packed as ONNX stores 4-bit data."""
    onnx = onnx_package()
    flat = np.asarray(values).reshape(1, -1).astype(np.int16) & 0x0F
    raw = pack_bits(flat.astype(np.uint8), 4).tobytes()
    dt = onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4
    return onnx.helper.make_tensor(name, dt, list(values.shape), raw, raw=True)


def unpack_bits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``n`` codes per row."""
    p = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits == 8:
        return p[..., :n]
    out = np.empty((*p.shape[:-1], 2 * p.shape[-1]), np.uint8)
    out[..., 0::2], out[..., 1::2] = p & 0x0F, p >> 4
    return out[..., :n]


def decode_matmulnbits(node: Any, inits: dict[str, Any]) -> np.ndarray:
    """The float ``[K, N]`` weight a MatMulNBits node computes with, decoded from its
    initializers as ONNX Runtime defines them: ``(code - zero_point) * scale``."""
    attrs = {a.name: onnx_package().helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    nb = -(-k // block)
    codes = unpack_bits(to_array(inits[node.input[1]]).reshape(n, -1), bits, nb * block).reshape(n, nb, block)
    scale = to_array(inits[node.input[2]]).astype(np.float32).reshape(n, nb)
    if len(node.input) > 3 and node.input[3]:
        z = to_array(inits[node.input[3]])
        zp = (
            z.astype(np.float32).reshape(n, nb)
            if z.dtype.kind == "f"
            else unpack_bits(z.reshape(n, -1), bits, nb)
        )
    else:
        zp = np.full((n, nb), 1 << (bits - 1), np.float32)
    w = (codes.astype(np.float32) - zp.astype(np.float32)[..., None]) * scale[..., None]
    return np.ascontiguousarray(w.reshape(n, nb * block)[:, :k].T)


def decode_dequantizelinear(node: Any, inits: dict[str, Any]) -> np.ndarray:
    """The float weight a ``DequantizeLinear`` yields: ``(code - zero_point) * scale``, with
    parameters per block along axis 0 (opset 21's ``block_size``), per index of ``axis`` (1-D
    scales) or for the whole tensor (a scalar)."""
    onnx = onnx_package()
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    block, axis = attrs.get("block_size", 0), attrs.get("axis", 1)
    x = to_array(inits[node.input[0]]).astype(np.float32)
    scale = to_array(inits[node.input[1]]).astype(np.float32)
    zp = (
        to_array(inits[node.input[2]]).astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else 0 * scale
    )
    if block > 0:
        if axis != 0:
            raise ValueError(f"DequantizeLinear {node.name!r}: rxquant decodes blocks along axis 0 only")
        rows = x.shape[0]
        return np.ascontiguousarray(
            (x - np.repeat(zp, block, axis=0)[:rows]) * np.repeat(scale, block, axis=0)[:rows]
        )
    if scale.ndim == 1 and x.ndim:
        if not -x.ndim <= axis < x.ndim or scale.shape[0] != x.shape[axis] or zp.shape != scale.shape:
            raise ValueError(
                f"DequantizeLinear {node.name!r}: data {x.shape} along axis {axis} needs 1-D scales "
                f"and zero points of {x.shape[axis] if -x.ndim <= axis < x.ndim else '?'}, got "
                f"{scale.shape} and {zp.shape}"
            )
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    elif scale.ndim != 0:
        raise ValueError(f"DequantizeLinear {node.name!r}: scales {scale.shape} are neither 1-D nor a scalar")
    return np.ascontiguousarray((x - zp) * scale)


def decode_gatherblockquantized(node: Any, inits: dict[str, Any]) -> np.ndarray:
    """The float table a GatherBlockQuantized node gathers from, as ONNX Runtime defines it:
    ``(code - zero_point) * scale``, each scale and zero point over ``block_size`` values along
    ``quantize_axis``. uint8 data holds ``bits`` 4 two codes a byte along the last axis, low
    nibble first (zero points the same way; default ``2^(bits-1)``); INT4/UINT4 data holds the
    codes as they are (default zero point 0)."""
    onnx = onnx_package()
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    bits, block, axis = attrs.get("bits", 4), attrs.get("block_size", 128), attrs.get("quantize_axis", 1)
    t = inits[node.input[0]]
    packed = t.data_type == onnx.TensorProto.UINT8
    if bits not in (4, 8) or (not packed and bits != 4):
        raise ValueError(f"GatherBlockQuantized {node.name!r}: {bits}-bit codes are not decoded (4 or 8)")
    data = to_array(t)
    codes = unpack_bits(data, bits, 2 * data.shape[-1]) if packed and bits == 4 else data
    if not -codes.ndim <= axis < codes.ndim or block <= 0:
        raise ValueError(
            f"GatherBlockQuantized {node.name!r}: quantize_axis {axis} or block_size {block} is invalid"
        )
    axis %= codes.ndim
    scale = to_array(inits[node.input[2]]).astype(np.float32)
    if len(node.input) > 3 and node.input[3]:
        z = to_array(inits[node.input[3]])
        if packed and bits == 4:
            z = unpack_bits(z, 4, scale.shape[-1])
        zp = z.astype(np.float32)
    else:
        zp = np.full(scale.shape, (1 << (bits - 1)) if packed else 0, np.float32)
    n = codes.shape[axis]
    blocked = (*codes.shape[:axis], -(-n // block), *codes.shape[axis + 1 :])
    if scale.shape != blocked or zp.shape != blocked:
        raise ValueError(
            f"GatherBlockQuantized {node.name!r}: data {codes.shape} in blocks of {block} along axis "
            f"{axis} needs scales and zero points {blocked}, got {scale.shape} and {zp.shape}"
        )

    def spread(p: np.ndarray) -> np.ndarray:
        return np.take(np.repeat(p, block, axis=axis), np.arange(n), axis=axis)

    return np.ascontiguousarray((codes.astype(np.float32) - spread(zp)) * spread(scale))


#: The codes' initializer is the weight's name and a suffix: rxquant writes ``<name>_Q``, ONNX
#: Runtime's quantizer ``<name>_Q4`` (MatMulNBits) or ``<name>_DQ_Q4`` (QDQ).
_CODES = re.compile(r"(.*?)(?:_DQ)?_Q\d*")


class Decoded(NamedTuple):
    """A quantized weight decoded to float: the operator that holds it, and the values in the
    float model's layout for that use (``[K, N]`` for a matrix product, the table for a gather)."""

    op: str
    weight: np.ndarray


#: The inputs of ONNX Runtime's weight-only quantized operators that hold a weight, by position.
QUANTIZED_INPUTS = {
    "MatMulNBits": {1: "codes", 2: "scales", 3: "zero points"},
    "DequantizeLinear": {0: "codes", 1: "scales", 2: "zero points"},
    "GatherBlockQuantized": {0: "codes", 2: "scales", 3: "zero points"},
}

#: Where each operator takes its codes.
_CODES_AT = {op: i for op, roles in QUANTIZED_INPUTS.items() for i, role in roles.items() if role == "codes"}

_DECODERS = {
    "MatMulNBits": decode_matmulnbits,
    "DequantizeLinear": decode_dequantizelinear,
    "GatherBlockQuantized": decode_gatherblockquantized,
}


def decoded_weights(model: Any) -> dict[str, Decoded]:
    """The float weights a quantized model's MatMulNBits, blockwise DequantizeLinear and
    GatherBlockQuantized nodes compute with, keyed by the initializer they were made from (see
    ``_CODES``)."""
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, Decoded] = {}
    for node in model.graph.node:
        if node.op_type not in _DECODERS:
            continue
        codes = node.input[_CODES_AT[node.op_type]]
        m = _CODES.fullmatch(codes)
        if m is None or codes not in inits:
            continue
        out[m.group(1)] = Decoded(node.op_type, _DECODERS[node.op_type](node, inits))
    return out
