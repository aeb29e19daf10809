"""A tiny BERT-family model folder (config.json, tokenizer.json, tokenizer_config.json,
model.safetensors) for the converter and exporter tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def tiny_bert(folder: Path, model_type: str = "bert") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    h, ff, layers, vocab = 64, 128, 2, 40
    config = {
        "model_type": model_type,
        "hidden_size": h,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-12,
    }
    (folder / "config.json").write_text(json.dumps(config))
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab - 10)]
    words += [f"##s{i}" for i in range(5)]
    special = [{"id": i, "content": w, "special": True} for i, w in enumerate(words[:5])]

    def tok(name: str, i: int) -> dict[str, object]:
        return {"id": name, "ids": [i], "tokens": [name]}

    single = [
        {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
    ]
    tokenizer = {
        "model": {"type": "WordPiece", "vocab": {w: i for i, w in enumerate(words)}, "unk_token": "[UNK]"},
        "added_tokens": special,
        "normalizer": {"type": "BertNormalizer", "lowercase": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": single,
            "special_tokens": {"[CLS]": tok("[CLS]", 2), "[SEP]": tok("[SEP]", 3)},
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    names = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]"}
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, **names}))
    rng = np.random.default_rng(0)
    t = {
        "embeddings.word_embeddings.weight": rng.standard_normal((vocab, h)),
        "embeddings.position_embeddings.weight": rng.standard_normal((32, h)),
        "embeddings.token_type_embeddings.weight": rng.standard_normal((2, h)),
        "embeddings.LayerNorm.weight": np.ones(h),
        "embeddings.LayerNorm.bias": np.zeros(h),
        "embeddings.position_ids": np.arange(32)[None].astype(np.float32),
        "pooler.dense.weight": rng.standard_normal((h, h)),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n, shape in (
            ("attention.self.query", (h, h)),
            ("attention.self.key", (h, h)),
            ("attention.self.value", (h, h)),
            ("attention.output.dense", (h, h)),
            ("intermediate.dense", (ff, h)),
            ("output.dense", (h, ff)),
        ):
            t[p + n + ".weight"] = rng.standard_normal(shape) * 0.1
            t[p + n + ".bias"] = np.zeros(shape[0])
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + n + ".weight"] = np.ones(h)
            t[p + n + ".bias"] = np.zeros(h)
    save_file({k: np.asarray(v, np.float32) for k, v in t.items()}, str(folder / "model.safetensors"))
