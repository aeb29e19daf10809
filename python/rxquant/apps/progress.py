"""Progress for long work: a bar on a terminal; elsewhere (a log, CI, `make demo` piped) nothing,
or with ``lines=True`` one line at every tenth of the work, so that a long stage is not silent."""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO


class Progress:
    """``update(n)`` as work is done, ``close()`` at the end. ``quiet`` shows nothing."""

    def __init__(
        self, total: int, desc: str, quiet: bool = False, lines: bool = False, stream: TextIO = sys.stderr
    ) -> None:
        self.total, self.desc, self.done, self.stream = max(total, 0), desc, 0, stream
        self._bar: Any = None
        self._next = 0.1
        self._quiet = quiet or not lines
        if quiet or total <= 0:
            return
        if stream.isatty():
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(total=total, desc=desc, leave=False, file=stream)
        elif lines:
            print(f"{desc}: 0/{total}", file=stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self._quiet and self.total and self.done / self.total >= self._next - 1e-9:
            while self._next <= self.done / self.total + 1e-9:
                self._next += 0.1
            print(f"{self.desc}: {self.done}/{self.total}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class PerItem:
    """A ``progress(report, total)`` callback for the APIs that report each finished item
    (``rxquant.gguf.quantize_file``, ``rxquant.onnx.quantize_model``): the bar is made on the
    first call, when the total is known, and closed when the ``with`` block ends."""

    def __init__(self, desc: str, quiet: bool = False) -> None:
        self.desc, self.quiet = desc, quiet
        self._bar: Optional[Progress] = None

    def __call__(self, report: Any, total: int) -> None:
        if self._bar is None:
            self._bar = Progress(total, self.desc, quiet=self.quiet)
        self._bar.update(1)

    def __enter__(self) -> PerItem:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
