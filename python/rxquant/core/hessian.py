"""Input statistics of a layer for data-aware rounding: ``HessianObserver`` accumulates
``H = 2 XᵀX / N`` (GPTQ's Hessian) and ``E[x²]`` (the importance llama.cpp's imatrix holds) over
batches of the layer's inputs, in float64 sums of float32 block products."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import native
from .arrays import as_float_array
from .costs import Work
from .devices import check_device, run


class HessianObserver:
    """Streams a layer's inputs ``x`` of shape ``(..., in)`` (every axis but the last counts as
    samples; for a convolution, the unfolded patches ``(..., in*kh*kw)``).

    >>> obs = HessianObserver()
    >>> for x in batches: obs.update(x)              # doctest: +SKIP
    >>> h, e = obs.hessian(), obs.importance()      # doctest: +SKIP

    ``update`` may be called from several threads on one observer: each batch is reduced with
    the GIL released and added under a lock, so the result equals feeding the batches one after
    another (the float64 additions may come in another order). A batch that fails (NaN/Inf, a
    different feature count) changes nothing. ``merge`` adds another observer; state survives
    ``pickle`` and ``to_dict``/``from_dict``.

    ``device`` (``"auto"`` by default, ``"cpu"``, ``"opencl"``, ``"opencl:N"``): where each batch's
    ``XᵀX`` runs. ``auto`` takes a GPU for a batch where its measured figures predict it faster,
    transfers included (:mod:`rxquant.core.costs`); a device's products are float32 over slices of
    512 rows, summed as float32 pairs and then in float64 (within 1e-6 of the CPU's, relative to
    the largest entry). A device error under ``auto`` falls back to the CPU.
    """

    def __init__(self, device: Optional[str] = "auto") -> None:
        self.device = check_device(device)
        self._obs = native.HessianObserver()

    def update(self, x: Any) -> HessianObserver:
        """Folds a batch in; returns self."""
        a = as_float_array(x, "x")
        features = a.shape[-1] if a.ndim else 0
        rows = a.size // features if features else 0
        device = self.device if rows else "cpu"
        run(
            device,
            lambda be: self._obs.update(a, be),
            lambda: self._obs.update(a),
            Work.hessian(rows, features),
        )
        return self

    def merge(self, other: HessianObserver) -> HessianObserver:
        """Adds the statistics of another observer with the same feature count."""
        if not isinstance(other, HessianObserver):
            raise TypeError(f"can only merge a HessianObserver, got {type(other).__name__}")
        self._obs.merge(other._obs)
        return self

    @property
    def count(self) -> int:
        """Samples (rows of ``x``) seen."""
        return int(self._obs.count)

    @property
    def features(self) -> int | None:
        """The input width, fixed by the first batch."""
        return self._obs.features

    def hessian(self) -> np.ndarray:
        """``2 XᵀX / N``: float64 ``(in, in)``."""
        return self._obs.hessian()

    def importance(self) -> np.ndarray:
        """``E[x_j²]`` per input: float64 ``(in,)`` (the Hessian's diagonal over 2)."""
        return self._obs.importance()

    def to_dict(self) -> dict[str, Any]:
        """The running state: ``features``, ``count`` and ``xtx`` (XᵀX's lower triangle, packed by
        rows: ``in*(in+1)/2`` float64 values)."""
        features, count, xtx = self._obs.state()
        return {"features": features, "count": int(count), "xtx": xtx}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HessianObserver:
        """Inverse of :meth:`to_dict` (checked for consistency)."""
        missing = [k for k in ("features", "count", "xtx") if k not in d]
        if missing:
            raise ValueError(f"Hessian observer state is missing {', '.join(missing)}")
        obs = cls()
        xtx = np.ascontiguousarray(np.asarray(d["xtx"], np.float64).reshape(-1))
        obs._obs.set_state(d["features"], int(d["count"]), xtx)
        return obs

    def __getstate__(self) -> dict[str, Any]:
        return {**self.to_dict(), "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.device = state.get("device", "auto")
        self._obs = HessianObserver.from_dict(state)._obs
