"""Input checks shared by every entry point: dtype, contiguity (copy only when needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))


def as_float_array(x: Any, name: str = "x") -> np.ndarray:
    """Returns `x` as a C-contiguous float16/32/64 array in the machine's byte order (a copy only
    when it is not one already: non-contiguous, or big-endian data read from a file); other dtypes
    raise a TypeError naming them."""
    a = np.asarray(x)
    native = a.dtype.newbyteorder("=")
    if native not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32, float16 or float64 array, got dtype {a.dtype}")
    return np.asarray(a, dtype=native, order="C")


def as_code_array(q: Any, name: str = "q") -> np.ndarray:
    """Returns quantized codes as a C-contiguous int8/uint8 array; other dtypes raise a TypeError."""
    if isinstance(q, tuple) and len(q) == 2 and isinstance(q[0], np.ndarray):
        # numpy's own error for the pair was "setting an array element with a sequence".
        raise TypeError(
            f"{name} is a pair of an array and a {type(q[1]).__name__}, as quantize returns: pass the "
            "codes alone (codes, qparams = quantize(...))"
        )
    a = np.asarray(q)
    if a.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise TypeError(f"{name} must be an int8 or uint8 array, got dtype {a.dtype}")
    return np.asarray(a, order="C")


def check_out(out: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` if it can take a float32 result of ``shape`` in place, else a clear error."""
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(np.float32):
        what = f"dtype {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"out must be a float32 numpy array in the machine's byte order, got {what}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}; the result has shape {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def sum_squares(x: np.ndarray) -> float:
    """``sum(x**2)`` in float64, over blocks of 1M values (no float64 copy of a large array)."""
    flat = np.asarray(x).reshape(-1)
    total = 0.0
    for i in range(0, flat.size, 1 << 20):
        b = flat[i : i + (1 << 20)].astype(np.float64)
        total += float(np.dot(b, b))
    return total
