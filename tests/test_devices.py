"""Hardware discovery: ROCm/HIP status (runtime loaded at run time, KFD topology) and OpenCL."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rxquant as rq
from rxquant.apps.cli import main
from rxquant.core.devices import opencl_devices


def test_rocm_status_reports_a_reason_without_an_amd_gpu():
    st = rq.get_rocm_status()
    assert set(st) >= {"hip_available", "hip_version", "devices", "kfd_gpus", "reason"}
    if not st["devices"]:
        # Either no runtime, or the runtime answers hipErrorNoDevice (100).
        assert (
            "not installed" in st["reason"] or "returned 100" in st["reason"] or "0 devices" in st["reason"]
        )


def test_a_named_hip_library_is_the_only_one_tried(monkeypatch, tmp_path):
    """RXQUANT_HIP_LIBRARY that could not be loaded fell back to the system's runtime, whose status
    was then reported as if it were the one asked for."""
    missing = str(tmp_path / "libamdhip64.so")
    monkeypatch.setenv("RXQUANT_HIP_LIBRARY", missing)
    st = rq.get_rocm_status()
    assert not st["hip_available"] and f"RXQUANT_HIP_LIBRARY={missing} cannot be loaded" in st["reason"]


def test_kfd_topology_is_read(tmp_path):
    node = tmp_path / "1"
    node.mkdir()
    (node / "properties").write_text("simd_count 144\nsimd_per_cu 4\ngfx_target_version 80003\n")
    (node / "name").write_text("ellesmere\n")
    st = rq.get_rocm_status(str(tmp_path))
    assert st["kfd_gpus"] == [{"node": 1, "name": "ellesmere", "gfx_target": "gfx803", "compute_units": 36}]


def test_opencl_devices_or_reason():
    devs, why = opencl_devices()
    assert devs or why
    for d in devs:
        assert d["compute_units"] >= 1 and d["opencl_c_version"].startswith("OpenCL C")


def test_devices_command_json(capsys):
    assert main(["devices", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cpu"]["rxquant_threads"] >= 1 and "rocm" in d and "opencl" in d


def test_rocm_quantizer_says_which_backend_it_chose():
    q = rq.ROCmQuantizer("polaris", device_id=0)
    gpus = [d for d in opencl_devices()[0] if d["type"] == "gpu"]
    if not gpus:
        assert q.device == "cpu" and q.backend.startswith("CPU: no OpenCL GPU")
    codes, scale, _ = q.quantize_tensor(np.linspace(-1, 1, 64, dtype=np.float32))
    assert codes.dtype == np.int8 and scale > 0


def test_auto_warns_once_about_a_broken_opencl_setup_but_not_about_no_opencl(monkeypatch):
    import warnings

    import rxquant.core.devices as dv

    monkeypatch.setattr(dv, "_WARNED", set())
    monkeypatch.setattr(dv, "opencl_devices", lambda: ([], "no OpenCL platform: CL_PLATFORM_NOT_FOUND_KHR"))
    with pytest.warns(RuntimeWarning, match="OpenCL is installed but unusable .*PLATFORM_NOT_FOUND"):
        assert dv.backend("auto") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dv.backend("auto") is None  # once per process
        no_loader = "no OpenCL loader: libOpenCL.so.1 cannot be loaded"
        monkeypatch.setattr(dv, "opencl_devices", lambda: ([], no_loader))
        assert dv.backend("auto") is None
        cpu_only = [{"index": 0, "type": "other", "name": "pthread-x86", "platform": "PoCL"}]
        monkeypatch.setattr(dv, "opencl_devices", lambda: (cpu_only, None))
        assert dv.backend("auto") is None
