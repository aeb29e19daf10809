"""GGUF, the files llama.cpp runs: rxquant's rounding (MSE, importance-weighted, GPTQ) inside
llama.cpp's block formats, bit-compatible with ggml.

- :func:`quantize_tensor` / :func:`dequantize_tensor`: one tensor to ggml blocks and back;
- :func:`quantize_file`: a GGUF file (or a BERT-family model folder, converted on the way) to a
  quantized GGUF file: one type for every tensor llama.cpp would quantize (with llama.cpp's
  fallbacks), or a type per tensor chosen by the planner within a budget;
- :class:`GgufFile`: reading a GGUF file (memory-mapped, by the ``gguf`` package).

See docs/gguf.md.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .core import native
from .core.atomic import PathLike, refuse_overwriting
from .core.block_types import BLOCK_TYPES, ROUNDINGS, BlockType
from .core.blocks import dequantize_tensor, quantize_tensor
from .core.errors import RequestError, naming
from .core.scheme import as_flag
from .formats.gguf_file import (
    FILE_TYPES,
    FLOAT_TYPES,
    GGML_QUANT_VERSION,
    STRING,
    UINT32,
    Field,
    GgufFile,
    GgufWriter,
    TensorOut,
    allows_quantization,
    hf_to_gguf_names,
    is_gguf,
    type_for,
)
from .formats.gguf_mixes import MIXES, ModelInfo, mix_types

if TYPE_CHECKING:
    import numpy as np

    from .formats.statistics import LayerStatistics, Statistics

# numpy, the planner, the statistics files and the BERT converter are imported where used: a
# GGUF file requantized by nearest or mse rounding needs none of them, and the command line that
# does it starts in a fraction of numpy's import time (see docs/performance.md).

__all__ = [
    "BLOCK_TYPES",
    "BlockType",
    "GgufFile",
    "GgufResult",
    "TensorReport",
    "dequantize_tensor",
    "quantize_file",
    "quantize_tensor",
]

OUTPUT_TYPES = (*BLOCK_TYPES, *FLOAT_TYPES)


@dataclass
class TensorReport:
    """What happened to one tensor: its source and written type, and why the written type is not
    the one asked for (``reason``), with the rounding used."""

    name: str
    shape: tuple[int, ...]
    source_type: str
    type: str
    rounding: Optional[str] = None
    reason: Optional[str] = None


@dataclass
class GgufResult:
    """The written file: its path and size, every tensor's report, and the quantized tensors'
    bits a weight."""

    path: str
    bytes: int
    tensors: list[TensorReport] = field(default_factory=list)
    bits_per_weight: float = math.nan

    @property
    def fallbacks(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.reason is not None]


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    type: str  # as stored in the source
    read_f32: Callable[[], np.ndarray]
    raw: Optional[Callable[[], Any]] = None  # the stored bytes (a buffer), for pass-through
    stored: Optional[tuple[str, int]] = None  # (file, byte offset) of F32/F16/BF16 values


@dataclass
class _Source:
    arch: str
    fields: list[Field]
    tensors: list[_Tensor]
    alignment: int
    hf_names: dict[str, str]  # Hugging Face name -> GGUF name, where known
    blocks: int


def _open_source(src: PathLike) -> _Source:
    """A GGUF file, or a BERT-family folder (or its model.safetensors) converted on the way."""
    p = Path(src)
    if is_gguf(p):
        f = GgufFile(p)
        floats = FLOAT_TYPES
        tensors = [
            _Tensor(
                t.name,
                t.shape,
                t.type,
                t.read_f32,
                (lambda t=t: t.data),
                (t.path, t.offset) if t.type in floats else None,
            )
            for t in f.tensors.values()
        ]
        blocks = int(f.value(f"{f.arch}.block_count", 0) or 0)
        return _Source(f.arch, list(f.fields.values()), tensors, f.alignment, {}, blocks)
    folder = p if p.is_dir() else p.parent
    if p.is_file() and p.suffix != ".safetensors":
        raise ValueError(f"{src} is neither a GGUF file nor a model folder's model.safetensors")
    from .models.bert_gguf import bert_gguf

    b = bert_gguf(folder)
    tensors = [_Tensor(t.name, t.shape, "F32", t.read_f32) for t in b.tensors]
    blocks = next((int(f.value) for f in b.fields if f.key == "bert.block_count"), 0)
    return _Source(b.arch, b.fields, tensors, 32, b.names, blocks)


class _StatsByName:
    """Statistics looked up by GGUF name: a file keyed by GGUF names (llama.cpp's imatrix) or by
    Hugging Face names (rxquant's statistics of the original model), mapped for the architecture."""

    def __init__(self, stats: Statistics, src: _Source) -> None:
        self.stats = stats
        self.kind = stats.kind
        self.by_gguf: dict[str, str] = {n: n for n in stats}
        to_gguf = src.hf_names.get
        mapper = None
        if src.blocks:
            try:
                mapper = hf_to_gguf_names(src.arch, src.blocks)
            except ValueError:
                mapper = None
        for n in stats:
            # Statistics of rxquant's ONNX export name a MatMul's transposed weight `X.T`: the
            # inputs, and so the statistics, of the layer `X`.
            base = n.removesuffix(".T")
            self.by_gguf.setdefault(to_gguf(base) or (mapper(base) if mapper else None) or base, n)

    def get(self, name: str) -> Optional[LayerStatistics]:
        key = self.by_gguf.get(name)
        return None if key is None else self.stats[key]


def _encode(t: _Tensor, target: str, rounding: str, st: Optional[LayerStatistics]) -> Any:
    """Tensor ``t`` as blocks of ``target``: straight from its memory map where it is stored as
    floats and no statistics are needed (no numpy involved), else through numpy."""
    if t.stored is not None and st is None and rounding in ("nearest", "mse"):
        path, offset = t.stored
        return native.ggml_quantize_file(
            path, offset, math.prod(t.shape), t.type, target, t.shape[-1] if t.shape else 0, rounding
        )
    return _quantize_one(t.read_f32(), target, rounding, st, t.name)


def _quantize_one(
    w: np.ndarray, t: str, rounding: str, st: Optional[LayerStatistics], name: str
) -> np.ndarray:
    if rounding in ("nearest", "mse"):
        return quantize_tensor(w, t, rounding=rounding)
    if st is None:
        raise RequestError(f"no input statistics for {name}")
    if st.features != w.shape[-1]:
        raise RequestError(
            f"the statistics for {name} have {st.features} inputs; the tensor {w.shape} has {w.shape[-1]}"
        )
    if rounding == "importance":
        return quantize_tensor(w, t, rounding="importance", importance=st.importance)
    if st.hessian is None:
        raise RequestError(f"rounding gptq needs Hessians; the statistics for {name} hold only E[x^2]")
    return quantize_tensor(w, t, rounding="gptq", hessian=st.hessian)


def _error(w: np.ndarray, t: str, rounding: str, st: Optional[LayerStatistics], name: str) -> float:
    """The planner's error of ``w`` in type ``t``: the layer's output error with statistics
    (``E[x²]``-weighted, or ``tr(D H Dᵀ)/2`` with a Hessian), else the squared weight error."""
    import numpy as np

    from .core.gptq import output_error

    wf = np.asarray(w, np.float32)
    if t == "F16":
        with np.errstate(over="ignore"):  # beyond ±65504: an infinite error, never chosen
            d = wf - wf.astype(np.float16).astype(np.float32)
    elif t == "BF16":
        d = wf - (_to_bf16(name, wf).astype(np.uint32) << 16).view(np.float32)
    else:
        d = wf - dequantize_tensor(_quantize_one(wf, t, rounding, st, name), t, wf.shape)
    if st is None:
        return float(np.sum(d.astype(np.float64) ** 2))
    if st.hessian is not None and rounding == "gptq":
        return output_error(wf.reshape(-1, wf.shape[-1]), (wf - d).reshape(-1, wf.shape[-1]), st.hessian)
    return float(np.sum((d.astype(np.float64) ** 2) * st.importance))


def quantize_file(
    src: PathLike,
    dst: PathLike,
    *,
    type: Optional[str] = None,
    budget: Union[str, int, None] = None,
    rounding: str = "nearest",
    statistics: Union[Statistics, PathLike, None] = None,
    fallback_nearest: bool = False,
    allow_requantize: bool = False,
    candidates: Optional[list[str]] = None,
    progress: Optional[Callable[[TensorReport, int], None]] = None,
) -> GgufResult:
    """Writes ``dst``, a GGUF file llama.cpp runs, from ``src`` (a GGUF file, or a BERT-family
    model folder or its ``model.safetensors``, converted as llama.cpp's converter does).

    ``type`` (``q4_k``, ``q8_0``, ... or ``f32``/``f16``/``bf16``) quantizes every tensor
    llama.cpp's quantizer would (2+ dimensions, not norms or position embeddings) to that type, as
    ``llama-quantize --pure``, falling back as llama.cpp does where rows do not fit (Q2_K, Q3_K →
    Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, IQ4_XS → IQ4_NL, else F16); each fallback is
    reported. A llama-quantize
    mix (``q3_k_m``, ``q4_k_m``, ``q5_k_s``, ... :data:`rxquant.formats.gguf_mixes.MIXES`) gives
    each tensor the type llama-quantize gives it for that mix (``q2_k_s`` needs statistics, as
    llama-quantize needs an importance matrix for it). ``budget`` (``4.8bpw`` over the
    quantized tensors, or a byte size of the whole file) instead chooses a type per tensor among
    ``candidates`` (default: every block type) with the least total (output) error (F16 is among
    the default candidates, for tensors no block type fits). Every key-value pair and every
    tensor not quantized passes through unchanged; ``general.file_type`` and
    ``general.quantization_version`` are set.

    ``rounding``: ``nearest`` (llama.cpp's own), ``mse``, ``importance`` or ``gptq``; the last two
    need ``statistics`` (an rxquant statistics file or llama.cpp imatrix; GPTQ needs Hessians).
    A tensor without statistics is refused unless ``fallback_nearest``. Already-quantized source
    tensors are refused unless ``allow_requantize`` (as llama-quantize does). ``progress`` is
    called after each tensor with its report and the number of tensors.
    """
    fallback_nearest = as_flag("fallback_nearest", fallback_nearest)
    allow_requantize = as_flag("allow_requantize", allow_requantize)
    if (type is None) == (budget is None):
        raise RequestError("give either type (one type for the file) or budget (a type per tensor)")
    if rounding not in ROUNDINGS:
        raise RequestError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    want = None
    if type is not None:
        want = type.upper()
        if want not in OUTPUT_TYPES and want not in MIXES:
            names = ", ".join(t.lower() for t in (*OUTPUT_TYPES, *MIXES))
            raise RequestError(f"unknown type {type!r}; expected one of {names}")
        if want == "Q2_K_S" and rounding not in ("importance", "gptq"):
            # As llama-quantize, which refuses Q2_K_S without an importance matrix: two bits
            # rounded without data lose too much.
            raise RequestError(
                "q2_k_s needs input statistics, as llama-quantize needs an importance matrix for it: "
                "give a llama.cpp imatrix or an rxquant statistics file (--imatrix, or --statistics "
                "with --rounding importance or gptq)"
            )
    if not os.path.exists(src):
        # Not a GGUF file, so it would be taken for a model folder's weights: "has no config.json".
        raise ValueError(f"{os.fspath(src)} does not exist")
    reads: list[Any] = [src]
    if os.path.isdir(src):
        from .formats.checkpoint import model_folder_files  # numpy: not for GGUF sources

        reads = model_folder_files(src)
    refuse_overwriting(dst, *reads, statistics)
    source = _open_source(src)
    stats = None
    if statistics is not None:
        from .formats.statistics import Statistics

        st = statistics if isinstance(statistics, Statistics) else Statistics(statistics)
        stats = _StatsByName(st, source)
    if rounding in ("importance", "gptq") and stats is None:
        raise RequestError(f"rounding {rounding} needs statistics (a statistics file or llama.cpp imatrix)")
    if rounding == "gptq" and stats is not None and stats.kind != "hessian":
        raise RequestError("rounding gptq needs Hessians; the statistics file holds only E[x^2] (importance)")

    # Each tensor's written type and the reason when it is not the one asked for.
    plan: dict[str, tuple[str, Optional[str]]] = {}
    quantizable = [t for t in source.tensors if allows_quantization(t.name, t.shape)]
    if not quantizable:  # a copy would be written and called quantized
        if not source.tensors:
            raise RequestError(f"{os.fspath(src)} holds no tensors (a vocabulary-only file?)")
        raise RequestError(
            f"{os.fspath(src)} has nothing to quantize: none of its {len(source.tensors)} tensors is one "
            "llama.cpp's quantizer quantizes (2+ dimensions, not norms or position embeddings)"
        )
    if stats is not None and quantizable and all(stats.get(t.name) is None for t in quantizable):
        # Another model's statistics (or names that do not map): refused before any planning,
        # whatever the rounding; `fallback_nearest` is for the few tensors a file leaves out.
        raise RequestError(stats.stats.covers_none([t.name for t in quantizable]))
    if want in MIXES:
        by_key = {f.key: f for f in source.fields}
        model = ModelInfo.of(source.arch, lambda key: by_key[key].value if key in by_key else None)
        mixed = mix_types([(t.name, t.shape) for t in source.tensors], want, model)
        for t in source.tensors:
            choice = mixed[t.name]
            plan[t.name] = (t.type, None) if choice is None else (choice.type, choice.reason)
    elif want is not None:
        for t in source.tensors:
            if want in FLOAT_TYPES:
                # The tensors llama-quantize converts (not norms, position or token-type tables,
                # which llama.cpp's CPU backend adds in F32 only); quantized ones too (decoded:
                # requantizing, allowed below or refused).
                decodable = t.type in FLOAT_TYPES or t.type in BLOCK_TYPES
                converts = allows_quantization(t.name, t.shape) and decodable
                plan[t.name] = (want if converts else t.type, None)
                continue
            choice = type_for(t.name, t.shape, want)
            plan[t.name] = (t.type, None) if choice is None else (choice.type, choice.reason)
    else:
        plan = _plan_budget(source, quantizable, budget, rounding, stats, candidates)
    for t in source.tensors:
        target = plan[t.name][0]
        if target != t.type and t.type not in FLOAT_TYPES and not allow_requantize:
            raise RequestError(
                f"tensor {t.name} is already quantized ({t.type}); requantizing loses quality "
                "(allow it with allow_requantize / --allow-requantize)"
            )

    # Rounding per tensor: statistics where needed, nearest where allowed and missing.
    roundings: dict[str, str] = {}
    for t in source.tensors:
        target = plan[t.name][0]
        if target not in BLOCK_TYPES:
            continue
        r = rounding
        if rounding in ("importance", "gptq") and (stats is None or stats.get(t.name) is None):
            if not fallback_nearest:
                raise RequestError(
                    f"no input statistics for {t.name} in {stats.stats.path if stats else statistics}; give "
                    "statistics that cover it "
                    "or allow rounding it to nearest (fallback_nearest / --fallback nearest)"
                )
            r = "nearest"
        roundings[t.name] = r

    fields = _fields(source, plan, rounding, want)
    outs = [TensorOut(t.name, t.shape, plan[t.name][0]) for t in source.tensors]
    result = GgufResult(os.fspath(dst), 0)
    with GgufWriter(dst, fields, outs, source.alignment) as w:
        for t, o in zip(source.tensors, outs):
            if o.type == t.type and t.raw is not None:
                data = t.raw()
                r = None
            elif o.type in BLOCK_TYPES:
                r = roundings[t.name]
                st = stats.get(t.name) if stats is not None and r in ("importance", "gptq") else None
                with naming(t.name):
                    data = _encode(t, o.type, r, st)
            else:
                r = None
                data = t.read_f32()
                if o.type == "F16":
                    data = _to_f16(t.name, data)
                elif o.type == "BF16":
                    data = _to_bf16(t.name, data)
            w.write(data)
            why = [
                plan[t.name][1],
                "no input statistics: rounded to nearest" if r not in (None, rounding) else None,
            ]
            rep = TensorReport(t.name, t.shape, t.type, o.type, r, "; ".join(w for w in why if w) or None)
            result.tensors.append(rep)
            if progress is not None:
                progress(rep, len(source.tensors))
    result.bytes = w.bytes
    n = sum(math.prod(t.shape) for t in result.tensors if t.type in BLOCK_TYPES)
    bits = sum(8 * BLOCK_TYPES[t.type].nbytes(t.shape) for t in result.tensors if t.type in BLOCK_TYPES)
    result.bits_per_weight = bits / n if n else math.nan
    if isinstance(budget, str) or isinstance(budget, int):
        _check_budget(result, budget, n)
    return result


def _to_f16(name: str, x: np.ndarray) -> np.ndarray:
    """``x`` as float16; a finite value beyond ±65504 (float16 would store it as inf, which
    llama.cpp then multiplies into every output) is refused, naming the tensor and the value."""
    import numpy as np

    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    _refuse_overflow(name, x, np.isinf(h), "float16's ±65504", "F16", "F32 (--type f32) or a block type")
    return h


def _to_bf16(name: str, x: np.ndarray) -> np.ndarray:
    """``x`` as bfloat16 bits (uint16): ggml's ``ggml_compute_fp32_to_bf16``, round to nearest
    even with NaN kept quiet, as the gguf package's ``quants.BF16``. A finite value that rounds
    past bfloat16's largest (3.3895e38) is refused, as for F16."""
    import numpy as np

    n = np.ascontiguousarray(x, np.float32).view(np.uint32)
    n = np.where((n & 0x7FFFFFFF) > 0x7F800000, (n & np.uint32(0xFFFF0000)) | np.uint32(64 << 16), n)
    # In uint32, where the gguf package widens to uint64: the largest word here (a quieted
    # negative NaN, 0xFFFF0000 at most) plus 0x8000 does not wrap.
    n += np.uint32(0x7FFF) + ((n >> 16) & np.uint32(1))
    b = (n >> 16).astype(np.uint16)
    _refuse_overflow(name, x, (b & 0x7FFF) == 0x7F80, "bfloat16's range", "BF16", "F32")
    return b


def _refuse_overflow(name: str, x: np.ndarray, inf: np.ndarray, limit: str, type: str, instead: str) -> None:
    """Refuses the finite values of ``x`` that a float ``type`` stores as inf (``inf``, one flag a
    value), naming the tensor, the first such value and its flat index."""
    import numpy as np

    over = np.flatnonzero(inf & np.isfinite(x))
    if over.size:
        raise ValueError(
            f"tensor {name} has {over.size} value(s) beyond {limit} (the first, {x.flat[over[0]]:g}, at "
            f"flat index {over[0]}): {type} would store them as inf; write it as {instead}"
        )


def _check_budget(result: GgufResult, budget: Union[str, int], n: int) -> None:
    """A budget is a promise: a file over it is removed and reported."""
    from .analysis.planner import parse_budget

    if str(budget).strip().lower().endswith("bpw"):
        return  # met by construction (the planner counts block bytes exactly)
    limit = parse_budget(budget, max(n, 1))
    if result.bytes > limit:
        os.unlink(result.path)
        raise ValueError(
            f"the file came to {result.bytes:,} bytes, over the budget of {limit:,}; it was removed "
            "(a bug in the planner's size accounting: please report it)"
        )


def _refuse_budget(budget: Union[str, int], need: str) -> None:
    """Refuses ``budget``, saying what the smallest choice takes (``need``)."""
    from .analysis.planner import unit_hint

    raise RequestError(f"budget {budget} cannot be met{unit_hint(budget)}: {need}")


def _plan_budget(
    source: _Source,
    quantizable: list[_Tensor],
    budget: Union[str, int, None],
    rounding: str,
    stats: Optional[_StatsByName],
    candidates: Optional[list[str]],
) -> dict[str, tuple[str, Optional[str]]]:
    """A type per quantizable tensor with the least total error within ``budget``: bits a weight
    over the quantized tensors, or bytes of the whole file (the tensors kept, plus the metadata
    as in the source, plus alignment)."""
    from .analysis.planner import parse_budget, solve_mckp

    assert budget is not None
    names = [c.upper() for c in (candidates or [*BLOCK_TYPES, "F16"])]
    for c in names:
        if c not in OUTPUT_TYPES or c == "F32":
            raise RequestError(f"unknown candidate type {c!r}; expected block types, f16 or bf16")
    n = sum(math.prod(t.shape) for t in quantizable)
    if n == 0:
        raise ValueError("no tensor of the file is one llama.cpp quantizes (2+ dimensions, not norms)")
    plan: dict[str, tuple[str, Optional[str]]] = {t.name: (t.type, None) for t in source.tensors}
    text = str(budget).strip().lower()
    # The candidates that fit each tensor, and their sizes: a budget no choice meets is refused
    # before any tensor is rounded.
    options: list[list[str]] = []
    for t in quantizable:
        if t.type not in FLOAT_TYPES:
            raise RequestError(f"tensor {t.name} is already quantized ({t.type}); plan from an F32/F16 file")
        opts = [c for c in names if c in FLOAT_TYPES or BLOCK_TYPES[c].fits(t.shape)]
        if not opts:
            raise RequestError(f"no candidate type fits tensor {t.name} {t.shape}; add f16 to the candidates")
        options.append(opts)
    sizes = [[TensorOut(t.name, t.shape, c).nbytes for c in opts] for t, opts in zip(quantizable, options)]
    if text.endswith("bpw"):
        total, fixed, pad = int(parse_budget(budget, n)), 0, 0  # bytes for the n quantized weights
    else:
        # The whole file: the header (its size does not depend on the types), the tensors kept,
        # and each quantized tensor padded to the alignment. The planner counts a whole
        # alignment's padding per tensor, so its plans never exceed the budget; a budget between
        # that and the exact smallest file gets the smallest types.
        kept = [TensorOut(t.name, t.shape, t.type) for t in source.tensors if t not in quantizable]
        outs = kept + [TensorOut(t.name, t.shape, "F32") for t in quantizable]
        head = len(GgufWriter(os.devnull, _fields(source, plan, rounding), outs, source.alignment).header())
        pad = source.alignment
        fixed = head + sum(k.nbytes + (-k.nbytes % pad) for k in kept)
        total = parse_budget(budget, n)

    def room(least: list[int]) -> int:
        """Bytes for the quantized tensors' blocks; refuses the budget when the smallest
        candidates (``least``, per tensor) do not fit."""
        if text.endswith("bpw"):
            if sum(least) > total:
                bits = 8 * sum(least) / n
                _refuse_budget(
                    budget, f"the smallest types take {sum(least):,} bytes ({bits:.3f} bits a weight)"
                )
            return total
        smallest_file = fixed + sum(s + (-s % pad) for s in least)
        if smallest_file > total:
            _refuse_budget(
                budget,
                f"the smallest file is {smallest_file:,} bytes ({fixed:,} of them the header and the "
                "tensors kept)",
            )
        return max(total - fixed - pad * len(least), sum(least))

    room([min(row) for row in sizes])  # before any tensor is rounded
    classes: list[list[tuple[int, float]]] = []
    for k, (t, row) in enumerate(zip(quantizable, sizes)):
        w = t.read_f32()
        st = stats.get(t.name) if stats is not None else None
        r = rounding if (st is not None or rounding in ("nearest", "mse")) else "nearest"
        cls, fit, refused = [], [], None
        for c, size in zip(options[k], row):
            # A block type whose scales cannot hold the tensor (values beyond what its float16
            # scales reach) is not a candidate for it; the others still are.
            try:
                with naming(t.name):
                    cls.append((size, _error(w, c, r, st, t.name)))
                fit.append(c)
            except ValueError as e:
                refused = refused or e
        if refused is not None and all(c in FLOAT_TYPES for c in fit):
            raise refused  # no block type took it: bad input (NaN, Inf), not a type's limit
        classes.append(cls)
        options[k] = fit
    limit = room([min(size for size, _ in cls) for cls in classes])
    picks, _, _, _ = solve_mckp(classes, limit)
    for t, opts, k in zip(quantizable, options, picks):
        plan[t.name] = (opts[k], None)
    return plan


def _fields(
    source: _Source, plan: dict[str, tuple[str, Optional[str]]], rounding: str, want: Optional[str] = None
) -> list[Field]:
    """The source's key-value pairs with ``general.file_type`` (llama.cpp's number for the type
    asked for, or with a budget the type most weights get) and ``general.quantization_version``
    set, and rxquant's provenance."""
    counts: Counter[str] = Counter()
    for t in source.tensors:
        if plan[t.name][0] in BLOCK_TYPES:
            counts[plan[t.name][0]] += math.prod(t.shape)
    floats = Counter(plan[t.name][0] for t in source.tensors if len(t.shape) >= 2)
    main = counts.most_common(1)[0][0] if counts else (floats.most_common(1)[0][0] if floats else "F32")
    main = want or main
    own = ("general.file_type", "general.quantization_version", "general.quantized_by")
    return [f for f in source.fields if f.key not in own] + [
        Field.of("general.file_type", FILE_TYPES.get(main, 1024), UINT32),
        Field.of("general.quantization_version", GGML_QUANT_VERSION, UINT32),
        Field.of("general.quantized_by", f"rxquant {native.__version__}, rounding {rounding}", STRING),
    ]
