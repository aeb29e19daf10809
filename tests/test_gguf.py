"""llama.cpp's block formats and GGUF files, checked against the gguf package (llama.cpp's own
reader, writer and block (de)quantizers) and numpy ports of ggml's reference quantizers."""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rxquant.gguf as rg  # noqa: E402
import rxquant.models.minilm  # noqa: E402
from rxquant.core.errors import RequestError  # noqa: E402
from rxquant.core.gptq import output_error  # noqa: E402
from rxquant.formats.gguf_file import GgufFile, type_for  # noqa: E402
from tests.gguf_files import llama_cpp_file, llama_quantize, tiny_bert_gguf, write_gguf  # noqa: E402
from tests.reference import ggml_iq4_reference, ggml_k_reference  # noqa: E402
from tests.tiny_bert import tiny_bert  # noqa: E402

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
SIMPLE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
IQ4_TYPES = ["IQ4_NL", "IQ4_XS"]


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float32).reshape(-1), np.asarray(b, np.float32).reshape(-1)
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((bits(a) == bits(b)) | both_nan))


def edge_rows(n: int) -> np.ndarray:
    """Rows of ``n`` values: random, all zero, one huge value, +-65504, tiny (subnormal float16
    scales), constant, alternating signs."""
    rng = np.random.default_rng(7)
    rows = [
        rng.standard_normal(n),
        np.zeros(n),
        np.where(np.arange(n) == 5, 1e5, rng.standard_normal(n) * 0.01),
        np.where(np.arange(n) % 2 == 0, 65504.0, -65504.0),
        rng.standard_normal(n) * 1e-6,
        rng.standard_normal(n) * 1e-9,
        np.full(n, 0.37),
        np.full(n, -2.0),
        (np.arange(n) % 3 - 1) * 3.0,
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the package's decoder on NaN/inf scales
@pytest.mark.parametrize("name", TYPES)
def test_decode_equals_gguf_on_random_blocks(name: str) -> None:
    """Random bytes as blocks: every scale a float16 can hold (subnormals, +-65504, inf, NaN)."""
    t = rg.BLOCK_TYPES[name]
    raw = np.random.default_rng(1).integers(0, 256, size=(64, 2 * t.type_size), dtype=np.uint8)
    ours = rg.dequantize_tensor(raw, name, (64, 2 * t.block_size))
    ref = gguf.quants.dequantize(raw, QT[name])
    assert same_floats(ours, ref)


def test_decode_into_out() -> None:
    """``out=`` is written in place and returned, with the same values as a new array; a buffer
    that cannot take the result is refused by name, and nothing is written into it."""
    x = edge_rows(256)
    q = rg.quantize_tensor(x, "q4_k")
    want = rg.dequantize_tensor(q, "q4_k", x.shape)
    out = np.full(x.shape, 7.0, np.float32)
    assert rg.dequantize_tensor(q, "q4_k", x.shape, out=out) is out
    assert same_floats(out, want)
    keep = np.full(x.shape, 7.0, np.float32)
    bad = [
        (TypeError, "float32", keep.astype(np.float64)),
        (ValueError, "shape", keep[:, :128]),
        (ValueError, "C-contiguous", np.full(x.shape[::-1], 7.0, np.float32).T),
    ]
    ro = keep.copy()
    ro.flags.writeable = False
    bad.append((ValueError, "read-only", ro))
    for err, match, o in bad:
        with pytest.raises(err, match=match):
            rg.dequantize_tensor(q, "q4_k", x.shape, out=o)
        assert np.all(o == 7.0)


@pytest.mark.parametrize("name", TYPES)
def test_decode_equals_gguf_on_edge_rows(name: str) -> None:
    n = 512
    x = edge_rows(n)
    for rounding in ("nearest", "mse"):
        q = rg.quantize_tensor(x, name, rounding=rounding)
        assert q.dtype == np.uint8 and q.size == rg.BLOCK_TYPES[name].nbytes(x.shape)
        ours = rg.dequantize_tensor(q, name, x.shape)
        ref = gguf.quants.dequantize(q.reshape(x.shape[0], -1), QT[name])
        assert same_floats(ours, ref)
        assert np.all(np.isfinite(ours))


@pytest.mark.parametrize("name", SIMPLE)
def test_nearest_equals_gguf_quantize(name: str) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([edge_rows(256), (rng.standard_normal((16, 256)) * rng.uniform(0.01, 10, (16, 1)))])
    x = x.astype(np.float32)
    ours = rg.quantize_tensor(x, name)
    ref = gguf.quants.quantize(x, QT[name])
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K"])
@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_blocks_go_into_the_gguf_writer_as_they_are(tmp_path: Path, name: str, rounding: str) -> None:
    """quantize_tensor's blocks keep the tensor's leading axes, a row's bytes last, as
    gguf.quants.quantize returns them: GGUFWriter.add_tensor takes them without a raw_shape and
    GGUFReader gives back the logical shape (a flat array was written as a 1-D tensor)."""
    x = np.random.default_rng(4).standard_normal((2, 3, 256)).astype(np.float32)
    kw = {"hessian": np.eye(256)} if rounding == "gptq" else {}
    q = rg.quantize_tensor(x, name, rounding=rounding, **kw)
    assert q.shape == (2, 3, rg.BLOCK_TYPES[name].nbytes((256,)))
    w = gguf.GGUFWriter(str(tmp_path / "b.gguf"), "llama")
    w.add_tensor("t", q, raw_dtype=QT[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (t,) = gguf.GGUFReader(str(tmp_path / "b.gguf")).tensors
    assert tuple(int(d) for d in reversed(t.shape)) == x.shape
    np.testing.assert_array_equal(t.data, q)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(SIMPLE), st.integers(0, 2**31 - 1), st.floats(1e-4, 1e3))
def test_nearest_equals_gguf_property(name: str, seed: int, scale: float) -> None:
    x = (np.random.default_rng(seed).standard_normal((3, 64)) * scale).astype(np.float32)
    assert np.array_equal(rg.quantize_tensor(x, name), gguf.quants.quantize(x, QT[name]))


@pytest.mark.parametrize("name", K_TYPES)
def test_k_nearest_error_at_most_ggml_reference(name: str) -> None:
    rng = np.random.default_rng(11)
    noise = rng.standard_normal((8, 256)) * rng.uniform(0.01, 5, (8, 1))
    x = np.concatenate([edge_rows(256)[[0, 2, 4, 8]], noise])
    x = x.astype(np.float32)
    ours = rg.dequantize_tensor(rg.quantize_tensor(x, name), name, x.shape).astype(np.float64)
    ref = ggml_k_reference(x, name)
    x64 = x.reshape(-1).astype(np.float64)
    e_ours = np.sum((ours.reshape(-1) - x64) ** 2)
    e_ref = np.sum((ref - x64) ** 2)
    assert e_ours <= e_ref * (1 + 1e-6)
    # The port runs in float32 with C's summation order, so it lands on the same values.
    assert np.array_equal(ours.reshape(-1).astype(np.float32), ref.astype(np.float32))


@pytest.mark.parametrize("name", IQ4_TYPES)
def test_iq4_nearest_is_llama_quantizes_own(name: str) -> None:
    """IQ4's `nearest` is llama-quantize's quantizer (quantize_iq4_nl / quantize_iq4_xs, which
    search 15 scales a block), equal value for value to a numpy port in float32 with C's sums; on
    edge rows (zeros, one huge value, +-65504, tiny, constant, float32 subnormals) and noise."""
    rng = np.random.default_rng(12)
    noise = rng.standard_normal((6, 256)) * rng.uniform(1e-3, 30, (6, 1))
    x = np.concatenate([edge_rows(256), scan_edge_rows(256), noise]).astype(np.float32)
    ours = rg.dequantize_tensor(rg.quantize_tensor(x, name), name, x.shape).reshape(-1)
    assert np.array_equal(ours, ggml_iq4_reference(x, name).astype(np.float32))


@pytest.mark.parametrize("name", TYPES)
def test_mse_and_importance_beat_nearest(name: str) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((32, 512)) * rng.uniform(0.1, 2, (32, 1))).astype(np.float32)
    imp = rng.uniform(0, 4, 512).astype(np.float32) ** 2

    def err(q: np.ndarray, w: np.ndarray) -> float:
        d = rg.dequantize_tensor(q, name, x.shape) - x
        return float(np.sum(d.astype(np.float64) ** 2 * w))

    ones = np.ones(512)
    e_near = err(rg.quantize_tensor(x, name), ones)
    e_mse = err(rg.quantize_tensor(x, name, rounding="mse"), ones)
    assert e_mse < e_near
    w_mse = err(rg.quantize_tensor(x, name, rounding="mse"), imp)
    w_imp = err(rg.quantize_tensor(x, name, rounding="importance", importance=imp), imp)
    assert w_imp < w_mse


@pytest.mark.parametrize("name", TYPES)
def test_gptq_identity_hessian_is_the_search_and_real_hessian_helps(name: str) -> None:
    rng = np.random.default_rng(9)
    w = rng.standard_normal((48, 512)).astype(np.float32)
    plain = rg.quantize_tensor(w, name, rounding="mse")
    assert np.array_equal(rg.quantize_tensor(w, name, rounding="gptq", hessian=np.eye(512), damp=0.0), plain)
    mix = np.eye(512) + 0.3 * rng.standard_normal((512, 512)) / np.sqrt(512)
    x = rng.standard_normal((2048, 512)) @ mix
    x[:, :8] *= 8
    h = 2 * x.T @ x / len(x)
    imp = np.diag(h) / 2

    def out_err(q: np.ndarray) -> float:
        return output_error(w, rg.dequantize_tensor(q, name, w.shape), h)

    e_imp = out_err(rg.quantize_tensor(w, name, rounding="importance", importance=imp))
    e_gptq = out_err(rg.quantize_tensor(w, name, rounding="gptq", hessian=h))
    e_near = out_err(rg.quantize_tensor(w, name))
    assert e_gptq < e_imp < e_near


def ggml_c_library() -> Optional[ctypes.CDLL]:
    """llama.cpp's own ggml (libggml-base, as `make interop` builds it, or under $LLAMA_CPP_BIN)."""
    lib = llama_cpp_file("libggml-base.so")
    return None if lib is None else ctypes.CDLL(str(lib))


def scan_edge_rows(n: int) -> np.ndarray:
    """Rows whose minimum, maximum or largest magnitude is zero or tied in sign, where a scan's
    first hit decides the stored sign bits; and float32 subnormals, whose inverse scale is
    infinite (C's float-to-int conversion then decides the codes)."""
    z = np.zeros(n, np.float32)
    rows = [z.copy() for _ in range(8)]
    rows[6][:] = np.where(np.arange(n) % 3 == 0, 1e-44, -3e-45)
    rows[7][:] = np.linspace(-1e-43, 2e-44, n)
    rows[0][1::2] = -0.0
    rows[1][::2] = -0.0
    rows[2][2:] = 1.0
    rows[2][1] = -0.0
    rows[3][2:] = -1.0
    rows[3][0] = -0.0
    rows[4][:] = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rows[5][:] = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)
    return np.stack(rows)


@pytest.mark.parametrize("name", TYPES)
def test_nearest_equals_ggml_c_reference(name: str) -> None:
    """Bit for bit llama.cpp's own C ``quantize_row_*_ref`` (K types included), called through
    ctypes where llama.cpp's library is built (make interop); skipped elsewhere."""
    lib = ggml_c_library()
    if lib is None:
        pytest.skip("llama.cpp's libggml-base is not built (make interop, or set LLAMA_CPP_BIN)")
    rng = np.random.default_rng(11)
    x = np.concatenate(
        [edge_rows(512), scan_edge_rows(512), rng.standard_normal((8, 512)) * rng.uniform(1e-3, 30, (8, 1))]
    ).astype(np.float32)
    ref = np.zeros(rg.BLOCK_TYPES[name].nbytes(x.shape), np.uint8)
    if name in IQ4_TYPES:
        # What llama-quantize runs without an importance matrix (its _ref function searches less).
        f = getattr(lib, f"quantize_{name.lower()}")
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        f.restype = ctypes.c_size_t
        f(x.ctypes.data, ref.ctypes.data, x.shape[0], x.shape[1], None)
    else:
        f = getattr(lib, f"quantize_row_{name.lower().replace('_k', '_K')}_ref")
        f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None
        f(x.ctypes.data, ref.ctypes.data, x.size)
    assert np.array_equal(rg.quantize_tensor(x, name).reshape(-1), ref)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused(bad: float) -> None:
    x = np.ones((2, 32), np.float32)
    x[1, 3] = bad
    for name in ("Q4_0", "Q8_0"):
        with pytest.raises(ValueError, match="non-finite|NaN|Inf"):
            rg.quantize_tensor(x, name)
    # Every K type, with each rounding: the value's flat index is named.
    k = np.ones((2, 256), np.float32)
    k[1, 3] = bad
    for name in K_TYPES + IQ4_TYPES:
        for rounding in ("nearest", "mse"):
            with pytest.raises(ValueError, match="non-finite value.*flat index 259"):
                rg.quantize_tensor(k, name, rounding=rounding)


@pytest.mark.parametrize("name", TYPES)
def test_values_beyond_the_format_are_refused_by_every_rounding(name: str) -> None:
    """A value larger than any block of the type holds (float16's largest scale times the largest
    code and sub-scale) is refused, naming the value and its block, by every rounding: searches
    and some reference quantizers stored it as 0 with finite parameters. A large value the type
    does hold is stored, not lost."""
    roundings = {
        "nearest": {},
        "mse": {},
        "importance": {"importance": np.ones(512, np.float32)},
        "gptq": {"hessian": np.eye(512)},
    }
    x = np.ones((1, 512), np.float32)
    x[0, 300] = 1e20
    refused = rf"{name} cannot hold values as large as 1e20 \(values (256|288)\.\.(320|512)\)"
    for rounding, kw in roundings.items():
        with pytest.raises(ValueError, match=refused):
            rg.quantize_tensor(x, name, rounding=rounding, **kw)
    x[0, 300] = 1e4
    for rounding, kw in roundings.items():
        back = rg.dequantize_tensor(rg.quantize_tensor(x, name, rounding=rounding, **kw), name, x.shape)
        assert back[0, 300] > 5e3, (rounding, back[0, 300])


def test_bad_requests_refused_with_names() -> None:
    with pytest.raises(ValueError, match="Q4_K.*256.*rows of 384"):
        rg.quantize_tensor(np.ones((2, 384), np.float32), "q4_k")
    with pytest.raises(ValueError, match="unknown block type"):
        rg.quantize_tensor(np.ones((2, 32), np.float32), "iq2_xxs")
    with pytest.raises(ValueError, match="needs importance"):
        rg.quantize_tensor(np.ones((2, 32), np.float32), "q4_0", rounding="importance")
    with pytest.raises(ValueError, match="needs hessian"):
        rg.quantize_tensor(np.ones((2, 32), np.float32), "q4_0", rounding="gptq")
    with pytest.raises(ValueError, match="cannot hold values as large as"):
        rg.quantize_tensor(np.full((1, 32), 1e20, np.float32), "q8_0")
    with pytest.raises(ValueError, match="do not hold a tensor"):
        rg.dequantize_tensor(np.zeros(17, np.uint8), "q4_0", (1, 32))
    # Shapes: an int is a 1-D shape; a float dimension was truncated (4.5 rows became 4).
    blocks = rg.quantize_tensor(np.ones((4, 64), np.float32), "q4_0")
    assert rg.dequantize_tensor(blocks, "q4_0", 256).shape == (256,)
    assert rg.dequantize_tensor(blocks, "q4_0", np.array([4, 64])).shape == (4, 64)
    with pytest.raises(TypeError, match="every dimension of shape .* must be an integer, got 4.0"):
        rg.dequantize_tensor(blocks, "q4_0", (4.0, 64))
    with pytest.raises(ValueError, match="negative"):
        rg.dequantize_tensor(blocks, "q4_0", (-4, -64))
    # Flags and numbers of the wrong kind were converted ("no" is truthy).
    h = np.eye(64)
    with pytest.raises(TypeError, match="act_order must be True or False"):
        rg.quantize_tensor(np.ones((4, 64), np.float32), "q4_0", rounding="gptq", hessian=h, act_order="no")
    with pytest.raises(TypeError, match="damp must be a number"):
        rg.quantize_tensor(np.ones((4, 64), np.float32), "q4_0", rounding="gptq", hessian=h, damp="0.1")


def test_llama_type_rule() -> None:
    assert type_for("blk.0.attn_q.weight", (384, 384), "Q4_K").type == "Q5_0"
    assert type_for("blk.0.ffn_down.weight", (384, 1536), "Q4_K").type == "Q4_K"
    assert type_for("blk.0.ffn_down.weight", (384, 1536), "Q6_K").reason is None
    assert type_for("blk.0.attn_q.weight", (384, 384), "Q6_K").type == "Q8_0"
    assert type_for("blk.0.attn_q.weight", (384, 100), "Q4_0").type == "F16"
    assert type_for("blk.0.attn_q.weight", (384, 384), "IQ4_XS").type == "IQ4_NL"
    assert type_for("blk.0.attn_q.weight", (384, 100), "IQ4_NL").type == "F16"
    assert type_for("blk.0.attn_q.bias", (384,), "Q4_0") is None
    assert type_for("blk.0.attn_output_norm.weight", (384, 4), "Q4_0") is None
    assert type_for("position_embd.weight", (512, 384), "Q4_0") is None
    assert type_for("token_types.weight", (2, 384), "Q4_0") is None
    assert type_for("token_embd.weight", (30522, 384), "Q4_0").type == "Q4_0"


# ------------------------------------------------------------------ files


def write_package_gguf(path: Path, alignment: int = 32) -> dict[str, np.ndarray]:
    """A small model written by the gguf package's own writer: key-value pairs of every kind."""
    rng = np.random.default_rng(0)

    def fields(w: gguf.GGUFWriter) -> None:
        if alignment != 32:
            w.add_custom_alignment(alignment)
        w.add_name("tiny")
        w.add_block_count(1)
        w.add_uint8("test.u8", 7)
        w.add_int16("test.i16", -3)
        w.add_float64("test.f64", 1.25)
        w.add_bool("test.flag", True)
        w.add_array("test.ints", [1, 2, 3])
        w.add_array("test.floats", [0.5, 1.5])
        w.add_token_list(["<s>", "</s>", "a", "b\u00e9"])
        w.add_file_type(0)

    tensors = {
        "token_embd.weight": rng.standard_normal((16, 256)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(256).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((64, 256)).astype(np.float32),
        "blk.0.attn_k.weight": rng.standard_normal((32, 96)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.standard_normal((8, 100)).astype(np.float16),
        "output.weight": rng.standard_normal((16, 256)).astype(np.float32),
    }
    write_gguf(path, tensors, fields=fields)
    return tensors


def fields_of(path: Path) -> dict[str, object]:
    r = gguf.GGUFReader(str(path))
    return {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}


@pytest.mark.parametrize("alignment", [32, 64])
def test_our_reader_agrees_with_gguf_reader(tmp_path: Path, alignment: int) -> None:
    p = tmp_path / "m.gguf"
    write_package_gguf(p, alignment)
    ours = GgufFile(p)
    theirs = gguf.GGUFReader(str(p))
    assert {k: f.value for k, f in ours.fields.items()} == fields_of(p)
    assert ours.alignment == alignment
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert mine.type == t.tensor_type.name
        assert mine.shape == tuple(int(s) for s in reversed(t.shape.tolist()))
        assert np.array_equal(mine.raw, np.asarray(t.data).reshape(-1).view(np.uint8))


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K", "Q8_0"])
def test_requantized_file_reads_back_with_package_reader(tmp_path: Path, name: str) -> None:
    src, dst = tmp_path / "m.gguf", tmp_path / "q.gguf"
    tensors = write_package_gguf(src, alignment=64)
    res = rg.quantize_file(src, dst, type=name)
    before, after = fields_of(src), fields_of(dst)
    changed = {"general.file_type", "general.quantization_version", "general.quantized_by"}
    assert {k: v for k, v in before.items() if k not in changed} == {
        k: v for k, v in after.items() if k not in changed
    }
    assert after["general.file_type"] == rg.FILE_TYPES[name]
    r = gguf.GGUFReader(str(dst))
    got = {t.name: t for t in r.tensors}
    assert [t.name for t in r.tensors] == list(tensors)
    assert got["blk.0.attn_norm.weight"].tensor_type == QT.F32  # 1-D stays F32
    assert np.array_equal(np.asarray(got["blk.0.attn_norm.weight"].data), tensors["blk.0.attn_norm.weight"])
    assert got["blk.0.attn_q.weight"].tensor_type == QT[name]
    want_k = type_for("blk.0.attn_k.weight", (32, 96), name)
    assert want_k is not None and got["blk.0.attn_k.weight"].tensor_type == QT[want_k.type]
    assert got["blk.0.ffn_down.weight"].tensor_type == QT.F16  # rows of 100: no block type fits
    for n, a in tensors.items():
        t = got[n]
        dec = gguf.quants.dequantize(t.data, t.tensor_type).reshape(a.shape)
        assert np.allclose(dec, a, atol=np.abs(a).max() * (0.2 if "Q4" in t.tensor_type.name else 0.1))
    reasons = {t.name: t.reason for t in res.fallbacks}
    assert "blk.0.ffn_down.weight" in reasons and "100" in str(reasons["blk.0.ffn_down.weight"])
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_requantize_refused_and_no_partial_file(tmp_path: Path) -> None:
    src, q, dst = tmp_path / "m.gguf", tmp_path / "q.gguf", tmp_path / "qq.gguf"
    write_package_gguf(src)
    rg.quantize_file(src, q, type="q8_0")
    with pytest.raises(ValueError, match="already quantized"):
        rg.quantize_file(q, dst, type="q4_0")
    assert not dst.exists() and not list(tmp_path.glob(".rxquant-*"))
    with pytest.raises(TypeError, match="allow_requantize must be True or False, got 'no'"):
        rg.quantize_file(q, dst, type="q4_0", allow_requantize="no")  # "no" was truthy: allowed
    rg.quantize_file(q, dst, type="q4_0", allow_requantize=True)
    assert GgufFile(dst).tensors["blk.0.attn_q.weight"].type == "Q4_0"


def test_a_file_with_nothing_to_quantize_is_refused(tmp_path: Path) -> None:
    """A vocabulary-only file (as llama.cpp's test vocabularies), or one whose tensors are all
    norms and 1-D: writing a copy and calling it quantized would hide the mistake."""
    vocab = write_gguf(tmp_path / "vocab.gguf", {}, fields=lambda w: w.add_tokenizer_model("llama"))
    with pytest.raises(RequestError, match=r"vocab.gguf holds no tensors \(a vocabulary-only file\?\)"):
        rg.quantize_file(vocab, tmp_path / "q.gguf", type="q4_0")
    norms = write_gguf(tmp_path / "norms.gguf", {"output_norm.weight": np.ones(64, np.float32)})
    with pytest.raises(RequestError, match="none of its 1 tensors is one llama.cpp's quantizer quantizes"):
        rg.quantize_file(norms, tmp_path / "q.gguf", budget="4bpw")
    assert not (tmp_path / "q.gguf").exists()


def test_corrupt_and_non_gguf_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(ValueError, match="bad.gguf"):
        GgufFile(bad)
    src = tmp_path / "m.gguf"
    write_package_gguf(src)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(ValueError, match="past the end"):
        GgufFile(cut)
    # An empty file named .gguf: mmap's "cannot mmap an empty file", and `inspect` took it for a
    # safetensors file ("not a valid safetensors file").
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.gguf is not a GGUF file rxquant reads: it is empty"):
        GgufFile(empty)
    rc, _, err = run("inspect", str(empty))
    assert rc == 1 and "it is empty" in err and "safetensors" not in err, err


@pytest.mark.parametrize("budget", ["5.2bpw", "6.0bpw"])
def test_budget_in_bits_per_weight(tmp_path: Path, budget: str) -> None:
    src, dst = tmp_path / "m.gguf", tmp_path / "b.gguf"
    write_package_gguf(src)
    res = rg.quantize_file(src, dst, budget=budget)
    assert res.bits_per_weight <= float(budget[:-3]) + 1e-9
    assert len({t.type for t in res.tensors if t.type in rg.BLOCK_TYPES}) >= 1


def test_budget_caps_the_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.gguf", tmp_path / "b.gguf"
    write_package_gguf(src)
    full = rg.quantize_file(src, tmp_path / "q8.gguf", type="q8_0").bytes
    limit = full - 2000
    res = rg.quantize_file(src, dst, budget=limit)
    assert res.bytes <= limit == limit and os.path.getsize(dst) == res.bytes


def test_the_smallest_file_is_a_budget_that_is_met(tmp_path: Path, monkeypatch) -> None:
    """A budget of exactly the smallest file is met (the planner's allowance of a whole
    alignment per tensor refused it), one byte less is refused with that size, before any tensor
    is rounded; a bare small number is read as bytes and the message says how to write bpw."""
    import re

    src = tmp_path / "m.gguf"
    write_package_gguf(src)
    with monkeypatch.context() as m:
        m.setattr(rg, "_error", lambda *a: pytest.fail("rounded a tensor for a budget no choice meets"))
        with pytest.raises(
            ValueError, match=r"bits a weight are written like 4\.5bpw\): the smallest file is"
        ) as e:
            rg.quantize_file(src, tmp_path / "x.gguf", budget="4.8")
        with pytest.raises(ValueError, match=r"budget 2bpw cannot be met: the smallest types take"):
            rg.quantize_file(src, tmp_path / "x.gguf", budget="2bpw")
    smallest = int(re.search(r"the smallest file is ([0-9,]+) bytes", str(e.value)).group(1).replace(",", ""))
    res = rg.quantize_file(src, tmp_path / "s.gguf", budget=smallest)
    assert res.bytes == os.path.getsize(tmp_path / "s.gguf") == smallest
    with pytest.raises(
        ValueError, match=f"budget {smallest - 1} cannot be met: the smallest file is {smallest:,}"
    ):
        rg.quantize_file(src, tmp_path / "x.gguf", budget=smallest - 1)
    assert not (tmp_path / "x.gguf").exists()


# ------------------------------------------------------------------ BERT conversion


def test_bert_folder_to_gguf(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "m")
    dst = tmp_path / "m.gguf"
    res = rg.quantize_file(tmp_path / "m", dst, type="q8_0")
    f = fields_of(dst)
    assert f["general.architecture"] == "bert"
    assert f["bert.block_count"] == 2 and f["bert.embedding_length"] == 64
    assert f["bert.attention.causal"] is False
    assert f["tokenizer.ggml.model"] == "bert"
    toks = f["tokenizer.ggml.tokens"]
    assert toks[:6] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581w0"] and toks[-1] == "s4"
    assert f["tokenizer.ggml.token_type"][:6] == [3, 3, 3, 3, 3, 1]
    assert f["tokenizer.ggml.bos_token_id"] == 2 and f["tokenizer.ggml.seperator_token_id"] == 3
    names = [t.name for t in gguf.GGUFReader(str(dst)).tensors]
    assert {"blk.1.ffn_down.weight", "token_embd.weight", "position_embd.weight"} <= set(names)
    assert not any("pooler" in n or "position_ids" in n for n in names)
    types = {t.name: t.type for t in res.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["position_embd.weight"] == "F32"


def test_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    """The source (or a file of the source folder) as the output: refused before anything is
    written, the file left as it was."""
    src = tmp_path / "m.gguf"
    write_package_gguf(src)
    tiny_bert(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    before = src.read_bytes(), weights.read_bytes()
    for a, b in ((src, src), (tmp_path / "m", weights), (weights, weights)):
        with pytest.raises(ValueError, match="would replace the file being read"):
            rg.quantize_file(a, b, type="q8_0")
    assert (src.read_bytes(), weights.read_bytes()) == before
    # Other files of the folder (an earlier output) are not inputs: replaced as asked.
    earlier = tmp_path / "m" / "q.gguf"
    earlier.write_bytes(b"old")
    rg.quantize_file(tmp_path / "m", earlier, type="q8_0")
    assert earlier.stat().st_size > 3


def test_other_architectures_refused(tmp_path: Path, capsys) -> None:
    """A conversion rxquant does not do is a refused request (exit 2), not a bad file."""
    from rxquant.apps.cli import main

    tiny_bert(tmp_path / "m", model_type="llama")
    with pytest.raises(rxquant.RequestError, match="'llama' model; rxquant converts bert"):
        rg.quantize_file(tmp_path / "m", tmp_path / "m.gguf", type="f32")
    assert main(["quantize", str(tmp_path / "m"), "-o", str(tmp_path / "m.gguf"), "--type", "f32"]) == 2
    assert "rxquant converts bert" in capsys.readouterr().err
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.skipif(rxquant.models.minilm.minilm_dir() is None, reason="MiniLM not installed")
def test_minilm_vocabulary_as_llama_converter_writes_it(tmp_path: Path) -> None:
    """Facts of the file llama.cpp's convert_hf_to_gguf.py writes for all-MiniLM-L6-v2."""
    dst = tmp_path / "m.gguf"
    rg.quantize_file(rxquant.models.minilm.minilm_dir(), dst, type="f32")
    f = fields_of(dst)
    toks, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(toks) == 30522 and toks[:2] == ["[PAD]", "\u2581[unused0]"] and types[:2] == [3, 1]
    assert f["tokenizer.ggml.pre"] == "jina-v2-en" and f["bert.pooling_type"] == 1
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (101, 102)
    assert f["tokenizer.ggml.add_bos_token"] is True and f["tokenizer.ggml.add_eos_token"] is True


# ------------------------------------------------------------------ command line


def run(*argv: str) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-m", "rxquant", *argv], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def test_cli_gguf_output_that_is_the_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    write_package_gguf(src)
    before = src.read_bytes()
    for out in (src, tmp_path / "." / "m.gguf"):
        rc, _, err = run("quantize", str(src), "-o", str(out), "--type", "q4_0")
        assert rc == 2 and "would replace the file being read" in err and err.count("\n") == 1, err
    assert src.read_bytes() == before


@pytest.mark.parametrize(
    "how", [["--type", "q4_0"], ["--type", "q6_k", "--rounding", "mse"], ["--budget", "5bpw"]]
)
def test_cli_gguf_nonfinite_weight_is_named(tmp_path: Path, how: list[str]) -> None:
    """The kernels' "input has 1 non-finite value(s) ... flat index 773" names the tensor."""
    rng = np.random.default_rng(7)
    bad = rng.standard_normal((64, 256)).astype(np.float32)
    bad[3, 5] = np.nan
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tensor("blk.0.ffn_up.weight", rng.standard_normal((64, 256)).astype(np.float32))
    w.add_tensor("blk.0.ffn_down.weight", bad)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rc, _, err = run("quantize", str(tmp_path / "m.gguf"), "-o", str(tmp_path / "q.gguf"), *how)
    assert rc == 1 and err.count("\n") == 1, err
    assert "tensor 'blk.0.ffn_down.weight': input has 1 non-finite value(s)" in err and "773" in err
    assert not (tmp_path / "q.gguf").exists()


def test_cli_gguf_verify_names_a_missing_quantized_file(tmp_path: Path) -> None:
    """A GGUF original with a quantized file that is not there said "m.gguf is not a valid
    safetensors file" (the original, and the wrong format)."""
    write_package_gguf(tmp_path / "m.gguf")
    rc, _, err = run("verify", str(tmp_path / "m.gguf"), str(tmp_path / "q.gguf"))
    assert rc == 1 and "q.gguf" in err and "m.gguf" not in err, err


def test_a_missing_source_is_named(tmp_path: Path) -> None:
    """It was taken for a model folder's weights: "<its folder> has no config.json"."""
    with pytest.raises(ValueError, match="missing.gguf does not exist"):
        rg.quantize_file(tmp_path / "missing.gguf", tmp_path / "q.gguf", type="q8_0")
    rc, _, err = run(
        "quantize", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "q.gguf"), "--type", "q8_0"
    )
    assert rc == 1 and "missing.safetensors does not exist" in err, err


def test_cli_gguf_round_trip(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.gguf", tmp_path / "q.gguf"
    write_package_gguf(src)
    rc, out, err = run("quantize", str(src), "-o", str(dst), "--type", "q4_k", "--rounding", "mse")
    assert rc == 0, err
    assert "fallback: Q5_0 for 1 tensor(s) (rows of 96" in out and "F16 for 1 tensor(s)" in out
    rc, out, _ = run("inspect", str(dst))
    assert rc == 0 and "Q4_K" in out and "GGUF llama" in out
    rc, out, _ = run("verify", str(src), str(dst))
    assert rc == 0 and "total (energy-weighted) SQNR" in out
    for argv, msg in (
        (["--type", "q4_k", "--precision", "int4"], "--precision applies to rxquant's safetensors output"),
        (["--type", "q4_0", "--device", "opencl"], "GGUF quantization runs on the CPU; --device opencl"),
        (["--type", "q3_0"], "unknown --type 'q3_0'"),
        (["--type", "IQ3_S"], "(a llama.cpp type or mix rxquant does not write)"),
        (["--type", "Q2_K_S"], "q2_k_s needs input statistics"),
        ([], "needs --type"),
        (["--type", "q4_0", "--budget", "4bpw"], "or --budget 4bpw (types chosen per tensor), not both"),
        (["--type", "q4_0", "--rounding", "gptq"], "needs --statistics"),
        (["--type", "q4_0", "--device", "opencl"], "runs on the CPU"),
    ):
        rc, _, err = run("quantize", str(src), "-o", str(tmp_path / "x.gguf"), *argv)
        assert rc == 2 and msg in err, err
    assert not (tmp_path / "x.gguf").exists()
    rc, _, err = run("quantize", str(src), "-o", str(tmp_path / "x.safetensors"), "--type", "q4_0")
    assert rc == 2 and "the output must be a .gguf file" in err


def test_own_type_table_and_constants_agree_with_the_gguf_package() -> None:
    """rxquant reads and writes its own types without importing the gguf package (start-up time);
    its ids, block sizes and constants must be the package's."""
    import gguf

    from rxquant.formats import gguf_file as gf

    for name, (type_id, block, size) in gf._OWN_TYPES.items():
        assert int(QT[name]) == type_id, name
        assert gguf.GGML_QUANT_SIZES[QT[name]] == (block, size), name
        assert gf._type_name(type_id) == name
    assert (gf.UINT32, gf.STRING) == (int(gguf.GGUFValueType.UINT32), int(gguf.GGUFValueType.STRING))
    assert gf.GGML_QUANT_VERSION == gguf.GGML_QUANT_VERSION


def test_cli_import_leaves_the_gguf_package_unloaded() -> None:
    code = "import sys, rxquant.apps.cli; print('gguf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def write_float_gguf(path: Path) -> dict[str, np.ndarray]:
    """Weights stored as F32, F16 and BF16 (rows of 256: every block type fits), and a norm."""
    rng = np.random.default_rng(5)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    f32 = rng.standard_normal((8, 512)).astype(np.float32)
    f16 = (rng.standard_normal((4, 256)) * 3).astype(np.float16)
    bf16 = rng.standard_normal((4, 256)).astype(np.float32)
    w.add_tensor("token_embd.weight", f32)
    w.add_tensor("blk.0.attn_q.weight", f16)
    bits = (bf16.view(np.uint32) >> 16).astype(np.uint16)  # truncated: exactly representable
    w.add_tensor("blk.0.attn_k.weight", bits, raw_dtype=QT.BF16)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(256, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"token_embd.weight": f32, "blk.0.attn_q.weight": f16.astype(np.float32),
            "blk.0.attn_k.weight": (bits.astype(np.uint32) << 16).view(np.float32)}  # fmt: skip


@pytest.mark.parametrize("name", ["Q4_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K"])
def test_quantizing_from_the_memory_map_equals_the_array_path(tmp_path: Path, name: str) -> None:
    """A GGUF file is requantized straight from its memory map (F32, F16 and BF16 widened in
    the core, no numpy): the blocks equal those of the decoded array."""
    from rxquant.core import native

    src = tmp_path / "m.gguf"
    values = write_float_gguf(src)
    f = GgufFile(src)
    for tname, x in values.items():
        t = f.tensors[tname]
        for rounding in ("nearest", "mse"):
            got = native.ggml_quantize_file(t.path, t.offset, x.size, t.type, name, x.shape[-1], rounding)
            assert isinstance(got, bytes)
            want = rg.quantize_tensor(x, name, rounding=rounding)
            assert np.array_equal(np.frombuffer(got, np.uint8), want.reshape(-1))


def test_quantizing_from_a_file_refuses_with_names(tmp_path: Path) -> None:
    from rxquant.core import native

    src = tmp_path / "m.gguf"
    write_float_gguf(src)
    t = GgufFile(src).tensors["token_embd.weight"]
    size = os.path.getsize(src)
    for args, exc, msg in (
        ((str(src), size - 64, 4096, "F32", "Q4_0", 512, "nearest"), ValueError, "run past the end"),
        ((str(src), t.offset, 4096, "Q4_0", "Q4_0", 512, "nearest"), ValueError, "F32, F16 or BF16"),
        ((str(src), t.offset, 4096, "F32", "Q4_K", 96, "nearest"), ValueError, "whole blocks"),
        ((str(src), t.offset, 4096, "F32", "Q4_0", 512, "importance"), ValueError, "nearest or mse"),
        ((str(tmp_path / "none.gguf"), 0, 32, "F32", "Q4_0", 32, "nearest"), OSError, "none.gguf"),
    ):
        with pytest.raises(exc, match=msg):
            native.ggml_quantize_file(*args)
    x = np.zeros((2, 32), np.float32)
    x[1, 5] = np.nan
    (tmp_path / "nan.bin").write_bytes(x.tobytes())
    with pytest.raises(ValueError, match="non-finite|NaN"):
        native.ggml_quantize_file(str(tmp_path / "nan.bin"), 0, 64, "F32", "Q8_0", 32, "nearest")


def test_requantizing_a_gguf_file_imports_no_numpy(tmp_path: Path) -> None:
    """The command line requantizes a GGUF file without numpy (its import alone is most of
    llama-quantize's whole run on a small model); the file is the one the Python API writes."""
    src, dst, ref = tmp_path / "m.gguf", tmp_path / "q.gguf", tmp_path / "r.gguf"
    write_float_gguf(src)
    code = (
        "import sys; from rxquant.apps.cli import main; "
        f"rc = main(['quantize', {str(src)!r}, '-o', {str(dst)!r}, '--type', 'q4_k', '-q']); "
        "print(rc, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout + out.stderr
    rg.quantize_file(src, ref, type="q4_k")
    assert dst.read_bytes() == ref.read_bytes()


def test_writer_reports_a_failed_background_write_and_leaves_nothing(tmp_path: Path) -> None:
    """Large tensors are written by a thread while the next is quantized: its failure is raised
    in the caller, and the file is not left behind (nor its temp file)."""
    from rxquant.formats.gguf_file import GgufWriter, TensorOut

    class Failing:
        def __init__(self, f: object) -> None:
            self.f = f

        def write(self, b: object) -> int:
            raise OSError("No space left on device")

    n = (1 << 20) // 4 + 64
    path = tmp_path / "out.gguf"
    with pytest.raises(OSError, match="No space left"):
        with GgufWriter(path, [], [TensorOut("a", (n,), "F32"), TensorOut("b", (8,), "F32")]) as w:
            w._f = Failing(w._f)
            w.write(np.zeros(n, np.float32))
            w.write(np.zeros(8, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_f16_output_of_a_value_beyond_its_range_is_refused_by_name(tmp_path: Path) -> None:
    """`--type f16` of a tensor with a value past ±65504 wrote inf (numpy's cast, a warning at
    most), which llama.cpp multiplies into every output; a budget's planner never picks F16 there."""
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    w[1, 2] = -1e5
    src, dst = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": w}), tmp_path / "h.gguf"
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight has 1 value\(s\) beyond float16's ±65504 "
                       r"\(the first, -100000, at flat index 66\)"):  # fmt: skip
        rg.quantize_file(src, dst, type="f16")
    assert not dst.exists()
    res = rg.quantize_file(src, dst, budget="40bpw", candidates=["q8_0", "f16"])
    assert [t.type for t in res.tensors] == ["Q8_0"]
    assert rg.quantize_file(src, tmp_path / "f.gguf", type="f32").tensors[0].type == "F32"
    w[1, 2] = 3.4e38  # finite in float32, past bfloat16's largest (3.3895e38)
    src = write_gguf(tmp_path / "m2.gguf", {"blk.0.ffn_up.weight": w})
    want = (
        r"1 value\(s\) beyond bfloat16's range \(the first, 3\.4e\+38, at flat index 66\): BF16 would store"
    )
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight has " + want):
        rg.quantize_file(src, tmp_path / "b.gguf", type="bf16")
    assert not (tmp_path / "b.gguf").exists()


def test_a_budget_skips_the_types_whose_scales_cannot_hold_a_tensor(tmp_path: Path) -> None:
    """A value of 1e7 overflows Q4_0's and Q8_0's float16 scale; the planner failed the whole
    budget on the first such candidate. It now chooses among the types that hold it (the K
    types' two-level scales do), and refuses by name only when none does."""
    w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    w[0, 5] = 1e7
    src = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": w})
    res = rg.quantize_file(src, tmp_path / "b.gguf", budget="5bpw")
    assert [t.type for t in res.tensors] == ["Q4_K"]
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight.*Q4_0 cannot hold values as large as 1e7"):
        rg.quantize_file(src, tmp_path / "c.gguf", budget="5bpw", candidates=["q4_0", "q8_0"])


@pytest.mark.parametrize("want", ["f16", "bf16"])
def test_float_outputs_convert_the_tensors_llama_quantize_converts(tmp_path: Path, want: str) -> None:
    """`--type f16` converted every 2-D tensor, BERT's position and token-type tables too, which
    llama.cpp's CPU backend only adds in F32 (llama-embedding aborted: "binary_op: unsupported
    types"); llama-quantize keeps them F32. BF16 is the gguf package's conversion bit for bit."""
    tiny_bert(tmp_path / "m")
    dst = tmp_path / "h.gguf"
    res = rg.quantize_file(tmp_path / "m", dst, type=want)
    types = {t.name: t.type for t in res.tensors}
    assert types["position_embd.weight"] == types["token_types.weight"] == "F32"
    assert types["blk.0.attn_output_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == want.upper()
    f32 = rg.quantize_file(tmp_path / "m", tmp_path / "f.gguf", type="f32")
    src, got = GgufFile(f32.path), GgufFile(dst)
    for name, t in got.tensors.items():
        x = src.tensors[name].read_f32()
        if t.type == "BF16":
            assert np.array_equal(t.raw, gguf.quants.quantize(x, QT.BF16).reshape(-1)), name
        elif t.type == "F16":
            assert np.array_equal(t.raw.view(np.float16).reshape(x.shape), x.astype(np.float16)), name


def test_float_outputs_equal_llama_quantizes(tmp_path: Path) -> None:
    """Every tensor of `--type f16` and `--type bf16` (type and bytes) equals llama-quantize's
    F16 and BF16 output of the same file, where llama.cpp's tools are built (make interop)."""
    exe = llama_quantize()
    src = tiny_bert_gguf(tmp_path / "m")
    for want in ("F16", "BF16"):
        ours, theirs = tmp_path / f"rx-{want}.gguf", tmp_path / f"ll-{want}.gguf"
        rg.quantize_file(src, ours, type=want)
        subprocess.run([str(exe), str(src), str(theirs), want, "1"], check=True, capture_output=True)
        a, b = GgufFile(ours).tensors, GgufFile(theirs).tensors
        assert {n: (t.type, bytes(t.raw)) for n, t in a.items()} == {
            n: (t.type, bytes(t.raw)) for n, t in b.items()
        }


def test_refusals_of_the_request_are_request_errors_and_keep_their_kind_when_named(tmp_path: Path) -> None:
    """quantize_file's refusals of what was asked are RequestErrors (ValueErrors the command line
    exits 2 on); ``naming`` puts the tensor in front without turning one into a plain ValueError."""
    import rxquant as rq
    from rxquant.core.errors import naming

    src = tmp_path / "m.gguf"
    write_gguf(src, {"blk.0.ffn_down.weight": np.ones((4, 64), np.float32)})
    for kwargs, msg in (
        ({"type": "q9_0"}, "unknown type 'q9_0'"),
        ({"type": "q4_0", "budget": "4bpw"}, "give either type"),
        ({"type": "q4_0", "rounding": "gptq"}, "rounding gptq needs statistics"),
    ):
        with pytest.raises(rq.RequestError, match=msg):
            rg.quantize_file(src, tmp_path / "q.gguf", **kwargs)
    assert not (tmp_path / "q.gguf").exists()
    with pytest.raises(rq.RequestError, match="tensor 'w': budget"):
        with naming("w"):
            raise rq.RequestError("budget 1 cannot be met")
    with pytest.raises(ValueError, match="tensor 'w': bad") as e:
        with naming("w"):
            raise ValueError("bad")
    assert type(e.value) is ValueError
