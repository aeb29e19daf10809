//! Error-metric binding.

use crate::arrays::FloatArray;
use crate::errors::detach;
use crate::opencl::OpenClDevice;
use crate::with_slice;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Returns a dict: sqnr_db, cosine, mse, mae, max_abs_error, count. With `device`, the sums run
/// on that OpenCL device.
#[pyfunction]
#[pyo3(signature = (x, y, device=None))]
pub fn metrics<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    device: Option<PyRef<'py, OpenClDevice>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (a, b) = (FloatArray::extract(x)?, FloatArray::extract(y)?);
    if a.shape() != b.shape() {
        return Err(crate::errors::to_py(rxquant::Error::Shape(format!(
            "reference has shape {:?}, reconstruction has shape {:?}",
            a.shape(),
            b.shape()
        ))));
    }
    let m = match &device {
        Some(d) => {
            let (s, t, be) = (a.f32_data(), b.f32_data(), d.backend());
            detach(py, || be.metrics(&s, &t))?
        }
        None => with_slice!(a, s => with_slice!(b, t => detach(py, || rxquant::metrics(s, t))))?,
    };
    let d = PyDict::new(py);
    d.set_item("sqnr_db", m.sqnr_db)?;
    d.set_item("cosine", m.cosine)?;
    d.set_item("mse", m.mse)?;
    d.set_item("mae", m.mae)?;
    d.set_item("max_abs_error", m.max_abs_error)?;
    d.set_item("count", m.count)?;
    Ok(d)
}
