"""A BERT-family model folder as an ONNX model (opset 17), built with ``onnx.helper`` from the
safetensors weights, without torch: the same graph a PyTorch export of ``BertModel`` computes
(embeddings, LayerNorm, self-attention, erf GELU), with every linear layer a ``MatMul`` by a
constant ``[in, out]`` initializer plus an ``Add``, as exporters write them. Inputs
``input_ids`` and ``attention_mask`` (int64 ``[batch, seq]``), output ``last_hidden_state``.
The tests check it against :mod:`rxquant.models.bert` (numpy) run by ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.atomic import PathLike
from ..formats.checkpoint import Checkpoint

OPSET = 17


def export_bert(model_dir: PathLike, path: Optional[PathLike] = None) -> Any:
    """The ONNX model (``onnx.ModelProto``) of the BERT folder ``model_dir``; written to ``path``
    when given. Linear weights are initializers named ``<Hugging Face name>.T`` (``[in, out]``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(model_dir)
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") != "bert":
        raise ValueError(f"{folder} is a {cfg.get('model_type')!r} model; export_bert builds BERT graphs")
    heads, layers = int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    hidden, eps = int(cfg["hidden_size"]), float(cfg.get("layer_norm_eps", 1e-12))
    d = hidden // heads
    ck = Checkpoint(folder / "model.safetensors")
    inits: list[Any] = []
    nodes: list[Any] = []
    count = [0]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def w(name: str) -> np.ndarray:
        return ck.read_f32(name)

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        count[0] += 1
        out = f"{op.lower()}_{count[0]}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{count[0]}", **attrs))
        return out

    def linear(x: str, name: str) -> str:
        b = const(f"{name}.weight.T", w(f"{name}.weight").T)
        return node("Add", [node("MatMul", [x, b]), const(f"{name}.bias", w(f"{name}.bias"))])

    def layer_norm(x: str, name: str) -> str:
        scale, bias = const(f"{name}.weight", w(f"{name}.weight")), const(f"{name}.bias", w(f"{name}.bias"))
        return node("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)

    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    x = node(
        "Gather",
        [const("embeddings.word_embeddings.weight", w("embeddings.word_embeddings.weight")), "input_ids"],
    )
    seq = node("Gather", [node("Shape", ["input_ids"]), const("one", i64(1))])
    # Shape -> Gather with a 1-D index gives the sequence length as a 1-D tensor: Slice's end.
    pos_table = const("embeddings.position_embeddings.weight", w("embeddings.position_embeddings.weight"))
    pos = node("Slice", [pos_table, const("zero_1d", i64(0)), seq])
    x = node(
        "Add", [node("Add", [x, pos]), const("token_type_0", w("embeddings.token_type_embeddings.weight")[0])]
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    mask = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("one_f", np.float32(1.0)), mask]), const("neg", np.float32(-1e9))])
    bias = node("Unsqueeze", [bias, const("axes_12", i64(1, 2))])
    heads_shape = const("heads_shape", i64(0, 0, heads, d))
    merge_shape = const("merge_shape", i64(0, 0, hidden))
    inv_sqrt = const("inv_sqrt_d", np.float32(1.0 / math.sqrt(d)))
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def split(y: str, perm: list[int]) -> str:
            return node("Transpose", [node("Reshape", [y, heads_shape])], perm=perm)

        q = split(linear(x, p + "attention.self.query"), [0, 2, 1, 3])
        k = split(linear(x, p + "attention.self.key"), [0, 2, 3, 1])
        v = split(linear(x, p + "attention.self.value"), [0, 2, 1, 3])
        a = node("Add", [node("Mul", [node("MatMul", [q, k]), inv_sqrt]), bias])
        ctx = node("MatMul", [node("Softmax", [a], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(
            node("Add", [x, linear(ctx, p + "attention.output.dense")]), p + "attention.output.LayerNorm"
        )
        h = linear(x, p + "intermediate.dense")
        erf = node("Erf", [node("Mul", [h, const(f"inv_sqrt2_{i}", np.float32(1 / math.sqrt(2)))])])
        h = node(
            "Mul",
            [
                node("Mul", [h, node("Add", [erf, const(f"one_{i}", np.float32(1.0))])]),
                const(f"half_{i}", np.float32(0.5)),
            ],
        )
        x = layer_norm(node("Add", [x, linear(h, p + "output.dense")]), p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rxquant")
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        from ..formats.onnx_model import save_model

        save_model(model, path)
    return model


def sentence_feeds(model_dir: PathLike, sentences: list[str], batch: int = 32) -> list[dict[str, np.ndarray]]:
    """``input_ids`` and ``attention_mask`` batches for ``sentences`` (the folder's tokenizer)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.enable_padding()
    feeds = []
    for i in range(0, len(sentences), batch):
        enc = tok.encode_batch(sentences[i : i + batch])
        ids = np.array([e.ids for e in enc], np.int64)
        feeds.append(
            {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
        )
    return feeds


def embed_onnx(model_path: PathLike, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Normalized mean-pooled sentence embeddings of an ONNX BERT run by ONNX Runtime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out = []
    for f in feeds:
        h = sess.run(["last_hidden_state"], f)[0].astype(np.float64)
        m = f["attention_mask"][..., None].astype(np.float64)
        pooled = (h * m).sum(1) / m.sum(1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)
