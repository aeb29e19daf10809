"""llama-quantize's type mixes (``Q4_K_M`` and kin): the type each tensor gets from
``llama-quantize IN OUT Q4_K_M``, so that ``rxquant quantize --type q4_k_m`` writes the same types
with rxquant's rounding inside.

A mix is mostly one K type, with more bits where llama.cpp found them worth it: the output tensor
(or the token embeddings tied to it) Q6_K, some layers' ``attn_v`` and ``ffn_down`` Q6_K or Q5_K,
and so on per architecture. The rules are ``llama_tensor_get_type_impl`` of llama.cpp's
``src/llama-quant.cpp``, for the mixes of Q3_K, Q4_K and Q5_K, and Q2_K_S (llama-quantize's Q2_K
mix, whose name rxquant's ``--type q2_k`` takes for one type everywhere, and its IQ mixes are not
reproduced), followed branch by branch; the tests compare them
with ``llama-quantize --dry-run`` on synthetic models of several architectures where llama.cpp's
tools are built. A plain type (``q4_k``) is one type everywhere, as ``llama-quantize --pure``
(:func:`rxquant.formats.gguf_file.type_for`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.errors import RequestError
from .gguf_file import TypeChoice, allows_quantization, fitted

#: Each mix: its main type (llama.cpp's ``llama_ftype_get_default_type``).
MIXES = {
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
}

# Categories by name, in llama.cpp's order of matching (``tensor_get_category``).
_CATEGORIES = (
    ("attn_qkv.weight", "attn_qkv"),
    ("attn_kv_b.weight", "attn_kv_b"),
    ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"),
    ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
)
# The attention-value-like tensors, which the mixes give more bits.
_ATTN_V = ("attn_v", "attn_qkv", "attn_kv_b")
# Layer counts at which llama.cpp's loader calls a model of these architectures 70B (its
# ``load_arch_hparams``); llama's also needs grouped-query attention and no 8 experts.
_SEVENTY_B = {"llama": 80, "qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    return next((cat for key, cat in _CATEGORIES if key in name), "other")


@dataclass(frozen=True)
class ModelInfo:
    """What the mixes' rules read of a model's hyperparameters."""

    arch: str
    #: ``{arch}.block_count``: llama.cpp's ``n_layer_all``, the layer count of ffn_down's rule.
    layers: int
    #: ``{arch}.expert_count``, 0 when at most 1 (as llama.cpp's loader sets it).
    experts: int
    #: llama.cpp's ``LLM_TYPE_70B``, whose ``attn_v`` gets Q5_K where the mix would give Q4_K.
    is_70b: bool
    #: llama.cpp's ``n_gqa()``: attention heads per key-value head (of the first layer).
    gqa: int = 1

    @classmethod
    def of(cls, arch: str, value: Callable[[str], Any]) -> ModelInfo:
        """From a model's key-value pairs (``value(key)`` is None where a key is missing)."""
        layers = value(f"{arch}.block_count")
        if not isinstance(layers, int) or layers <= 0:
            raise RequestError(
                f"llama-quantize's mixes choose types by layer, and this {arch or 'GGUF'} model has no "
                f"{arch}.block_count; give one type (such as --type q4_k) or a --budget"
            )

        def first(key: str, default: Any) -> Any:
            v = value(key)
            return v[0] if isinstance(v, list) and v else default if v is None else v

        experts = first(f"{arch}.expert_count", 0)
        experts = experts if experts > 1 else 0
        heads = first(f"{arch}.attention.head_count", 0)
        kv_heads = first(f"{arch}.attention.head_count_kv", heads)
        n = layers - (value(f"{arch}.nextn_predict_layers") or 0)  # llama.cpp's n_layer()
        is_70b = n == _SEVENTY_B.get(arch) and (arch != "llama" or (experts != 8 and heads != kv_heads))
        return cls(arch, layers, experts, is_70b, heads // kv_heads if kv_heads else 0)


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third
    one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_types(
    tensors: Sequence[tuple[str, tuple[int, ...]]], mix: str, model: ModelInfo
) -> dict[str, Optional[TypeChoice]]:
    """The type of each tensor (name, numpy shape; in file order, as llama.cpp counts layers in
    it) under llama-quantize's ``mix``: None where llama.cpp does not quantize the tensor; a
    reason where the rows do not fit the mix's type and llama.cpp falls back."""
    base = MIXES[mix]
    cats = {name: _category(name) for name, _ in tensors}
    n_attn_v = sum(c in _ATTN_V for c in cats.values())
    tied = "output" not in cats.values()  # no output.weight: the token embeddings serve as it
    falcon = model.arch == "falcon"
    i_attn_v = i_ffn_down = 0
    out: dict[str, Optional[TypeChoice]] = {}
    for name, shape in tensors:
        if not allows_quantization(name, shape):
            out[name] = None
            continue
        cat, new = cats[name], base
        if cat == "output" or (tied and cat == "token_embd"):
            new = "Q8_0" if falcon or shape[-1] % 256 else "Q6_K"
        elif cat in _ATTN_V:
            if mix == "Q2_K_S" and model.gqa >= 4:
                new = "Q4_K"
            elif mix == "Q3_K_M":
                new = "Q5_K" if i_attn_v < 2 else "Q4_K"
            elif mix == "Q3_K_L":
                new = "Q5_K"
            elif mix in ("Q4_K_M", "Q5_K_M") and _more_bits(i_attn_v, n_attn_v):
                new = "Q6_K"
            elif mix == "Q4_K_S" and i_attn_v < 4:
                new = "Q5_K"
            if model.is_70b and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if model.experts == 8:
                new = "Q8_0"
            i_attn_v += 1
        elif cat == "attn_k" and model.experts == 8:
            new = "Q8_0"
        elif cat == "ffn_down":
            i, n = _layer(name, i_ffn_down, model), model.layers
            if mix == "Q2_K_S":
                new = "Q4_K" if i < n // 8 else new
            elif mix == "Q3_K_M":
                new = "Q5_K" if i < n // 16 else "Q4_K" if not falcon or _more_bits(i, n) else "Q3_K"
            elif mix == "Q3_K_L":
                new = "Q4_K" if falcon else "Q5_K"
            elif mix == "Q4_K_M" and falcon:
                new = "Q6_K" if i < n // 16 else "Q5_K" if _more_bits(i, n) else "Q4_K"
            elif mix in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n):
                new = "Q6_K"
            elif mix == "Q4_K_S" and not falcon and i < n // 8:
                new = "Q5_K"
            i_ffn_down += 1
        elif cat == "attn_output":
            if falcon:
                new = "Q4_K" if mix == "Q3_K_L" else new
            elif model.experts == 8:
                new = "Q5_K" if mix in ("Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M") else new
            else:
                new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(mix, new)
        out[name] = fitted(new, shape)
    return out


def _layer(name: str, counted: int, model: ModelInfo) -> int:
    """An ffn_down tensor's layer: the count so far, or with experts (whose tensors llama.cpp
    does not take to be in layer order) the number in its name."""
    if model.experts <= 1:
        return counted
    m = re.match(r"blk\.(-?\d+)\.", name)
    if m is None or not 0 <= int(m.group(1)) < model.layers:
        raise ValueError(f"tensor {name}: no layer number in 0..{model.layers - 1} after 'blk.' in its name")
    return int(m.group(1))
