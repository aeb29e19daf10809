"""Accuracy of every scheme and calibration method on all-MiniLM-L6-v2 (with gguf as peer) and on
synthetic distributions; writes docs/accuracy.md. Same as `make accuracy`.

Run: python benches/accuracy.py
"""

from rxquant.accuracy import run

if __name__ == "__main__":
    run()
