"""rxquant against numpy, ONNX Runtime, gguf and (when installed) PyTorch, in one run; writes
docs/performance.md and docs/performance.png. Same as `make bench` and `rxquant bench`.

Run: python benches/compare.py [--repeat 7] [--no-docs]
"""

from __future__ import annotations

import argparse

from rxquant.bench import run

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-docs", action="store_true", help="print only")
    a = ap.parse_args()
    run(repeat=a.repeat, write_docs=not a.no_docs)
