"""Mixed-precision planning: choose one candidate format per layer so the model fits a byte
budget with the least predicted error.

Two modes:

- ``threshold`` (the seed's rule): relative INT8 error below ``t`` gives INT8, below ``2t`` FP16,
  otherwise FP32; then the least sensitive layers are demoted until the plan fits.
- ``optimal``: minimize the summed error subject to total bytes <= budget, a multiple-choice
  knapsack solved exactly by branch and bound with the LP-relaxation bound (the LP of a
  multiple-choice knapsack is solved greedily on each layer's lower convex hull).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from ..core.atomic import PathLike, write_json
from ..core.errors import RequestError, naming
from ..core.hardware import GpuFamily
from ..core.scheme import Scheme
from ..core.types import CalibrationMethod, QuantizationPrecision
from .sensitivity import layer_stats

Evaluate = Callable[[dict[str, np.ndarray]], float]
Budget = Union[int, float, str]
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_budget(budget: Budget, total_params: int) -> int:
    """Bytes from ``123456``, ``"60MB"``, ``"5.5GiB"`` or ``"4.5bpw"`` (bits per weight)."""
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        if not math.isfinite(budget) or budget <= 0:
            raise RequestError(f"budget must be a positive number of bytes, got {budget}")
        return int(budget)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(budget))
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in _UNITS and unit != "bpw"):
        raise RequestError(f"cannot read budget {budget!r}; use bytes, e.g. '60MB', '5.5GiB' or '4.5bpw'")
    value = float(m.group(1))
    if not math.isfinite(value) or value <= 0:
        raise RequestError(f"budget must be a positive finite number, got {budget!r}")
    if unit == "bpw":
        return int(value * total_params / 8)
    return int(value * _UNITS[unit or "b"])


def unit_hint(budget: Budget) -> str:
    """For a budget refused as too small: a plain number under 1000 counts bytes for a whole file,
    so it is likely bits a weight without the unit, and the hint says so; else ""."""
    text = str(budget).strip()
    if text.replace(".", "", 1).isdigit() and float(text) < 1000:
        return " (a number alone counts bytes; bits a weight are written like 4.5bpw)"
    return ""


@dataclass
class Option:
    """One candidate format for one layer."""

    name: str
    precision: QuantizationPrecision
    scheme: Scheme
    bytes: int
    error: float


@dataclass
class LayerChoice:
    layer: str
    choice: str
    precision: str
    bytes: int
    bytes_fp32: int
    error: float


@dataclass
class Plan:
    """A per-layer choice with its predicted bytes and error."""

    mode: str
    error_measure: str
    budget_bytes: int
    layers: list[LayerChoice]
    lower_bound: float
    optimal: bool
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.layers)

    @property
    def total_error(self) -> float:
        return float(sum(c.error for c in self.layers))

    @property
    def precision_map(self) -> dict[str, QuantizationPrecision]:
        return {c.layer: QuantizationPrecision.parse(c.precision) for c in self.layers}

    def to_dict(self) -> dict[str, Any]:
        params = sum(c.bytes_fp32 for c in self.layers) // 4
        return {
            "schema_version": 1,
            "mode": self.mode,
            "error_measure": self.error_measure,
            "budget_bytes": self.budget_bytes,
            "total_bytes": self.total_bytes,
            "total_bytes_fp32": sum(c.bytes_fp32 for c in self.layers),
            "bits_per_weight": 8 * self.total_bytes / params if params else 0.0,
            "total_error": self.total_error,
            "lower_bound": self.lower_bound,
            "optimal": self.optimal,
            "notes": self.notes,
            "layers": [asdict(c) for c in self.layers],
        }

    def save(self, path: PathLike) -> None:
        """Writes the plan as JSON, atomically."""
        write_json(path, self.to_dict())


def candidate_options(
    layer_weights: Mapping[str, Any],
    family: GpuFamily,
    method: CalibrationMethod,
    activations: Optional[dict[str, Any]] = None,
    evaluate: Optional[Evaluate] = None,
    progress: Any = True,
    device: Optional[str] = None,
    statistics: Optional[Mapping[str, Any]] = None,
    rounding: str = "nearest",
) -> tuple[dict[str, list[Option]], str]:
    """Bytes and predicted error of each family candidate for each layer (quantized on ``device``).

    Layers are taken one at a time: ``layer_weights`` may be a lazy mapping (such as
    ``Checkpoint.tensors``) that reads each tensor on access, and only one layer's tensor and its
    quantized copies are alive at once; what is kept is each layer's option table.

    A candidate that cannot hold a layer's shape (a group size that does not divide its input
    dimension, such as groups of 32 on a depthwise conv's 3x3 = 9 inputs) is not offered for that
    layer, never replaced by another format under its name; conv weights are grouped over their
    flattened input dimension ``in*kh*kw`` (see :class:`Scheme`).

    Error measure: the user's ``evaluate`` (one layer at a time at each candidate, the rest kept
    at full precision, minus the unquantized value), else the data-aware output error when the
    layer has activation statistics, else the weight squared error ``MSE * count``. ``evaluate``
    runs the whole model, so it holds every layer in memory at once.

    ``statistics`` (name -> an object with ``hessian`` (``2 XᵀX / N`` or None) and ``importance``
    (``E[x²]``), as :class:`rxquant.formats.statistics.Statistics` gives) makes the error the
    layer's output error, ``tr((W - W') H (W - W')ᵀ) / 2`` with a Hessian; ``rounding``
    (``nearest``, ``importance``, ``gptq``) is how each candidate is quantized, so the plan is
    measured with the rounding that will write the file.

    With both ``evaluate`` and statistics, the measure is ``scaled``: each layer's data-aware
    errors are scaled by one measurement, ``evaluate`` of its coarsest integer candidate over that
    candidate's data-aware error, so the errors of different layers are in the units of the
    model's loss while only one evaluation per layer is run (instead of one per candidate).

    ``progress``: True for a bar on a terminal, False for none, or an object with ``update(n)``
    that gets one step per (layer, candidate).
    """
    data_aware = bool(activations) or bool(statistics)
    if evaluate:
        measure = "scaled" if data_aware else "measured"
    else:
        measure = "data-aware" if data_aware else "weight-mse"
    full = {k: np.asarray(v) for k, v in layer_weights.items()} if evaluate else None
    base = float(evaluate(dict(full or {}))) if evaluate else 0.0
    steps = len(layer_weights) * len(family.candidates)
    bar = progress if hasattr(progress, "update") else _progress(steps, "sensitivity", bool(progress))
    table: dict[str, list[Option]] = {}
    for name in layer_weights:
        w = full[name] if full is not None else np.asarray(layer_weights[name])
        act = (activations or {}).get(name)
        st = statistics.get(name) if statistics is not None else None
        hessian = getattr(st, "hessian", None)
        if act is None and st is not None and hessian is None:
            act = st.importance
        if rounding != "nearest" and st is None and act is None:
            raise ValueError(f"{rounding} rounding needs input statistics, and there are none for {name}")
        coarsest: Optional[tuple[float, np.ndarray]] = None
        for cname, s in family.candidates:
            if s.fits(w.shape):
                bar.update(1)
                continue
            precision = QuantizationPrecision.parse(s.precision)
            with naming(name):
                stats, w_hat = layer_stats(
                    w,
                    name,
                    s,
                    precision,
                    method,
                    activations=act,
                    device=device,
                    rounding=rounding,
                    hessian=hessian,
                )
            if measure == "measured" and full is not None and evaluate is not None:
                err = float(evaluate({**full, name: w_hat.astype(w.dtype, copy=False)})) - base
            elif stats.data_aware_error is not None:
                err = stats.data_aware_error
                if s.is_integer and (coarsest is None or err > coarsest[0]):
                    coarsest = (err, w_hat)
            else:
                err = stats.mse * stats.num_params
            option = Option(cname, precision, s, s.stored_bytes(w.shape), max(err, 0.0))
            table.setdefault(name, []).append(option)
            bar.update(1)
        if measure == "scaled" and full is not None and evaluate is not None and coarsest is not None:
            measured = float(evaluate({**full, name: coarsest[1].astype(w.dtype, copy=False)})) - base
            k = max(measured, 0.0) / coarsest[0] if coarsest[0] > 0 else 0.0
            for o in table[name]:
                o.error *= k
        del w
    if bar is not progress:
        bar.close()
    return table, measure


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False)
    except ImportError:  # tqdm is a dependency, but stay usable without it

        class _Null:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _Null()


# ---------------------------------------------------------------- multiple-choice knapsack


def _pareto(items: list[tuple[int, float]]) -> list[int]:
    """Indices of non-dominated items, by increasing bytes (and so decreasing error)."""
    order = sorted(range(len(items)), key=lambda i: (items[i][0], items[i][1]))
    keep: list[int] = []
    for i in order:
        if not keep or items[i][1] < items[keep[-1]][1]:
            keep.append(i)
    return keep


def _hull_steps(items: list[tuple[int, float]], idx: list[int]) -> list[tuple[float, int, float, int, int]]:
    """Lower-convex-hull increments from the cheapest item:
    (error saved per byte, bytes added, error saved, from item, to item)."""
    hull = [idx[0]]
    for i in idx[1:]:
        while len(hull) >= 2:
            a, b = items[hull[-2]], items[hull[-1]]
            # Drop b if it lies on or above the segment a -> i.
            if (b[1] - a[1]) * (items[i][0] - a[0]) >= (items[i][1] - a[1]) * (b[0] - a[0]):
                hull.pop()
            else:
                break
        hull.append(i)
    steps = []
    for a, b in zip(hull, hull[1:]):
        db, de = items[b][0] - items[a][0], items[a][1] - items[b][1]
        steps.append((de / db, db, de, a, b))
    return steps


def _lp_bound(
    classes: list[list[tuple[int, float]]], fronts: list[list[int]], start: int, room: int
) -> float:
    """LP-relaxation optimum of classes ``start..``: the minimum error, fractional choices allowed."""
    err = sum(classes[k][fronts[k][0]][1] for k in range(start, len(classes)))
    room -= sum(classes[k][fronts[k][0]][0] for k in range(start, len(classes)))
    if room < 0:
        return math.inf
    steps = sorted(
        (s for k in range(start, len(classes)) for s in _hull_steps(classes[k], fronts[k])), reverse=True
    )
    for _, db, de, _, _ in steps:
        if db <= room:
            room -= db
            err -= de
        else:
            err -= de * room / db
            break
    return err


def _lp_choice(classes: list[list[tuple[int, float]]], fronts: list[list[int]], budget: int) -> list[int]:
    """An integral choice from the LP solution: its fractional step rounded down (always feasible)."""
    pick = [f[0] for f in fronts]
    room = budget - sum(classes[k][f[0]][0] for k, f in enumerate(fronts))
    steps = [
        (gain, k, a, b, db) for k, f in enumerate(fronts) for gain, db, _, a, b in _hull_steps(classes[k], f)
    ]
    for _, k, frm, to, db in sorted(steps, key=lambda s: -s[0]):
        if pick[k] == frm and db <= room:
            pick[k], room = to, room - db
    return pick


def solve_mckp(
    classes: list[list[tuple[int, float]]], budget: int, node_limit: int = 500_000
) -> tuple[list[int], float, float, bool]:
    """Picks one item (bytes, error) per class, total bytes <= budget, least total error.

    Returns (choice per class, total error, proven lower bound, proven optimal). Branch and bound
    with the LP bound, largest classes first, the LP's choice tried first, starting from the
    rounded LP solution; exact unless ``node_limit`` is reached (then the bound says how far off).
    """
    fronts = [_pareto(c) for c in classes]
    smallest = sum(c[f[0]][0] for c, f in zip(classes, fronts))
    if smallest > budget:
        raise ValueError(
            f"budget of {budget:,} bytes cannot be met: the smallest reachable size is {smallest:,} bytes"
        )
    order = sorted(range(len(classes)), key=lambda k: -max(b for b, _ in classes[k]))
    cls = [classes[k] for k in order]
    fr = [fronts[k] for k in order]
    n = len(cls)
    min_rest = [0] * (n + 1)
    for k in range(n - 1, -1, -1):
        min_rest[k] = min_rest[k + 1] + cls[k][fr[k][0]][0]
    root = _lp_bound(cls, fr, 0, budget)
    best = _lp_choice(cls, fr, budget)
    best_err = sum(cls[k][i][1] for k, i in enumerate(best))
    choice = [0] * n
    nodes = 0

    def dfs(k: int, used: int, err: float) -> None:
        nonlocal best_err, best, nodes
        nodes += 1
        if nodes > node_limit:
            return
        if k == n:
            if err < best_err:
                best_err, best = err, choice.copy()
            return
        if err + _lp_bound(cls, fr, k, budget - used) >= best_err - 1e-12 * max(1.0, abs(best_err)):
            return
        lp = _lp_choice(cls[k:], fr[k:], budget - used)[0]
        for i in sorted(fr[k], key=lambda i: (i != lp, cls[k][i][1])):
            b = cls[k][i][0]
            if used + b + min_rest[k + 1] <= budget:
                choice[k] = i
                dfs(k + 1, used + b, err + cls[k][i][1])

    dfs(0, 0, 0.0)
    optimal = nodes <= node_limit
    picks = [0] * n
    for pos, k in enumerate(order):
        picks[k] = best[pos]
    return picks, best_err, (best_err if optimal else root), optimal


def plan(
    options: dict[str, list[Option]],
    budget: int,
    mode: str = "optimal",
    accuracy_threshold: float = 0.01,
    sensitivity: Optional[dict[str, float]] = None,
    error_measure: str = "weight-mse",
) -> Plan:
    """Builds a plan from candidate options (see the module docs for the modes)."""
    names = list(options)
    classes = [[(o.bytes, o.error) for o in options[n]] for n in names]
    bytes_fp32 = {
        n: max(o.bytes for o in options[n] if o.precision == QuantizationPrecision.FP32) for n in names
    }
    if mode == "optimal":
        picks, _, bound, optimal = solve_mckp(classes, budget)
        notes = [] if optimal else ["branch and bound stopped at its node limit: see lower_bound"]
    elif mode == "threshold":
        picks = _threshold_picks(options, budget, accuracy_threshold, sensitivity or {})
        bound, optimal, notes = math.nan, False, ["seed threshold rule; not optimized"]
    else:
        raise RequestError(f"unknown planning mode {mode!r}; expected 'optimal' or 'threshold'")
    layers = [
        LayerChoice(
            n,
            options[n][i].name,
            options[n][i].precision.value,
            options[n][i].bytes,
            bytes_fp32[n],
            options[n][i].error,
        )
        for n, i in zip(names, picks)
    ]
    return Plan(mode, error_measure, budget, layers, bound, optimal, notes)


def _threshold_picks(
    options: dict[str, list[Option]], budget: int, t: float, sensitivity: dict[str, float]
) -> list[int]:
    wanted = {QuantizationPrecision.INT8: 0, QuantizationPrecision.FP16: 1, QuantizationPrecision.FP32: 2}
    picks: dict[str, int] = {}
    for n, opts in options.items():
        s = sensitivity.get(n, 0.0)
        target = (
            QuantizationPrecision.INT8
            if s < t
            else QuantizationPrecision.FP16
            if s < 2 * t
            else QuantizationPrecision.FP32
        )
        rank = wanted[target]
        fits = [i for i, o in enumerate(opts) if o.precision in wanted and wanted[o.precision] == rank]
        picks[n] = fits[0] if fits else max(range(len(opts)), key=lambda i: opts[i].bytes)
    smallest = sum(min(o.bytes for o in opts) for opts in options.values())
    if smallest > budget:
        raise ValueError(
            f"budget of {budget:,} bytes cannot be met: the smallest reachable size is {smallest:,} bytes"
        )
    total = sum(options[n][i].bytes for n, i in picks.items())
    while total > budget:
        # Demote the least sensitive layer that still has a smaller option, one step.
        movable = [n for n, i in picks.items() if any(o.bytes < options[n][i].bytes for o in options[n])]
        n = min(movable, key=lambda n: sensitivity.get(n, 0.0))
        cur = options[n][picks[n]].bytes
        smaller = [i for i, o in enumerate(options[n]) if o.bytes < cur]
        nxt = max(smaller, key=lambda i: options[n][i].bytes)
        total += options[n][nxt].bytes - cur
        picks[n] = nxt
    return [picks[n] for n in options]
