"""Refusals that say where and whose: a kernel's error names a flat index, the caller knows the
tensor; a request that cannot be done as asked is a :class:`RequestError`, not bad data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


class RequestError(ValueError):
    """The request cannot be done as asked: an option that does not apply, statistics that are
    missing, a budget no choice meets. The caller's to change, where a plain ValueError is the
    data's (a corrupt file, a NaN). The command line exits 2 on it, 1 on other errors."""


@contextmanager
def naming(tensor: str) -> Iterator[None]:
    """Prefixes a ValueError or TypeError raised inside with ``tensor 'name':`` (unless the message
    names it already), so that "input has 1 non-finite value(s)" from a checkpoint of hundreds of
    tensors says which one."""
    try:
        yield
    except (ValueError, TypeError) as e:
        # The name as a whole word: a tensor called "a" is not named by the "a" in "has".
        if re.search(rf"(?<![\w.]){re.escape(tensor)}(?![\w.])", str(e)):
            raise
        # The same kind, so that a refused request stays one (the command line exits 2 on it).
        kind = next(k for k in (RequestError, ValueError, TypeError) if isinstance(e, k))
        raise kind(f"tensor {tensor!r}: {e}") from e
