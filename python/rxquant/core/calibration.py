"""Calibration: pick each parameter's clipping range with min-max, percentile, entropy (KL) or MSE.

``calibrate`` works on one array; ``Observer`` streams batches and keeps only per-parameter
min/max and histograms, so its memory does not depend on the number of batches.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Union

import numpy as np

from . import native
from .arrays import as_float_array
from .costs import Work
from .devices import run
from .qparams import QParams
from .scheme import Scheme, as_flag, as_int, as_real, check_fits

METHODS = ("minmax", "percentile", "entropy", "mse")
# Below this many values per scale, the KL search sees a sparse histogram (see docs/calibration.md).
SPARSE_CELL = 1 << 14
SchemeLike = Union[Scheme, str, None]


#: Calibration options and their defaults (see :func:`calibrate` for their meaning).
OPTIONS: dict[str, Any] = {
    "bins": 2048,
    "percentile": 99.99,
    "averaging": None,
    "exact": None,
    "exact_limit": 1 << 20,
    "ignore_nonfinite": False,
}


def options_spec(**options: Any) -> tuple[int, float, Optional[float], Optional[bool], int, bool]:
    """The options tuple the compiled module takes; an unknown option is a TypeError naming it
    and the known ones (not one about this helper's signature)."""
    unknown = [k for k in options if k not in OPTIONS]
    if unknown:
        raise TypeError(f"unknown calibration option {unknown[0]!r}; expected one of {', '.join(OPTIONS)}")
    o = {**OPTIONS, **options}
    return (
        as_int("bins", o["bins"]),
        as_real("percentile", o["percentile"]),
        None if o["averaging"] is None else as_real("averaging", o["averaging"]),
        None if o["exact"] is None else as_flag("exact", o["exact"]),
        as_int("exact_limit", o["exact_limit"]),
        as_flag("ignore_nonfinite", o["ignore_nonfinite"]),
    )


def _integer_scheme(scheme: SchemeLike) -> Scheme:
    s = Scheme.coerce(scheme)
    if not s.is_integer:
        raise ValueError(f"calibration picks integer scales; {s.precision} needs none")
    return s


def calibrate(
    x: Any,
    method: str = "minmax",
    scheme: SchemeLike = None,
    *,
    device: Optional[str] = None,
    importance: Optional[Any] = None,
    **options: Any,
) -> QParams:
    """Chooses scale and zero point for ``x`` under ``scheme`` (default INT8 symmetric per tensor).

    Methods (each per tensor, channel or group; see docs/calibration.md):

    - ``minmax``: the data's range.
    - ``percentile``: the ``percentile`` (default 99.99) of ``|x|`` for symmetric schemes, both
      tails for asymmetric ones. Exact order statistics up to ``exact_limit`` values (default
      2^20) or with ``exact=True``; otherwise a ``bins``-bin histogram (error <= one bin width,
      under 2 * range / bins).
    - ``entropy``: TensorRT's KL-divergence search on a 2048-bin ``|x|`` histogram, 128 target
      levels for INT8 and 8 for INT4.
    - ``mse``: the clip with the least expected squared error, from the histogram; with
      ``exact=True`` searched on the data (for weights).

    ``importance`` (``mse`` only; a vector ``E[x_j^2]`` of ``prod(shape[1:])`` values, one per
    input of a weight ``(out, in, ...)``): the search on the data minimizes the importance-weighted
    squared error ``sum_j E[x_j^2] (w_j - w'_j)^2`` instead (per tensor, per channel along axis
    0, or groups along the last axis), on the CPU.

    Options: ``bins``, ``percentile``, ``exact``, ``exact_limit``, ``ignore_nonfinite``.
    NaN/Inf raise a ValueError with their count and first index unless ``ignore_nonfinite``.
    ``device`` (``auto``, ``cpu``, ``opencl``, ``opencl:N``) runs the min/max and histogram passes
    there, with the same results; the searches on the data of small cells stay on the CPU.
    """
    s = _integer_scheme(scheme)
    a = as_float_array(x)
    check_fits(s, a.shape)
    if importance is not None:
        if str(method) != "mse":
            raise ValueError(f"importance weights the mse search; method {method!r} takes none")
        n_in = math.prod(a.shape[1:]) if a.ndim >= 2 else a.size
        e = np.ascontiguousarray(np.asarray(importance, dtype=np.float32).reshape(-1))
        if e.size != n_in:
            raise ValueError(
                f"importance has {e.size} values; a tensor of shape {a.shape} has {n_in} inputs per output"
            )
        scale, zp = native.calibrate_weighted(a, s.spec(), e, options_spec(**options))
        return QParams(s, scale, zp, a.shape, extra={"method": "mse+importance"})
    if "averaging" in options:
        raise TypeError("averaging applies to streamed batches: use Observer(..., averaging=c)")
    args = (a, str(method), s.spec(), options_spec(**options))
    work = Work.elementwise(a.nbytes, 0)
    scale, zp = run(device, lambda be: be.calibrate(*args), lambda: native.calibrate(*args), work)
    cell = a.size // max(1, scale.size)
    if str(method) in ("entropy", "kl") and 0 < cell < SPARSE_CELL:
        warnings.warn(
            f"entropy calibration on cells of {cell} values is unreliable (its 2048-bin histogram is "
            "nearly empty); prefer mse or minmax per channel or group",
            RuntimeWarning,
            stacklevel=2,
        )
    return QParams(s, scale, zp, a.shape, extra={"method": str(method)})


class Observer:
    """Streams batches and calibrates at the end.

    >>> obs = Observer("entropy", Scheme("int8"))
    >>> for batch in batches: obs.update(batch)      # doctest: +SKIP
    >>> qp = obs.qparams()                            # doctest: +SKIP

    Batches may have any size; per channel they must keep the channel count. ``merge`` combines
    observers filled in parallel. State survives ``pickle`` and ``to_dict``/``from_dict``.
    Options as for :func:`calibrate`, plus ``averaging=c`` for a min-max moving average, and
    ``device`` for where each batch's passes run. A batch that fails adds nothing.

    Histograms use power-of-two layouts that merge exactly (docs/calibration.md): the state, and
    so the parameters, do not depend on how the data was split into batches or on their order;
    one ``update`` with all of it gives the same. ``update`` may be called from any number of
    threads on one observer (a data loader's workers, forward hooks): each batch's passes run with
    the GIL released and without a lock, which covers only adding the batch's ranges and counts.
    With ``averaging`` the moving average follows the order batches took that lock.
    """

    def __init__(
        self,
        method: str = "minmax",
        scheme: SchemeLike = None,
        *,
        device: Optional[str] = None,
        **options: Any,
    ) -> None:
        self.device = device
        self.method = str(method)
        self.scheme = _integer_scheme(scheme)
        self.options = dict(options)
        self._obs = native.Observer(self.method, self.scheme.spec(), options_spec(**self.options))
        self._shape: Optional[tuple[int, ...]] = None

    def update(self, batch: Any) -> Observer:
        """Folds one batch in; returns self."""
        a = as_float_array(batch, "batch")
        work = Work.elementwise(a.nbytes, 0)
        run(self.device, lambda be: be.observe(self._obs, a), lambda: self._obs.update(a), work)
        if self._shape is None:
            self._shape = a.shape
        return self

    def merge(self, other: Observer) -> Observer:
        """Adds the statistics of another observer with the same method, scheme and options."""
        if not isinstance(other, Observer):
            raise TypeError(f"can only merge an Observer, got {type(other).__name__}")
        self._obs.merge(other._obs)
        self._shape = self._shape or other._shape
        return self

    @property
    def batches(self) -> int:
        return int(self._obs.batches)

    def qparams(self, shape: Optional[tuple[int, ...]] = None) -> QParams:
        """The calibrated parameters, for tensors of ``shape`` (default: the first batch's)."""
        scale, zp = self._obs.qparams()
        return QParams(self.scheme, scale, zp, shape or self._shape or (), extra={"method": self.method})

    def _state(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scheme": self.scheme.to_dict(),
            "options": self.options,
            "shape": list(self._shape) if self._shape is not None else None,
            **self._obs.state(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (histogram counts as lists of integers)."""
        d = self._state()
        for k in ("min", "max", "hist_lo", "hist_width", "hist_zeros", "counts"):
            d[k] = d[k].tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observer:
        """Inverse of :meth:`to_dict` (also accepts numpy arrays); checks that the arrays fit."""
        keys = ("method", "scheme", "min", "max", "hist_lo", "hist_width", "hist_zeros", "counts")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"observer state is missing {', '.join(missing)}")
        obs = cls(d["method"], Scheme.from_dict(d["scheme"]), **d.get("options", {}))
        counts = np.asarray(d["counts"], dtype=np.uint64)
        if counts.ndim != 2:
            # JSON keeps no shape for an empty list: a min-max or empty observer has no histograms.
            rows = len(d["hist_lo"])
            counts = counts.reshape(rows, counts.size // rows if rows else 0)
        obs._obs.set_state(
            d.get("grid"),
            np.asarray(d["min"], np.float32),
            np.asarray(d["max"], np.float32),
            np.asarray(d["hist_lo"], np.float64),
            np.asarray(d["hist_width"], np.float64),
            np.asarray(d["hist_zeros"], np.uint64),
            np.ascontiguousarray(counts),
            int(d.get("batches", 0)),
        )
        obs._shape = tuple(d["shape"]) if d.get("shape") is not None else None
        return obs

    def __getstate__(self) -> dict[str, Any]:
        return {**self._state(), "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(Observer.from_dict(state).__dict__)
        self.device = state.get("device")
