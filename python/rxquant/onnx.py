"""ONNX models in, 4- and 8-bit ONNX models out that ONNX Runtime runs, with rxquant's rounding.

- :func:`quantize_model`: every ``MatMul`` (and ``Gemm``) whose weight is a constant initializer
  becomes ``com.microsoft::MatMulNBits`` (``format="matmulnbits"``) or a blocked
  ``DequantizeLinear`` feeding the original ``MatMul`` (``format="qdq"``, opset 21); embedding
  ``Gather`` tables become ``GatherBlockQuantized`` when asked (``op_types``). Everything else
  is left as it was, and the result says what was quantized and what was left, and why.
- :func:`collect_statistics`: runs the float model in ONNX Runtime on calibration inputs, with
  each quantizable MatMul's input exposed as an output, into :class:`rxquant.HessianObserver` per
  weight; the statistics file ``rxquant quantize --statistics`` reads.

See docs/onnx.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .core import native
from .core.atomic import PathLike, refuse_overwriting
from .core.calibration import calibrate
from .core.errors import RequestError, naming
from .core.gptq import gptq
from .core.hessian import HessianObserver
from .core.ops import quantize
from .core.qparams import QParams
from .core.scheme import Scheme, as_flag
from .formats.onnx_model import (
    consumers,
    int4_tensor,
    load_model,
    matmulnbits_tensors,
    onnx_package,
    pack_bits,
    save_model,
    to_array,
)
from .formats.statistics import LayerStatistics, Statistics, write_statistics

__all__ = ["OnnxResult", "WeightReport", "collect_statistics", "quantize_model", "weights"]

FORMATS = ("matmulnbits", "qdq")
ROUNDINGS = ("nearest", "mse", "importance", "gptq")
OP_TYPES = ("MatMul", "Gemm", "Gather")
MS_DOMAIN = "com.microsoft"


@dataclass
class WeightReport:
    """One weight initializer: the nodes that use it, its ``[K, N]`` shape, what it became
    (``MatMulNBits``, ``DequantizeLinear``, ``GatherBlockQuantized``) or why it was left."""

    name: str
    nodes: list[str]
    shape: tuple[int, ...]
    became: Optional[str] = None
    rounding: Optional[str] = None
    reason: Optional[str] = None


@dataclass
class OnnxResult:
    path: str
    bytes: int
    source_bytes: int
    quantized: list[WeightReport] = field(default_factory=list)
    left: list[WeightReport] = field(default_factory=list)


@dataclass
class _Site:
    """A weight and its uses: (node, op, transposed B) per consumer."""

    name: str
    uses: list[tuple[Any, str, bool]]


def _coerce_scheme(scheme: Union[Scheme, str], format: str) -> Scheme:
    """The scheme, refused unless ONNX Runtime has an operator for it: blocks along the input axis
    (``group_size``), or with ``format="qdq"`` one scale per output (``axis=0`` of the weight as
    ``out x in`` rows: a per-axis ``DequantizeLinear``)."""
    s = Scheme.coerce(scheme)
    if s.precision not in ("int4", "int8"):
        raise RequestError(f"ONNX Runtime's weight-only operators take int4 or int8, not {s.precision}")
    if s.group_size is None and s.axis == 0:
        if format != "qdq":
            raise RequestError(
                f"{s.describe()}: one scale per output is written as a per-axis DequantizeLinear "
                "(format='qdq' / --format qdq); MatMulNBits takes blocks (group_size)"
            )
        return s
    if s.group_size is None or (s.axis is not None and s.axis not in (-1, 1)):
        raise RequestError(
            f"{s.describe()}: ONNX weight-only quantization is blockwise along the input axis (a group "
            "size, e.g. Scheme('int4', group_size=32)) or, with format='qdq', per output channel "
            "(Scheme('int8', axis=0))"
        )
    return s


def _sites(graph: Any, op_types: tuple[str, ...]) -> tuple[list[_Site], list[WeightReport]]:
    """Weights that can be quantized (every consumer a quantizable use) and the nodes left, why."""
    inits = {t.name: t for t in graph.initializer}
    uses = consumers(graph)
    left: list[WeightReport] = []
    found: dict[str, _Site] = {}
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        attrs = {a.name: a for a in node.attribute}
        label = node.name or f"{node.op_type}->{node.output[0]}"
        if node.op_type == "Gather":
            wname, ok_pos = node.input[0], 0
            axis = attrs["axis"].i if "axis" in attrs else 0
            reason = None if axis == 0 else "Gather along an axis other than 0"
            transposed = False
        else:
            wname, ok_pos = node.input[1], 1
            reason = None
            transposed = False
            if node.op_type == "Gemm":
                alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
                beta = attrs["beta"].f if "beta" in attrs else 1.0
                if attrs.get("transA") is not None and attrs["transA"].i:
                    reason = "Gemm with transA"
                elif alpha != 1.0 or (len(node.input) > 2 and node.input[2] and beta != 1.0):
                    reason = "Gemm with alpha or beta other than 1"
                transposed = bool(attrs["transB"].i) if "transB" in attrs else False
        t = inits.get(wname)
        if t is None:
            left.append(
                WeightReport(wname, [label], (), reason=f"{node.op_type} input is not a constant initializer")
            )
            continue
        shape = tuple(int(d) for d in t.dims)
        if reason is None and len(shape) != 2:
            reason = f"weight of {len(shape)} dimensions (2 needed)"
        if reason is None and t.data_type not in (1, 10):  # FLOAT, FLOAT16
            reason = "weight is not float32 or float16"
        if reason is None:
            others = [n for n, i in uses.get(wname, []) if not (n.op_type in op_types and i == ok_pos)]
            if others:
                reason = f"also read by {others[0].op_type} {others[0].name!r}, which needs the float weight"
        if reason is not None:
            left.append(WeightReport(wname, [label], shape, reason=reason))
            continue
        site = found.setdefault(wname, _Site(wname, []))
        site.uses.append((node, node.op_type, transposed))
    # A weight used both plainly and transposed, or as a table and a matrix, is left as it was.
    sites = []
    for s in found.values():
        kinds = {(op == "Gather", tr) for _, op, tr in s.uses}
        if len(kinds) > 1:
            left.append(
                WeightReport(s.name, [n.name for n, _, _ in s.uses], (), reason="used in two layouts")
            )
        else:
            sites.append(s)
    return sites, left


def weights(model: Any, op_types: Iterable[str] = ("MatMul", "Gemm")) -> tuple[list[str], list[WeightReport]]:
    """The weight initializers of ``model`` (an ``onnx.ModelProto``) that :func:`quantize_model`
    with these ``op_types`` would quantize, and the uses it would leave, each with the reason."""
    if not hasattr(model, "graph"):
        raise TypeError(f"model must be an onnx.ModelProto (onnx.load(path)), got {type(model).__name__}")
    sites, left = _sites(model.graph, tuple(op_types))
    return [s.name for s in sites], left


def _matrix(t: Any, site: _Site, scratch: list[np.ndarray]) -> np.ndarray:
    """The weight as ``out x in`` rows (``[N, K]``; a Gather table as it is). A transposed
    weight is written into ``scratch[0]`` (grown as needed), so valid until the next call: one
    buffer for every weight, since a new array's fresh pages cost as much as the transpose."""
    a = np.ascontiguousarray(to_array(t), dtype=np.float32)
    _, op, transposed = site.uses[0]
    if op == "Gather" or transposed:
        return a
    if not scratch or scratch[0].size < a.size:
        scratch[:] = [np.empty(a.size, np.float32)]
    out = scratch[0][: a.size].reshape(a.shape[1], a.shape[0])
    return native.transpose(a, out)  # tiled: numpy's copy of a.T cost as much as the quantization


def _stats_for(stats: Optional[Statistics], name: str) -> Optional[LayerStatistics]:
    if stats is None:
        return None
    for key in (name, name.removesuffix(".T")):
        if key in stats:
            return stats[key]
    return None


def _encode(
    w: np.ndarray, s: Scheme, rounding: str, st: Optional[LayerStatistics], f16: bool, float_zp: bool
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Unsigned codes ``[N, K]``, scales and zero points ``[N, K / group]`` of ``w`` ``[N, K]``
    (zero points None for symmetric grids: the operators' default, the grid's middle code).

    ``float_zp`` (MatMulNBits, asymmetric, mse/importance): the zero point is a float, so each
    group gets the scale and minimum of least (weighted) squared error, found by least-squares
    fits (``rxquant.affine``); otherwise an integer zero point from the clip search, or GPTQ."""
    n, k = w.shape
    g = int(s.group_size or k)
    dt = np.float16 if f16 else np.float32
    if float_zp:
        imp = None if st is None else np.ascontiguousarray(st.importance, dtype=np.float32)
        scale, lo = native.affine_groups(w, g, s.qrange[1], imp, f16)
        flat = scale == 0  # a constant group: code 0 decodes to its value
        scale = np.where(flat, np.where(lo == 0, 1.0, np.abs(lo)), scale).astype(dt).astype(np.float32)
        zp = (-lo / scale).astype(dt).astype(np.float32)
        cells = w.reshape(n, k // g, g)
        q = np.clip(np.rint(cells / scale[..., None] + zp[..., None]), 0, s.qrange[1])
        return q.reshape(n, k).astype(np.uint8), scale.astype(dt), zp.astype(dt)
    if rounding == "gptq":
        assert st is not None and st.hessian is not None
        q, qp = gptq(w, s, st.hessian, f16_scales=f16)
    elif rounding == "nearest" and not f16:
        q, qp = quantize(w, s)  # min-max range and codes in one pass over each group
    else:
        method = "minmax" if rounding == "nearest" else "mse"
        qp = calibrate(w, method, s, importance=None if st is None else st.importance)
        if f16:  # the file stores float16 scales: compute the codes with them
            mag = np.clip(np.abs(qp.scale), 6.1035156e-05, 65504).astype(np.float16).astype(np.float32)
            qp = QParams(s, np.copysign(mag, qp.scale), qp.zero_point, qp.shape)
        q, qp = quantize(w, s, qp)
    scale = qp.scale.reshape(n, k // g).astype(dt)
    if s.symmetric:  # signed codes, stored with the operators' default zero point 2^(bits-1)
        offset = 8 if s.precision == "int4" else 128
        return (q.astype(np.int16) + offset).astype(np.uint8), scale, None
    return np.asarray(q, dtype=np.uint8), scale, qp.zero_point.reshape(n, k // g).astype(np.uint8)


def quantize_model(
    src: PathLike,
    dst: PathLike,
    scheme: Union[Scheme, str] = "int4",
    *,
    rounding: str = "nearest",
    statistics: Union[Statistics, PathLike, None] = None,
    format: str = "matmulnbits",
    op_types: Iterable[str] = ("MatMul", "Gemm"),
    zero_points: str = "int",
    fallback_nearest: bool = False,
    progress: Optional[Callable[[WeightReport, int], None]] = None,
) -> OnnxResult:
    """Quantizes the weights of ``src``'s MatMul/Gemm (and Gather, if in ``op_types``) nodes
    under ``scheme`` (int4 or int8, groups along the input axis or, with ``format="qdq"``, one
    scale per output: ``Scheme("int8", axis=0)``; symmetric or not) and writes
    ``dst``. ``rounding``: ``nearest`` (min-max range, round to nearest: ONNX Runtime's RTN),
    ``mse`` (the clip with the least squared error), ``importance`` (that search weighted by
    ``E[x²]``) or ``gptq``; the last two need ``statistics`` (from :func:`collect_statistics`,
    keyed by initializer name). A weight without statistics is refused unless
    ``fallback_nearest``. ``zero_points`` (asymmetric MatMulNBits): ``int`` (4 or 8 bits, packed,
    as ONNX Runtime's RTN writes them) or ``float`` (the scales' type, as its HQQ writes them: a
    free offset per block, chosen with the scale by least squares; more bytes). ``progress`` is
    called after each weight with its report and the number of weights."""
    onnx = onnx_package()
    fallback_nearest = as_flag("fallback_nearest", fallback_nearest)
    refuse_overwriting(dst, src, statistics)
    if format not in FORMATS:
        raise RequestError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    s = _coerce_scheme(scheme, format)
    if rounding not in ROUNDINGS:
        raise RequestError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    if zero_points not in ("int", "float"):
        raise RequestError(f"zero_points must be 'int' or 'float', not {zero_points!r}")
    if zero_points == "float" and (s.symmetric or format != "matmulnbits"):
        raise RequestError("float zero points are for asymmetric schemes in the matmulnbits format")
    if zero_points == "float" and rounding in ("nearest", "gptq"):
        raise RequestError(f"float zero points are chosen by the mse or importance search, not {rounding}")
    ops = tuple(op_types)
    bad = [o for o in ops if o not in OP_TYPES]
    if bad:
        raise RequestError(f"unknown op type {bad[0]!r}; rxquant quantizes {', '.join(OP_TYPES)}")
    block = int(s.group_size or 0)  # 0: one scale per output (per-axis DequantizeLinear)
    if not block and "Gather" in ops:
        raise RequestError(
            f"{s.describe()}: embedding tables are written as GatherBlockQuantized, which takes blocks "
            "(a group size); quantize them with groups, or leave them out"
        )
    if format == "matmulnbits" and (block < 16 or block & (block - 1)):
        raise RequestError(
            f"MatMulNBits needs a block size that is a power of 2 and at least 16, not {block} (the "
            "DequantizeLinear format, format='qdq' / --format qdq, takes any group size)"
        )
    stats = None
    if statistics is not None:
        stats = statistics if isinstance(statistics, Statistics) else Statistics(statistics)
    if rounding in ("importance", "gptq") and stats is None:
        raise RequestError(f"rounding {rounding} needs statistics (rxquant.onnx.collect_statistics)")
    if rounding == "gptq" and stats is not None and stats.kind != "hessian":
        raise RequestError("rounding gptq needs Hessians; the statistics file holds only E[x^2]")
    model = load_model(src)
    graph = model.graph
    sites, left = _sites(graph, ops)
    if not sites:
        why = "; ".join(f"{r.nodes[0]}: {r.reason}" for r in left[:3]) or "the graph has none"
        raise RequestError(f"{src} has no {'/'.join(ops)} with a constant float weight to quantize ({why})")
    inits = {t.name: t for t in graph.initializer}
    # Check every weight first, so that nothing is written for a request that cannot be done.
    plan = []
    for site in sites:
        t = inits[site.name]
        k = int(t.dims[-1] if site.uses[0][1] == "Gather" or site.uses[0][2] else t.dims[0])
        if block and k % block:
            raise RequestError(
                f"group size {block} does not divide the {k} inputs of weight {site.name} {tuple(t.dims)}; "
                "choose one that divides every weight"
            )
        st = _stats_for(stats, site.name)
        r = rounding
        if rounding in ("importance", "gptq"):
            table = site.uses[0][1] == "Gather"
            if table or st is None:
                if not fallback_nearest:
                    what = (
                        f"embedding table {site.name} has no input statistics (its inputs are indices)"
                        if table
                        else f"no input statistics for weight {site.name} in {stats.path if stats else ''}"
                    )
                    raise RequestError(
                        f"{what}; allow rounding it to nearest (fallback_nearest / --fallback nearest)"
                    )
                r = "nearest"
            elif st.features != k:
                raise RequestError(
                    f"the statistics for {site.name} have {st.features} inputs; the weight has {k}"
                )
        plan.append((site, t, r, st))
    weights = {site.name: st for site, _, _, st in plan if site.uses[0][1] != "Gather"}
    if stats is not None and rounding in ("importance", "gptq") and weights:
        if all(st is None for st in weights.values()):
            raise RequestError(stats.covers_none(list(weights)))

    result = OnnxResult(os.fspath(dst), 0, Path(src).stat().st_size)
    result.left = left
    new_nodes: dict[int, list[Any]] = {}  # id(node) -> replacement nodes
    drop: set[str] = set()
    signed = s.symmetric
    bits = 4 if s.precision == "int4" else 8
    offset = 1 << (bits - 1)
    scratch: list[np.ndarray] = []
    for site, t, r, st in plan:
        f16 = t.data_type == 10
        w = _matrix(t, site, scratch)
        n, k = w.shape
        float_zp = zero_points == "float" and site.uses[0][1] != "Gather" and r in ("mse", "importance")
        with naming(site.name):
            ucodes, scale, zp = _encode(w, s, r, st if r in ("importance", "gptq") else None, f16, float_zp)
        drop.add(site.name)
        op = site.uses[0][1]
        base = site.name
        if op == "Gather":
            became = "GatherBlockQuantized"
            data = pack_bits(ucodes, bits)
            graph.initializer.extend(
                [
                    onnx.numpy_helper.from_array(data, base + "_Q"),
                    onnx.numpy_helper.from_array(scale, base + "_scales"),
                ]
            )
            if zp is not None:
                graph.initializer.append(onnx.numpy_helper.from_array(pack_bits(zp, bits), base + "_zp"))
            for node, _, _ in site.uses:
                inputs = [base + "_Q", node.input[1], base + "_scales"] + (
                    [base + "_zp"] if zp is not None else []
                )
                new_nodes[id(node)] = [
                    onnx.helper.make_node(
                        "GatherBlockQuantized",
                        inputs,
                        list(node.output),
                        name=node.name,
                        domain=MS_DOMAIN,
                        bits=bits,
                        block_size=block,
                        gather_axis=0,
                        quantize_axis=1,
                    )  # fmt: skip
                ]
        elif format == "matmulnbits":
            became = "MatMulNBits"
            b, sc, zpp = matmulnbits_tensors(ucodes, scale, zp, bits, block)
            graph.initializer.extend(
                [
                    onnx.numpy_helper.from_array(b, base + "_Q"),
                    onnx.numpy_helper.from_array(sc, base + "_scales"),
                ]
            )
            if zpp is not None:
                graph.initializer.append(onnx.numpy_helper.from_array(zpp, base + "_zp"))
            for node, node_op, _ in site.uses:
                inputs = [node.input[0], base + "_Q", base + "_scales"] + (
                    [base + "_zp"] if zpp is not None else []
                )
                has_bias = node_op == "Gemm" and len(node.input) > 2 and bool(node.input[2])
                out = node.output[0] + "_nobias" if has_bias else node.output[0]
                repl = [
                    onnx.helper.make_node(
                        "MatMulNBits",
                        inputs,
                        [out],
                        name=node.name or None,
                        domain=MS_DOMAIN,
                        K=k,
                        N=n,
                        bits=bits,
                        block_size=block,
                    )  # fmt: skip
                ]
                if out != node.output[0]:
                    bias = onnx.helper.make_node(
                        "Add", [out, node.input[2]], [node.output[0]], name=out + "_bias"
                    )
                    repl.append(bias)
                new_nodes[id(node)] = repl
        else:
            became = "DequantizeLinear"
            kn_codes = (ucodes.astype(np.int16) - offset if signed else ucodes).T  # [K, N]
            if block:  # blocks along K: scales and zero points [K / block, N]
                layout = {"axis": 0, "block_size": block}
                sc, zpv = np.ascontiguousarray(scale.T), None if zp is None else np.ascontiguousarray(zp.T)
            else:  # one scale per output: [N] along the codes' axis 1
                layout = {"axis": 1}
                sc, zpv = scale.reshape(n), None if zp is None else zp.reshape(n)
            if bits == 4:
                qt = int4_tensor(base + "_Q", kn_codes, signed)
                zpt = None if zpv is None else int4_tensor(base + "_zp", zpv, False)
            else:
                qt = onnx.numpy_helper.from_array(
                    kn_codes.astype(np.int8 if signed else np.uint8), base + "_Q"
                )
                zpt = None if zpv is None else onnx.numpy_helper.from_array(zpv, base + "_zp")
            graph.initializer.extend([qt, onnx.numpy_helper.from_array(sc, base + "_scales")])
            if zpt is not None:
                graph.initializer.append(zpt)
            dq_out = base + "_dequantized"
            dq = onnx.helper.make_node(
                "DequantizeLinear",
                [base + "_Q", base + "_scales"] + ([base + "_zp"] if zpt is not None else []),
                [dq_out],
                name=base + "_DequantizeLinear",
                **layout,
            )
            first = True
            for node, node_op, _ in site.uses:
                repl = [dq] if first else []
                first = False
                if node_op == "MatMul":
                    mm = onnx.helper.make_node(
                        "MatMul", [node.input[0], dq_out], list(node.output), name=node.name
                    )
                    repl.append(mm)
                else:
                    inputs = [node.input[0], dq_out] + list(node.input[2:])
                    attrs = {
                        a.name: onnx.helper.get_attribute_value(a)
                        for a in node.attribute
                        if a.name != "transB"
                    }
                    repl.append(
                        onnx.helper.make_node("Gemm", inputs, list(node.output), name=node.name, **attrs)
                    )
                new_nodes[id(node)] = repl
        rep = WeightReport(
            site.name, [u.name for u, _, _ in site.uses], tuple(int(d) for d in t.dims), became, r
        )
        if r != rounding:
            rep.reason = "no input statistics: rounded to nearest"
        result.quantized.append(rep)
        if progress is not None:
            progress(rep, len(plan))

    nodes = []
    for node in graph.node:
        nodes.extend(new_nodes.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    # Deleted in place: rebuilding the list would copy every kept tensor's bytes.
    for i in reversed([i for i, t in enumerate(graph.initializer) if t.name in drop]):
        del graph.initializer[i]
    for inp in list(graph.input):
        if inp.name in drop:
            graph.input.remove(inp)
    _set_opsets(model, ms=format == "matmulnbits" or "Gather" in ops, opset21=format == "qdq")
    result.bytes = save_model(model, dst)
    return result


def _set_opsets(model: Any, ms: bool, opset21: bool) -> None:
    onnx = onnx_package()
    have = {o.domain: o for o in model.opset_import}
    if ms and MS_DOMAIN not in have:
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    if opset21:
        main = have.get("") or have.get("ai.onnx")
        if main is None:
            model.opset_import.append(onnx.helper.make_opsetid("", 21))
        elif main.version < 21:
            main.version = 21
        model.ir_version = max(model.ir_version, 10)


def collect_statistics(
    model_path: PathLike,
    feeds: Iterable[Mapping[str, np.ndarray]],
    path: Optional[PathLike] = None,
    kind: str = "hessian",
    op_types: Iterable[str] = ("MatMul", "Gemm"),
) -> dict[str, HessianObserver]:
    """Input statistics of every quantizable MatMul/Gemm weight of the float model, from ONNX
    Runtime (CPU) run on ``feeds`` (dicts of input arrays): each such node's input is made a graph
    output and folded into a :class:`rxquant.HessianObserver` keyed by the weight's initializer
    name. Where a feed has an ``attention_mask`` matching a ``[batch, seq, K]`` input, padded
    positions are left out. With ``path`` the statistics file is written (``kind`` ``hessian`` or
    ``importance``)."""
    import onnxruntime as ort

    onnx = onnx_package()
    model = load_model(model_path)
    sites, _ = _sites(model.graph, tuple(o for o in op_types if o != "Gather"))
    if not sites:
        raise ValueError(f"{model_path} has no MatMul/Gemm with a constant weight")
    inputs: dict[str, list[str]] = {}
    for site in sites:
        for node, _, _ in site.uses:
            inputs.setdefault(node.input[0], []).append(site.name)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:
        types = {}
    existing = {o.name for o in model.graph.output}
    for name in inputs:
        if name not in existing:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
    names = list(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.onnx"
        save_model(model, p)
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    stats: dict[str, HessianObserver] = {}
    wanted = [i.name for i in sess.get_inputs()]
    for feed in feeds:
        feed = dict(feed)
        if "token_type_ids" in wanted and "token_type_ids" not in feed and "input_ids" in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])  # one segment
        outs = sess.run(names, {k: v for k, v in feed.items() if k in wanted})
        mask = feed.get("attention_mask")
        for name, a in zip(names, outs):
            a = np.asarray(a)
            if mask is not None and a.ndim == 3 and a.shape[:2] == np.shape(mask):
                a = a[np.asarray(mask).astype(bool)]
            x = np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=np.float32)
            for weight in inputs[name]:
                stats.setdefault(weight, HessianObserver()).update(x)
    if path is not None:
        write_statistics(path, stats, kind)
    return stats
