//! llama.cpp block format bindings: quantize rows into ggml blocks (by nearest, MSE, importance
//! or GPTQ rounding) and decode them. Blocks come and go as flat uint8 arrays.

use crate::arrays::{fill, fill_or_into, FloatArray};
use crate::errors::to_py;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rxquant::ggml::{GgmlType, Rounding, StoredFloat};
use rxquant::GptqOptions;

/// `(name, ggml type id, values per block, bytes per block)` of every type.
#[pyfunction]
pub fn ggml_types() -> Vec<(&'static str, u32, usize, usize)> {
    rxquant::ggml::TYPES.iter().map(|t| (t.name(), t.ggml_id(), t.block_size(), t.type_size())).collect()
}

fn parse_type(name: &str) -> PyResult<GgmlType> {
    GgmlType::parse(name).map_err(to_py)
}

/// Quantizes `x` (any float dtype; rows of `row` values) into blocks of `type`. `importance`
/// (`row` values) weights `rounding="importance"`. The GIL is released.
#[pyfunction]
#[pyo3(signature = (x, ty, row, rounding, importance=None))]
pub fn ggml_quantize<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    ty: &str,
    row: usize,
    rounding: &str,
    importance: Option<PyReadonlyArray1<'py, f32>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (ty, rounding) = (parse_type(ty)?, Rounding::parse(rounding).map_err(to_py)?);
    let x = FloatArray::extract(x)?;
    let n: usize = x.shape().iter().product();
    let data = x.f32_data();
    let w = importance.as_ref().map(|w| w.as_slice()).transpose()?;
    // Rows that do not hold whole blocks are refused by the core with a message naming them.
    let bytes = n / ty.block_size() * ty.type_size();
    fill::<u8>(py, &[bytes], |out| rxquant::ggml::quantize_rows(ty, &data, row, rounding, w, out))
}

/// Quantizes the `count` floats stored at byte `offset` of the file `path` (as `src`: `F32`,
/// `F16` or `BF16`; rows of `row` values) into blocks of `type` by `rounding` (`nearest` or
/// `mse`), read from a memory map and returned as bytes. It needs no numpy: the GGUF command line
/// requantizes a file without importing it (numpy's import alone is most of `llama-quantize`'s
/// whole run on a small model). The GIL is released.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn ggml_quantize_file<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    offset: u64,
    count: usize,
    src: &str,
    ty: &str,
    row: usize,
    rounding: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let (ty, src, rounding) =
        (parse_type(ty)?, StoredFloat::parse(src).map_err(to_py)?, Rounding::parse(rounding).map_err(to_py)?);
    if !matches!(rounding, Rounding::Nearest | Rounding::Mse) {
        return Err(to_py(rxquant::Error::Invalid("rounding from a file is nearest or mse".into())));
    }
    let Some(nbytes) = count.checked_mul(src.size()).and_then(|n| u64::try_from(n).ok()) else {
        return Err(to_py(rxquant::Error::Shape(format!("{count} values do not fit in memory"))));
    };
    // Only the tensor's bytes (its pages are faulted in by the threads that quantize them).
    let map = crate::files::map(&path, offset, Some(nbytes))?;
    let bytes: &[u8] = &map;
    // Rows that do not hold whole blocks are refused by the core with a message naming them.
    let n = count / ty.block_size() * ty.type_size();
    let mut err = Ok(());
    let out = PyBytes::new_with(py, n, |out| {
        err =
            crate::errors::detach(py, || rxquant::ggml::quantize_stored(ty, src, bytes, row, rounding, out));
        Ok(())
    })?;
    err.map(|_| out)
}

/// Decodes `data` (uint8, whole blocks of `type`) into `n` float32 values: a new array, or `out`
/// (float32, `n` values, checked by the Python layer) written in place and returned.
#[pyfunction]
#[pyo3(signature = (data, ty, n, out=None))]
pub fn ggml_dequantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    ty: &str,
    n: usize,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let ty = parse_type(ty)?;
    let d = data.as_slice()?;
    fill_or_into::<f32>(py, out.as_ref(), &[n], |out| rxquant::ggml::dequantize_rows(ty, d, out))
}

/// GPTQ of a float32 `(out, in)` weight into blocks of `type` with a float64 `(in, in)` Hessian;
/// each block's parameters chosen by `rounding` (`importance` weighted by `importance`, else by
/// `diag H`). Returns `(blocks, dead_inputs, damping)`. The GIL is released.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (w, ty, hessian, rounding, importance, damp, block_size, act_order))]
pub fn ggml_gptq<'py>(
    py: Python<'py>,
    w: PyReadonlyArray2<'py, f32>,
    ty: &str,
    hessian: PyReadonlyArray2<'py, f64>,
    rounding: &str,
    importance: Option<PyReadonlyArray1<'py, f32>>,
    damp: f64,
    block_size: usize,
    act_order: bool,
) -> PyResult<(Bound<'py, PyAny>, usize, f64)> {
    let (ty, rounding) = (parse_type(ty)?, Rounding::parse(rounding).map_err(to_py)?);
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let opts = GptqOptions { damp, block_size, act_order, ..GptqOptions::default() };
    let (ws, hs) = (w.as_slice()?, hessian.as_slice()?);
    let imp = importance.as_ref().map(|w| w.as_slice()).transpose()?;
    let bytes = rows * cols / ty.block_size() * ty.type_size();
    let mut info = (0, 0.0);
    let q = fill::<u8>(py, &[bytes], |out| {
        info = rxquant::ggml::gptq_rows(ty, ws, rows, cols, hs, rounding, imp, &opts, out)?;
        Ok(())
    })?;
    Ok((q, info.0, info.1))
}
