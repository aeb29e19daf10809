"""Small GGUF files for tests, written by the gguf package (llama.cpp's own writer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest


def write_gguf(
    path: Path,
    tensors: dict[str, np.ndarray],
    *,
    general_type: Optional[str] = None,
    fields: Optional[Callable[[Any], None]] = None,
) -> Path:
    """A GGUF file of ``tensors`` (architecture llama; ``general.type`` set when given, e.g.
    ``imatrix``; ``fields(writer)`` adds key-value pairs). Skips the test without the gguf package."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    if general_type is not None:
        w.add_type(general_type)
    if fields is not None:
        fields(w)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
