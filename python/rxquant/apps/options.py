"""Refusals the format commands (GGUF, ONNX) share: options that belong to another output, and
devices they do not run on."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, Callable


def refuse_given(usage: Callable[[str], Exception], options: Iterable[tuple[str, Any]], why: str) -> None:
    """Raises ``usage`` naming every option in ``options`` whose value is not None, then ``why``,
    whose ``{apply}`` and ``{do_not}`` agree with their number ("applies" or "apply", "does not"
    or "do not")."""
    given = [name for name, value in options if value is not None]
    if given:
        one = len(given) == 1
        words = {"apply": "applies" if one else "apply", "do_not": "does not" if one else "do not"}
        raise usage(f"{', '.join(given)} {why.format(**words)}")


def refuse_device(args: argparse.Namespace, usage: Callable[[str], Exception], what: str) -> None:
    """``what`` runs on the CPU: any --device but auto and cpu is refused, naming it."""
    if args.device not in ("auto", "cpu"):
        raise usage(f"{what} runs on the CPU; --device {args.device} does not apply")
