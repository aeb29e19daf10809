"""GPTQ, importance-weighted rounding and the Hessian observer, against slow numpy references."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import reference as ref

import rxquant as rq
from rxquant.core.gptq import output_error


def layer(rows: int, cols: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A weight and correlated inputs with a few loud features (like real activations)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    mix = rng.standard_normal((cols, cols)) / np.sqrt(cols)
    x = rng.standard_normal((n, cols)) @ mix
    x[:, rng.choice(cols, cols // 10, replace=False)] *= 6
    return w, x.astype(np.float32)


def hessian(x: np.ndarray) -> np.ndarray:
    return rq.HessianObserver().update(x).hessian()


SCHEMES = {
    "int4 g32 asym": rq.Scheme("int4", symmetric=False, group_size=32),
    "int4 g32 signed": rq.Scheme("int4", group_size=32, signed_scale=True),
    "int4 channel": rq.Scheme("int4", axis=0),
    "int8 g64 asym": rq.Scheme("int8", symmetric=False, group_size=64),
}


@pytest.mark.parametrize("name", SCHEMES)
def test_matches_the_numpy_reference(name):
    s = SCHEMES[name]
    w, x = layer(48, 128, 400, 1)
    h = hessian(x)
    q, qp = rq.gptq(w, s, h, method="minmax", block_size=64)
    qmin, qmax = s.qrange
    rq_codes, r_scale, r_zp = ref.gptq(
        w, h, qmin, qmax, s.symmetric, s.signed_scale, group=s.group_size, block=64
    )
    # Tie rule: the float32 core and the float64 reference may round a compensated weight that
    # lies on a rounding boundary to different sides; a code then differs by one step, and the
    # difference propagates slightly. Allowed: 1% of codes, by one step.
    diff = np.asarray(q, np.int64) - rq_codes
    assert np.abs(diff).max() <= 1 and np.mean(diff != 0) <= 0.01, (np.mean(diff != 0), np.abs(diff).max())
    np.testing.assert_allclose(qp.scale, r_scale.reshape(qp.scale.shape), rtol=2e-3)
    ours = output_error(w, rq.dequantize(q, qp), h)
    rtn = output_error(w, rq.dequantize(*rq.quantize(w, s, rq.calibrate(w, "minmax", s))), h)
    assert ours < rtn


@pytest.mark.parametrize("name", SCHEMES)
def test_identity_hessian_is_round_to_nearest(name):
    s = SCHEMES[name]
    w, _ = layer(32, 128, 10, 2)
    q, qp = rq.gptq(w, s, np.eye(128))
    q2, qp2 = rq.quantize(w, s, rq.calibrate(w, "mse", s))
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(qp.scale, qp2.scale)
    np.testing.assert_array_equal(qp.zero_point, qp2.zero_point)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act_order", [False, True])
def test_output_error_at_most_round_to_nearest(seed, act_order):
    w, x = layer(64, 256, 600, 10 + seed)
    h = hessian(x)
    for s in SCHEMES.values():
        q, qp = rq.gptq(w, s, h, act_order=act_order)
        ours = output_error(w, rq.dequantize(q, qp), h)
        rtn = output_error(w, rq.dequantize(*rq.quantize(w, s, rq.calibrate(w, "mse", s))), h)
        assert ours <= rtn, (s, ours, rtn)
        # The file layout is quantize's: same grid, same code dtype.
        q2, qp2 = rq.quantize(w, s)
        assert q.dtype == q2.dtype and q.shape == q2.shape and qp.scale.shape == qp2.scale.shape


def test_packing_conv_weights_and_layout():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.1).astype(np.float32)  # 72 inputs: groups of 24
    x = rng.standard_normal((300, 72)).astype(np.float32)
    s = rq.Scheme("int4", symmetric=False, group_size=24)
    q, qp = rq.gptq(w, s, hessian(x), pack=True)
    assert q.dtype == np.uint8 and q.size == w.size // 2 and qp.shape == w.shape and qp.scale.shape == (16, 3)
    y = rq.dequantize(q, qp, packed=True)
    assert y.shape == w.shape and rq.metrics(w, y).sqnr_db > 15


def test_bad_input_is_refused_with_a_clear_message():
    w, x = layer(8, 32, 50, 4)
    h = hessian(x)
    s = rq.Scheme("int4", group_size=16)
    with pytest.raises(ValueError, match=r"needs \(32, 32\)"):
        rq.gptq(w, s, h[:16, :16])
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite value") as e:
        rq.gptq(bad, s, h)
    assert "ignore_nonfinite" not in str(e.value)  # gptq has no such option to suggest
    # Arguments of the wrong kind were converted: damp "0.1" to 0.1, act_order "no" to True.
    for kw, word in (
        ({"damp": "0.1"}, "damp must be a number"),
        ({"act_order": "no"}, "act_order must be True"),
        ({"block_size": 64.5}, "block_size must be an integer"),
        ({"pack": 1}, "pack must be True"),
    ):
        with pytest.raises(TypeError, match=word):
            rq.gptq(w, s, h, **kw)
    hn = h.copy()
    hn[3, 4] = np.inf
    with pytest.raises(ValueError, match="the Hessian has 1 non-finite value"):
        rq.gptq(w, s, hn)
    with pytest.raises(ValueError, match="group size 7 does not divide"):
        rq.gptq(w, rq.Scheme("int4", group_size=7), h)
    with pytest.raises(ValueError, match="per output channel"):
        rq.gptq(w, rq.Scheme("int8", axis=1), h)
    with pytest.raises(ValueError, match="needs int8 or int4"):
        rq.gptq(w, "fp16", h)
    # Fewer samples than inputs: singular without dampening, fine with it.
    hs = hessian(x[:8])
    with pytest.raises(ValueError, match="not positive definite|singular"):
        rq.gptq(w, s, hs, damp=0.0)
    q, qp = rq.gptq(w, s, hs)
    assert qp.extra["damping"] > 0


def test_dead_inputs_get_zero_weight():
    w, x = layer(8, 32, 100, 5)
    x[:, 5] = 0
    q, qp = rq.gptq(w, rq.Scheme("int8", axis=0), hessian(x))
    assert qp.extra["dead_inputs"] == 1 and np.all(rq.dequantize(q, qp)[:, 5] == 0)


def test_importance_weighted_search():
    w, x = layer(64, 128, 500, 6)
    e = np.mean(x.astype(np.float64) ** 2, axis=0)
    h = np.diag(2 * e)  # the error the importance search minimizes
    for s in (
        rq.Scheme("int4", symmetric=False, group_size=32),
        rq.Scheme("int4", axis=0, signed_scale=True),
    ):
        q, qp = rq.quantize(w, s, importance=e)
        plain = rq.quantize(w, s, rq.calibrate(w, "mse", s))
        assert output_error(w, rq.dequantize(q, qp), h) <= output_error(w, rq.dequantize(*plain), h)
        assert qp.extra["method"] == "mse+importance"
    # Uniform importance is the plain search.
    s = rq.Scheme("int4", symmetric=False, group_size=32)
    q1, _ = rq.quantize(w, s, importance=np.ones(128))
    q2, _ = rq.quantize(w, s, rq.calibrate(w, "mse", s))
    np.testing.assert_array_equal(q1, q2)
    with pytest.raises(ValueError, match="importance has 5 values"):
        rq.quantize(w, s, importance=np.ones(5))
    with pytest.raises(ValueError, match="not a finite non-negative number"):
        rq.quantize(w, s, importance=-np.ones(128))
    with pytest.raises(ValueError, match="either qparams or importance"):
        rq.quantize(w, s, rq.calibrate(w, "mse", s), importance=e)


def test_hessian_observer():
    _, x = layer(4, 40, 2000, 7)
    o = rq.HessianObserver()
    for b in np.array_split(x, 7):
        o.update(b)
    exact = 2 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert np.all(np.abs(o.hessian() - exact) <= 1e-6 * scale)
    np.testing.assert_allclose(o.importance(), np.diag(exact) / 2, rtol=1e-6)
    assert o.count == 2000 and o.features == 40
    # float16 and 3-D input (batch, tokens, features); merge; pickle; to_dict.
    o2 = rq.HessianObserver().update(x[:1000].reshape(10, 100, 40).astype(np.float16))
    o3 = rq.HessianObserver().update(x[1000:].astype(np.float16))
    o2.merge(o3)
    assert o2.count == 2000
    r = pickle.loads(pickle.dumps(o))
    np.testing.assert_array_equal(r.hessian(), o.hessian())
    np.testing.assert_array_equal(rq.HessianObserver.from_dict(o.to_dict()).hessian(), o.hessian())
    with pytest.raises(ValueError, match="has 39 features, the observer has 40|inputs have 39 features"):
        o.update(x[:, :39])
    bad = x[:3].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        o.update(bad)
    assert o.count == 2000
    with pytest.raises(ValueError, match="seen no inputs"):
        rq.HessianObserver().hessian()
    with pytest.raises(TypeError, match="int64"):
        o.update(np.ones((2, 40), np.int64))
