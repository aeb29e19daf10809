"""device="opencl" runs the OpenCL kernels (PoCL here, any GPU elsewhere: RXQUANT_DEVICE=opencl:N)
and must give the CPU path's results; device="auto" never picks a CPU OpenCL device."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rxquant as rq
import rxquant.devices
from rxquant.devices import opencl_devices

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
    y, m = rq.fake_quantize(x, qparams=qp, return_mask=True)
    y2, m2 = rq.fake_quantize(x, qparams=qp, return_mask=True, device=DEVICE)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(m, m2)


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
        assert rq.devices.backend("auto") is None  # PoCL is slower than rayon: auto stays on the CPU
    with pytest.raises(ValueError, match="no OpenCL device opencl:99"):
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
