//! quantize / dequantize / fake_quantize / fp16 bindings.

use crate::arrays::{codes_with_params, fill, fill_or_into, zeros, FloatArray};
use crate::errors::detach;
use crate::scheme::{parse, SchemeSpec};
use crate::with_slice;
use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use rxquant::{ParamMap, QParams};

/// Builds core parameters from numpy scale and zero-point arrays, checking their grid shape.
pub(crate) fn qparams(
    spec: &SchemeSpec,
    shape: &[usize],
    scale: PyReadonlyArrayDyn<'_, f32>,
    zero_point: PyReadonlyArrayDyn<'_, i32>,
) -> PyResult<QParams> {
    let scheme = parse(spec)?;
    let map = ParamMap::new(shape, scheme.granularity).map_err(crate::errors::to_py)?;
    let qp =
        QParams { scheme, grid: map.grid.clone(), scale: to_vec(&scale), zero_point: to_vec(&zero_point) };
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

/// The array's values in C order: one copy when contiguous (per-group parameters run to millions,
/// and ndarray's element iterator over dynamic dimensions cost more than the quantization).
fn to_vec<T: numpy::Element + Copy>(a: &PyReadonlyArrayDyn<'_, T>) -> Vec<T> {
    match a.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => a.as_array().iter().copied().collect(),
    }
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
        return with_slice!(x, s => fill::<u8>(py, &[n.div_ceil(2)], |o| {
            rxquant::quantize_packed(s, &shape, &qp, ignore_nonfinite, o)
        }));
    }
    if qp.scheme.signed() {
        with_slice!(x, s => fill::<i8>(py, &shape, |o| rxquant::quantize(s, &shape, &qp, ignore_nonfinite, o)))
    } else {
        with_slice!(x, s => fill::<u8>(py, &shape, |o| rxquant::quantize(s, &shape, &qp, ignore_nonfinite, o)))
    }
}

/// Min-max parameters and codes in one call (one pass for groups along the last axis):
/// `(codes, scale, zero_point)`, codes int8/uint8 shaped like `x`, or packed INT4 bytes.
#[pyfunction]
pub fn quantize_minmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    spec: SchemeSpec,
    ignore_nonfinite: bool,
    pack: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let x = FloatArray::extract(x)?;
    let (shape, scheme) = (x.shape(), parse(&spec)?);
    with_slice!(x, s => codes_with_params(py, &shape, pack, |o| {
        rxquant::quantize_minmax(s, &shape, scheme, ignore_nonfinite, pack, o)
    }))
}

/// Dequantizes int8/uint8 codes (or packed INT4 bytes when `packed`) to float32 of `shape`, into
/// `out` when given.
#[pyfunction]
#[pyo3(signature = (q, shape, spec, scale, zero_point, packed, out=None))]
#[allow(clippy::too_many_arguments)]
pub fn dequantize<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    shape: Vec<usize>,
    spec: SchemeSpec,
    scale: PyReadonlyArrayDyn<'py, f32>,
    zero_point: PyReadonlyArrayDyn<'py, i32>,
    packed: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let qp = qparams(&spec, &shape, scale, zero_point)?;
    let n = shape.iter().product::<usize>();
    let signed = qp.scheme.signed();
    if let Ok(a) = q.cast::<numpy::PyArrayDyn<i8>>() {
        let a = a.readonly();
        let codes = a.as_slice()?;
        fill_or_into::<f32>(py, out, &shape, |o| rxquant::dequantize(codes, &shape, &qp, o))
    } else if let Ok(a) = q.cast::<numpy::PyArrayDyn<u8>>() {
        let a = a.readonly();
        let codes = a.as_slice()?;
        fill_or_into::<f32>(py, out, &shape, |o| {
            if packed && signed {
                rxquant::dequantize(&rxquant::unpack_int4_signed(codes, n)?, &shape, &qp, o)
            } else if packed {
                rxquant::dequantize(&rxquant::unpack_int4_unsigned(codes, n)?, &shape, &qp, o)
            } else {
                rxquant::dequantize(codes, &shape, &qp, o)
            }
        })
    } else {
        let dtype = q.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "quantized codes must be int8 or uint8, got dtype {dtype}"
        )))
    }
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
    let out = zeros::<f32>(py, &shape);
    let mask = return_mask.then(|| zeros::<bool>(py, &shape));
    {
        let mut o = out.readwrite();
        let mut m = mask.as_ref().map(|m| m.readwrite());
        let (o, m) = (o.as_slice_mut()?, m.as_mut().map(|m| m.as_slice_mut()).transpose()?);
        with_slice!(x, s => detach(py, || rxquant::fake_quantize(s, &shape, &qp, ignore_nonfinite, o, m)))?;
    }
    Ok((out.into_any(), mask.map(|m| m.into_any())))
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
    let mut over = 0;
    let out = with_slice!(x, s => fill::<half::f16>(py, &shape, |o| {
        over = rxquant::to_fp16(s, ignore_nonfinite, o)?;
        Ok(())
    }))?;
    Ok((out, over))
}
