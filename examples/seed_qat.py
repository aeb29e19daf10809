"""The seed's QAT example, as written: fake quantization and the straight-through estimator."""

import numpy as np

from rxquant import AdaptiveQuantizer, QuantizationConfig, QuantizationPrecision

weights = (np.random.default_rng(5).standard_normal((32, 32)) * 0.1).astype(np.float32)

# --- seed code, unchanged but for the import ---
config = QuantizationConfig(enable_qat=True, precision=QuantizationPrecision.INT8)
quantizer = AdaptiveQuantizer(config=config)

# Fake quantization en forward pass
fake_quant_weights = quantizer.fake_quantize(weights)
# --- end of seed code ---

_, mask = quantizer.fake_quantize_with_mask(weights)
grad_out = np.ones_like(weights)
grad_w = grad_out * mask  # the clipped straight-through estimator
print(
    f"fake-quantized {fake_quant_weights.dtype} {fake_quant_weights.shape}, "
    f"{int(mask.sum())}/{mask.size} weights pass the gradient, "
    f"max change {np.abs(fake_quant_weights - weights).max():.5f}"
)
