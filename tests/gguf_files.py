"""Small GGUF files for tests, written by the gguf package (llama.cpp's own writer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest


def write_gguf(path: Path, tensors: dict[str, np.ndarray], *, general_type: Optional[str] = None) -> Path:
    """A GGUF file of ``tensors`` (architecture llama; ``general.type`` set when given, e.g.
    ``imatrix``). Skips the test where the gguf package is missing."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    if general_type is not None:
        w.add_type(general_type)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
