"""llama-quantize's type mixes (`--type q4_k_m` and kin): the rules on small models, and the
same types (and, rounded to nearest, the same bytes) as llama-quantize where it is built."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gguf")

import rxquant.gguf as rg  # noqa: E402
from rxquant.formats.gguf_file import GgufFile  # noqa: E402
from rxquant.formats.gguf_mixes import MIXES, ModelInfo, mix_types  # noqa: E402
from tests.gguf_files import decoder_gguf, llama_quantize, tiny_bert_gguf, write_gguf  # noqa: E402
from tests.test_gguf import run  # noqa: E402


def ours(path: Path, mix: str) -> dict[str, str]:
    """Each tensor's type under ``mix`` (its own where it is not quantized)."""
    f = GgufFile(path)
    chosen = mix_types([(t.name, t.shape) for t in f.tensors.values()], mix, ModelInfo.of(f.arch, f.value))
    return {n: (c.type if c else f.tensors[n].type) for n, c in chosen.items()}


def by_layer(types: dict[str, str], part: str) -> list[str]:
    """The types of ``blk.N.{part}.weight`` in layer order."""
    found = {
        int(m.group(1)): t for n, t in types.items() if (m := re.fullmatch(rf"blk\.(\d+)\.{part}\.weight", n))
    }
    return [found[i] for i in sorted(found)]


@pytest.fixture
def llama8(tmp_path: Path) -> Path:
    return decoder_gguf(tmp_path / "m.gguf", layers=8)


def test_mixes_follow_llama_cpps_rules(llama8: Path, tmp_path: Path) -> None:
    """The rules of llama.cpp's `llama_tensor_get_type_impl`, case by case, on an 8-layer model:
    llama.cpp's `use_more_bits` picks layers 0, 3, 6 and 7 (the first and last eighth, and every
    third between)."""
    more = ["Q6_K" if i in (0, 3, 6, 7) else "Q4_K" for i in range(8)]
    m = ours(llama8, "Q4_K_M")
    assert m["output.weight"] == "Q6_K" and m["token_embd.weight"] == "Q4_K"
    assert by_layer(m, "attn_v") == more and by_layer(m, "ffn_down") == more
    assert {*by_layer(m, "attn_q"), *by_layer(m, "ffn_up"), *by_layer(m, "attn_output")} == {"Q4_K"}
    assert m["output_norm.weight"] == "F16"  # not quantized: its own type
    assert by_layer(ours(llama8, "Q5_K_M"), "ffn_down") == [t.replace("Q4_K", "Q5_K") for t in more]
    s = ours(llama8, "Q4_K_S")
    assert by_layer(s, "attn_v") == ["Q5_K"] * 4 + ["Q4_K"] * 4
    assert by_layer(s, "ffn_down") == ["Q5_K"] + ["Q4_K"] * 7  # the first eighth
    assert set(by_layer(ours(llama8, "Q5_K_S"), "ffn_down")) == {"Q5_K"}
    q3 = ours(llama8, "Q3_K_M")
    assert by_layer(q3, "attn_v") == ["Q5_K"] * 2 + ["Q4_K"] * 6
    assert set(by_layer(q3, "ffn_down")) == set(by_layer(q3, "attn_output")) == {"Q4_K"}
    assert set(by_layer(q3, "attn_q")) == {"Q3_K"} and q3["output.weight"] == "Q6_K"
    q3 = ours(llama8, "Q3_K_L")
    assert {*by_layer(q3, "attn_v"), *by_layer(q3, "ffn_down"), *by_layer(q3, "attn_output")} == {"Q5_K"}
    assert set(by_layer(ours(llama8, "Q3_K_S"), "attn_v")) == {"Q3_K"}
    # Falcon: Q3_K_M's ffn_down Q5_K in the first sixteenth, Q4_K where more bits, else Q3_K.
    falcon = ours(decoder_gguf(tmp_path / "falcon.gguf", arch="falcon", layers=16, fused_qkv=True), "Q3_K_M")
    assert by_layer(falcon, "ffn_down") == ["Q5_K", "Q4_K"] + ["Q3_K", "Q3_K", "Q4_K"] * 4 + ["Q4_K", "Q4_K"]
    assert by_layer(falcon, "attn_qkv") == ["Q5_K"] * 2 + ["Q4_K"] * 14
    # No output tensor: the token embeddings serve as it (tied), and get its type.
    tied = ours(decoder_gguf(tmp_path / "tied.gguf", layers=8, output=False), "Q4_K_M")
    assert tied["token_embd.weight"] == "Q6_K"
    # A 70B llama (80 layers, grouped-query attention): attn_v at least Q5_K; not with as many
    # key-value heads as heads (llama.cpp calls that 65B).
    big = ours(decoder_gguf(tmp_path / "70b.gguf", layers=80), "Q4_K_M")
    assert set(by_layer(big, "attn_v")) == {"Q5_K", "Q6_K"}
    big = ours(decoder_gguf(tmp_path / "65b.gguf", layers=80, kv_heads=8), "Q4_K_M")
    assert set(by_layer(big, "attn_v")) == {"Q4_K", "Q6_K"}
    # Eight experts: attn_v and attn_k Q8_0, attn_output Q5_K; ffn_down by the layer in its name.
    moe = ours(decoder_gguf(tmp_path / "moe.gguf", layers=8, experts=8), "Q4_K_M")
    assert set(by_layer(moe, "attn_v")) == set(by_layer(moe, "attn_k")) == {"Q8_0"}
    assert set(by_layer(moe, "attn_output")) == {"Q5_K"}
    assert by_layer(moe, "ffn_down_exps") == more
    # Rows that are not whole super-blocks fall back as for one type: Q4_K -> Q5_0, Q6_K -> Q8_0;
    # the output tensor goes to Q8_0 directly.
    narrow = ours(decoder_gguf(tmp_path / "narrow.gguf", layers=8, cols=96), "Q4_K_M")
    assert by_layer(narrow, "attn_v") == [t.replace("Q6_K", "Q8_0").replace("Q4_K", "Q5_0") for t in more]
    assert narrow["output.weight"] == "Q8_0"


def test_q2_k_s_follows_llama_cpps_rules_and_needs_statistics(llama8: Path, tmp_path: Path) -> None:
    """Q2_K_S: Q2_K, with attn_v Q4_K where four or more heads share a key-value head, ffn_down
    Q4_K in the first eighth of the layers, the output Q6_K. Like llama-quantize, which needs an
    importance matrix for it, it is refused without statistics."""
    m = ours(llama8, "Q2_K_S")  # 8 heads, 2 key-value heads
    assert by_layer(m, "attn_v") == ["Q4_K"] * 8 and by_layer(m, "ffn_down") == ["Q4_K"] + ["Q2_K"] * 7
    assert {*by_layer(m, "attn_q"), *by_layer(m, "attn_output"), m["token_embd.weight"]} == {"Q2_K"}
    assert m["output.weight"] == "Q6_K"
    mha = ours(decoder_gguf(tmp_path / "mha.gguf", layers=8, kv_heads=8), "Q2_K_S")
    assert set(by_layer(mha, "attn_v")) == {"Q2_K"}
    dst = tmp_path / "q.gguf"
    for rounding in ("nearest", "mse"):
        with pytest.raises(ValueError, match="q2_k_s needs input statistics, as llama-quantize needs"):
            rg.quantize_file(llama8, dst, type="q2_k_s", rounding=rounding)
    rc, _, err = run("quantize", str(llama8), "-o", str(dst), "--type", "q2_k_s")
    assert rc == 2 and "(--imatrix, or --statistics with --rounding importance or gptq)" in err
    assert not dst.exists()
    # With llama.cpp's importance matrix (every matrix but the token embeddings, as llama-imatrix
    # writes it): the mix's types, importance-weighted, and llama.cpp's file type 21.
    f, rng = GgufFile(llama8), np.random.default_rng(3)
    sums = {}
    for t in f.tensors.values():
        if len(t.shape) == 2 and t.name != "token_embd.weight":
            sums[f"{t.name}.in_sum2"] = (rng.random((1, t.shape[-1])) * 50).astype(np.float32)
            sums[f"{t.name}.counts"] = np.array([[50.0]], np.float32)
    imatrix = write_gguf(tmp_path / "imatrix.gguf", sums, general_type="imatrix")
    rc, out, err = run(
        "quantize", str(llama8), "-o", str(dst), "--type", "q2_k_s", "--imatrix", str(imatrix),
        "--fallback", "nearest",
    )  # fmt: skip
    assert rc == 0 and "rounding: importance" in out, err
    q = GgufFile(dst)
    assert {n: t.type for n, t in q.tensors.items()} == m and q.value("general.file_type") == 21


def test_a_mix_needs_the_layer_count(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_down.weight": np.ones((8, 256), np.float32)})
    with pytest.raises(ValueError, match=r"has no llama.block_count; give one type \(such as --type q4_k\)"):
        rg.quantize_file(src, tmp_path / "q.gguf", type="q4_k_m")
    assert not (tmp_path / "q.gguf").exists()
    rc, _, err = run("quantize", str(src), "-o", str(tmp_path / "q.gguf"), "--type", "q4_k_m")
    assert rc == 2 and "mixes choose types by layer, and this llama model has no llama.block_count" in err
    assert not (tmp_path / "q.gguf").exists()


def test_expert_tensors_need_their_layer_in_the_name(tmp_path: Path) -> None:
    model = ModelInfo("llama", 8, 8, False)
    with pytest.raises(ValueError, match="tensor ffn_down_exps.weight: no layer number in 0..7"):
        mix_types([("ffn_down_exps.weight", (8, 8, 256))], "Q4_K_M", model)
    with pytest.raises(ValueError, match="tensor blk.9.ffn_down_exps.weight: no layer number in 0..7"):
        mix_types([("blk.9.ffn_down_exps.weight", (8, 8, 256))], "Q4_K_M", model)


def test_cli_writes_a_mix_with_its_file_type(llama8: Path, tmp_path: Path) -> None:
    dst = tmp_path / "q.gguf"
    rc, out, err = run("quantize", str(llama8), "-o", str(dst), "--type", "q4_k_m")
    assert rc == 0, err
    assert "types: Q4_K x" in out and "Q6_K x9" in out  # output.weight, 4 attn_v, 4 ffn_down
    f = GgufFile(dst)
    assert f.value("general.file_type") == 15  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert {n: t.type for n, t in f.tensors.items()} == ours(llama8, "Q4_K_M")


def dry_run(exe: Path, src: Path, mix: str) -> dict[str, str]:
    """llama-quantize's type for each tensor (`--dry-run`, which writes nothing)."""
    p = subprocess.run([str(exe), "--dry-run", str(src), mix], capture_output=True, text=True, check=True)
    pattern = r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+-.*type =\s+(\S+),.*?(?:->.*\((\S+)\))?"
    types = {}
    for line in (p.stdout + p.stderr).splitlines():
        if m := re.fullmatch(pattern, line.strip()):
            types[m.group(1)] = (m.group(3) or m.group(2)).upper()
    return types


MODELS: dict[str, dict[str, Any]] = {
    "llama 8 layers": {"layers": 8},
    "llama 70B": {"layers": 80},
    "llama 65B": {"layers": 80, "kv_heads": 8},
    "llama, tied embeddings": {"layers": 32, "output": False},
    "llama, 8 experts": {"layers": 8, "experts": 8},
    "llama, rows of 96": {"layers": 8, "cols": 96},
    "qwen2 70B": {"arch": "qwen2", "layers": 80},
    "falcon, fused qkv": {"arch": "falcon", "layers": 16, "kv_heads": 8, "fused_qkv": True},
}


@pytest.mark.parametrize("model", MODELS)
def test_types_equal_llama_quantizes(model: str, tmp_path: Path) -> None:
    """Every tensor's type under every mix equals `llama-quantize --dry-run`'s, where llama.cpp's
    tools are built (make interop); skipped elsewhere."""
    exe = llama_quantize()
    src = decoder_gguf(tmp_path / "m.gguf", **MODELS[model])
    for mix in MIXES:
        theirs = dry_run(exe, src, mix)
        assert len(theirs) == len(GgufFile(src).tensors)
        assert ours(src, mix) == theirs, mix


def test_files_equal_llama_quantizes(tmp_path: Path) -> None:
    """Rounded to nearest, every tensor (type and bytes) and `general.file_type` of a mix but
    Q2_K_S (and of
    the pure Q2_K, Q3_K, IQ4_NL and IQ4_XS files) equal llama-quantize's: a small llama (K blocks)
    and a tiny BERT converted from safetensors (rows of 64: fallbacks), where llama.cpp's tools are
    built (make interop); skipped elsewhere."""
    exe = llama_quantize()
    bert = tiny_bert_gguf(tmp_path / "bert")
    for src in (decoder_gguf(tmp_path / "llama.gguf", layers=8, seed=0), bert):
        # The mixes, and the types without one of their own as `--pure` files.
        # Not Q2_K_S, which llama-quantize writes only with an importance matrix (its own
        # weighting, not rxquant's).
        for mix in (*(m for m in MIXES if m != "Q2_K_S"), "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"):
            mine, theirs = tmp_path / f"rx-{mix}.gguf", tmp_path / f"ll-{mix}.gguf"
            rg.quantize_file(src, mine, type=mix)
            pure = [] if mix in MIXES else ["--pure"]
            subprocess.run(
                [str(exe), *pure, str(src), str(theirs), mix, "1"], check=True, capture_output=True
            )
            a, b = GgufFile(mine), GgufFile(theirs)
            assert {n: (t.type, bytes(t.raw)) for n, t in a.tensors.items()} == {
                n: (t.type, bytes(t.raw)) for n, t in b.tensors.items()
            }, (src.name, mix)
            assert a.value("general.file_type") == b.value("general.file_type"), (src.name, mix)
