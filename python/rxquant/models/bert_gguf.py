"""A BERT-family model folder (``config.json``, ``tokenizer.json``, ``model.safetensors``) as a
GGUF model llama.cpp runs (``llama-embedding``): the metadata, tensor names and WordPiece vocabulary
that llama.cpp's converter (``convert_hf_to_gguf.py``, class ``BertModel``) writes, without
torch or transformers. The key-value pairs are set with the ``gguf`` package's own writer
methods, so their names and types are the package's.

Supported: ``model_type`` ``bert`` with a WordPiece ``tokenizer.json`` (BERT, MiniLM,
sentence-transformers' BERT models, BGE). Other architectures are refused with a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import RequestError
from ..formats.checkpoint import Checkpoint
from ..formats.gguf_file import Field, gguf_package, hf_to_gguf_names

SUPPORTED = ("bert",)
# Tensors the converter drops: position ids and the heads an embedding model does not use.
_DROPPED = ("embeddings.position_ids", "pooler.", "cls.predictions", "cls.seq_relationship")


@dataclass
class SourceTensor:
    """A tensor of the model under its GGUF name: numpy ``shape`` and a reader of its values."""

    name: str
    shape: tuple[int, ...]
    read_f32: Callable[[], np.ndarray]
    source_name: str


@dataclass
class BertGguf:
    """The GGUF view of a BERT folder: its key-value pairs and tensors in the converter's order,
    plus the map from Hugging Face names to GGUF names."""

    arch: str
    fields: list[Field]
    tensors: list[SourceTensor]
    names: dict[str, str]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ValueError(f"{path.parent} does not exist (or is not a folder)") from None
        raise ValueError(f"{path.parent} has no {path.name}: give a BERT-family model folder") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _vocab(tok: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int], bool]:
    """Tokens (in llama.cpp's phantom-space form: ``▁word``, ``##piece`` → ``piece``), token
    types and whether the normalizer lowercases, from a WordPiece ``tokenizer.json``."""
    gguf = gguf_package()
    model = tok.get("model") or {}
    if model.get("type") != "WordPiece":
        raise RequestError(
            f"tokenizer.json has a {model.get('type')!r} model; "
            "the BERT converter reads WordPiece vocabularies"
        )
    vocab: dict[str, int] = model["vocab"]
    special = {t["id"]: t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    n = max(vocab_size, max(vocab.values()) + 1)
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    T = gguf.TokenType
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(int(T.UNUSED))
        elif i in special:
            tokens.append(by_id[i])
            types.append(int(T.CONTROL))
        else:
            t = by_id[i]
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(int(T.NORMAL))
    norm = tok.get("normalizer") or {}
    lowercase = bool(norm.get("lowercase", False)) if norm.get("type") == "BertNormalizer" else False
    return tokens, types, lowercase


def _pooling(folder: Path) -> Any:
    """The sentence-transformers pooling (``modules.json`` → ``1_Pooling/config.json``), or None."""
    gguf = gguf_package()
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    for m in _load_json(modules):
        if m.get("type", "").endswith("Pooling"):
            cfg = _load_json(folder / m["path"] / "config.json")
            if cfg.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if cfg.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            if cfg.get("pooling_mode_lasttoken"):
                return gguf.PoolingType.LAST
            raise RequestError(f"{folder / m['path']} uses a pooling mode llama.cpp does not run: {cfg}")
    return None


def bert_gguf(folder: Path, file_type: int = 0) -> BertGguf:
    """The GGUF metadata and tensors of the BERT folder ``folder``; ``file_type`` is llama.cpp's
    ``general.file_type`` of the file to be written."""
    gguf = gguf_package()
    folder = Path(folder)
    cfg = _load_json(folder / "config.json")
    mt = cfg.get("model_type")
    if mt not in SUPPORTED:
        raise RequestError(
            f"{folder} is a {mt!r} model; rxquant converts {', '.join(SUPPORTED)} to GGUF "
            "(llama.cpp's convert_hf_to_gguf.py handles the others)"
        )
    tok = _load_json(folder / "tokenizer.json")
    tokens, types, lowercase = _vocab(tok, int(cfg.get("vocab_size", 0)))
    blocks = int(cfg["num_hidden_layers"])

    # The key-value pairs, set by the gguf package's writer methods on a writer without a file.
    w = gguf.GGUFWriter(None, "bert")
    w.add_type("model")
    w.add_name(str(cfg.get("_name_or_path") or folder.name).split("/")[-1])
    w.add_block_count(blocks)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(int(cfg["num_attention_heads"]))
    w.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    w.add_file_type(file_type)
    w.add_causal_attention(False)
    pooling = _pooling(folder)
    if pooling is not None:
        w.add_pooling_type(pooling)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_token_type_count(int(cfg.get("type_vocab_size", 1)))
    w.add_tokenizer_model("bert")
    # llama.cpp's converter names the pre-tokenizer by hashing the tokenizer's output; a lowercasing
    # WordPiece vocabulary hashes to "jina-v2-en" (llama.cpp's WPM tokenizer does its own splitting).
    w.add_tokenizer_pre("jina-v2-en" if lowercase else "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(folder, n_vocab=len(tokens))
    special.special_token_ids.pop("cls", None)  # the writer has no key for it; llama.cpp uses bos
    special.add_to_gguf(w, quiet=True)
    if lowercase:
        w.add_bool("tokenizer.ggml.normalizer.lowercase", True)
    fields = [Field.of(k, v.value, v.type, v.sub_type) for k, v in w.kv_data[0].items()]

    path = folder / "model.safetensors"
    if not path.is_file():
        raise ValueError(f"{folder} has no model.safetensors")
    ck = Checkpoint(path)
    to_gguf = hf_to_gguf_names("bert", blocks)
    tensors, names = [], {}
    for n in ck.names():
        if any(n.removeprefix("bert.").startswith(d) for d in _DROPPED):
            continue
        g = to_gguf(n.replace(".gamma", ".weight").replace(".beta", ".bias"))
        if g is None:
            raise ValueError(f"{path}: tensor {n} has no GGUF name in the BERT architecture")
        _, shape = ck.info(n)
        names[n] = g
        tensors.append(SourceTensor(g, tuple(shape), lambda n=n: ck.read_f32(n), n))
    return BertGguf("bert", fields, tensors, names)
