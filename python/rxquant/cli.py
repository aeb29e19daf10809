"""The `rxquant` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rxquant", description="Quantize tensors and checkpoints.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="quantize built-in example tensors and print SQNR and size per scheme")
    d.set_defaults(func=_demo)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns 0 on success, 1 on failures, 2 on usage errors (argparse)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError, TypeError) as e:
        print(f"rxquant: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
