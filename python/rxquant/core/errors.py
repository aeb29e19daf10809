"""Refusals that say where and whose: a kernel's error names a flat index, the caller knows the
tensor; a request that cannot be done as asked is a :class:`RequestError`, not bad data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional

#: The tensor a `naming` block is working on (per thread), for messages raised without its name.
_TENSOR: ContextVar[Optional[str]] = ContextVar("rxquant_tensor", default=None)


class RequestError(ValueError):
    """The request cannot be done as asked: an option that does not apply, statistics that are
    missing, a budget no choice meets. The caller's to change, where a plain ValueError is the
    data's (a corrupt file, a NaN). The command line exits 2 on it, 1 on other errors."""


def named(tensor: str, message: str) -> str:
    """``message`` prefixed with ``tensor 'name':`` unless it names the tensor already (as a whole
    word: a tensor called "a" is not named by the "a" in "has")."""
    if re.search(rf"(?<![\w.]){re.escape(tensor)}(?![\w.])", message):
        return message
    return f"tensor {tensor!r}: {message}"


@contextmanager
def naming(tensor: str) -> Iterator[None]:
    """Prefixes a ValueError or TypeError raised inside with ``tensor 'name':`` (unless the message
    names it already), so that "input has 1 non-finite value(s)" from a checkpoint of hundreds of
    tensors says which one. Inside, :func:`current_tensor` is ``tensor`` (for warnings, which the
    calibration or device code raising them emits without knowing the tensor)."""
    token = _TENSOR.set(tensor)
    try:
        yield
    except (ValueError, TypeError) as e:
        text = named(tensor, str(e))
        if text == str(e):
            raise
        # The same kind, so that a refused request stays one (the command line exits 2 on it).
        kind = next(k for k in (RequestError, ValueError, TypeError) if isinstance(e, k))
        raise kind(text) from e
    finally:
        _TENSOR.reset(token)


def current_tensor() -> Optional[str]:
    """The tensor of the innermost :func:`naming` block in this thread, or None."""
    return _TENSOR.get()
