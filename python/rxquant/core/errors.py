"""Refusals that say where: a kernel's error names a flat index, the caller knows the tensor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


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
        kind = ValueError if isinstance(e, ValueError) else TypeError
        raise kind(f"tensor {tensor!r}: {e}") from e
