"""Analysis: per-layer quantization error (sensitivity, Hessian statistics) and the
mixed-precision planner. Uses the core layer only."""
