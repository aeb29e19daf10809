"""Atomic file writing: a temp file in the same folder, fsync, then rename. A failure or Ctrl-C
leaves the old file (or nothing) in place, never a partial one. The file gets the permissions any
new file gets (0666 less the umask), not the temp file's 0600."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import IO, Any, Union

from .errors import RequestError

PathLike = Union[str, "os.PathLike[str]"]


def refuse_overwriting(dst: PathLike, *sources: Any) -> None:
    """A RequestError when ``dst`` exists and is one of the files ``sources`` (the same file by any
    name or link): writing it would replace the file being read, and the original would be lost.
    Sources that are not paths (None, an object already in memory) are skipped."""
    if not os.path.exists(dst):
        return
    for src in sources:
        if isinstance(src, (str, os.PathLike)) and os.path.isfile(src) and os.path.samefile(dst, src):
            same = "" if os.path.abspath(dst) == os.path.abspath(src) else f" ({os.fspath(src)})"
            raise RequestError(
                f"output {os.fspath(dst)} is an input file{same}: writing it would replace the file "
                "being read; give the output another name"
            )


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Opens a temp file beside ``path``; renames it over ``path`` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    with out_of_room(path):
        try:
            fd, tmp = _create_temp(folder)
        except OSError as e:
            raise cannot_create(path, folder, e) from None
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def cannot_create(path: PathLike, folder: PathLike, e: OSError) -> OSError:
    """The error for a temporary file or folder beside ``path`` that could not be made: the
    system's names the temporary, which the user never asked for."""
    return type(e)(
        f"cannot write {os.fspath(path)}: cannot create a file in {os.fspath(folder)} ({e.strerror or e})"
    )


#: Errors of a write that ran out of room (disk, quota, file size limit).
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def out_of_room(path: PathLike) -> Iterator[None]:
    """Names ``path`` in a write that ran out of room: "[Errno 28] No space left on device" alone
    does not say which file did not fit. The caller has removed what it wrote."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            msg = f"cannot write {os.fspath(path)}: {e.strerror}; nothing was written"
            raise type(e)(e.errno, msg) from None
        raise


def _create_temp(folder: str) -> tuple[int, str]:
    """A new file ``.rxquant-XXXXXXXXXXXX.tmp`` in ``folder``, opened for writing, mode 0600 (as
    ``tempfile.mkstemp`` makes it, whose import costs the command line 3.5 ms at start-up)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".rxquant-{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {folder}")


def write_json(path: PathLike, data: Any) -> None:
    """Writes JSON atomically. Floats keep full precision; NaN/Inf are refused."""
    import json  # on use: the GGUF command line starts without it

    text = json.dumps(data, indent=2, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text)
        f.write("\n")


def current_umask() -> int:
    """The process's umask (Linux reports it in /proc; elsewhere it is read by setting it back)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
