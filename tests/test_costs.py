"""device="auto" by measured cost: figures measured once per device and cached, element-wise work
on host arrays kept on the CPU where the figures say so, products sent to a faster device, a
device that fails to measure left alone. A stand-in device object replaces the OpenCL handle, so
these run on any machine."""

from __future__ import annotations

import json

import pytest

import rxquant.core.devices as dv
from rxquant.core import costs, native
from rxquant.core.costs import Work

GPU = {
    "index": 0,
    "type": "gpu",
    "name": "Test GPU",
    "platform": "Test",
    "driver_version": "1.0",
    "compute_units": 36,
    "opencl_c_version": "OpenCL C 1.2",
    "global_memory": 8 << 30,
}
# A PCIe-bound GPU: transfers slower than the CPU reads RAM, products 50x faster.
DEVICE = {
    "upload_gbs": 12.0,
    "download_gbs": 12.0,
    "pageable_upload_gbs": 6.0,
    "memory_gbs": 250.0,
    "quantize_gbs": 200.0,
    "gemm_gflops": 5000.0,
    "stream_gbs": 10.0,
    "latency_s": 50e-6,
}
CPU = {"quantize_gbs": 20.0, "gemm_gflops": 100.0}


class FakeDevice:
    name = "Test GPU"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def measure(self) -> dict[str, float]:
        self.calls += 1
        if self.fail:
            raise native.DeviceError("kernel launch failed: out of resources")
        return dict(DEVICE)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    path = tmp_path / "devices.json"
    monkeypatch.setenv(costs.CACHE_ENV, str(path))
    monkeypatch.setattr(dv, "opencl_devices", lambda: ([dict(GPU)], None))
    dev = FakeDevice()
    monkeypatch.setattr(dv, "_open", lambda d: dev)
    monkeypatch.setattr(native, "measure_cpu", lambda: dict(CPU, threads=native.threads()))
    costs.forget()
    yield dev, path
    costs.forget()


def record(**over):
    rec = {
        "device": dict(DEVICE),
        "cpu": dict(CPU),
        "threads": native.threads(),
        "rxquant": native.__version__,
        "measured_at": __import__("time").time(),
    }
    rec.update(over)
    return rec


def test_auto_keeps_elementwise_work_on_the_cpu_and_sends_products_to_the_device(fake):
    dev, path = fake
    path.write_text(json.dumps({costs.device_key(GPU): record()}))
    n = 4096 * 4096
    assert dv.backend("auto", Work.streamed(4 * n, n)) is None
    assert dv.backend("auto", Work.elementwise(4 * n, n)) is None
    assert dv.backend("auto") is None  # no work given: element-wise
    assert dv.backend("auto", Work.hessian(8192, 4096)) is dev
    assert dv.backend("auto", Work.gptq(4096, 4096)) is dev
    assert dv.backend("auto", Work.hessian(16, 8)) is None  # too small to pay for the round trip
    assert dev.calls == 0  # a fresh cache is not measured again
    assert dv.backend("opencl", Work.elementwise(4 * n, n)) is dev  # explicit: always the device


def test_a_missing_cache_is_measured_once_and_written(fake):
    dev, path = fake
    for _ in range(3):
        dv.backend("auto", Work.hessian(8192, 4096))
    assert dev.calls == 1
    data = json.loads(path.read_text())
    rec = data[costs.device_key(GPU)]
    assert rec["device"] == DEVICE and rec["rxquant"] == native.__version__
    costs.forget()  # a new process reads the file instead of measuring
    assert dv.backend("auto", Work.hessian(8192, 4096)) is dev and dev.calls == 1


@pytest.mark.parametrize(
    "stale",
    [{"rxquant": "0.0.0"}, {"threads": 999}, {"measured_at": 0.0}, {"device": {"upload_gbs": -1.0}}],
    ids=["version", "threads", "age", "garbage"],
)
def test_a_stale_cache_is_measured_again(fake, stale):
    dev, path = fake
    path.write_text(json.dumps({costs.device_key(GPU): record(**stale)}))
    dv.backend("auto", Work.hessian(8192, 4096))
    assert dev.calls == 1


def test_cached_figures_decide_even_when_they_favour_the_cpu(fake):
    dev, path = fake
    slow = dict(DEVICE, gemm_gflops=50.0)
    path.write_text(json.dumps({costs.device_key(GPU): record(device=slow)}))
    assert dv.backend("auto", Work.hessian(8192, 4096)) is None
    assert dev.calls == 0


def test_a_device_that_fails_to_measure_is_not_used_again(fake, monkeypatch):
    dev = FakeDevice(fail=True)
    monkeypatch.setattr(dv, "_open", lambda d: dev)
    with pytest.warns(RuntimeWarning, match="measurement failed.*out of resources"):
        assert dv.backend("auto", Work.hessian(8192, 4096)) is None
    assert dv.backend("auto", Work.hessian(8192, 4096)) is None
    assert dev.calls == 1
    assert "out of resources" in costs.failed(GPU)
    d = dv.describe()
    assert "cpu" in d["compute"] and "out of resources" in d["compute"]


def test_cache_off_measures_without_writing(fake, monkeypatch, tmp_path):
    dev, path = fake
    monkeypatch.setenv(costs.CACHE_ENV, "off")
    dv.backend("auto", Work.hessian(8192, 4096))
    assert dev.calls == 1 and not path.exists()


def test_describe_reports_figures_and_break_even_sizes(fake, capsys):
    from rxquant.apps.cli import main

    d = dv.describe()
    assert d["figures"]["device"] == DEVICE
    be = d["break_even"]
    assert be["quantize (float32 in host memory)"] is None  # 10 GB/s streamed < 20 GB/s CPU
    assert be["XᵀX of 4096 rows"].endswith("features")
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "streamed quantize 10.0 GB/s" in out and "XᵀX of 4096 rows:" in out


def test_predictions_follow_the_formulas():
    w = Work.streamed(4e9, 1e9)
    assert costs.cpu_seconds(w, CPU) == pytest.approx(0.2)
    assert costs.device_seconds(w, DEVICE, CPU) == pytest.approx(50e-6 + 0.4)
    h = Work.hessian(8192, 4096)
    assert costs.cpu_seconds(h, CPU) == pytest.approx(8192 * 4096**2 / 100e9)


def test_a_corrupt_cache_file_is_measured_again_and_rewritten(fake):
    dev, path = fake
    path.write_text("{ not json")
    dv.backend("auto", Work.hessian(8192, 4096))
    assert dev.calls == 1
    assert costs.device_key(GPU) in json.loads(path.read_text())


def test_bad_device_names_are_refused_with_the_name():
    import numpy as np

    import rxquant as rq
    from rxquant.core.gptq import output_error

    with pytest.raises(ValueError, match="unknown device 'gpu9'"):
        rq.HessianObserver(device="gpu9")
    with pytest.raises(TypeError, match=r"device must be a string \(auto, cpu, opencl or opencl:N\), got 64"):
        rq.HessianObserver(64)  # type: ignore[arg-type]
    w = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="unknown device 'cuda'"):
        rq.gptq(w, rq.Scheme("int4", group_size=4), np.eye(8), device="cuda")
    with pytest.raises(ValueError, match=r"Hessian has shape \(4, 4\); the weight has 8 inputs"):
        output_error(w, w, np.eye(4))
