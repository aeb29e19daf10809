"""PyTorch integration (optional): fake quantization as an autograd function with the clipped
straight-through estimator, a Linear wrapper for quantization-aware training, and the input
statistics of a model's layers for data-aware rounding (``collect_statistics``).

The math runs in rxquant's Rust core on CPU tensors; gradients are ``grad_out * mask`` where the
mask marks the values inside the clamping range (PyTorch's ``FakeQuantPerTensorAffine`` rule).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Optional, Union

import numpy as np
import torch

from .core.hessian import HessianObserver
from .core.ops import fake_quantize as _fake_quantize
from .core.qparams import QParams
from .core.scheme import Scheme
from .formats.statistics import write_statistics


class FakeQuantize(torch.autograd.Function):
    """``y = dequantize(quantize(x))``; ``dx = dy * mask`` (clipped STE)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scheme: Scheme, qparams: Optional[QParams]) -> torch.Tensor:
        if not x.is_floating_point():
            # As the numpy functions: integer data is not converted and rounded back silently.
            raise TypeError(f"fake_quantize needs a floating-point tensor, got {x.dtype}")
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


def _patches(mod: torch.nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """A layer's inputs as rows of its weight's flattened input dimension: Linear ``(..., in)``;
    Conv ``(N, C, *spatial)`` unfolded to ``(N * positions, C * prod(kernel))`` (in the order of
    ``weight.reshape(out, -1)``). None for grouped convolutions (their inputs differ by group)."""
    if isinstance(mod, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1])
    conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    if not isinstance(mod, conv) or mod.groups != 1 or isinstance(mod.padding, str):
        return None
    if isinstance(mod, torch.nn.Conv2d):
        p = torch.nn.functional.unfold(
            x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride
        )
        return p.transpose(1, 2).reshape(-1, p.shape[1])
    if isinstance(mod, torch.nn.Conv1d):
        x = torch.nn.functional.pad(x, (mod.padding[0], mod.padding[0]))
        k, s, d = mod.kernel_size[0], mod.stride[0], mod.dilation[0]
        p = x.unfold(2, d * (k - 1) + 1, s)[..., ::d]  # (N, C, L, k)
        return p.permute(0, 2, 1, 3).reshape(-1, x.shape[1] * k)
    return None


def collect_statistics(
    model: torch.nn.Module,
    batches: Iterable[Any],
    path: Optional[Union[str, os.PathLike[str]]] = None,
    kind: str = "hessian",
) -> dict[str, HessianObserver]:
    """Runs ``model`` on each batch (``model(batch)``, ``model(*batch)`` for a tuple or
    ``model(**batch)`` for a dict) in eval mode without gradients, and collects the input
    statistics of every ``Linear`` and ungrouped ``Conv1d``/``Conv2d`` layer (conv inputs unfolded
    into patches), keyed by weight name (``<module name>.weight``, as in the model's
    ``state_dict``). With ``path`` the statistics file is written too (``kind`` ``hessian`` or
    ``importance``; see docs/format.md). Grouped convolutions and Conv3d are skipped.
    """
    stats: dict[str, HessianObserver] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            key = f"{name}.weight" if name else "weight"

            def hook(m: torch.nn.Module, args: tuple[Any, ...], key: str = key) -> None:
                rows = _patches(m, args[0].detach())
                if rows is not None:
                    x = rows.to("cpu", torch.float32).contiguous().numpy()
                    stats.setdefault(key, HessianObserver()).update(x)

            hooks.append(mod.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                if isinstance(b, dict):
                    model(**b)
                elif isinstance(b, (tuple, list)):
                    model(*b)
                else:
                    model(b)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if path is not None:
        write_statistics(path, stats, kind)
    return stats
