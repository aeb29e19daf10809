"""Schemes: what to quantize to (precision, symmetry, per tensor / channel / group). Their
results, the quantization parameters, are :mod:`rxquant.core.qparams`."""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Optional, Union

PRECISIONS = ("int8", "int4", "fp16", "fp32")


def as_int(name: str, v: Any) -> int:
    """``v`` as a Python int (numpy integers too); floats and bools are refused, not truncated."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {v!r}") from None


def as_shape(v: Any) -> tuple[int, ...]:
    """``v`` (an int, or a sequence of them, numpy's too) as a shape; floats, bools and negative
    dimensions are refused, not truncated."""
    try:
        dims = list(v)
    except TypeError:
        dims = [v]
    shape = tuple(as_int(f"every dimension of shape {v!r}", d) for d in dims)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must not have negative dimensions, got {shape}")
    return shape


def is_bool(v: Any) -> bool:
    """True for Python's and numpy's booleans (checked by name: this module imports no numpy)."""
    return isinstance(v, bool) or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_"))


def as_flag(name: str, v: Any) -> bool:
    """``v`` as a bool: True/False (numpy's too), not any truthy object (``"no"`` is truthy)."""
    if not is_bool(v):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def as_real(name: str, v: Any) -> float:
    """``v`` as a float: ints and floats (numpy's too); strings and bools are refused."""
    if is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {v!r}")
    return float(v)


def as_group_size(v: Any) -> int:
    """``v`` as a group size: a positive integer (:func:`as_int`), else a TypeError/ValueError."""
    g = as_int("group_size", v)
    if g <= 0:
        raise ValueError(f"group_size must be a positive integer, got {g}")
    return g


@dataclass(frozen=True)
class Scheme:
    """How to quantize a tensor.

    - ``precision``: ``"int8"``, ``"int4"``, ``"fp16"`` or ``"fp32"``.
    - ``symmetric``: signed grid with zero point 0 (INT8 ``-127..127``, INT4 ``-7..7``; with
      ``full_range`` ``-128..127`` / ``-8..7``). Asymmetric: unsigned grid with a zero point
      (INT8 ``0..255``, INT4 ``0..15``).
    - ``signed_scale`` (symmetric; implies ``full_range``): llama.cpp's Q4_0 rule. The scale is the
      signed value of largest magnitude divided by ``qmin``, so that value is the code ``qmin``
      exactly and all ``2^bits`` codes are used; the scale is negative when that value is positive.
    - ``axis=None``: per tensor. ``axis=k``: per channel along axis ``k`` (negative allowed).
      ``axis=k, group_size=G``: per group of ``G`` consecutive elements along ``k``. Groups along
      the last axis of a tensor with 3+ dimensions (a conv weight ``(out, in, kh, kw)``) run over
      its flattened input dimension ``in*kh*kw``, as runtimes store conv weights.
    """

    precision: str = "int8"
    symmetric: bool = True
    axis: Optional[int] = None
    group_size: Optional[int] = None
    full_range: bool = False
    signed_scale: bool = False

    def __post_init__(self) -> None:
        p = str(self.precision).lower()
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "precision", p)
        if self.axis is not None:
            object.__setattr__(self, "axis", as_int("axis", self.axis))
        if self.group_size is not None:
            object.__setattr__(self, "group_size", as_group_size(self.group_size))
            if self.axis is None:
                object.__setattr__(self, "axis", -1)
        for flag in ("symmetric", "full_range", "signed_scale"):
            object.__setattr__(self, flag, as_flag(flag, getattr(self, flag)))
        if self.signed_scale:
            if not self.symmetric or p not in ("int8", "int4"):
                raise ValueError("signed_scale needs a symmetric int8 or int4 scheme")
            object.__setattr__(self, "full_range", True)

    @classmethod
    def coerce(cls, scheme: Union[Scheme, str, None]) -> Scheme:
        """Accepts a Scheme, a precision name, or None (INT8 symmetric per tensor)."""
        if scheme is None:
            return cls()
        if isinstance(scheme, Scheme):
            return scheme
        if isinstance(scheme, str):
            return cls(precision=scheme)
        raise TypeError(f"scheme must be a Scheme or a precision name, got {type(scheme).__name__}")

    @property
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.axis is None:
            return "tensor"
        return "channel" if self.group_size is None else "group"

    @property
    def is_integer(self) -> bool:
        return self.precision in ("int8", "int4")

    @property
    def bits(self) -> int:
        return {"int8": 8, "int4": 4, "fp16": 16, "fp32": 32}[self.precision]

    @property
    def qrange(self) -> tuple[int, int]:
        """The integer grid ``(qmin, qmax)``; ``(0, 0)`` for float precisions."""
        if not self.is_integer:
            return (0, 0)
        half = 1 << (self.bits - 1)
        if not self.symmetric:
            return (0, 2 * half - 1)
        return (-half, half - 1) if self.full_range else (-(half - 1), half - 1)

    @property
    def scale_dtype(self) -> str:
        """How scales are stored: float16 for INT4 (4.625 bits a weight at group 32 with 4-bit
        zero points), float32 for INT8."""
        return "float16" if self.precision == "int4" else "float32"

    def fits(self, shape: tuple[int, ...]) -> Optional[str]:
        """Why this scheme cannot quantize a tensor of ``shape``, or None when it can."""
        if not self.is_integer or self.axis is None:
            return None
        nd = len(shape)
        if not -nd <= self.axis < max(nd, 1) or nd == 0:
            return f"axis {self.axis} is out of range for shape {tuple(shape)}"
        if self.group_size is None:
            return None
        a = self.axis % nd
        if nd >= 3 and a == nd - 1:
            flat = math.prod(shape[1:])
            if flat % self.group_size:
                dims = "*".join(map(str, shape[1:]))
                return (
                    f"group size {self.group_size} does not divide the flattened input dimension "
                    f"{dims} = {flat} of shape {tuple(shape)}"
                )
        elif shape[a] % self.group_size:
            return (
                f"group size {self.group_size} does not divide dimension {a} of size {shape[a]} "
                f"(shape {tuple(shape)})"
            )
        return None

    def grid(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the parameter grid for a tensor of ``shape``: ``()`` per tensor, ``(C,)`` per
        channel, per group the shape with the grouped axis divided by the group size (a 3+-dim
        tensor grouped along its last axis: ``(out, in*kh*kw / G)``). Raises a ValueError saying
        why when the scheme does not fit the shape."""
        why = self.fits(shape)
        if why:
            raise ValueError(why)
        if not self.is_integer:
            return ()
        if self.axis is None:
            return ()
        a = self.axis % len(shape)
        if self.group_size is None:
            return (shape[a],)
        if len(shape) >= 3 and a == len(shape) - 1:
            return (shape[0], math.prod(shape[1:]) // self.group_size)
        g = list(shape)
        g[a] //= self.group_size
        return tuple(g)

    def n_params(self, shape: tuple[int, ...]) -> int:
        """Number of scale/zero-point pairs for a tensor of ``shape``."""
        return math.prod(self.grid(tuple(shape))) if self.is_integer else 0

    def stored_bytes(self, shape: tuple[int, ...]) -> int:
        """Exact bytes of the stored form: codes (INT4 packed two to a byte), scales in
        ``scale_dtype`` and, for asymmetric grids, zero points (INT4: two to a byte)."""
        n = math.prod(shape)
        data = (n * self.bits + 7) // 8
        if not self.is_integer:
            return data
        p = self.n_params(tuple(shape))
        scales = p * (2 if self.scale_dtype == "float16" else 4)
        zeros = 0 if self.symmetric else (p + 1) // 2 if self.precision == "int4" else p
        return data + scales + zeros

    def spec(self) -> tuple[str, bool, bool, bool, Optional[int], Optional[int]]:
        """The tuple form the compiled module takes."""
        s = self
        return (s.precision, s.symmetric, s.full_range, s.signed_scale, s.axis, s.group_size)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "precision": self.precision,
            "symmetric": self.symmetric,
            "axis": self.axis,
            "group_size": self.group_size,
            "full_range": self.full_range,
        }
        if self.signed_scale:
            d["signed_scale"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scheme:
        keys = ("precision", "symmetric", "axis", "group_size", "full_range", "signed_scale")
        return cls(**{k: d[k] for k in keys if k in d})

    def describe(self) -> str:
        """Short text: ``int4 group 32 asymmetric``, ``int8 channel``, ``fp16``."""
        if not self.is_integer:
            return self.precision
        g = {"tensor": "tensor", "channel": "channel"}.get(self.granularity, f"group {self.group_size}")
        kind = "asymmetric" if not self.symmetric else "signed scale" if self.signed_scale else "symmetric"
        return f"{self.precision} {g} {kind}"


def check_fits(s: Scheme, shape: tuple[int, ...]) -> None:
    """A ValueError saying why ``s``'s groups cannot split a tensor of ``shape`` (an axis out of
    range is left to the core, which raises IndexError)."""
    nd = len(shape)
    if s.axis is not None and nd and -nd <= s.axis < nd:
        why = s.fits(tuple(shape))
        if why:
            raise ValueError(why)
