"""Small GGUF files for tests, written by the gguf package (llama.cpp's own writer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest


def llama_cpp_file(name: str) -> Optional[Path]:
    """A file of llama.cpp's build (a tool or library) under $LLAMA_CPP_BIN or where `make
    interop` builds it; None where it is not built."""
    built = Path(__file__).parents[1] / ".cache/llama.cpp/build/bin"
    for d in (os.environ.get("LLAMA_CPP_BIN"), built):
        if d and (Path(d) / name).is_file():
            return Path(d) / name
    return None


def llama_quantize() -> Path:
    """llama.cpp's ``llama-quantize``; the test is skipped where it is not built."""
    exe = llama_cpp_file("llama-quantize")
    if exe is None:
        pytest.skip("llama-quantize is not built (make interop, or set LLAMA_CPP_BIN)")
    return exe


def tiny_bert_gguf(folder: Path) -> Path:
    """A tiny BERT model folder (``tests.tiny_bert``) in ``folder``, converted to ``folder``.gguf
    (F32) by rxquant's converter."""
    import rxquant.gguf as rg
    from tests.tiny_bert import tiny_bert

    tiny_bert(folder)
    out = folder.with_suffix(".gguf")
    rg.quantize_file(folder, out, type="f32")
    return out


def write_gguf(
    path: Path,
    tensors: dict[str, np.ndarray],
    *,
    general_type: Optional[str] = None,
    fields: Optional[Callable[[Any], None]] = None,
    arch: str = "llama",
) -> Path:
    """A GGUF file of ``tensors`` (architecture ``arch``; ``general.type`` set when given, e.g.
    ``imatrix``; ``fields(writer)`` adds key-value pairs). Skips the test without the gguf package."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), arch)
    if general_type is not None:
        w.add_type(general_type)
    if fields is not None:
        fields(w)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def decoder_gguf(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 8,
    heads: int = 8,
    kv_heads: int = 2,
    experts: int = 0,
    output: bool = True,
    fused_qkv: bool = False,
    cols: int = 256,
    nextn: int = 0,
    seed: Optional[int] = None,
) -> Path:
    """A small decoder-style GGUF model with the hyperparameters llama.cpp's loader reads (enough
    for ``llama-quantize``) and a decoder's tensor names: float16 zeros, or float32 random values
    with ``seed``. Rows of ``cols`` values; ``experts`` > 1 gives 3-D expert FFN tensors."""

    def t(shape: tuple[int, ...]) -> np.ndarray:
        if seed is None:
            return np.zeros(shape, np.float16)
        return rng.standard_normal(shape).astype(np.float32)

    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": t((16, cols))}
    if output:
        tensors["output.weight"] = t((16, cols))
    tensors["output_norm.weight"] = t((cols,))
    for i in range(layers):
        names = ["attn_qkv"] if fused_qkv else ["attn_q", "attn_k", "attn_v"]
        for n in [*names, "attn_output"]:
            tensors[f"blk.{i}.{n}.weight"] = t((8, cols))
        if experts:
            for n in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
                tensors[f"blk.{i}.{n}.weight"] = t((experts, 8, cols))
            tensors[f"blk.{i}.ffn_gate_inp.weight"] = t((experts, cols))
        else:
            for n in ("ffn_gate", "ffn_up", "ffn_down"):
                tensors[f"blk.{i}.{n}.weight"] = t((8, cols))
        tensors[f"blk.{i}.attn_norm.weight"] = t((cols,))
        tensors[f"blk.{i}.ffn_norm.weight"] = t((cols,))

    def fields(w: Any) -> None:
        w.add_block_count(layers)
        w.add_context_length(128)
        w.add_embedding_length(cols)
        w.add_feed_forward_length(2 * cols)
        w.add_head_count(heads)
        w.add_head_count_kv(kv_heads)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_layer_norm_eps(1e-5)
        if experts:
            w.add_expert_count(experts)
            w.add_expert_used_count(2)
        if nextn:
            w.add_nextn_predict_layers(nextn)

    return write_gguf(path, tensors, fields=fields, arch=arch)
