//! Memory-mapped safetensors reading (wrapped by `rxquant.checkpoint`).

use crate::arrays::to_numpy;
use crate::errors::{detach, to_py};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// An open safetensors file; tensors are read one at a time.
#[pyclass(module = "rxquant._rxquant")]
pub struct SafetensorsFile {
    inner: rxquant::checkpoint::SafetensorsFile,
}

#[pymethods]
impl SafetensorsFile {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        Ok(SafetensorsFile { inner: detach(py, || rxquant::checkpoint::SafetensorsFile::open(&path))? })
    }

    /// Tensor names in file order.
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    /// The `__metadata__` strings.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.user_metadata() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// `(dtype, shape)` of a tensor, dtype as safetensors names it (`F32`, `BF16`, ...).
    fn info(&self, name: &str) -> PyResult<(String, Vec<usize>)> {
        self.inner.dtype_shape(name).map_err(to_py)
    }

    /// A floating tensor as float32 (converted from F16/BF16/F64), in its shape.
    fn read_f32<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let (_, shape) = self.inner.dtype_shape(name).map_err(to_py)?;
        let inner = &self.inner;
        let v = detach(py, || inner.to_f32(name))?;
        to_numpy(py, v, &shape)
    }

    /// A tensor's stored bytes (a copy), for tensors that pass through unchanged.
    fn read_raw<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let b = self.inner.raw(name).map_err(to_py)?.to_vec();
        self.inner.release(name);
        let n = b.len();
        to_numpy(py, b, &[n])
    }
}
