"""Scale and zero point cross-checked against ONNX Runtime's quant_utils.compute_scale_zp."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rxquant as rq

qu = pytest.importorskip("onnxruntime.quantization.quant_utils")
from onnx import TensorProto  # noqa: E402

# (ONNX type, rxquant scheme): ORT's INT8 symmetric range is -127..127 (our default); its INT4
# symmetric range is the full -8..7 (our full_range=True).
CASES = [
    (TensorProto.INT8, rq.Scheme("int8", symmetric=True)),
    (TensorProto.UINT8, rq.Scheme("int8", symmetric=False)),
    (TensorProto.INT4, rq.Scheme("int4", symmetric=True, full_range=True)),
    (TensorProto.UINT4, rq.Scheme("int4", symmetric=False)),
]

finite = st.floats(-1e6, 1e6, width=32, allow_subnormal=False)


@pytest.mark.parametrize("qtype,scheme", CASES, ids=["int8", "uint8", "int4", "uint4"])
@settings(max_examples=300, deadline=None)
@given(a=finite, b=finite)
def test_scale_zero_point_match_onnxruntime(qtype, scheme, a, b):
    rmin, rmax = min(a, b), max(a, b)
    if rmin == rmax:
        return  # a constant: rxquant picks s = |c| so it reconstructs exactly (documented difference)
    qmin, qmax = qu.get_qmin_qmax_for_qType(qtype, symmetric=scheme.symmetric)
    assert (int(qmin), int(qmax)) == scheme.qrange
    zp, scale = qu.compute_scale_zp(
        np.float32(rmin), np.float32(rmax), qmin, qmax, symmetric=scheme.symmetric
    )
    qp = rq.calibrate(np.array([rmin, rmax], np.float32), "minmax", scheme)
    assert qp.scale == np.float32(scale)
    assert int(qp.zero_point) == int(zp)


def test_quantized_values_match_onnxruntime():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(10_000).astype(np.float32) * 3
    for qtype, scheme in CASES[:2]:
        qmin, qmax = qu.get_qmin_qmax_for_qType(qtype, symmetric=scheme.symmetric)
        zp, scale = qu.compute_scale_zp(x.min(), x.max(), qmin, qmax, symmetric=scheme.symmetric)
        expected = qu.quantize_nparray(qtype, x, scale, zp)
        q, _ = rq.quantize(x, scheme)
        np.testing.assert_array_equal(q, expected)
