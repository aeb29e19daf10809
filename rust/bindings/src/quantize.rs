//! quantize / dequantize / fake_quantize / fp16 bindings.

use crate::arrays::{to_numpy, FloatArray};
use crate::errors::detach;
use crate::scheme::{parse, SchemeSpec};
use crate::with_slice;
use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use rxquant::{ParamMap, QParams};

/// Builds core parameters from numpy scale and zero-point arrays.
fn qparams(
    spec: &SchemeSpec,
    shape: &[usize],
    scale: PyReadonlyArrayDyn<'_, f32>,
    zero_point: PyReadonlyArrayDyn<'_, i32>,
) -> PyResult<QParams> {
    let scheme = parse(spec)?;
    let map = ParamMap::new(shape, scheme.granularity).map_err(crate::errors::to_py)?;
    let qp = QParams {
        scheme,
        grid: map.grid.clone(),
        scale: scale.as_array().iter().copied().collect(),
        zero_point: zero_point.as_array().iter().copied().collect(),
    };
    if scale.shape() != map.grid.as_slice() || zero_point.shape() != map.grid.as_slice() {
        return Err(crate::errors::to_py(rxquant::Error::Shape(format!(
            "scale has shape {:?} and zero point {:?}, but a tensor of shape {shape:?} needs {:?}",
            scale.shape(),
            zero_point.shape(),
            map.grid
        ))));
    }
    Ok(qp)
}

/// Min-max scale and zero point: returns `(scale, zero_point)` shaped like the parameter grid.
#[pyfunction]
pub fn minmax_qparams<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    spec: SchemeSpec,
    ignore_nonfinite: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let x = FloatArray::extract(x)?;
    let (scheme, shape) = (parse(&spec)?, x.shape());
    let qp =
        with_slice!(x, s => detach(py, || rxquant::minmax_qparams(s, &shape, scheme, ignore_nonfinite)))?;
    Ok((to_numpy(py, qp.scale, &qp.grid)?, to_numpy(py, qp.zero_point, &qp.grid)?))
}

/// Quantizes with given parameters; returns int8 (symmetric) or uint8 codes, or packed uint8 for INT4.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn quantize<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    spec: SchemeSpec,
    scale: PyReadonlyArrayDyn<'py, f32>,
    zero_point: PyReadonlyArrayDyn<'py, i32>,
    ignore_nonfinite: bool,
    pack: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let x = FloatArray::extract(x)?;
    let shape = x.shape();
    let qp = qparams(&spec, &shape, scale, zero_point)?;
    let n = shape.iter().product::<usize>();
    if pack {
        let out = with_slice!(x, s => detach(py, || {
            let mut out = vec![0u8; n.div_ceil(2)];
            rxquant::quantize_packed(s, &shape, &qp, ignore_nonfinite, &mut out).map(|_| out)
        }))?;
        let len = out.len();
        return to_numpy(py, out, &[len]);
    }
    if qp.scheme.signed() {
        let out = with_slice!(x, s => detach(py, || {
            let mut out = vec![0i8; n];
            rxquant::quantize(s, &shape, &qp, ignore_nonfinite, &mut out).map(|_| out)
        }))?;
        to_numpy(py, out, &shape)
    } else {
        let out = with_slice!(x, s => detach(py, || {
            let mut out = vec![0u8; n];
            rxquant::quantize(s, &shape, &qp, ignore_nonfinite, &mut out).map(|_| out)
        }))?;
        to_numpy(py, out, &shape)
    }
}

/// Dequantizes int8/uint8 codes (or packed INT4 bytes when `packed`) to float32 of `shape`.
#[pyfunction]
pub fn dequantize<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    shape: Vec<usize>,
    spec: SchemeSpec,
    scale: PyReadonlyArrayDyn<'py, f32>,
    zero_point: PyReadonlyArrayDyn<'py, i32>,
    packed: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let qp = qparams(&spec, &shape, scale, zero_point)?;
    let n = shape.iter().product::<usize>();
    let signed = qp.scheme.signed();
    let out = if let Ok(a) = q.cast::<numpy::PyArrayDyn<i8>>() {
        let a = a.readonly();
        let codes = a.as_slice()?;
        detach(py, || {
            let mut out = vec![0f32; n];
            rxquant::dequantize(codes, &shape, &qp, &mut out).map(|_| out)
        })?
    } else if let Ok(a) = q.cast::<numpy::PyArrayDyn<u8>>() {
        let a = a.readonly();
        let codes = a.as_slice()?;
        detach(py, || {
            let mut out = vec![0f32; n];
            if packed && signed {
                let c = rxquant::unpack_int4_signed(codes, n)?;
                rxquant::dequantize(&c, &shape, &qp, &mut out)?;
            } else if packed {
                let c = rxquant::unpack_int4_unsigned(codes, n)?;
                rxquant::dequantize(&c, &shape, &qp, &mut out)?;
            } else {
                rxquant::dequantize(codes, &shape, &qp, &mut out)?;
            }
            Ok(out)
        })?
    } else {
        let dtype = q.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "quantized codes must be int8 or uint8, got dtype {dtype}"
        )));
    };
    to_numpy(py, out, &shape)
}

/// Fake-quantizes to float32; with `return_mask` also returns the straight-through-estimator mask.
#[pyfunction]
pub fn fake_quantize<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    spec: SchemeSpec,
    scale: PyReadonlyArrayDyn<'py, f32>,
    zero_point: PyReadonlyArrayDyn<'py, i32>,
    ignore_nonfinite: bool,
    return_mask: bool,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let x = FloatArray::extract(x)?;
    let shape = x.shape();
    let qp = qparams(&spec, &shape, scale, zero_point)?;
    let n = shape.iter().product::<usize>();
    let (out, mask) = with_slice!(x, s => detach(py, || {
        let mut out = vec![0f32; n];
        let mut mask = if return_mask { vec![false; n] } else { Vec::new() };
        let m = return_mask.then_some(mask.as_mut_slice());
        rxquant::fake_quantize(s, &shape, &qp, ignore_nonfinite, &mut out, m).map(|_| (out, mask))
    }))?;
    let mask = if return_mask { Some(to_numpy(py, mask, &shape)?) } else { None };
    Ok((to_numpy(py, out, &shape)?, mask))
}

/// Converts to float16 with saturation; returns `(array, overflow_count)`.
#[pyfunction]
pub fn to_fp16<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    ignore_nonfinite: bool,
) -> PyResult<(Bound<'py, PyAny>, usize)> {
    let x = FloatArray::extract(x)?;
    let shape = x.shape();
    let n = shape.iter().product::<usize>();
    let (out, over) = with_slice!(x, s => detach(py, || {
        let mut out = vec![half::f16::ZERO; n];
        rxquant::to_fp16(s, ignore_nonfinite, &mut out).map(|o| (out, o))
    }))?;
    Ok((to_numpy(py, out, &shape)?, over))
}
