"""Layer input statistics on disk, for data-aware rounding and planning (docs/format.md):

- rxquant's statistics file: safetensors with ``<weight name>.hessian`` (``2 XᵀX / N``, float32
  ``(in, in)``) or ``<weight name>.importance`` (``E[x²]``, float32 ``(in,)``) per layer, and the
  sample count ``N`` of each in the metadata;
- llama.cpp's importance matrices: the GGUF imatrix (``<name>.in_sum2`` / ``<name>.counts``) and
  the legacy ``.dat`` file, read as importance;
- older ``.npz`` or safetensors files of ``E[x²]`` vectors keyed by weight name.

Reading is lazy: each layer's arrays are read when that layer is asked for.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..core.atomic import PathLike
from ..core.hessian import HessianObserver
from .checkpoint import Checkpoint
from .writer import SafetensorsWriter, TensorSpec

FORMAT = "rxquant-statistics"
VERSION = 1


@dataclass
class LayerStatistics:
    """One layer's input statistics: ``hessian`` (``2 XᵀX / N``) when known, else only
    ``importance`` (``E[x²]``); ``samples`` is ``N`` (0 when the file does not say)."""

    samples: int
    hessian: Optional[np.ndarray] = None
    importance_: Optional[np.ndarray] = None

    @property
    def importance(self) -> np.ndarray:
        """``E[x_j²]`` (the Hessian's diagonal over 2 when only the Hessian is stored)."""
        if self.importance_ is not None:
            return self.importance_
        assert self.hessian is not None
        return np.diag(self.hessian) / 2.0

    @property
    def features(self) -> int:
        return int(self.importance.shape[0])


def write_statistics(
    path: PathLike, layers: Mapping[str, Union[HessianObserver, LayerStatistics]], kind: str = "hessian"
) -> int:
    """Writes rxquant's statistics file (streamed, atomic): per layer its Hessian (``kind``
    ``"hessian"``) or only its importance (``"importance"``, ``in`` values instead of ``in²``).
    Returns the bytes written."""
    if kind not in ("hessian", "importance"):
        raise ValueError(f"kind must be 'hessian' or 'importance', got {kind!r}")
    info: dict[str, dict[str, int]] = {}
    specs: list[TensorSpec] = []
    for name, obs in layers.items():
        if isinstance(obs, HessianObserver):
            if obs.count == 0 or obs.features is None:
                raise ValueError(f"no inputs were seen for {name!r}; nothing to write")
            f, n = obs.features, obs.count
        else:
            if kind == "hessian" and obs.hessian is None:
                raise ValueError(f"{name!r} has only importance; write kind='importance'")
            f, n = obs.features, obs.samples
        info[name] = {"samples": int(n), "features": int(f)}
        specs.append((f"{name}.{kind}", "F32", (f, f) if kind == "hessian" else (f,)))
    meta = {"format": FORMAT, FORMAT: json.dumps({"version": VERSION, "kind": kind, "layers": info})}
    with SafetensorsWriter(path, specs, meta) as w:
        for obs in layers.values():
            if kind == "hessian":
                w.write(
                    (obs.hessian() if isinstance(obs, HessianObserver) else obs.hessian).astype(np.float32)
                )
            else:
                w.write(np.asarray(obs.importance(), np.float32) if isinstance(obs, HessianObserver)
                        else np.asarray(obs.importance, np.float32))  # fmt: skip
    return w.bytes


class Statistics(Mapping[str, LayerStatistics]):
    """Statistics read from a file, keyed by weight name; each layer is read on access.

    ``kind`` is ``"hessian"`` or ``"importance"``; ``source`` names the file format
    (``rxquant``, ``imatrix-gguf``, ``imatrix-dat`` or ``vectors``).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"statistics file {self.path} does not exist")
        self._layers: dict[str, Any] = {}
        suffix = self.path.suffix.lower()
        if suffix == ".gguf":
            self._open_imatrix_gguf()
        elif suffix == ".dat":
            self._open_imatrix_dat()
        else:
            self._open_safetensors_or_npz()

    def _open_safetensors_or_npz(self) -> None:
        try:
            ck = Checkpoint(self.path)
        except ValueError as e:
            raise ValueError(f"{self.path} is not a statistics file: {e}") from None
        md = ck.metadata()
        if md.get("format") == FORMAT:
            meta = json.loads(md[FORMAT])
            if meta.get("version") != VERSION:
                raise ValueError(
                    f"{self.path} has statistics version {meta.get('version')!r}; this reads {VERSION}"
                )
            self.kind, self.source = meta["kind"], "rxquant"
            for name, d in meta["layers"].items():
                self._layers[name] = (ck, f"{name}.{self.kind}", int(d["samples"]))
            return
        self.kind, self.source = "importance", "vectors"
        for n in ck.names():
            dt, shape = ck.info(n)
            if len(shape) != 1:
                raise ValueError(
                    f"{self.path} is not a statistics file: {n!r} has shape {shape}, not a vector of E[x^2]"
                )
            self._layers[n] = (ck, n, 0)

    def _open_imatrix_gguf(self) -> None:
        try:
            from gguf import GGUFReader
        except ImportError:
            raise ImportError(
                "reading a GGUF importance matrix needs the gguf package (pip install gguf)"
            ) from None
        try:
            r = GGUFReader(str(self.path))
        except Exception as e:  # the reader raises plain ValueError/struct errors on corrupt files
            raise ValueError(f"{self.path} is not a readable GGUF file: {e}") from None
        kind = r.fields.get("general.type")
        if kind is None or bytes(kind.parts[kind.data[0]]).decode() != "imatrix":
            raise ValueError(
                f"{self.path} is a GGUF file but not an importance matrix (general.type != imatrix)"
            )
        tensors = {t.name: t for t in r.tensors}
        self.kind, self.source = "importance", "imatrix-gguf"
        for name, t in tensors.items():
            if not name.endswith(".in_sum2"):
                continue
            base = name[: -len(".in_sum2")]
            counts = tensors.get(base + ".counts")
            if counts is None:
                raise ValueError(f"{self.path}: {name} has no matching {base}.counts")
            sums = np.asarray(t.data, np.float64).reshape(-1)
            cnt = np.asarray(counts.data, np.float64).reshape(-1)
            per = sums.size // max(1, cnt.size)
            e = np.ones(sums.size)
            for k, c in enumerate(cnt):  # one count per expert; llama.cpp uses 1 where none
                if c > 0:
                    e[k * per : (k + 1) * per] = sums[k * per : (k + 1) * per] / c
            self._layers[base] = (None, e, int(cnt.max()) if cnt.size else 0)

    def _open_imatrix_dat(self) -> None:
        data = self.path.read_bytes()
        self.kind, self.source = "importance", "imatrix-dat"
        try:
            (n,), pos = struct.unpack_from("<i", data, 0), 4
            for _ in range(n):
                (ln,) = struct.unpack_from("<i", data, pos)
                name = data[pos + 4 : pos + 4 + ln].decode()
                ncall, nval = struct.unpack_from("<ii", data, pos + 4 + ln)
                pos += 12 + ln
                vals = np.frombuffer(data, "<f4", nval, pos).astype(np.float64)
                pos += 4 * nval
                # The file holds mean(x^2) * ncall; llama-quantize divides by ncall.
                self._layers[name] = (None, vals / ncall if ncall > 0 else vals, 0)
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path} is not a llama.cpp importance matrix (.dat): {e}") from None

    def __getitem__(self, name: str) -> LayerStatistics:
        src, key, samples = self._layers[name]
        if src is None:
            return LayerStatistics(samples, importance_=key)
        a = src.read_f32(key).astype(np.float64)
        if a.ndim == 2:
            return LayerStatistics(samples, hessian=a)
        return LayerStatistics(samples, importance_=a)

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def covers_none(self, tensors: list[str]) -> str:
        """The refusal when these statistics name none of ``tensors`` (those to round with them):
        statistics of another model, or named another way. ``--fallback nearest`` is for the few
        tensors a file does not cover, not for all of them."""
        which = f"the {len(tensors)} tensors to quantize" if len(tensors) > 1 else "the tensor to quantize"
        return (
            f"{self.path} has statistics for none of {which} (it names {next(iter(self), '')!r}, the "
            f"tensors are named like {tensors[-1]!r}): statistics of another model, or named another way; "
            "collect them from this model"
        )
