"""File formats: checkpoints in (safetensors, sharded, .npz) and rxquant's quantized files out.
Uses the core layer only."""
