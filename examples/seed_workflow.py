"""The seed's typical workflow ("Flujo de Uso Tipico"), as written, on a small synthetic model."""

import numpy as np

from rxquant import CalibrationMethod, create_quantizer_for_gpu

rng = np.random.default_rng(0)
model_layers = {
    "conv1": (rng.standard_normal((64, 27)) * 0.2).astype(np.float32),
    "fc1": (rng.standard_normal((256, 512)) * 0.05).astype(np.float32),
    "fc2": (rng.laplace(size=(128, 256)) * 0.05).astype(np.float32),
    "output": (rng.standard_t(3, size=(10, 128)) * 0.1).astype(np.float32),
}

# --- seed code, unchanged but for the import ---
# 1. Inicialización
quantizer = create_quantizer_for_gpu("polaris", aggressive=False)

# 2. Análisis de sensibilidad
for layer_name, weights in model_layers.items():
    stats = quantizer.analyze_layer_sensitivity(weights, layer_name)
    print(f"{layer_name}: SQNR={stats.sqnr_db:.2f} dB")

# 3. Mixed-precision optimization
precision_map = quantizer.optimize_mixed_precision(
    model_layers, accuracy_threshold=0.01, memory_budget_gb=8.0
)

# 4. Quantización real
quantized_model = {}
for layer_name, weights in model_layers.items():
    precision = precision_map[layer_name]
    q_weights, scale, zp = quantizer.quantize_tensor(
        weights, precision=precision, method=CalibrationMethod.KL_DIVERGENCE
    )
    quantized_model[layer_name] = (q_weights, scale, zp)

# 5. Export para deployment
quantizer.export_quantization_config("model_quant.json")

# 6. Reporte
print(quantizer.generate_quantization_report())
# --- end of seed code ---

print("precisions:", {k: v.value for k, v in precision_map.items()})
