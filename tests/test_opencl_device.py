"""device="opencl" runs the OpenCL kernels (PoCL here, any GPU elsewhere: RXQUANT_DEVICE=opencl:N)
and must give the CPU path's results; device="auto" never picks a CPU OpenCL device."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxquant as rq
import rxquant.core.devices
from rxquant.core.devices import opencl_devices

DEVICE = os.environ.get("RXQUANT_DEVICE", "opencl")
if not opencl_devices()[0]:
    if os.environ.get("RXQUANT_REQUIRE_OPENCL") == "1":
        raise RuntimeError(f"OpenCL required but unavailable: {opencl_devices()[1]}")
    pytest.skip(f"no OpenCL device: {opencl_devices()[1]}", allow_module_level=True)

SCHEMES = [
    rq.Scheme("int8"),
    rq.Scheme("int8", axis=0),
    rq.Scheme("int8", symmetric=False, axis=-1),
    rq.Scheme("int4", symmetric=False, axis=-1, group_size=32),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: f"{s.precision}-{s.granularity}-{s.symmetric}")
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 64), (3, 5, 96)])
def test_opencl_matches_cpu(scheme, shape):
    if scheme.group_size and shape[-1] % scheme.group_size:
        pytest.skip("group size does not divide")
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32) * 3
    q_cpu, qp = rq.quantize(x, scheme)
    q_cl, qp_cl = rq.quantize(x, scheme, device=DEVICE)
    np.testing.assert_array_equal(qp.scale, qp_cl.scale)
    np.testing.assert_array_equal(q_cpu, q_cl)
    np.testing.assert_array_equal(rq.dequantize(q_cpu, qp), rq.dequantize(q_cl, qp, device=DEVICE))
    out = np.empty(x.shape, np.float32)
    assert rq.dequantize(q_cl, qp, device=DEVICE, out=out) is out
    np.testing.assert_array_equal(out, rq.dequantize(q_cpu, qp))
    y, m = rq.fake_quantize(x, qparams=qp, return_mask=True)
    y2, m2 = rq.fake_quantize(x, qparams=qp, return_mask=True, device=DEVICE)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(m, m2)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_inputs_match_the_cpu(dtype):
    x = (np.random.default_rng(9).standard_normal((40, 64)) * 3).astype(dtype)
    for s in (rq.Scheme("int8", axis=0), rq.Scheme("int4", symmetric=False, axis=-1, group_size=32)):
        q, qp = rq.quantize(x, s)
        q2, qp2 = rq.quantize(x, s, device=DEVICE)
        np.testing.assert_array_equal(qp.scale, qp2.scale)
        np.testing.assert_array_equal(q, q2)


def test_packed_and_nonfinite_inputs_keep_the_cpu_rules():
    s = rq.Scheme("int4", symmetric=False, axis=-1, group_size=32)
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(
        rq.quantize(x, s, pack=True)[0], rq.quantize(x, s, pack=True, device=DEVICE)[0]
    )
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        rq.quantize(x, s, device=DEVICE)


def test_auto_never_picks_a_cpu_opencl_device_and_bad_devices_raise():
    devs, _ = opencl_devices()
    if not any(d["type"] == "gpu" for d in devs):
        assert rq.core.devices.backend("auto") is None  # PoCL is slower than rayon: auto stays on the CPU
    with pytest.raises(rq.DeviceError, match="no OpenCL device opencl:99"):
        rq.quantize(np.ones(3, np.float32), device="opencl:99")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        rq.quantize(np.ones(3, np.float32), device="tpu")


def test_adaptive_quantizer_on_opencl_matches_cpu():
    w = np.random.default_rng(2).standard_normal((16, 32)).astype(np.float32)
    cpu = rq.AdaptiveQuantizer(device="cpu").quantize_tensor_per_channel(w)
    ocl = rq.AdaptiveQuantizer(device=DEVICE)
    assert ocl.device_name.startswith("opencl")
    got = ocl.quantize_tensor_per_channel(w)
    for a, b in zip(cpu, got):
        np.testing.assert_array_equal(a, b)


def _heavy_tailed(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=shape).astype(np.float32)
    x.reshape(-1)[::17] = 0.0  # exact zeros are counted apart from the bins
    return x


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
@pytest.mark.parametrize(
    "scheme", [rq.Scheme("int8"), rq.Scheme("int8", symmetric=False), rq.Scheme("int8", axis=1)], ids=str
)
def test_calibration_on_the_device_gives_the_cpu_parameters(method, scheme):
    x = _heavy_tailed((300, 70), 3)
    opts = {"exact": False} if method in ("percentile", "mse") else {}
    want = rq.calibrate(x, method, scheme, **opts)
    got = rq.calibrate(x, method, scheme, device=DEVICE, **opts)
    np.testing.assert_array_equal(want.scale, got.scale)
    np.testing.assert_array_equal(want.zero_point, got.zero_point)


def test_observer_on_the_device_streams_like_the_cpu_and_a_bad_batch_changes_nothing():
    cpu, dev = rq.Observer("entropy", "int8"), rq.Observer("entropy", "int8", device=DEVICE)
    for k in range(3):
        b = _heavy_tailed((50_000,), 10 + k) * (k + 1)  # later batches widen the range
        cpu.update(b)
        dev.update(b)
    before = dev.to_dict()
    bad = _heavy_tailed((100,), 1)
    bad[7] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        dev.update(bad)
    assert dev.to_dict() == before
    assert before == cpu.to_dict()
    np.testing.assert_array_equal(cpu.qparams().scale, dev.qparams().scale)


def test_metrics_on_the_device_within_1e6_relative():
    x = _heavy_tailed((1000, 257), 4)
    y = rq.fake_quantize(x, rq.Scheme("int4", axis=0))
    want, got = rq.metrics(x, y), rq.metrics(x, y, device=DEVICE)
    assert got.count == want.count
    for f in ("mse", "mae", "max_abs_error", "cosine"):
        assert getattr(got, f) == pytest.approx(getattr(want, f), rel=1e-6), f
    assert got.sqnr_db == pytest.approx(want.sqnr_db, abs=1e-5)
    with pytest.raises(ValueError, match="non-finite"):
        rq.metrics(np.array([1.0, np.nan], np.float32), np.ones(2, np.float32), device=DEVICE)


class _FailingDevice:
    """Stands in for an OpenCL GPU whose kernels fail at run time (out of memory, lost device)."""

    name = "failing GPU"

    def __getattr__(self, _name):
        def fail(*_args, **_kwargs):
            raise rq.DeviceError("OpenCL kernel launch failed: CL_OUT_OF_RESOURCES")

        return fail


def test_auto_falls_back_to_the_cpu_when_a_kernel_fails_and_opencl_raises(monkeypatch):
    failing = _FailingDevice()

    def fake_backend(d, work=None):
        return None if d in (None, "cpu") else failing

    monkeypatch.setattr(rxquant.core.devices, "backend", fake_backend)
    x = _heavy_tailed((64, 32), 5)
    s = rq.Scheme("int8", axis=0)
    q_cpu, qp = rq.quantize(x, s, device="cpu")
    with pytest.warns(RuntimeWarning, match="failing GPU failed .*CL_OUT_OF_RESOURCES.*using the CPU"):
        q, qp2 = rq.quantize(x, s, device="auto")
    np.testing.assert_array_equal(q, q_cpu)
    with pytest.warns(RuntimeWarning, match="using the CPU"):
        assert rq.metrics(x, x, device="auto").sqnr_db == np.inf
    with pytest.warns(RuntimeWarning, match="using the CPU"):
        obs = rq.Observer("mse", s, device="auto").update(x)
    np.testing.assert_array_equal(obs.qparams().scale, rq.Observer("mse", s).update(x).qparams().scale)
    with pytest.raises(rq.DeviceError, match="CL_OUT_OF_RESOURCES"):
        rq.quantize(x, s, device="opencl")
    with pytest.raises(rq.DeviceError, match="CL_OUT_OF_RESOURCES"):
        rq.calibrate(x, "entropy", s, device="opencl:0")


def test_work_group_comes_from_the_gpu_family_table():
    from rxquant.core.hardware import GPU_FAMILIES, work_group_size

    assert work_group_size("gfx803") == GPU_FAMILIES["polaris"].work_group_size == 64
    assert work_group_size("AMD Radeon RX 580 Series (polaris10, LLVM 15.0.7)") == 64
    assert work_group_size("Ellesmere") == 64
    dev = rxquant.core.devices.backend(DEVICE)
    assert dev.work_group > 0 and dev.work_group & (dev.work_group - 1) == 0


def test_sensitivity_and_plan_on_the_device_match_the_cpu():
    rng = np.random.default_rng(6)
    weights = {f"l{i}": (rng.standard_normal((64, 128)) * (i + 1)).astype(np.float32) for i in range(3)}
    cpu, dev = rq.AdaptiveQuantizer(device="cpu"), rq.AdaptiveQuantizer(device=DEVICE)
    a = cpu.analyze_layer_sensitivity(weights["l0"], "l0")
    b = dev.analyze_layer_sensitivity(weights["l0"], "l0")
    assert a.sqnr_db == pytest.approx(b.sqnr_db, abs=1e-5) and a.num_params == b.num_params
    kw = {"budget": "5bpw", "mode": "optimal", "progress": False}
    assert cpu.optimize_mixed_precision(weights, **kw) == dev.optimize_mixed_precision(weights, **kw)


def test_cli_quantizes_a_checkpoint_on_the_device_byte_for_byte(tmp_path, capsys):
    from safetensors.numpy import save_file

    from rxquant.apps.cli import main

    rng = np.random.default_rng(8)
    model = tmp_path / "m.safetensors"
    save_file(
        {"a.weight": rng.standard_normal((96, 64)).astype(np.float32), "a.bias": np.zeros(96, np.float32)},
        str(model),
    )
    outs = []
    for dev, precision in [("cpu", "int8"), (DEVICE, "int8"), ("cpu", "int4"), (DEVICE, "int4")]:
        out = tmp_path / f"{dev}-{precision}.safetensors"
        args = ["quantize", str(model), "-o", str(out), "--precision", precision, "--device", dev, "--quiet"]
        assert main(args) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[2] == outs[3]
    q8 = str(tmp_path / "cpu-int8.safetensors")
    assert main(["verify", str(model), q8, "--device", DEVICE, "--json"]) == 0
    assert '"total_sqnr_db"' in capsys.readouterr().out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    precision=st.sampled_from(["int8", "int4"]),
    symmetric=st.booleans(),
    signed=st.booleans(),
    axis=st.one_of(st.none(), st.integers(-3, 2)),
    group=st.one_of(st.none(), st.sampled_from([1, 2, 3])),
    pack=st.booleans(),
    method=st.sampled_from(["minmax", "percentile", "entropy", "mse"]),
)
def test_fuzz_device_gives_the_cpu_result_or_the_cpu_error(
    data, shape, dtype, precision, symmetric, signed, axis, group, pack, method
):
    """Whatever the input, the device path returns what the CPU path returns, or raises the
    same exception type (NaN/Inf included)."""
    elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    x = data.draw(hnp.arrays(dtype, shape, elements=elements))

    def both(f):
        out = []
        for d in ("cpu", DEVICE):
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out.append(("ok", f(d)))
            except (ValueError, TypeError, IndexError) as e:
                out.append(("error", type(e)))
        return out

    s_args = {"symmetric": symmetric, "axis": axis, "group_size": group, "signed_scale": signed and symmetric}
    (a, ra), (b, rb) = both(lambda d: rq.quantize(x, rq.Scheme(precision, **s_args), pack=pack, device=d))
    assert a == b and (a == "error" and ra == rb or _same(ra, rb))
    (a, ra), (b, rb) = both(lambda d: rq.calibrate(x, method, rq.Scheme(precision, **s_args), device=d))
    assert a == b and (a == "error" and ra == rb or _same(ra, rb))
    (a, ra), (b, rb) = both(lambda d: rq.metrics(x, x * 0.5, device=d))
    assert a == b and (a == "error" and ra == rb or ra.count == rb.count)


def _same(u, v) -> bool:
    if isinstance(u, tuple):
        return all(_same(p, q) for p, q in zip(u, v))
    if isinstance(u, rq.QParams):
        return _same(u.scale, v.scale) and _same(u.zero_point, v.zero_point)
    np.testing.assert_array_equal(u, v)
    return True


def test_hessian_observer_on_the_device_matches_the_cpu():
    x = np.random.default_rng(3).standard_normal((1500, 96)).astype(np.float32)
    cpu = rq.HessianObserver(device="cpu")
    dev = rq.HessianObserver(device=DEVICE)
    for part in np.array_split(x, 3):
        cpu.update(part)
        dev.update(part)
    h, hd = cpu.hessian(), dev.hessian()
    exact = 2.0 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    scale = np.abs(exact).max()
    assert np.abs(hd - exact).max() / scale < 1e-6
    assert np.abs(hd - h).max() / scale < 1e-6
    assert dev.count == cpu.count == 1500
    with pytest.raises(ValueError, match="features"):
        dev.update(np.ones((2, 5), np.float32))


def test_gptq_and_layer_error_on_the_device_match_the_cpu():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    obs = rq.HessianObserver(device="cpu")
    obs.update(rng.standard_normal((1024, 256)).astype(np.float32))
    h = obs.hessian()
    s = rq.Scheme("int4", symmetric=False, group_size=32)
    q, qp = rq.gptq(w, s, h, device="cpu")
    q2, qp2 = rq.gptq(w, s, h, device=DEVICE)
    assert np.mean(q != q2) <= 1e-3 and np.abs(q.astype(int) - q2.astype(int)).max() <= 1
    from rxquant.core.gptq import output_error

    w_hat = rq.dequantize(q, qp)
    e_cpu = output_error(w, w_hat, h, device="cpu")
    e_dev = output_error(w, w_hat, h, device=DEVICE)
    assert e_dev == pytest.approx(e_cpu, rel=1e-5)


def test_device_figures_and_trace():
    be = rxquant.core.devices.backend(DEVICE)
    f = be.measure()
    assert set(f) == {
        "upload_gbs",
        "download_gbs",
        "pageable_upload_gbs",
        "memory_gbs",
        "quantize_gbs",
        "gemm_gflops",
        "stream_gbs",
        "latency_s",
    }
    assert all(v > 0 for v in f.values())
    be.start_trace()
    x = np.ones((64, 64), np.float32)
    rq.quantize(x, rq.Scheme("int8"), rq.calibrate(x, "minmax"), device=DEVICE)
    kinds = [k for k, _ in be.take_trace()]
    assert "upload" in kinds and "quantize_f32" in kinds and "download" in kinds


def test_device_matrix_paths_refuse_bad_input_like_the_cpu():
    be = rxquant.core.devices.backend(DEVICE)
    with pytest.raises(ValueError, match=r"difference has 12 values for \(3, 4\), Hessian 9"):
        be.layer_error(np.ones((3, 4), np.float32), np.eye(3))
    obs = rq.HessianObserver(device=DEVICE).update(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="non-finite|NaN"):
        obs.update(np.array([[np.nan, 0, 0]], np.float32))
    assert obs.count == 2
    with pytest.raises(ValueError, match="the Hessian has"):
        rq.gptq(np.ones((4, 8), np.float32), rq.Scheme("int4", group_size=4), np.eye(4), device=DEVICE)


@pytest.mark.parametrize("tiles, words", [("64x3", "divide TM"), ("4096x1", "the device allows")])
def test_a_tile_override_that_cannot_be_used_is_refused(tiles, words):
    """RXQUANT_CL_TILES that did not parse or fit fell back to the default tiles without a word."""
    import subprocess
    import sys

    code = (
        "import numpy as np, rxquant as rq; "
        f"rq.HessianObserver(device={DEVICE!r}).update(np.ones((8, 16), np.float32))"
    )
    python = str(Path(__file__).resolve().parents[1] / "python")
    env = dict(os.environ, RXQUANT_CL_TILES=tiles, PYTHONPATH=python)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "RXQUANT_CL_TILES" in r.stderr and words in r.stderr, r.stderr[-500:]
