"""Atomic file writing: a temp file in the same folder, fsync, then rename. A failure or Ctrl-C
leaves the old file (or nothing) in place, never a partial one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Opens a temp file beside ``path``; renames it over ``path`` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".rxquant-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: PathLike, data: Any) -> None:
    """Writes JSON atomically. Floats keep full precision; NaN/Inf are refused."""
    text = json.dumps(data, indent=2, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text)
        f.write("\n")
