"""A small numpy forward pass of BERT encoders such as all-MiniLM-L6-v2, for measuring how much
quantization changes a model's output (sentence embeddings), without torch.

Mean pooling over the attention mask and L2 normalization, as sentence-transformers does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from ..core.hessian import HessianObserver
from ..formats.statistics import write_statistics
from .sentences import HELD_OUT

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# A few held-out sentences for quick checks (the full sets are in rxquant.models.sentences).
SENTENCES = HELD_OUT[:8]
# Called with (weight name, the layer's inputs for real tokens: (tokens, in)).
Capture = Callable[[str, np.ndarray], None]


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), vectorized.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    ) * t * np.exp(-a * a)
    return s * y


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class Bert:
    """BERT encoder over a dict of weights (names as in Hugging Face checkpoints)."""

    def __init__(self, model_dir: Path, weights: dict[str, np.ndarray]) -> None:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.weights = weights
        # float64 copies, made once (the word-embedding table is gathered per call instead).
        self._w64 = {k: np.asarray(v, np.float64) for k, v in weights.items() if k != WORD_EMBEDDINGS}
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.enable_padding()

    def tokenize(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer.encode_batch(sentences)
        return np.array([e.ids for e in enc]), np.array([e.attention_mask for e in enc])

    def embed(
        self,
        sentences: list[str],
        weights: Optional[dict[str, Any]] = None,
        capture: Optional[Capture] = None,
    ) -> np.ndarray:
        """Normalized sentence embeddings ``[len(sentences), hidden]`` (float64). ``capture`` is
        called with every linear layer's inputs (real tokens, padding left out)."""
        ids, mask = self.tokenize(sentences)
        over = weights or {}
        w = {**self.weights, **over}
        g = lambda k: np.asarray(over[k], np.float64) if k in over else self._w64[k]  # noqa: E731
        real = mask.astype(bool)

        def lin(x: np.ndarray, k: str) -> np.ndarray:
            if capture is not None:
                capture(k + ".weight", x[real] if x.ndim == 3 else x)
            return x @ g(k + ".weight").T + g(k + ".bias")

        ln = lambda x, k: _layer_norm(x, g(k + ".weight"), g(k + ".bias"), self.eps)  # noqa: E731
        n, t = ids.shape
        # Gather rows before widening: the word-embedding table is the largest tensor.
        words = np.asarray(w[WORD_EMBEDDINGS])[ids].astype(np.float64)
        x = words + g("embeddings.position_embeddings.weight")[:t]
        x = ln(x + g("embeddings.token_type_embeddings.weight")[0], "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            d = x.shape[-1] // self.heads
            split = lambda y: y.reshape(n, t, self.heads, d).transpose(0, 2, 1, 3)  # noqa: E731, B023
            q, k, v = (split(lin(x, p + f"attention.self.{s}")) for s in ("query", "key", "value"))
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(n, t, -1)
            x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = _gelu(lin(x, p + "intermediate.dense"))
            x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def collect_statistics(
    model: Bert,
    sentences: list[str],
    batch: int = 32,
    path: Optional[Union[str, os.PathLike[str]]] = None,
    kind: str = "hessian",
) -> dict[str, HessianObserver]:
    """Input statistics (``HessianObserver``) of every linear layer of the encoder, from the
    model run on ``sentences`` (padding left out); keyed by weight name. With ``path`` the
    statistics file is written too (``kind`` ``hessian`` or ``importance``; docs/format.md)."""
    stats: dict[str, HessianObserver] = {}

    def capture(name: str, x: np.ndarray) -> None:
        stats.setdefault(name, HessianObserver()).update(np.ascontiguousarray(x, dtype=np.float32))

    for i in range(0, len(sentences), batch):
        model.embed(sentences[i : i + batch], capture=capture)
    if path is not None:
        write_statistics(path, stats, kind)
    return stats


def embedding_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between matching rows of two normalized embedding matrices."""
    return float(np.mean(np.sum(a * b, axis=1)))
