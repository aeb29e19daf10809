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


def test_dtypes_kept_and_integer_tensors_refused():
    """Half, bfloat16 and float64 come back in their dtype (the math in float32); an integer
    tensor was converted, rounded and cast back silently, where the numpy function refuses it."""
    x = torch.randn(8, 64)
    s = rq.Scheme("int8", axis=0)
    want = rq.fake_quantize(x.numpy(), s)
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        y = fake_quantize(x.to(dt), s)
        assert y.dtype == dt and y.shape == x.shape
    np.testing.assert_array_equal(fake_quantize(x.double(), s).float().numpy(), want)
    with pytest.raises(TypeError, match="needs a floating-point tensor, got torch.int32"):
        fake_quantize(torch.ones(4, 4, dtype=torch.int32), s)


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


def test_collect_statistics_linear_and_conv(tmp_path):
    from rxquant.formats.statistics import Statistics
    from rxquant.torch import collect_statistics

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, groups=2),  # grouped: skipped
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 3 * 3, 10),
    )
    batches = [torch.randn(4, 3, 9, 9) for _ in range(3)]
    stats = collect_statistics(model, batches, path=tmp_path / "s.safetensors")
    assert sorted(stats) == ["0.weight", "4.weight"]
    # Conv inputs are the unfolded patches, in the order of weight.reshape(out, -1).
    x = torch.cat(batches)
    p = torch.nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 27)
    ref = rq.HessianObserver().update(p.numpy())
    np.testing.assert_allclose(stats["0.weight"].hessian(), ref.hessian(), rtol=1e-5, atol=1e-6)
    assert stats["0.weight"].count == 4 * 3 * 25
    with torch.no_grad():
        h = model[:4](x)
    np.testing.assert_allclose(stats["4.weight"].importance(), (h.double() ** 2).mean(0).numpy(), rtol=1e-5)
    st = Statistics(tmp_path / "s.safetensors")
    assert st["0.weight"].features == 27 and st["0.weight"].samples == 300
    # GPTQ on the conv weight with those statistics: layout of quantize, lower output error.
    w = model[0].weight.detach().numpy()
    s = rq.Scheme("int4", symmetric=False, group_size=9)
    q, qp = rq.gptq(w, s, st["0.weight"].hessian)
    assert q.shape == w.shape and qp.scale.shape == (8, 3)


def test_collect_statistics_conv1d_matches_unfold():
    from rxquant.torch import collect_statistics

    conv = torch.nn.Conv1d(4, 6, 3, padding=2, dilation=2, stride=2)
    x = torch.randn(5, 4, 20)
    stats = collect_statistics(conv, [x])
    y = conv(x)
    # The patches times the flattened weight give the convolution's output.
    xp = torch.nn.functional.pad(x, (2, 2))
    win = xp.unfold(2, 5, 2)[..., ::2]
    rows = win.permute(0, 2, 1, 3).reshape(-1, 12)
    out = rows @ conv.weight.detach().reshape(6, 12).T + conv.bias.detach()
    np.testing.assert_allclose(out.reshape(5, -1, 6).permute(0, 2, 1).detach().numpy(), y.detach().numpy(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    ref = rq.HessianObserver().update(rows.numpy())
    np.testing.assert_allclose(stats["weight"].hessian(), ref.hessian(), rtol=1e-5, atol=1e-6)
