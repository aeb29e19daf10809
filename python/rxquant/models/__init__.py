"""Models rxquant can run without torch: a numpy BERT forward pass and the all-MiniLM-L6-v2
package finder, for measuring what quantization does to a model's output. Uses the core layer only."""
