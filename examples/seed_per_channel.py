"""The seed's per-channel example, as written: per-tensor against per-channel on a conv weight."""

import numpy as np

from rxquant import AdaptiveQuantizer, metrics

rng = np.random.default_rng(3)
# Weights: (64, 32, 3, 3) -> 64 output channels with very different ranges.
weights = (rng.standard_normal((64, 32, 3, 3)) * rng.choice([0.1, 0.5, 2.0], size=(64, 1, 1, 1))).astype(
    np.float32
)
quantizer = AdaptiveQuantizer()

# --- seed code, unchanged but for the import ---
# Per-tensor: un solo scale/zero_point
quantized, scale, zp = quantizer.quantize_tensor(weights)

# Per-channel: scale/zero_point independientes por canal
quantized_pc, scales, zero_points = quantizer.quantize_tensor_per_channel(weights, axis=0)
# --- end of seed code ---

per_tensor = metrics(weights, quantizer.dequantize_tensor(quantized, scale, zp)).sqnr_db
per_channel = metrics(weights, quantizer.dequantize_tensor(quantized_pc, scales, zero_points, axis=0)).sqnr_db
print(f"scales.shape = {scales.shape}")
print(f"per-tensor SQNR {per_tensor:.2f} dB, per-channel SQNR {per_channel:.2f} dB")
