"""Stateful objects fed from many threads at once: Observer (every method), HessianObserver and the
OpenCL device handle; the result equals feeding the same batches serially."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rxquant as rq


def batches(same_range: bool, n: int = 64, shape=(256, 512)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        b = rng.laplace(size=shape).astype(np.float32) * (0.5 + (i % 5) / 4)
        if same_range:  # every batch holds the same extremes: the layout is fixed by the first one
            b[:, 0], b[:, 1] = -40.0, 40.0
        out.append(b)
    return out


def feed(obs, bs, threads: int):
    if threads == 1:
        for b in bs:
            obs.update(b)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(obs.update, bs))
    return obs


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
@pytest.mark.parametrize("scheme", [rq.Scheme("int8"), rq.Scheme("int8", symmetric=False, axis=0)])
def test_observer_from_8_threads_equals_serial(method, scheme):
    bs = batches(same_range=True)
    serial = feed(rq.Observer(method, scheme), bs, 1)
    threaded = feed(rq.Observer(method, scheme), bs, 8)
    a, b = serial.to_dict(), threaded.to_dict()
    assert b["batches"] == 64
    for k in ("min", "max", "hist_lo", "hist_width", "hist_zeros", "counts"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    np.testing.assert_array_equal(serial.qparams().scale, threaded.qparams().scale)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_observer_with_widening_batches_equals_serial(method):
    bs = batches(same_range=False)
    serial = feed(rq.Observer(method, "int8"), bs, 1)
    threaded = feed(rq.Observer(method, "int8"), bs, 8)
    a, b = serial.to_dict(), threaded.to_dict()
    assert b["batches"] == 64
    # Histograms merge exactly whatever order the threads added them in (power-of-two layouts).
    for k in ("min", "max", "hist_lo", "hist_width", "hist_zeros", "counts"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    np.testing.assert_array_equal(serial.qparams().scale, threaded.qparams().scale)


def test_observer_merge_qparams_and_pickle_from_threads_while_updating():
    import pickle

    bs = batches(same_range=True, n=32, shape=(256, 256))
    obs = rq.Observer("percentile", "int8")
    other = feed(rq.Observer("percentile", "int8"), bs[:4], 1)

    def work(i: int):
        if i % 8 == 0:
            obs.merge(other)
        elif i % 8 == 1:
            obs.qparams() if obs.batches else None
        elif i % 8 == 2:
            pickle.loads(pickle.dumps(obs))
        return obs.update(bs[i])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(32)))
    ref = feed(rq.Observer("percentile", "int8"), bs, 1)
    ref.merge(other).merge(other).merge(other).merge(other)
    assert obs.batches == ref.batches == 32 + 16
    np.testing.assert_array_equal(obs.to_dict()["counts"], ref.to_dict()["counts"])


def test_a_failing_batch_from_a_thread_adds_nothing():
    bs = batches(same_range=True, n=16, shape=(64, 64))
    bad = bs[3].copy()
    bad[1, 1] = np.nan
    obs = rq.Observer("entropy", "int8")

    def work(b):
        try:
            obs.update(b)
            return True
        except ValueError:
            return False

    with ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(work, [*bs, bad]))
    assert ok.count(False) == 1 and obs.batches == 16
    np.testing.assert_array_equal(
        obs.to_dict()["counts"], feed(rq.Observer("entropy", "int8"), bs, 1).to_dict()["counts"]
    )


def test_hessian_observer_from_8_threads_equals_serial():
    bs = batches(same_range=False, n=64, shape=(128, 96))
    serial = feed(rq.HessianObserver(), bs, 1)
    threaded = feed(rq.HessianObserver(), bs, 8)
    assert threaded.count == serial.count == 64 * 128
    # float64 sums of the same float32 block products, added in another order.
    np.testing.assert_allclose(threaded.hessian(), serial.hessian(), rtol=1e-12, atol=1e-12)


def test_functional_api_and_device_handle_from_threads():
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    s = rq.Scheme("int4", symmetric=False, group_size=32)
    ref = rq.quantize(x, s)[0]
    devices = ["cpu"] + (["opencl"] if rq.core.devices.opencl_devices()[0] else [])
    for device in devices:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _, d=device: rq.quantize(x, s, device=d)[0], range(64)))
        for q in outs:
            np.testing.assert_array_equal(q, ref)
