//! INT4 packing bindings.

use crate::arrays::to_numpy;
use crate::errors::detach;
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// Packs int8 (signed, -8..7) or uint8 (unsigned, 0..15) values, flattened in C order.
#[pyfunction]
pub fn pack_int4<'py>(py: Python<'py>, values: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let out = if let Ok(a) = values.cast::<PyArrayDyn<i8>>() {
        let a = a.readonly();
        let v = a.as_slice()?;
        detach(py, || rxquant::pack_int4_signed(v))?
    } else if let Ok(a) = values.cast::<PyArrayDyn<u8>>() {
        let a = a.readonly();
        let v = a.as_slice()?;
        detach(py, || rxquant::pack_int4_unsigned(v))?
    } else {
        let dtype = values.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
        return Err(PyTypeError::new_err(format!("pack_int4 takes int8 or uint8 values, got dtype {dtype}")));
    };
    let len = out.len();
    to_numpy(py, out, &[len])
}

/// Unpacks `prod(shape)` values; int8 when `signed`, else uint8.
#[pyfunction]
pub fn unpack_int4<'py>(
    py: Python<'py>,
    packed: &Bound<'py, PyAny>,
    shape: Vec<usize>,
    signed: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let a = packed.cast::<PyArrayDyn<u8>>().map_err(|_| {
        let dtype = packed.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
        PyTypeError::new_err(format!("packed INT4 data must be uint8, got dtype {dtype}"))
    })?;
    let a = a.readonly();
    let p = a.as_slice()?;
    let n: usize = shape.iter().product();
    if signed {
        to_numpy(py, detach(py, || rxquant::unpack_int4_signed(p, n))?, &shape)
    } else {
        to_numpy(py, detach(py, || rxquant::unpack_int4_unsigned(p, n))?, &shape)
    }
}
