"""The core layer: schemes, the functional ops, calibration, devices and hardware facts, thin over
the compiled Rust module. Imports nothing else from rxquant."""
