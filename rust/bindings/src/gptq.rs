//! Data-aware rounding bindings: `gptq` and the importance-weighted parameter search.

use crate::arrays::{codes_with_params, qparams_arrays, FloatArray};
use crate::calib::{options, OptsSpec};
use crate::errors::{detach, to_py};
use crate::scheme::{parse, SchemeSpec};
use crate::with_slice;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use rxquant::{GptqOptions, Method};

type Arrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);
/// `(codes, scale, zero_point, dead_inputs, damping)`.
type GptqOut<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, usize, f64);

/// GPTQ of a float32 `(out, in)` weight with a float64 `(in, in)` Hessian. Returns
/// `(codes, scale, zero_point, dead_inputs, damping)`; codes as `quantize` returns them (int8 for
/// signed grids, uint8 otherwise, packed uint8 with `pack`); `f16_scales` rounds scales to
/// float16 as they are chosen. With `device` (an OpenCL device), the block updates run there.
/// The GIL is released throughout.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (w, spec, hessian, damp, block_size, act_order, method, opts, pack, f16_scales, device=None))]
pub fn gptq<'py>(
    py: Python<'py>,
    w: PyReadonlyArray2<'py, f32>,
    spec: SchemeSpec,
    hessian: PyReadonlyArray2<'py, f64>,
    damp: f64,
    block_size: usize,
    act_order: bool,
    method: &str,
    opts: OptsSpec,
    pack: bool,
    f16_scales: bool,
    device: Option<PyRef<'py, crate::opencl::OpenClDevice>>,
) -> PyResult<GptqOut<'py>> {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let scheme = parse(&spec)?;
    let opts = GptqOptions {
        damp,
        block_size,
        act_order,
        method: Method::parse(method).map_err(to_py)?,
        calib: options(opts),
        f16_scales,
    };
    let (ws, hs) = (w.as_slice()?, hessian.as_slice()?);
    let mut info = (0, 0.0);
    let be = device.as_ref().map(|d| d.backend());
    let (q, scale, zp) = codes_with_params(py, &[rows, cols], pack, |out| {
        let g = match be {
            Some(b) => b.gptq(ws, rows, cols, hs, scheme, &opts)?,
            None => rxquant::gptq(ws, rows, cols, hs, scheme, &opts)?,
        };
        if pack {
            rxquant::pack::pack_code_bytes(&g.codes, out)?;
        } else {
            out.copy_from_slice(&g.codes);
        }
        info = (g.dead_inputs, g.damping);
        Ok(g.qparams)
    })?;
    Ok((q, scale, zp, info.0, info.1))
}

/// The MSE parameter search weighted by per-input importance (see `rxquant::calibrate_weighted`).
#[pyfunction]
pub fn calibrate_weighted<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    spec: SchemeSpec,
    importance: PyReadonlyArray1<'py, f32>,
    opts: OptsSpec,
) -> PyResult<Arrays<'py>> {
    let x = FloatArray::extract(x)?;
    let (scheme, shape, opts) = (parse(&spec)?, x.shape(), options(opts));
    let imp = importance.as_slice()?;
    let qp = with_slice!(x, s => detach(py, || rxquant::calibrate_weighted(s, &shape, scheme, imp, &opts)))?;
    qparams_arrays(py, qp)
}
