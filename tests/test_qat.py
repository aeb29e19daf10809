"""QAT: a small numpy MLP on scikit-learn's digits. Post-training INT4 loses accuracy; a few epochs
of fine-tuning with fake-quantized INT4 weights and the straight-through estimator win it back."""

from __future__ import annotations

import numpy as np
import pytest

import rxquant as rq

datasets = pytest.importorskip("sklearn.datasets")
SCHEME = rq.Scheme("int4")  # per tensor, symmetric -7..7: coarse enough to hurt


def data():
    d = datasets.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target
    idx = np.random.default_rng(0).permutation(len(y))
    x, y = x[idx], y[idx]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def forward(params, x):
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1.T + b1, 0)
    return h, h @ w2.T + b2


def accuracy(params, x, y) -> float:
    return float(np.mean(forward(params, x)[1].argmax(1) == y))


def train(params, x, y, epochs, lr, fake_quant=False, seed=1):
    """Plain SGD on softmax cross-entropy. With fake_quant the forward pass uses fake-quantized
    weights and the weight gradient passes through the STE mask."""
    rng = np.random.default_rng(seed)
    params = [p.copy() for p in params]
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(y)), len(y) // 32):
            xb, yb = x[batch], y[batch]
            w1, b1, w2, b2 = params
            masks = [np.ones_like(w1, bool), np.ones_like(w2, bool)]
            if fake_quant:
                (q1, masks[0]), (q2, masks[1]) = (
                    rq.fake_quantize(w, SCHEME, return_mask=True) for w in (w1, w2)
                )
            else:
                q1, q2 = w1, w2
            h, logits = forward((q1, b1, q2, b2), xb)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g = p / len(yb)
            gw2, gb2 = g.T @ h, g.sum(0)
            gh = (g @ q2) * (h > 0)
            gw1, gb1 = gh.T @ xb, gh.sum(0)
            params = [w1 - lr * gw1 * masks[0], b1 - lr * gb1, w2 - lr * gw2 * masks[1], b2 - lr * gb2]
    return params


def quantized(params):
    w1, b1, w2, b2 = params
    return [rq.fake_quantize(w1, SCHEME), b1, rq.fake_quantize(w2, SCHEME), b2]


def test_qat_recovers_at_least_half_of_the_ptq_loss():
    xtr, ytr, xte, yte = data()
    rng = np.random.default_rng(0)
    hidden = 16
    init = [
        rng.standard_normal((hidden, 64)).astype(np.float32) * 0.5,
        np.zeros(hidden, np.float32),
        rng.standard_normal((10, hidden)).astype(np.float32) * 0.5,
        np.zeros(10, np.float32),
    ]
    fp32 = train(init, xtr, ytr, epochs=40, lr=0.1)
    acc_fp32 = accuracy(fp32, xte, yte)
    acc_ptq = accuracy(quantized(fp32), xte, yte)
    qat = train(fp32, xtr, ytr, epochs=5, lr=0.05, fake_quant=True, seed=2)
    acc_qat = accuracy(quantized(qat), xte, yte)
    print(f"fp32 {acc_fp32:.4f}  ptq int4 {acc_ptq:.4f}  qat int4 {acc_qat:.4f}")
    assert acc_fp32 > 0.93
    assert acc_fp32 - acc_ptq > 0.01, "post-training INT4 should lose accuracy on this model"
    assert acc_qat - acc_ptq >= 0.5 * (acc_fp32 - acc_ptq)
