"""The seed's "Deployment en RX 580" case, as written, on a synthetic ResNet-50-shaped subset."""

import numpy as np

from rxquant import CalibrationMethod, create_quantizer_for_gpu

rng = np.random.default_rng(1)
shapes = {
    "conv1": (64, 3, 7, 7),
    "layer1.conv": (64, 64, 3, 3),
    "layer4.conv": (512, 512, 3, 3),
    "fc": (1000, 2048),
}
resnet50 = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}

# --- seed code, unchanged but for the import ---
quantizer = create_quantizer_for_gpu("polaris")

# Analyze
for name, weights in resnet50.items():
    quantizer.analyze_layer_sensitivity(weights, name)

# Optimize
precision_map = quantizer.optimize_mixed_precision(
    resnet50,
    memory_budget_gb=6.0,  # Leave 2GB for activations
)

# Quantize
quantized_resnet50 = {}
for name, weights in resnet50.items():
    q, s, z = quantizer.quantize_tensor(
        weights, precision=precision_map[name], method=CalibrationMethod.PERCENTILE
    )
    quantized_resnet50[name] = (q, s, z)
# --- end of seed code ---

total = sum(q.nbytes for q, _, _ in quantized_resnet50.values())
print(f"quantized {len(quantized_resnet50)} tensors, {total:,} bytes of codes")
print("precisions:", {k: v.value for k, v in precision_map.items()})
