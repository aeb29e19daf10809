"""The seed's "INT4 Compression para Embeddings" case, as written (a smaller vocabulary)."""

import numpy as np

from rxquant import AdaptiveQuantizer, QuantizationConfig, QuantizationPrecision, metrics

embeddings = (np.random.default_rng(2).standard_normal((5000, 768)) * 0.05).astype(np.float32)

# --- seed code, unchanged but for the import ---
quantizer = AdaptiveQuantizer(config=QuantizationConfig(precision=QuantizationPrecision.INT4))

# Quantize embeddings to INT4
q_embeddings, scale, zp = quantizer.quantize_tensor(embeddings)

# Pack to 4-bit (8x compression)
packed = quantizer.pack_int4(q_embeddings)
# --- end of seed code ---

unpacked = quantizer.unpack_int4(packed, embeddings.shape)
assert np.array_equal(unpacked, q_embeddings)
restored = quantizer.dequantize_tensor(unpacked, scale, zp)
print(
    f"original {embeddings.nbytes:,} bytes, packed {packed.nbytes:,} bytes "
    f"({embeddings.nbytes / packed.nbytes:.1f}x), SQNR {metrics(embeddings, restored).sqnr_db:.2f} dB"
)
