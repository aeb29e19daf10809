"""What every command prints and how it refuses: the usage error (exit code 2), JSON or text
output, sizes for people, progress bars, warnings."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Optional

from ..core.errors import RequestError, current_tensor, named
from .progress import Progress


class UsageError(RequestError):
    """A command line that cannot be done as asked (exit code 2, as every RequestError)."""


class WarningLog:
    """The command line's warnings (``warnings.showwarning``): one line each on stderr, naming the
    tensor being worked on, where Python's would show a source file and line and calibration's
    would not say which tensor. A message repeated for other tensors is shown once, and again
    after the command with the tensors it also applies to (:meth:`summary`)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def show(self, message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text, tensor = str(message), current_tensor()
        if text in self.seen:
            if tensor is not None:
                self.seen[text].append(tensor)
            return
        self.seen[text] = []
        _stderr_line(f"rxquant: warning: {text if tensor is None else named(tensor, text)}")

    def summary(self) -> None:
        for text, more in self.seen.items():
            if more:
                shown = ", ".join(more[:5]) + (f" and {len(more) - 5} more" if len(more) > 5 else "")
                _stderr_line(f"rxquant: warning: also for {len(more)} more tensor(s) ({shown}): {text}")


def _stderr_line(line: str) -> None:
    """One line on stderr, above any progress bar on the terminal (tqdm's write clears and redraws
    the bars; tqdm is loaded only where a bar was made)."""
    bars = sys.modules.get("tqdm")
    if bars is not None:
        bars.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def progress_bar(args: argparse.Namespace, total: int, desc: str) -> Progress:
    return Progress(total, desc, quiet=args.quiet or args.json)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as JSON with ``--json`` (non-finite floats as null), else ``text``."""
    import json  # imported when asked for: every command's start-up counts

    print(json.dumps(data, indent=2, allow_nan=False, default=_json_default) if args.json else text)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def allowed_fallbacks(args: argparse.Namespace) -> set[str]:
    """The substitutes ``--fallback`` allows (``channel``, ``nearest``)."""
    return set(getattr(args, "fallback", "none").split(",")) - {"none"}


def finite(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def sqnr_report(
    rows: list[dict[str, Any]], sx: float, se: float, what: str, column: Optional[str] = None
) -> tuple[dict[str, Any], str]:
    """What ``verify`` prints: one line per tensor (``tensor``, the optional ``column``,
    ``sqnr_db``, ``cosine``) and the energy-weighted total SQNR ``10 log10(sum x² / sum e²)``
    from the sums ``sx`` and ``se``; returns the JSON data and the text."""
    total = 10 * math.log10(sx / se) if se > 0 else math.inf
    w = 44 if column else 52
    extra = (lambda v: f" {v:>6}") if column else (lambda v: "")
    lines = [f"{'tensor':<{w}}{extra(column)} {'SQNR dB':>8} {'cosine':>10}"]
    for r in rows:
        sq = f"{r['sqnr_db']:8.2f}" if r["sqnr_db"] is not None else f"{'exact':>8}"
        lines.append(f"{r['tensor'][:w]:<{w}}{extra(r[column] if column else '')} {sq} {r['cosine']:10.6f}")
    lines.append(f"total (energy-weighted) SQNR {total:.2f} dB over {len(rows)} {what}")
    return {"tensors": rows, "total_sqnr_db": finite(total)}, "\n".join(lines)


def wrote(path: object, written: int, source: int) -> str:
    """``wrote PATH: SIZE (from SIZE, N.NNx smaller)``: "larger" where the output grew (an F16
    GGUF of an F16 model, with its header)."""
    ratio = (
        f"{source / max(written, 1):.2f}x smaller"
        if written <= source
        else f"{written / max(source, 1):.2f}x larger"
    )
    return f"wrote {path}: {human_size(written)} (from {human_size(source)}, {ratio})"


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)
