//! Affine grid search binding: the scale and minimum of each group (float zero points).

use crate::arrays::to_numpy;
use crate::errors::detach;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

type Arrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// `(scale, min)` per group of `group` values along the rows of float32 `x` for the grid
/// `0..=nmax` (see `rxquant::affine::affine_groups`). The GIL is released.
#[pyfunction]
#[pyo3(signature = (x, group, nmax, importance=None, f16=false))]
pub fn affine_groups<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    group: usize,
    nmax: i32,
    importance: Option<PyReadonlyArray1<'py, f32>>,
    f16: bool,
) -> PyResult<Arrays<'py>> {
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    let xs = x.as_slice()?;
    let w = importance.as_ref().map(|w| w.as_slice()).transpose()?;
    let (scale, min) = detach(py, || rxquant::affine::affine_groups(xs, group, nmax, w, f16))?;
    let grid = [rows, cols.checked_div(group).unwrap_or(0)];
    Ok((to_numpy(py, scale, &grid)?, to_numpy(py, min, &grid)?))
}
