"""The per-layer quantization report: a text table, a dict and JSON."""

from __future__ import annotations

import math
from typing import Any, Optional

from ..analysis.planner import Plan
from ..analysis.sensitivity import LayerQuantizationStats
from ..core.hardware import GpuFamily
from .config import QuantizationConfig


def report_dict(stats: dict[str, LayerQuantizationStats], plan: Optional[Plan] = None) -> dict[str, Any]:
    """The analyzed layers, their totals and (when one was made) the mixed-precision plan."""
    layers = [s.to_dict() for s in stats.values()]
    before = sum(s.bytes_fp32 for s in stats.values())
    after = sum(s.bytes_quantized for s in stats.values())
    return {
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "bytes_fp32": before,
            "bytes_quantized": after,
            "memory_reduction": 1 - after / before if before else 0.0,
        },
        "plan": plan.to_dict() if plan is not None else None,
    }


def format_report(
    stats: dict[str, LayerQuantizationStats],
    gpu: GpuFamily,
    cfg: QuantizationConfig,
    plan: Optional[Plan] = None,
) -> str:
    """The sensitivity table (each layer at the precision it was analyzed at) and, when a
    mixed-precision plan was made, the plan: the precision each layer gets."""
    cols = (
        ("analyzed", 9),
        ("bytes fp32", 12),
        ("bytes q", 12),
        ("SQNR dB", 8),
        ("cosine", 9),
        ("sensitivity", 11),
    )
    head = f"{'layer':<28} " + " ".join(f"{c:>{w}}" for c, w in cols)
    lines = [
        f"rxquant report: GPU family {gpu.name} ({gpu.examples}), calibration {cfg.calibration_method.value}",
        head,
        "-" * len(head),
    ]
    for s in stats.values():
        sq = f"{s.sqnr_db:8.2f}" if math.isfinite(s.sqnr_db) else f"{'inf':>8}"
        lines.append(
            f"{s.layer_name[:28]:<28} {s.precision.value:>9} {s.bytes_fp32:>12,} {s.bytes_quantized:>12,} "
            f"{sq} {s.cosine_similarity:9.6f} {s.sensitivity_score:11.3e}"
        )
    t = report_dict(stats)["totals"]
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<28} {'':>9} {t['bytes_fp32']:>12,} {t['bytes_quantized']:>12,}   "
        f"memory reduction {100 * t['memory_reduction']:.1f}%"
    )
    hess = [s for s in stats.values() if s.hessian_trace is not None]
    missing = [s.layer_name for s in stats.values() if s.notes]
    if hess:
        lines.append("Hessian traces: " + ", ".join(f"{s.layer_name}={s.hessian_trace:.4g}" for s in hess))
    if missing:
        lines.append(
            "Hessian not computed for lack of data (activations or a Hessian-vector product) for: "
            + ", ".join(missing)
        )
    if plan is not None and plan.layers:
        lines.append("")
        lines.append(
            f"mixed-precision plan ({plan.mode}, {plan.error_measure} error): "
            f"{plan.total_bytes:,} bytes of {plan.budget_bytes:,} budgeted"
        )
        for c in plan.layers:
            lines.append(
                f"  {c.layer[:28]:<28} {c.precision:>5} {'(' + c.choice + ')':<14} {c.bytes:>12,} bytes"
            )
    return "\n".join(lines)
