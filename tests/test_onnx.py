"""ONNX models: MatMulNBits and blocked DequantizeLinear written as ONNX Runtime defines them,
checked against ONNX Runtime's own packer and by running the models in ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rxquant as rq  # noqa: E402
import rxquant.onnx as ro  # noqa: E402
from rxquant.formats import onnx_model  # noqa: E402
from rxquant.formats.onnx_model import decode_matmulnbits, matmulnbits_tensors  # noqa: E402
from rxquant.models.bert_onnx import export_bert  # noqa: E402
from tests.tiny_bert import tiny_bert  # noqa: E402

ASYM = rq.Scheme("int4", symmetric=False, group_size=32)
SYM = rq.Scheme("int4", symmetric=True, signed_scale=True, group_size=32)


def session(path: Path, exact: bool = True) -> ort.InferenceSession:
    """ONNX Runtime on the CPU. ``exact`` turns graph optimizations off: with them ONNX Runtime
    fuses DequantizeLinear + MatMul into a MatMulNBits that may quantize the activations, which
    is its choice of arithmetic, not the file's content."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    if exact:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------ packing


@pytest.mark.parametrize("symmetric", [False, True])
def test_matmulnbits_packing_equals_onnxruntime(symmetric: bool) -> None:
    """ONNX Runtime quantizes a weight; with its scales and zero points, rxquant's codes packed by
    rxquant equal its packed B (and zero points) bit for bit."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rng = np.random.default_rng(0)
    k, n, block = 256, 48, 32
    w = rng.standard_normal((k, n)).astype(np.float32)
    nb = k // block
    packed = np.zeros((n, nb, block // 2), np.uint8)
    scales = np.zeros((n, nb), np.float32)
    zp = np.zeros((n, (nb + 1) // 2), np.uint8)
    quantize_matmul_4bits(packed, w, scales, zp, block, n, k, symmetric)
    if symmetric:  # ONNX Runtime's scale is signed (llama.cpp's Q4_0 rule): the signed-scale grid
        scheme = rq.Scheme("int4", symmetric=True, signed_scale=True, group_size=block)
        qp = rq.QParams(scheme, scales, np.zeros((n, nb), np.int32), (n, k))
        q = rq.quantize(np.ascontiguousarray(w.T), scheme, qp)[0].astype(np.int16) + 8
        zps = None
    else:
        scheme = rq.Scheme("int4", symmetric=False, group_size=block)
        zps = onnx_model.unpack_bits(zp, 4, nb).astype(np.int32)
        q = rq.quantize(np.ascontiguousarray(w.T), scheme, rq.QParams(scheme, scales, zps, (n, k)))[0]
    b, _, zpp = matmulnbits_tensors(q.astype(np.uint8), scales, zps, 4, block)
    assert np.array_equal(b, packed)
    if not symmetric:
        assert zpp is not None and np.array_equal(zpp, zp)


# ------------------------------------------------------------------ small models


def matmul_model(path: Path, weights: dict[str, np.ndarray], extra: str = "") -> None:
    """x [2, 3, K] -> MatMul by each weight in turn (with an Add bias where ``extra`` says)."""
    k = next(iter(weights.values())).shape[0]
    inits = [numpy_helper.from_array(v, n) for n, v in weights.items()]
    nodes, cur = [], "x"
    for i, n in enumerate(weights):
        nodes.append(helper.make_node("MatMul", [cur, n], [f"y{i}"], name=f"mm{i}"))
        cur = f"y{i}"
    if extra == "two_activations":
        nodes.append(helper.make_node("MatMul", [cur, "x_t"], ["z"], name="act_mm"))
        inits.append(numpy_helper.from_array(np.array([0, 2, 1], np.int64), "perm"))
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["x_t"], perm=[0, 2, 1], name="tr"))
        cur = "z"
    out_dim = None
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, k])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, out_dim)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def float_twin(quantized: Path, dst: Path) -> None:
    """The quantized model with each quantized weight decoded back to float: MatMulNBits by
    ONNX Runtime's definition, DequantizeLinear by the onnx package's own INT4 reader."""
    m = onnx.load(str(quantized))
    inits = {t.name: t for t in m.graph.initializer}
    nodes = []
    for node in m.graph.node:
        if node.op_type == "MatMulNBits":
            w = decode_matmulnbits(node, inits)
            name = node.input[1] + "_float"
            m.graph.initializer.append(numpy_helper.from_array(w, name))
            nodes.append(helper.make_node("MatMul", [node.input[0], name], list(node.output)))
        elif node.op_type == "DequantizeLinear":
            x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            s = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            z = (
                numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
                if len(node.input) > 2
                else 0 * s
            )
            attrs = {a.name: a.i for a in node.attribute}
            if "block_size" in attrs:
                block = attrs["block_size"]
                w = (x - np.repeat(z, block, axis=0)) * np.repeat(s, block, axis=0)
            else:  # per axis 1: one scale and zero point per column
                assert attrs["axis"] == 1 and s.shape == (x.shape[1],)
                w = (x - z[None, :]) * s[None, :]
            m.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
        else:
            nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(dst))


#: One scale per output (a per-axis DequantizeLinear; qdq only).
CHANNEL = (
    rq.Scheme("int8", symmetric=True, signed_scale=True, axis=0),
    rq.Scheme("int8", symmetric=False, axis=0),
    rq.Scheme("int4", symmetric=False, axis=0),
)


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq"])
@pytest.mark.parametrize("scheme", [ASYM, SYM, rq.Scheme("int8", symmetric=False, group_size=32), *CHANNEL])
@pytest.mark.parametrize("rounding", ["nearest", "mse"])
def test_bert_shaped_model_runs_and_equals_its_decoded_weights(
    tmp_path: Path, fmt: str, scheme: rq.Scheme, rounding: str
) -> None:
    if scheme.group_size is None and fmt == "matmulnbits":
        pytest.skip("per-channel weights are written as DequantizeLinear only (refusal tested below)")
    tiny_bert(tmp_path / "m")
    src, dst, twin = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "t.onnx"
    export_bert(tmp_path / "m", src)
    res = ro.quantize_model(src, dst, scheme, rounding=rounding, format=fmt)
    assert len(res.quantized) == 12 and all(r.became for r in res.quantized)
    assert {r.reason for r in res.left} == {"MatMul input is not a constant initializer"}
    float_twin(dst, twin)
    rng = np.random.default_rng(1)
    feed = {"input_ids": rng.integers(0, 40, (3, 9)), "attention_mask": np.ones((3, 9), np.int64)}
    got = session(dst).run(None, feed)[0]
    want = session(twin).run(None, feed)[0]
    assert np.allclose(got, want, atol=2e-4, rtol=1e-4)
    ref = session(src).run(None, feed)[0]
    assert np.abs(got - ref).max() < 1.0  # quantized, not broken
    optimized = session(dst, exact=False).run(None, feed)[0]
    assert np.abs(optimized - got).max() < 0.1


def bert_and_feeds(tmp_path: Path, seed: int) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """The tiny BERT exported to ``tmp_path/m.onnx``, and 8 random batches of token ids for it."""
    tiny_bert(tmp_path / "m")
    src = tmp_path / "m.onnx"
    export_bert(tmp_path / "m", src)
    rng = np.random.default_rng(seed)
    return src, [
        {"input_ids": rng.integers(0, 40, (4, 7)), "attention_mask": np.ones((4, 7), np.int64)}
        for _ in range(8)
    ]


def test_per_channel_weights_with_statistics_and_refusals(tmp_path: Path) -> None:
    """Per output channel (qdq): GPTQ with Hessians beats nearest on the model's output; MatMulNBits
    and GatherBlockQuantized, which take blocks only, are refused before anything is written."""
    src, feeds = bert_and_feeds(tmp_path, seed=5)
    ro.collect_statistics(src, feeds, tmp_path / "s.safetensors")
    ref = session(src).run(None, feeds[0])[0]
    scheme = rq.Scheme("int4", symmetric=False, axis=0)
    errs = {}
    for r in ("nearest", "gptq"):
        dst = tmp_path / f"{r}.onnx"
        kw = {"statistics": tmp_path / "s.safetensors"} if r == "gptq" else {}
        ro.quantize_model(src, dst, scheme, rounding=r, format="qdq", **kw)
        errs[r] = float(np.mean((session(dst).run(None, feeds[0])[0] - ref) ** 2))
    assert errs["gptq"] < errs["nearest"], errs
    with pytest.raises(rq.RequestError, match="per-axis DequantizeLinear"):
        ro.quantize_model(src, tmp_path / "x.onnx", scheme)
    with pytest.raises(rq.RequestError, match="GatherBlockQuantized, which takes blocks"):
        ro.quantize_model(src, tmp_path / "x.onnx", scheme, format="qdq", op_types=("MatMul", "Gather"))
    assert not (tmp_path / "x.onnx").exists()


def test_float_zero_points_gptq_and_embeddings(tmp_path: Path) -> None:
    src, feeds = bert_and_feeds(tmp_path, seed=2)
    stats = ro.collect_statistics(src, feeds, tmp_path / "s.safetensors")
    assert len(stats) == 12
    ref = session(src).run(None, feeds[0])[0]
    errs = {}
    for name, kw in {
        "nearest": {},
        "float": {"rounding": "mse", "zero_points": "float"},
        "gptq": {"rounding": "gptq", "statistics": tmp_path / "s.safetensors"},
    }.items():
        dst = tmp_path / f"{name}.onnx"
        ro.quantize_model(src, dst, ASYM, **kw)
        errs[name] = float(np.mean((session(dst).run(None, feeds[0])[0] - ref) ** 2))
        twin = tmp_path / f"{name}_t.onnx"
        float_twin(dst, twin)
        assert np.allclose(
            session(dst).run(None, feeds[0])[0], session(twin).run(None, feeds[0])[0], atol=2e-4
        )
    assert errs["gptq"] < errs["nearest"]
    dst = tmp_path / "e.onnx"
    res = ro.quantize_model(src, dst, ASYM, op_types=("MatMul", "Gather"))
    assert any(r.became == "GatherBlockQuantized" for r in res.quantized)
    out = session(dst).run(None, feeds[0])[0]
    assert np.abs(out - ref).max() < 1.0
    with pytest.raises(ValueError, match="embedding table .* has no input statistics"):
        ro.quantize_model(
            src,
            dst,
            ASYM,
            op_types=("MatMul", "Gather"),
            rounding="gptq",
            statistics=tmp_path / "s.safetensors",
        )


def test_collect_statistics_is_the_inputs_hessian(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    matmul_model(tmp_path / "m.onnx", {"w": w})
    xs = [rng.standard_normal((2, 3, 64)).astype(np.float32) for _ in range(5)]
    stats = ro.collect_statistics(tmp_path / "m.onnx", [{"x": x} for x in xs])
    flat = np.concatenate([x.reshape(-1, 64) for x in xs]).astype(np.float64)
    assert np.allclose(stats["w"].hessian(), 2 * flat.T @ flat / len(flat), rtol=1e-5, atol=1e-6)


def test_statistics_of_other_weights_are_refused_even_with_fallback_nearest(tmp_path: Path) -> None:
    """A statistics file that names none of the model's weights is the wrong file, not a few
    weights to round to nearest."""
    from rxquant.formats.statistics import write_statistics

    rng = np.random.default_rng(4)
    matmul_model(tmp_path / "m.onnx", {"w": rng.standard_normal((64, 32)).astype(np.float32)})
    other = tmp_path / "other.safetensors"
    write_statistics(
        other, {"v": rq.HessianObserver().update(rng.standard_normal((8, 64)).astype(np.float32))}
    )
    with pytest.raises(
        ValueError, match=r"other.safetensors has statistics for none of the tensor to quantize"
    ):
        ro.quantize_model(
            tmp_path / "m.onnx",
            tmp_path / "q.onnx",
            ASYM,
            rounding="gptq",
            statistics=other,
            fallback_nearest=True,
        )
    assert not (tmp_path / "q.onnx").exists()


def test_edge_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    # The source as the output: refused, the model left as it was.
    matmul_model(tmp_path / "same.onnx", {"w": w})
    before = (tmp_path / "same.onnx").read_bytes()
    with pytest.raises(ValueError, match="would replace the file being read"):
        ro.quantize_model(tmp_path / "same.onnx", tmp_path / "same.onnx", ASYM)
    assert (tmp_path / "same.onnx").read_bytes() == before
    # MatMul on two activations: left, and said so.
    matmul_model(tmp_path / "a.onnx", {"w": w}, extra="two_activations")
    res = ro.quantize_model(tmp_path / "a.onnx", tmp_path / "aq.onnx", ASYM)
    assert [r.name for r in res.quantized] == ["w"]
    assert any("not a constant initializer" in str(r.reason) and r.nodes == ["act_mm"] for r in res.left)
    # The same weight in two MatMuls: quantized once, both use it.
    matmul_model(tmp_path / "s.onnx", {"w": w})
    m = onnx.load(str(tmp_path / "s.onnx"))
    m.graph.node.append(helper.make_node("MatMul", ["y0", "w"], ["y1"], name="mm_again"))
    m.graph.output[0].name = "y1"
    onnx.save(m, str(tmp_path / "s.onnx"))
    res = ro.quantize_model(tmp_path / "s.onnx", tmp_path / "sq.onnx", ASYM)
    assert len(res.quantized) == 1 and sorted(res.quantized[0].nodes) == ["mm0", "mm_again"]
    q = onnx.load(str(tmp_path / "sq.onnx"))
    assert [n.op_type for n in q.graph.node] == ["MatMulNBits", "MatMulNBits"]
    assert sum(1 for t in q.graph.initializer if t.name == "w_Q") == 1
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    assert np.isfinite(session(tmp_path / "sq.onnx").run(None, {"x": x})[0]).all()
    # A weight also read by another op: left (that op needs the float weight).
    m = onnx.load(str(tmp_path / "s.onnx"))
    m.graph.node.append(helper.make_node("Add", ["w", "w"], ["w2"], name="uses_w"))
    m.graph.output.append(helper.make_tensor_value_info("w2", TensorProto.FLOAT, None))
    onnx.save(m, str(tmp_path / "o.onnx"))
    with pytest.raises(ValueError, match="also read by Add 'uses_w'"):
        ro.quantize_model(tmp_path / "o.onnx", tmp_path / "oq.onnx", ASYM)
    # No MatMul at all.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "n.onnx"))
    with pytest.raises(ValueError, match="has no MatMul/Gemm with a constant float weight"):
        ro.quantize_model(tmp_path / "n.onnx", tmp_path / "nq.onnx", ASYM)
    # A corrupt file.
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not a protobuf" * 10)
    with pytest.raises(ValueError, match="bad.onnx is not an ONNX model"):
        ro.quantize_model(tmp_path / "bad.onnx", tmp_path / "bq.onnx", ASYM)
    assert not (tmp_path / "nq.onnx").exists() and not (tmp_path / "bq.onnx").exists()
    # A group size that does not divide a weight.
    with pytest.raises(ValueError, match="group size 48 does not divide the 64 inputs of weight w"):
        ro.quantize_model(
            tmp_path / "s.onnx", tmp_path / "x.onnx", rq.Scheme("int4", group_size=48), format="qdq"
        )


def test_gemm_with_bias_and_transposed_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    b = rng.standard_normal((16, 64)).astype(np.float32)  # [N, K] with transB
    c = rng.standard_normal(16).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "b", "c"], ["y"], transB=1, name="gemm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 16])],
        [numpy_helper.from_array(b, "b"), numpy_helper.from_array(c, "c")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "g.onnx"))
    x = rng.standard_normal((5, 64)).astype(np.float32)
    for fmt in ("matmulnbits", "qdq"):
        ro.quantize_model(tmp_path / "g.onnx", tmp_path / "gq.onnx", SYM, format=fmt)
        got = session(tmp_path / "gq.onnx").run(None, {"x": x})[0]
        float_twin(tmp_path / "gq.onnx", tmp_path / "gt.onnx")
        assert np.allclose(got, session(tmp_path / "gt.onnx").run(None, {"x": x})[0], atol=1e-4)
        assert np.abs(got - (x @ b.T + c)).max() < 0.5 * np.abs(x @ b.T).max()


def test_external_data_above_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models over 2 GB are written with their tensors in one external data file (the limit
    lowered here, so a small model takes that path)."""
    rng = np.random.default_rng(6)
    matmul_model(tmp_path / "m.onnx", {"w": rng.standard_normal((64, 64)).astype(np.float32)})
    monkeypatch.setattr(onnx_model, "TWO_GB", 1000)
    ro.quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", ASYM)
    assert (tmp_path / "q.onnx.data").is_file()
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    assert np.isfinite(session(tmp_path / "q.onnx").run(None, {"x": x})[0]).all()
    assert not list(tmp_path.glob(".rxquant-*"))


def test_load_model_equals_onnx_load(tmp_path: Path) -> None:
    """The memory-mapped parse returns what onnx.load does, external data loaded; an empty file
    and a text-format model take onnx.load's own path."""
    rng = np.random.default_rng(8)
    matmul_model(tmp_path / "m.onnx", {"w": rng.standard_normal((64, 32)).astype(np.float32)})
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert onnx_model.load_model(tmp_path / "m.onnx") == m
    w = numpy_helper.to_array(m.graph.initializer[0])
    onnx.save(m, str(tmp_path / "e.onnx"), save_as_external_data=True, location="e.data", size_threshold=0)
    assert (tmp_path / "e.data").is_file()
    loaded = onnx_model.load_model(tmp_path / "e.onnx")  # onnx.save moved m's tensor out
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), w)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.onnx is not an ONNX model: it has no graph"):
        onnx_model.load_model(tmp_path / "empty.onnx")
    onnx.save(loaded, str(tmp_path / "t.txtpb"))
    assert onnx_model.load_model(tmp_path / "t.txtpb") == loaded


def test_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    matmul_model(tmp_path / "m.onnx", {"w": rng.standard_normal((64, 32)).astype(np.float32)})

    def run(*argv: str) -> tuple[int, str, str]:
        r = subprocess.run([sys.executable, "-m", "rxquant", *argv], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = run(
        "quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--format", "qdq"
    )
    assert rc == 0, err
    assert "1 weights -> DequantizeLinear" in out
    rc, out, err = run(
        "quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "c.onnx"), "--granularity", "channel"
    )
    assert rc == 0 and "1 weights -> DequantizeLinear" in out and "int4 channel" in out, err
    for argv, msg in (
        (["--type", "q4_0"], "--type does not apply to ONNX models"),
        (["--allow-requantize"], "--allow-requantize does not apply to ONNX models"),
        (["--device", "opencl"], "ONNX quantization runs on the CPU; --device opencl does not apply"),
        (["--precision", "fp16"], "take --precision int4 or int8"),
        (["--granularity", "tensor"], "blockwise (--granularity group:N)"),
        (["--granularity", "channel", "--format", "matmulnbits"], "MatMulNBits takes blocks"),
        (["--rounding", "gptq"], "needs --statistics"),
        (["--zero-points", "float"], "float zero points are for asymmetric"),
        (["--granularity", "group:24"], "MatMulNBits needs a block size that is a power of 2"),
    ):
        rc, _, err = run("quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "x.onnx"), *argv)
        assert rc == 2 and msg in err, (argv, err)
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_tells_a_refused_request_from_a_bad_model(tmp_path: Path, capsys) -> None:
    """A request that cannot be done is a RequestError (exit 2); a model that is not one (here,
    one without a graph, whose message says "has no") is a plain ValueError (exit 1), whatever
    words either message uses."""
    from rxquant.apps.cli import main

    rng = np.random.default_rng(3)
    src = tmp_path / "m.onnx"
    matmul_model(src, {"w": rng.standard_normal((48, 32)).astype(np.float32)})
    with pytest.raises(rq.RequestError, match="group size 32 does not divide the 48 inputs"):
        ro.quantize_model(src, tmp_path / "x.onnx", ASYM)
    assert main(["quantize", str(src), "-o", str(tmp_path / "x.onnx"), "--granularity", "group:32"]) == 2
    assert "does not divide" in capsys.readouterr().err
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")  # parses as a ModelProto without a graph
    with pytest.raises(ValueError, match="has no graph") as e:
        ro.quantize_model(empty, tmp_path / "x.onnx", ASYM)
    assert not isinstance(e.value, rq.RequestError)
    assert main(["quantize", str(empty), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "has no graph" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_dequantizelinear_decoder_per_axis_per_tensor_and_bad_scales() -> None:
    """The decoder ``verify`` uses, per axis and per tensor, against ONNX Runtime running the same
    node; scales that do not match the data are refused with their shapes."""
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (6, 5)).astype(np.int8)
    cases = {
        "axis1": (
            {"axis": 1},
            rng.random(5).astype(np.float32) + 0.1,
            rng.integers(-3, 3, 5).astype(np.int8),
        ),
        "axis0": (
            {"axis": 0},
            rng.random(6).astype(np.float32) + 0.1,
            rng.integers(-3, 3, 6).astype(np.int8),
        ),
        "tensor": ({}, np.float32(0.25), np.int8(2)),
    }
    for name, (attrs, scale, zp) in cases.items():
        inits = {
            "x": numpy_helper.from_array(x, "x"),
            "s": numpy_helper.from_array(np.asarray(scale), "s"),
            "z": numpy_helper.from_array(np.asarray(zp), "z"),
        }
        node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], name=name, **attrs)
        got = onnx_model.decode_dequantizelinear(node, inits)
        graph = helper.make_graph(
            [node],
            "g",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            list(inits.values()),
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {}
        )[0]
        assert np.array_equal(got, want), name
    bad = {
        "x": numpy_helper.from_array(x, "x"),
        "s": numpy_helper.from_array(np.ones(4, np.float32), "s"),
    }
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq", axis=1)
    with pytest.raises(
        ValueError, match=r"DequantizeLinear 'dq': data \(6, 5\) along axis 1 needs 1-D scales"
    ):
        onnx_model.decode_dequantizelinear(node, bad)
    bad["s"] = numpy_helper.from_array(np.ones((2, 2), np.float32), "s")
    with pytest.raises(ValueError, match=r"scales \(2, 2\) are neither 1-D nor a scalar"):
        onnx_model.decode_dequantizelinear(node, bad)


def test_a_nonfinite_weight_is_named(tmp_path: Path) -> None:
    """The kernel's refusal ("input has 1 non-finite value(s) ... flat index 5") names the weight."""
    rng = np.random.default_rng(5)
    bad = rng.standard_normal((64, 32)).astype(np.float32)
    bad[0, 5] = np.inf
    src = tmp_path / "m.onnx"
    matmul_model(src, {"w_ok": rng.standard_normal((64, 64)).astype(np.float32), "w_bad": bad})
    with pytest.raises(ValueError, match="tensor 'w_bad': input has 1 non-finite"):
        ro.quantize_model(src, tmp_path / "q.onnx", ASYM)
    with pytest.raises(TypeError, match="fallback_nearest must be True or False"):
        ro.quantize_model(src, tmp_path / "q.onnx", ASYM, fallback_nearest="no")
    assert not (tmp_path / "q.onnx").exists()


def test_cli_inspect_lists_what_quantize_would_do_and_verify_refuses_onnx(tmp_path: Path, capsys) -> None:
    """`rxquant inspect model.onnx` read the model as a safetensors file ("the header length points
    beyond the end of the file"); `verify` did the same, and now says it does not read ONNX."""
    import json

    from rxquant.apps.cli import main

    rng = np.random.default_rng(8)
    src = tmp_path / "m.onnx"
    matmul_model(src, {"w1": rng.standard_normal((64, 64)).astype(np.float32)})
    assert main(["inspect", str(src), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["tensors"]}
    assert rows["w1"]["default"] == "quantize" and rows["w1"]["bytes"] == 64 * 64 * 4
    q = tmp_path / "q.onnx"
    ro.quantize_model(src, q, ASYM)
    assert main(["inspect", str(q)]) == 0
    out = capsys.readouterr().out
    assert "MatMulNBits x1" in out and "0 weights selected" in out
    assert ro.weights(onnx.load(str(src)))[0] == ["w1"]
    # A quantized model's blocks say what they are rather than "keep" with no reason.
    assert main(["inspect", str(q), "--json"]) == 0
    why = {r["name"]: r["reason"] for r in json.loads(capsys.readouterr().out)["tensors"]}
    assert why["w1_Q"] == "quantized already: codes of MatMulNBits"
    assert why["w1_scales"] == "quantized already: scales of MatMulNBits"
    assert why["w1_zp"] == "quantized already: zero points of MatMulNBits"


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq", "qdq-channel"])
def test_cli_verify_compares_each_quantized_weight(tmp_path: Path, capsys, fmt: str) -> None:
    """verify decodes each quantized weight (ONNX Runtime's definitions) and compares it with the
    original initializer; the numbers equal metrics on the test's own decode (float_twin)."""
    import json

    from rxquant.apps.cli import main

    rng = np.random.default_rng(9)
    ws = {
        "w1": rng.standard_normal((64, 64)).astype(np.float32),
        "w2": rng.standard_normal((64, 32)).astype(np.float32),
    }
    src, q, twin = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "t.onnx"
    matmul_model(src, ws)
    scheme, fmt = (CHANNEL[2], "qdq") if fmt == "qdq-channel" else (ASYM, fmt)
    ro.quantize_model(src, q, scheme, format=fmt)
    float_twin(q, twin)
    decoded = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(twin)).graph.initializer}
    assert main(["verify", str(src), str(q), "--json"]) == 0
    rows = {r["tensor"]: r for r in json.loads(capsys.readouterr().out)["tensors"]}
    assert set(rows) == set(ws)
    for name, w in ws.items():
        y = decoded[name + "_Q_float"] if fmt == "matmulnbits" else decoded[name + "_dequantized"]
        want = rq.metrics(w, y)
        assert rows[name]["sqnr_db"] == pytest.approx(want.sqnr_db, abs=1e-9) and want.sqnr_db > 12
    assert main(["verify", str(src), str(tmp_path / "m.safetensors")]) == 2
    assert main(["verify", str(src), str(src)]) == 2  # nothing quantized in it
    capsys.readouterr()
    assert main(["verify", str(q), str(src)]) == 2  # the two swapped: said so
    assert "the original" in (err := capsys.readouterr().err) and "were the two swapped?" in err
    assert main(["verify", str(q), str(q)]) == 2  # a quantized original
    assert "is quantized in the original" in capsys.readouterr().err
    # A square weight read transposed by Gemm (transB=1): decoded [K, N], stored [N, K].
    w = rng.standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "g.onnx"))
    ro.quantize_model(tmp_path / "g.onnx", tmp_path / "gq.onnx", scheme, format=fmt)
    assert main(["verify", str(tmp_path / "g.onnx"), str(tmp_path / "gq.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"][0]["sqnr_db"] > 12


def test_cli_verify_reads_onnx_runtimes_own_quantized_files(tmp_path: Path, capsys) -> None:
    """ONNX Runtime's quantizer names the codes `<weight>_Q4`, not rxquant's `<weight>_Q`: its files
    had nothing verify recognised. Its RTN is rxquant's nearest, so the SQNR agrees (to 1e-6: a
    scale may differ in its last bit, float32 arithmetic there, float64 here)."""
    import json

    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    from rxquant.apps.cli import main

    rng = np.random.default_rng(10)
    src, ours, theirs = tmp_path / "m.onnx", tmp_path / "ours.onnx", tmp_path / "ort.onnx"
    matmul_model(src, {"w1": rng.standard_normal((64, 96)).astype(np.float32)})
    ro.quantize_model(src, ours, ASYM)
    cfg = nbits.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False)
    q = nbits.MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(theirs))
    sqnr = {}
    for name, path in (("ours", ours), ("ort", theirs)):
        assert main(["verify", str(src), str(path), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["tensors"]
        assert [r["tensor"] for r in rows] == ["w1"]
        sqnr[name] = rows[0]["sqnr_db"]
    assert sqnr["ort"] == pytest.approx(sqnr["ours"], rel=1e-6) and sqnr["ours"] > 15


def test_cli_inspect_and_verify_refuse_bad_onnx_input_by_name(tmp_path: Path, capsys) -> None:
    """A corrupt model, a model that is not the quantized one's source, a weight it lacks."""
    from rxquant.apps.cli import main

    rng = np.random.default_rng(11)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf \xff\xfe")
    assert main(["inspect", str(bad)]) == 1
    assert "bad.onnx is not an ONNX model" in capsys.readouterr().err
    src, q, other, renamed = (tmp_path / f"{n}.onnx" for n in ("m", "q", "other", "renamed"))
    matmul_model(src, {"w1": rng.standard_normal((64, 32)).astype(np.float32)})
    ro.quantize_model(src, q, ASYM)
    matmul_model(other, {"w1": rng.standard_normal((96, 32)).astype(np.float32)})
    assert main(["verify", str(other), str(q)]) == 1
    assert "weight 'w1' has shape (96, 32)" in capsys.readouterr().err
    matmul_model(renamed, {"w2": rng.standard_normal((64, 32)).astype(np.float32)})
    assert main(["verify", str(renamed), str(q)]) == 1
    assert "'w1' is quantized in" in capsys.readouterr().err
    with pytest.raises(TypeError, match="onnx.ModelProto"):
        ro.weights(str(src))


@pytest.mark.parametrize("maker", ["rxquant sym", "rxquant asym", "ort sym", "ort asym"])
def test_gatherblockquantized_decodes_as_onnx_runtime_gathers(tmp_path: Path, capsys, maker: str) -> None:
    """An embedding table quantized to GatherBlockQuantized (rxquant's uint8 rows, with and without
    zero points; ONNX Runtime's own INT4/UINT4 tensors) decodes to what ONNX Runtime gathers for
    every row, and `verify` compares it (it used to leave such tables out without a word)."""
    import json

    from rxquant.apps.cli import main

    rng = np.random.default_rng(11)
    table = rng.standard_normal((50, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [50, 64])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src, q = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(src))
    if maker.startswith("rxquant"):
        ro.quantize_model(src, q, SYM if maker == "rxquant sym" else ASYM, op_types=("Gather",))
    else:
        nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
        cfg = nbits.DefaultWeightOnlyQuantConfig(
            block_size=32, is_symmetric=maker == "ort sym", op_types_to_quantize=("Gather",)
        )
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
        quantizer.process()
        quantizer.model.save_model_to_file(str(q))
    quantized = onnx.load(str(q))
    assert [n.op_type for n in quantized.graph.node] == ["GatherBlockQuantized"]
    gathered = session(q).run(None, {"ids": np.arange(50)})[0]
    op, decoded = onnx_model.decoded_weights(quantized)["table"]
    assert op == "GatherBlockQuantized"
    np.testing.assert_allclose(decoded, gathered, rtol=0, atol=1e-6)
    assert main(["verify", str(src), str(q), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["tensors"]
    assert [r["tensor"] for r in rows] == ["table"]
    want = rq.metrics(table, gathered).sqnr_db
    assert rows[0]["sqnr_db"] == pytest.approx(want, abs=1e-6) and want > 15
    # Scales that do not block the table: refused by name, not a numpy broadcasting error.
    scales = next(t for t in quantized.graph.initializer if t.name == "table_scales")
    scales.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scales)[:, :1].copy(), "table_scales"))
    onnx.save(quantized, str(tmp_path / "bad.onnx"))
    assert main(["verify", str(src), str(tmp_path / "bad.onnx")]) == 1
    assert "needs scales and zero points (50, 2), got (50, 1)" in capsys.readouterr().err
    # Attributes it cannot decode: refused naming the node and the value.
    (node,) = quantized.graph.node
    import re

    refusals = (("bits", 2, "2-bit codes are not decoded"), ("quantize_axis", 5, "quantize_axis 5"))
    for name, value, want in refusals:
        bad = onnx.ModelProto()
        bad.CopyFrom(quantized)
        (n,) = bad.graph.node
        del n.attribute[:]
        n.attribute.extend([a for a in node.attribute if a.name != name])
        n.attribute.append(helper.make_attribute(name, value))
        with pytest.raises(ValueError, match=re.escape(f"GatherBlockQuantized {n.name!r}: ") + f".*{want}"):
            onnx_model.decoded_weights(bad)
