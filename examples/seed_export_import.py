"""The seed's export/import example, as written: the deployed quantizer reproduces the codes."""

import numpy as np

from rxquant import AdaptiveQuantizer

weights = (np.random.default_rng(4).standard_normal((128, 64)) * 0.1).astype(np.float32)
quantizer = AdaptiveQuantizer()
q, scale, zp = quantizer.quantize_tensor(weights, layer_name="fc1")

# --- seed code, unchanged but for the import ---
# Exportar scales/zero_points calculados
quantizer.export_quantization_config("model_quant.json")

# Importar en deployment
quantizer_deploy = AdaptiveQuantizer()
quantizer_deploy.load_quantization_config("model_quant.json")
# --- end of seed code ---

q2, scale2, zp2 = quantizer_deploy.quantize_tensor(weights, layer_name="fc1")
assert np.array_equal(q, q2) and scale == scale2 and zp == zp2
print("deployed quantizer reproduces the exported codes bit for bit")
