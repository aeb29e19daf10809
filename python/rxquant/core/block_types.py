"""llama.cpp's block types as a table (names, ggml ids, values and bytes a block) and the
rounding names, from the Rust core. Kept apart from :mod:`rxquant.core.blocks` (the numpy front)
so that reading and writing GGUF files needs no numpy: the GGUF command line starts without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import native

ROUNDINGS = ("nearest", "mse", "importance", "gptq")


@dataclass(frozen=True)
class BlockType:
    """A ggml block type: ``name`` as llama.cpp spells it (``Q4_K``), its ggml type id, values and
    bytes per block."""

    name: str
    ggml_id: int
    block_size: int
    type_size: int

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a tensor of ``shape`` in this type."""
        return math.prod(shape) // self.block_size * self.type_size

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether rows of ``shape`` (its last axis) hold whole blocks."""
        return len(shape) >= 1 and shape[-1] > 0 and shape[-1] % self.block_size == 0


BLOCK_TYPES: dict[str, BlockType] = {name: BlockType(name, *rest) for name, *rest in native.ggml_types()}


def block_type(name: str) -> BlockType:
    """The block type called ``name`` (any case: ``q4_k``, ``Q4_K``)."""
    t = BLOCK_TYPES.get(name.upper())
    if t is None:
        raise ValueError(f"unknown block type {name!r}; expected one of {', '.join(BLOCK_TYPES)}")
    return t
