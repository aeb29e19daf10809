"""rxquant.torch: the autograd function and the QAT Linear wrapper (skipped without torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rxquant as rq  # noqa: E402
from rxquant.torch import QuantLinear, fake_quantize  # noqa: E402


def test_forward_matches_numpy_and_gradient_is_clipped_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 2.0], requires_grad=True)
    qp = rq.QParams(rq.Scheme("int8"), np.float32(1 / 127), np.int32(0), (5,))
    y = fake_quantize(x, qparams=qp)
    np.testing.assert_array_equal(y.detach().numpy(), rq.fake_quantize(x.detach().numpy(), qparams=qp))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    # Same mask rule as PyTorch's own fake quantization (zero point 0, restricted range).
    ref = torch.tensor([-2.0, -0.5, 0.0, 0.3, 2.0], requires_grad=True)
    torch.fake_quantize_per_tensor_affine(ref, 1 / 127, 0, -127, 127).sum().backward()
    assert ref.grad.tolist() == x.grad.tolist()


def test_quant_linear_trains():
    torch.manual_seed(0)
    layer = QuantLinear(torch.nn.Linear(8, 4), "int4")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, target = torch.randn(64, 8), torch.randn(64, 4)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
