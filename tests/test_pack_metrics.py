"""INT4 packing and error metrics against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rxquant as rq


@settings(max_examples=100, deadline=None)
@given(
    v=hnp.arrays(
        np.int8, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9), elements=st.integers(-8, 7)
    )
)
def test_signed_round_trip_and_layout(v):
    p = rq.pack_int4(v)
    np.testing.assert_array_equal(p, ref.pack_int4(v))
    np.testing.assert_array_equal(rq.unpack_int4(p, v.shape), v)


@settings(max_examples=50, deadline=None)
@given(v=hnp.arrays(np.uint8, st.integers(0, 33), elements=st.integers(0, 15)))
def test_unsigned_round_trip(v):
    out = rq.unpack_int4(rq.pack_int4(v), v.shape, signed=False)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, v)


def test_nibble_order_and_padding():
    assert rq.pack_int4(np.array([1, -1, 7], np.int8)).tolist() == [0xF1, 0x07]
    assert rq.unpack_int4(np.array([0xF1, 0x07], np.uint8), 3).tolist() == [1, -1, 7]


def test_pack_errors():
    with pytest.raises(ValueError, match=r"value 8 at flat index 2 is outside the range -8..=7"):
        rq.pack_int4(np.array([0, 1, 8], np.int8))
    with pytest.raises(ValueError, match=r"value 16 at flat index 0 is outside the range 0..=15"):
        rq.pack_int4(np.array([16], np.uint8))
    with pytest.raises(TypeError, match="int64"):
        rq.pack_int4(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"5 INT4 values need 3 packed bytes, got 2"):
        rq.unpack_int4(np.zeros(2, np.uint8), (5,))
    with pytest.raises(TypeError, match="int8"):
        rq.unpack_int4(np.zeros(2, np.int8), (4,))
    with pytest.raises(TypeError, match="must be an integer, got 2.5"):
        rq.unpack_int4(np.zeros(4, np.uint8), (2.5, 4))  # was truncated silently
    with pytest.raises(ValueError, match="negative"):
        rq.unpack_int4(np.zeros(4, np.uint8), (-8,))


def test_pack_reports_the_first_bad_value_across_chunks():
    """The range check runs in parallel chunks; the error still names the first bad value."""
    v = np.zeros(300_001, np.uint8)
    v[[70_001, 200_000, 300_000]] = [17, 16, 99]
    with pytest.raises(ValueError, match=r"value 17 at flat index 70001 is outside the range 0..=15"):
        rq.pack_int4(v)
    v[70_001] = 15
    with pytest.raises(ValueError, match=r"value 16 at flat index 200000 "):
        rq.pack_int4(v)


def test_quantize_pack_equals_pack_of_quantize():
    x = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    for sym in (True, False):
        s = rq.Scheme("int4", symmetric=sym, axis=-1, group_size=32)
        q, qp = rq.quantize(x, s)
        packed, _ = rq.quantize(x, s, qp, pack=True)
        np.testing.assert_array_equal(packed, rq.pack_int4(q))
        np.testing.assert_array_equal(rq.dequantize(packed, qp, packed=True), rq.dequantize(q, qp))


def test_metrics_against_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(100_001).astype(np.float32)
    y = (x + rng.standard_normal(x.size).astype(np.float32) * 0.01).astype(np.float16)
    m = rq.metrics(x, y)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    assert m.sqnr_db == pytest.approx(ref.sqnr_db(x, y), rel=1e-12)
    assert m.cosine == pytest.approx(x64 @ y64 / np.linalg.norm(x64) / np.linalg.norm(y64), rel=1e-12)
    assert m.mse == pytest.approx(np.mean((x64 - y64) ** 2), rel=1e-12)
    assert m.mae == pytest.approx(np.mean(np.abs(x64 - y64)), rel=1e-12)
    assert m.max_abs_error == np.max(np.abs(x64 - y64))
    assert rq.metrics(x, x).sqnr_db == float("inf")
    assert set(m.to_dict()) == {"sqnr_db", "cosine", "mse", "mae", "max_abs_error", "count"}


def test_metrics_errors():
    with pytest.raises(ValueError, match=r"shape \[3\].*shape \[4\]"):
        rq.metrics(np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="int32"):
        rq.metrics(np.zeros(3, np.int32), np.zeros(3, np.float32))
    assert rq.metrics(np.zeros(0, np.float32), np.zeros(0, np.float32)).count == 0


def test_gil_released_and_threads():
    assert rq.threads() >= 1


def test_native_transpose_equals_numpy_and_refuses_other_arrays():
    from rxquant.core import native

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (3, 70), (384, 1536), (33, 65)]:
        a = rng.standard_normal(shape).astype(np.float32)
        t = native.transpose(a)
        assert t.flags.c_contiguous and np.array_equal(t, a.T)
        out = np.full(shape[::-1], np.nan, np.float32)
        assert native.transpose(a, out) is out and np.array_equal(out, a.T)
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"out has shape \[2, 3\]; the result has \[3, 2\]"):
        native.transpose(a, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="wrong dtype"):
        native.transpose(a, np.zeros((3, 2), np.float64))
    with pytest.raises(TypeError, match="2-D float32"):
        native.transpose(np.zeros((2, 2), np.float64))
    with pytest.raises(TypeError, match="2-D float32"):
        native.transpose(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        native.transpose(np.zeros((4, 4), np.float32)[:, ::2])
