"""The command line: the synthetic fallback demo, the fallback path, and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rxquant.apps.demo
import rxquant.models.minilm
from rxquant.apps.cli import main
from rxquant.apps.demo import run_tensor_demo


def test_tensor_demo_rows_are_measured():
    lines: list[str] = []
    rows = run_tensor_demo(lines.append)
    assert len(rows) == 20
    by = {(r["tensor"], r["scheme"]): r for r in rows}
    q = "q_proj 768x768 normal, row scales"
    # Per-channel beats per-tensor on rows with different scales; fp16 is near-lossless.
    assert by[(q, "int8 per channel")]["sqnr_db"] > by[(q, "int8 per tensor")]["sqnr_db"] + 3
    assert by[(q, "fp16")]["sqnr_db"] > 60
    assert by[(q, "int8 per tensor")]["ratio"] == pytest.approx(4.0, rel=1e-3)
    assert any("SQNR dB" in line for line in lines)


def test_demo_falls_back_to_synthetic_and_says_so(monkeypatch):
    monkeypatch.setattr(rxquant.models.minilm, "minilm_dir", lambda: None)
    lines: list[str] = []
    result = rxquant.apps.demo.run_demo(print_fn=lines.append)
    assert result["model"] == "synthetic" and "falling back to synthetic" in lines[0]


def test_cli_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "rxquant", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("rxquant ")
