"""PyTorch integration (optional): fake quantization as an autograd function with the clipped
straight-through estimator, and a Linear wrapper for quantization-aware training.

The math runs in rxquant's Rust core on CPU tensors; gradients are ``grad_out * mask`` where the
mask marks the values inside the clamping range (PyTorch's ``FakeQuantPerTensorAffine`` rule).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from .core.ops import fake_quantize as _fake_quantize
from .core.scheme import QParams, Scheme


class FakeQuantize(torch.autograd.Function):
    """``y = dequantize(quantize(x))``; ``dx = dy * mask`` (clipped STE)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scheme: Scheme, qparams: Optional[QParams]) -> torch.Tensor:
        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        y, mask = _fake_quantize(a, scheme if qparams is None else None, qparams, return_mask=True)
        ctx.save_for_backward(torch.from_numpy(np.asarray(mask)))
        return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask.to(device=grad.device, dtype=grad.dtype), None, None


def fake_quantize(
    x: torch.Tensor, scheme: Union[Scheme, str] = "int8", qparams: Optional[QParams] = None
) -> torch.Tensor:
    """Differentiable fake quantization (min-max calibrated per call unless ``qparams`` is given)."""
    return FakeQuantize.apply(x, Scheme.coerce(scheme), qparams)


class QuantLinear(torch.nn.Module):
    """A ``torch.nn.Linear`` whose weight is fake-quantized in the forward pass (QAT)."""

    def __init__(self, linear: torch.nn.Linear, scheme: Union[Scheme, str] = "int8") -> None:
        super().__init__()
        self.linear = linear
        self.scheme = Scheme.coerce(scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quantize(self.linear.weight, self.scheme)
        return torch.nn.functional.linear(x, w, self.linear.bias)
