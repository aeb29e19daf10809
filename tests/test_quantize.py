"""Quantize / dequantize / fake-quantize against the numpy reference, properties and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rxquant as rq

SCHEMES = [
    dict(axis=None, group=None),
    dict(axis=0, group=None),
    dict(axis=-1, group=None),
    dict(axis=1, group=None),
    dict(axis=-1, group=4),
    dict(axis=0, group=3),
]


def scheme_of(precision, symmetric, axis, group, full_range=False):
    return rq.Scheme(precision, symmetric=symmetric, axis=axis, group_size=group, full_range=full_range)


def quantize_against_reference(x, precision, symmetric, axis, group):
    """rxquant's min-max quantize of ``x``, its parameters and codes checked against the numpy
    reference; returns the scheme, the codes, the parameters and the reference's scale and zero
    point."""
    s = scheme_of(precision, symmetric, axis, group)
    q, qp = rq.quantize(x, s)
    scale, zp = ref.minmax_qparams(x, precision, symmetric, axis, group)
    np.testing.assert_array_equal(qp.scale, scale)
    np.testing.assert_array_equal(qp.zero_point, zp)
    qmin, qmax = s.qrange
    np.testing.assert_array_equal(q, ref.quantize(x, scale, zp, qmin, qmax, axis, group))
    return s, q, qp, scale, zp


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("layout", SCHEMES)
def test_matches_numpy_reference(precision, symmetric, layout):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 8, 12)) * rng.uniform(0.1, 5, size=(6, 1, 1))).astype(np.float32)
    axis, group = layout["axis"], layout["group"]
    s, q, qp, scale, zp = quantize_against_reference(x, precision, symmetric, axis, group)
    assert q.dtype == (np.int8 if symmetric else np.uint8)
    y = rq.dequantize(q, qp)
    np.testing.assert_array_equal(y, ref.dequantize(q, scale, zp, axis, group))
    np.testing.assert_array_equal(rq.fake_quantize(x, s, qp), y)


def test_half_to_even_rounding():
    qp = rq.QParams(rq.Scheme("int8"), np.float32(1.0), np.int32(0), (6,))
    q, _ = rq.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], np.float32), qparams=qp)
    assert q.tolist() == [0, 2, 2, 0, -2, -2]


def test_symmetric_int8_default_range_and_full_range():
    x = np.array([-4.0, 1.0, 4.0], np.float32)
    q, qp = rq.quantize(x, "int8")
    assert q.tolist() == [-127, 32, 127] and qp.scale == np.float32(8 / 254)
    q, qp = rq.quantize(x, rq.Scheme("int8", full_range=True))
    assert qp.scheme.qrange == (-128, 127) and qp.scale == np.float32(8 / 255)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes_accepted(dtype):
    x = np.linspace(-2, 3, 40).astype(dtype).reshape(5, 8)
    q, qp = rq.quantize(x, rq.Scheme("int8", axis=0))
    q32, _ = rq.quantize(x.astype(np.float32), rq.Scheme("int8", axis=0))
    np.testing.assert_array_equal(q, q32)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64, object, np.uint8])
def test_wrong_dtype_is_type_error(dtype):
    x = np.ones((3, 3), dtype=dtype)
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        rq.quantize(x)


def test_noncontiguous_and_fortran_inputs():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((16, 12)).astype(np.float32)
    for view in (np.asfortranarray(base), base[::2, 1::3], base.T):
        q, qp = rq.quantize(view, rq.Scheme("int8", axis=0))
        q2, qp2 = rq.quantize(np.ascontiguousarray(view), rq.Scheme("int8", axis=0))
        np.testing.assert_array_equal(q, q2)
        np.testing.assert_array_equal(qp.scale, qp2.scale)


def test_zero_constant_and_empty():
    for x in (
        np.zeros((4, 5), np.float32),
        np.full((4, 5), -3.25, np.float32),
        np.full((4, 5), 7e-3, np.float32),
    ):
        for sym in (True, False):
            for axis in (None, 0, 1):
                s = rq.Scheme("int4", symmetric=sym, axis=axis)
                q, qp = rq.quantize(x, s)
                np.testing.assert_array_equal(rq.dequantize(q, qp), x)
                assert np.all(qp.scale > 0) and np.all(np.isfinite(qp.scale))
    empty = np.zeros((0, 3), np.float32)
    q, qp = rq.quantize(empty, rq.Scheme("int8", axis=1))
    assert q.shape == (0, 3) and qp.scale.shape == (3,)
    assert rq.dequantize(q, qp).shape == (0, 3)
    assert rq.pack_int4(np.zeros(0, np.int8)).size == 0


def test_nonfinite_error_names_count_and_position():
    x = np.ones((4, 4), np.float32)
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*flat index 6"):
        rq.quantize(x)
    with pytest.raises(ValueError, match="non-finite"):
        rq.metrics(x, x)
    q, qp = rq.quantize(x, rq.Scheme("int8", symmetric=False), ignore_nonfinite=True)
    assert qp.scale == 1.0 and q[0, 0] == 1  # the finite values are a constant 1: exact
    assert q[1, 2] == qp.zero_point and q[3, 0] == 255  # NaN -> zero point, Inf saturates


def test_bad_axis_group_and_shapes():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(IndexError, match="axis 2 is out of range for a tensor with 2"):
        rq.quantize(x, rq.Scheme("int8", axis=2))
    with pytest.raises(ValueError, match="group size 4 does not divide dimension 1 of size 6"):
        rq.quantize(x, rq.Scheme("int4", axis=1, group_size=4))
    q, qp = rq.quantize(x, rq.Scheme("int8", axis=0))
    with pytest.raises(ValueError, match=r"shape \(6, 4\).*\(4, 6\)"):
        rq.dequantize(q.reshape(6, 4), qp)
    with pytest.raises(TypeError, match="float32"):
        rq.dequantize(q.astype(np.float32), qp)
    with pytest.raises(ValueError, match="unknown precision"):
        rq.Scheme("int3")
    with pytest.raises(ValueError, match="pack=True needs int4"):
        rq.quantize(x, "int8", pack=True)
    bad = rq.QParams(rq.Scheme("int8"), np.float32(0.0), np.int32(0), (4, 6))
    with pytest.raises(ValueError, match="scale 0 at index 0 is not a positive finite"):
        rq.quantize(x, qparams=bad)


def test_fp16_rounding_and_overflow_report():
    x = np.array([1 + 2**-11, 70000.0, -1e6, 0.1], np.float32)
    with pytest.warns(RuntimeWarning, match="2 value"):
        q, qp = rq.quantize(x, "fp16")
    assert q.dtype == np.float16 and qp.overflow == 2
    assert q.tolist() == [1.0, 65504.0, -65504.0, float(np.float16(0.1))]
    assert not np.any(np.isinf(q))


def test_ste_mask():
    qp = rq.QParams(rq.Scheme("int8"), np.float32(0.01), np.int32(0), (5,))
    x = np.array([-2.0, -1.27, 0.3, 1.27, 1.3], np.float32)
    y, mask = rq.fake_quantize(x, qparams=qp, return_mask=True)
    assert mask.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(y, [-1.27, -1.27, 0.3, 1.27, 1.27], rtol=1e-6)


shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=shapes,
    precision=st.sampled_from(["int8", "int4"]),
    symmetric=st.booleans(),
    gran=st.sampled_from(["tensor", "channel", "group"]),
)
def test_round_trip_error_at_most_half_a_step(data, shape, precision, symmetric, gran):
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
    axis = None if gran == "tensor" else data.draw(st.integers(-len(shape), len(shape) - 1))
    group = None
    if gran == "group":
        dim = shape[axis]
        group = data.draw(st.sampled_from([g for g in range(1, dim + 1) if dim % g == 0]))
    s = scheme_of(precision, symmetric, axis, group)
    q, qp = rq.quantize(x, s)
    y = rq.dequantize(q, qp)
    step = ref.broadcast_params(qp.scale, x.shape, axis, group)
    # With min-max ranges every value is within half a step: zero-point rounding moves the grid
    # by at most half a step. Ranges narrower than the smallest normal float32 get scale 1
    # (ONNX Runtime's rule) and reconstruct as 0.
    tiny = np.abs(x) < np.finfo(np.float32).tiny * 255
    err = np.abs(x.astype(np.float64) - y)
    assert np.all((err <= step / 2 * (1 + 1e-5)) | tiny)


#: Values planted among ordinary ones: exact zeros, subnormals, and values near the float32 maximum;
#: planted twice 8 apart (the same vector lane), the large ones overflow the lane sums of the AVX2
#: kernels' NaN/Inf checks and send their runs to the portable path.
planted = st.lists(
    st.tuples(
        st.integers(0, 4095),
        st.sampled_from([0.0, -0.0, 1e-40, -1e-40, 3.0e38, -3.0e38, 3.4e38, -3.4e38]),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    plant=planted,
    twice=st.booleans(),
    precision=st.sampled_from(["int8", "int4"]),
    symmetric=st.booleans(),
    layout=st.sampled_from([(None, None), (0, None), (-1, 32), (-1, 64)]),
)
def test_vector_kernels_match_the_reference_at_any_magnitude(
    seed, plant, twice, precision, symmetric, layout
):
    # 4096 values: per-tensor and per-channel runs and 8-group batches take the AVX2 kernels.
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 100)).astype(np.float32)
    for i, v in plant:
        x.flat[[i, (i + 8) % x.size] if twice else i] = v
    s, q, qp, _, _ = quantize_against_reference(x, precision, symmetric, *layout)
    np.testing.assert_array_equal(rq.quantize(x, qparams=qp)[0], q)
    if precision == "int4":
        np.testing.assert_array_equal(rq.quantize(x, s, pack=True)[0], ref.pack_int4(q))


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=7),
        elements=st.floats(-100, 100, width=32),
    ),
    symmetric=st.booleans(),
)
def test_per_channel_equals_per_tensor_on_each_slice(x, symmetric):
    q, qp = rq.quantize(x, rq.Scheme("int8", symmetric=symmetric, axis=1))
    for c in range(x.shape[1]):
        qs, qps = rq.quantize(np.take(x, c, axis=1), rq.Scheme("int8", symmetric=symmetric))
        np.testing.assert_array_equal(np.take(q, c, axis=1), qs)
        assert qp.scale[c] == qps.scale and qp.zero_point[c] == qps.zero_point


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int16, np.bool_]),
    precision=st.sampled_from(["int8", "int4", "fp16", "fp32"]),
    symmetric=st.booleans(),
    signed=st.booleans(),
    axis=st.one_of(st.none(), st.integers(-5, 5)),
    group=st.one_of(st.none(), st.integers(1, 7)),
    pack=st.booleans(),
    ignore=st.booleans(),
    method=st.sampled_from(["minmax", "percentile", "entropy", "mse"]),
)
def test_fuzz_only_documented_exceptions(
    data, shape, dtype, precision, symmetric, signed, axis, group, pack, ignore, method
):
    if np.dtype(dtype).kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    else:
        elements = None
    x = data.draw(hnp.arrays(dtype, shape, elements=elements))
    try:
        s = rq.Scheme(precision, symmetric=symmetric, axis=axis, group_size=group, signed_scale=signed)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q, qp = rq.quantize(x, s, ignore_nonfinite=ignore, pack=pack)
                y = rq.dequantize(q, qp, packed=pack)
                rq.fake_quantize(x, s, ignore_nonfinite=ignore)
                assert y.shape == x.shape
                rq.calibrate(x, method, s, ignore_nonfinite=ignore)
    except (ValueError, TypeError, IndexError) as e:
        assert str(e)


def test_signed_scale_puts_the_extreme_value_on_qmin():
    x = np.array([[0.1, -0.2, 0.8, 0.3], [-0.9, 0.2, 0.1, 0.45]], np.float32)
    s = rq.Scheme("int4", axis=0, signed_scale=True)
    assert s.full_range and s.qrange == (-8, 7)
    q, qp = rq.quantize(x, s)
    # Row 0's extreme is +0.8: a negative scale maps it to -8; row 1's is -0.9: a positive scale.
    np.testing.assert_allclose(qp.scale, [0.8 / -8, -0.9 / -8], rtol=1e-7)
    assert q[0, 2] == -8 and q[1, 0] == -8 and q.min() >= -8 and q.max() <= 7
    y = rq.dequantize(q, qp)
    assert y[0, 2] == pytest.approx(0.8) and y[1, 0] == pytest.approx(-0.9)
    assert np.all(np.abs(x - y) <= np.abs(qp.scale)[:, None] / 2 + 1e-7)
    lo, hi = qp.clip_range()
    assert np.all(lo < hi)
    # Round trip through a dict and validation of sign-carrying scales.
    assert rq.QParams.from_dict(qp.to_dict()).scale.tolist() == qp.scale.tolist()
    with pytest.raises(ValueError, match="signed_scale needs a symmetric"):
        rq.Scheme("int4", symmetric=False, signed_scale=True)
    bad = rq.QParams(rq.Scheme("int4", symmetric=True), np.float32(-1.0), np.int32(0), (2, 4))
    with pytest.raises(ValueError, match="not a positive finite number"):
        rq.quantize(x, qparams=bad)


@pytest.mark.parametrize(
    "scheme, packed",
    [
        (rq.Scheme("int8", axis=0), False),
        (rq.Scheme("int4", symmetric=False, group_size=16), False),
        (rq.Scheme("int4", group_size=16), True),
        (rq.Scheme("fp16"), False),
    ],
)
def test_dequantize_into_out_equals_a_new_array(scheme: rq.Scheme, packed: bool) -> None:
    x = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    q, qp = rq.quantize(x, scheme, pack=packed)
    out = np.full(x.shape, np.nan, np.float32)
    got = rq.dequantize(q, qp, packed=packed, out=out)
    assert got is out
    np.testing.assert_array_equal(out, rq.dequantize(q, qp, packed=packed))


def test_dequantize_given_quantizes_pair_says_to_pass_the_codes() -> None:
    """rq.dequantize(rq.quantize(x, s), qp) got numpy's "setting an array element with a
    sequence. The requested array has an inhomogeneous shape"."""
    x = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    pair = rq.quantize(x, rq.Scheme("int8", axis=0))
    with pytest.raises(TypeError, match=r"q is a pair of an array and a QParams, as quantize returns"):
        rq.dequantize(pair, pair[1])  # type: ignore[arg-type]
    np.testing.assert_array_equal(rq.dequantize(*pair), rq.dequantize(pair[0], pair[1]))


def test_dequantize_out_refusals_name_the_problem() -> None:
    x = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    q, qp = rq.quantize(x, rq.Scheme("int8", axis=0))
    want = "out must be a float32 numpy array in the machine's byte order, got dtype float64"
    with pytest.raises(TypeError, match=want):
        rq.dequantize(q, qp, out=np.empty((8, 64)))
    with pytest.raises(TypeError, match="byte order, got dtype >f4"):
        rq.dequantize(q, qp, out=np.empty((8, 64), ">f4"))
    with pytest.raises(TypeError, match="got list"):
        rq.dequantize(q, qp, out=[0.0] * 512)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"out has shape \(64, 8\); the result has shape \(8, 64\)"):
        rq.dequantize(q, qp, out=np.empty((64, 8), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        rq.dequantize(q, qp, out=np.empty((64, 8), np.float32).T)
    ro = np.empty((8, 64), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rq.dequantize(q, qp, out=ro)
    # Codes that live inside `out`'s memory: refused, not read while being overwritten.
    buf = np.zeros((8, 64), np.float32)
    codes = buf.reshape(-1).view(np.int8)[:512].reshape(8, 64)
    codes[...] = q
    with pytest.raises(ValueError, match="out cannot be written: it shares memory with an input"):
        rq.dequantize(codes, qp, out=buf)


def test_big_endian_input_is_read_as_its_values() -> None:
    """Big-endian floats (as read from some files) are the same numbers: every entry point takes
    them and gives what the native array gives."""
    from rxquant import gguf

    x = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    for dt in (">f4", ">f8", ">f2"):
        b = x.astype(dt)
        native = b.astype(b.dtype.newbyteorder("="))
        s = rq.Scheme("int4", group_size=32)
        (q, qp), (q0, qp0) = rq.quantize(b, s), rq.quantize(native, s)
        np.testing.assert_array_equal(q, q0)
        np.testing.assert_array_equal(qp.scale, qp0.scale)
        np.testing.assert_array_equal(rq.fake_quantize(b, s), rq.fake_quantize(native, s))
        np.testing.assert_array_equal(gguf.quantize_tensor(b, "q4_0"), gguf.quantize_tensor(native, "q4_0"))
        assert rq.calibrate(b, "mse").scale == rq.calibrate(native, "mse").scale
    with pytest.raises(TypeError, match="got dtype >i4"):
        rq.quantize(np.zeros(4, ">i4"), rq.Scheme("int8"))


def test_scheme_axis_and_group_size_are_integers() -> None:
    """A float group size or axis was kept as given (32.5 failed later with a confusing message,
    axis=0.5 with "'float' object cannot be interpreted as an integer"); numpy integers are fine."""
    assert rq.Scheme("int4", group_size=np.int64(32)).group_size == 32
    assert type(rq.Scheme("int8", axis=np.int32(0)).axis) is int
    for kw, word in (({"group_size": 32.5}, "group_size"), ({"axis": 0.5}, "axis"), ({"axis": True}, "axis"),
                     ({"group_size": "32"}, "group_size")):  # fmt: skip
        with pytest.raises(TypeError, match=f"{word} must be an integer, got"):
            rq.Scheme("int4", **kw)
    with pytest.raises(ValueError, match="group_size must be a positive integer, got -4"):
        rq.Scheme("int4", group_size=-4)
    with pytest.raises(TypeError, match="group_size must be an integer, got 32.0"):
        rq.QuantizationConfig(group_size=32.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_size must be a positive integer, got 0"):
        rq.QuantizationConfig(group_size=0)


def test_flags_are_booleans() -> None:
    """Scheme("int8", symmetric="no") was a symmetric scheme ("no" is truthy), and a string `pack`
    or `packed` failed with "'str' object is not an instance of 'bool'", naming no argument."""
    assert rq.Scheme("int4", symmetric=np.bool_(False)).symmetric is False
    for kw in ({"symmetric": "no"}, {"full_range": 1}, {"signed_scale": "yes"}):
        with pytest.raises(TypeError, match=f"{next(iter(kw))} must be True or False"):
            rq.Scheme("int4", **kw)
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    s = rq.Scheme("int4", group_size=32)
    with pytest.raises(TypeError, match="pack must be True or False, got 'no'"):
        rq.quantize(w, s, pack="no")
    with pytest.raises(TypeError, match="ignore_nonfinite must be True or False"):
        rq.quantize(w, s, ignore_nonfinite=0)
    with pytest.raises(TypeError, match="return_mask must be True or False"):
        rq.fake_quantize(w, s, return_mask="yes")
    q, qp = rq.quantize(w, s, pack=np.bool_(True))
    with pytest.raises(TypeError, match="packed must be True or False"):
        rq.dequantize(q, qp, packed="yes")
    np.testing.assert_array_equal(rq.dequantize(q, qp, packed=True), rq.fake_quantize(w, s))
    with pytest.raises(TypeError, match="signed must be True or False"):
        rq.unpack_int4(q, 8, signed="no")
    with pytest.raises(TypeError, match="aggressive must be True or False"):
        rq.create_quantizer_for_gpu("polaris", aggressive="no")
