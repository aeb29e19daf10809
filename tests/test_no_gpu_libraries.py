"""The same wheel imports and works on a machine with no OpenCL loader and no HIP runtime.

A child Python runs with an rtld-audit library (tests/support/hide_gpu_libs.c, via LD_AUDIT) that
makes every dlopen of libOpenCL or libamdhip64 fail, as if they were not installed. The child
first checks that the libraries really cannot be loaded, then uses rxquant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HIDE = Path(__file__).parent / "support" / "hide_gpu_libs.c"

CHILD = r"""
import ctypes, warnings
import numpy as np
for lib in ("libOpenCL.so.1", "libOpenCL.so", "libamdhip64.so", "libamdhip64.so.5"):
    try:
        ctypes.CDLL(lib)
    except OSError:
        pass
    else:
        raise SystemExit(f"{lib} is still loadable: the test would prove nothing")

import rxquant as rq

x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
s = rq.Scheme("int8", axis=0)
with warnings.catch_warnings():
    warnings.simplefilter("error")  # auto with no OpenCL at all: the CPU, silently
    q, qp = rq.quantize(x, s, device="auto")
    rq.calibrate(x, "percentile", rq.Scheme("int8"), device="auto")
    m = rq.metrics(x, rq.dequantize(q, qp), device="auto")
assert m.sqnr_db > 35, m
devs, why = rq.core.devices.opencl_devices()
assert devs == [] and "libOpenCL.so.1 cannot be loaded" in why, why
try:
    rq.quantize(x, s, device="opencl")
except rq.DeviceError as e:
    assert "no OpenCL device" in str(e) and "libOpenCL.so.1" in str(e), e
else:
    raise SystemExit("device='opencl' without OpenCL did not raise")
st = rq.get_rocm_status()
assert not st["hip_available"] and "libamdhip64" in st["reason"], st
print("ok:", why)
"""


def test_wheel_works_without_libopencl_and_libamdhip64(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the rtld-audit library")
    lib = tmp_path / "hide_gpu_libs.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(HIDE)], check=True)
    env = {**os.environ, "LD_AUDIT": str(lib)}
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok:"), r.stdout
