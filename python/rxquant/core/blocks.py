"""llama.cpp's block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q6_K, IQ4_NL, IQ4_XS):
tensors to ggml blocks and back, bit-compatible with ggml. The codecs run in the Rust core
(``rust/src/ggml.rs``); this is their numpy front.

Rows run along the last axis (the input axis of a weight ``(out, in)``, as GGUF stores it), and
a row holds whole blocks (32 values; 256 for the K types and IQ4_XS).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from . import native
from .block_types import BLOCK_TYPES, ROUNDINGS, BlockType, block_type
from .scheme import as_flag, as_real, as_shape

if TYPE_CHECKING:
    import numpy as np

# numpy is imported in the functions: the GGUF file path imports this module's names but
# requantizes files without numpy (see rxquant.formats.gguf_file).

__all__ = ["BLOCK_TYPES", "ROUNDINGS", "BlockType", "block_type", "dequantize_tensor", "quantize_tensor"]


def quantize_tensor(
    w: Any,
    type: str,
    *,
    rounding: str = "nearest",
    importance: Optional[Any] = None,
    hessian: Optional[Any] = None,
    damp: float = 0.01,
    act_order: bool = False,
) -> np.ndarray:
    """``w`` (float16/32/64; rows along the last axis) as ggml blocks of ``type``: uint8 of shape
    ``(*w.shape[:-1], bytes a row)``, the bytes a GGUF file stores for it in the layout
    ``gguf.quants.quantize`` returns and ``gguf.GGUFWriter.add_tensor`` takes.

    ``rounding``: ``nearest`` is ggml's own quantizer (bit for bit ``quantize_row_*_ref``; for the IQ4
    types, the searching ``quantize_iq4_*`` that llama-quantize runs);
    ``mse`` searches each block's scale (and min) for the least squared error; ``importance``
    weights that search by ``importance`` (``E[x²]`` per input, one value per column);
    ``gptq`` needs ``hessian`` (``2 XᵀX / N``, ``(in, in)``) and compensates each column's error
    on the later ones, each block's parameters chosen by the importance-weighted search (by
    ``importance`` if given, else ``diag H``) on the weights as updated; ``damp`` and
    ``act_order`` are GPTQ's. NaN/Inf weights are refused.
    """
    import numpy as np

    from .arrays import as_float_array

    t = block_type(type)
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    a = as_float_array(w, "w")
    if a.ndim == 0 or not t.fits(a.shape):
        raise ValueError(
            f"{t.name} stores rows of whole blocks of {t.block_size} values; a tensor of shape {a.shape} "
            f"has rows of {a.shape[-1] if a.ndim else 0}"
        )
    cols = a.shape[-1]
    imp = None
    if importance is not None:
        imp = np.ascontiguousarray(np.asarray(importance, dtype=np.float32).reshape(-1))
        if imp.shape != (cols,):
            raise ValueError(f"importance has {imp.size} values; rows of shape {a.shape} have {cols}")
    if rounding == "importance" and imp is None:
        raise ValueError("rounding='importance' needs importance (E[x^2] per input)")
    rows = (*a.shape[:-1], t.nbytes((cols,)))
    if rounding != "gptq":
        if hessian is not None:
            raise ValueError(f"hessian is used by rounding='gptq' only, not {rounding!r}")
        return native.ggml_quantize(a, t.name, cols, rounding, imp).reshape(rows)
    if hessian is None:
        raise ValueError("rounding='gptq' needs hessian (2 X^T X / N of the layer's inputs)")
    h = np.ascontiguousarray(np.asarray(hessian, dtype=np.float64))
    if h.shape != (cols, cols):
        raise ValueError(f"the Hessian has shape {h.shape}; rows of {cols} inputs need ({cols}, {cols})")
    w2 = np.ascontiguousarray(a.reshape(-1, cols), dtype=np.float32)
    damp, act_order = as_real("damp", damp), as_flag("act_order", act_order)
    q, _dead, _damping = native.ggml_gptq(w2, t.name, h, "importance", imp, damp, 128, act_order)
    return q.reshape(rows)


def dequantize_tensor(
    data: Any, type: str, shape: tuple[int, ...], *, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """The float32 tensor of ``shape`` that ggml blocks ``data`` (uint8) of ``type`` decode to.

    ``out``: a C-contiguous float32 array of ``shape`` to write the values into (and return), so
    that a loop over a file's tensors can reuse one buffer instead of paying for a new array's
    pages on every call (those page faults take longer than the decoding).
    """
    import numpy as np

    t = block_type(type)
    raw = np.ascontiguousarray(np.asarray(data).reshape(-1))
    if raw.dtype != np.uint8:
        raise TypeError(f"block data must be uint8, got dtype {raw.dtype}")
    shape = as_shape(shape)
    if not t.fits(shape) or raw.size != t.nbytes(shape):
        raise ValueError(
            f"{raw.size} bytes of {t.name} do not hold a tensor of shape {shape} "
            f"({t.nbytes(shape) if t.fits(shape) else 'rows not whole blocks of ' + str(t.block_size)})"
        )
    if out is None:
        return native.ggml_dequantize(raw, t.name, math.prod(shape)).reshape(shape)
    from .arrays import check_out

    out = check_out(out, shape)
    native.ggml_dequantize(raw, t.name, math.prod(shape), out.reshape(-1))
    return out
