//! The Hessian observer binding: input statistics of a layer (`2 XᵀX / N`, `E[x²]`).
//!
//! Any number of threads may feed one observer: each batch is reduced with the GIL released and
//! without the lock, then added under a short lock, so the result equals feeding the batches one
//! after the other (up to the order of float64 additions).

use crate::arrays::{to_numpy, FloatArray};
use crate::errors::{detach, to_py};
use crate::with_slice;
use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::sync::Mutex;

#[pyclass(module = "rxquant._rxquant", frozen)]
pub struct HessianObserver {
    inner: Mutex<rxquant::HessianObserver>,
}

impl HessianObserver {
    fn lock(&self) -> std::sync::MutexGuard<'_, rxquant::HessianObserver> {
        // A panic while holding the lock cannot leave half an addition behind (add is a loop of
        // float additions after every check), so a poisoned lock is safe to take over.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl HessianObserver {
    #[new]
    fn new() -> Self {
        HessianObserver { inner: Mutex::new(rxquant::HessianObserver::new()) }
    }

    /// Folds a batch `(..., in)` in; float32/float16/float64. Safe from several threads at once.
    /// With `device` (an OpenCL device), the batch's `XᵀX` is computed there.
    #[pyo3(signature = (x, device=None))]
    fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        device: Option<PyRef<'_, crate::opencl::OpenClDevice>>,
    ) -> PyResult<()> {
        let x = FloatArray::extract(x)?;
        let shape = x.shape();
        let shell = rxquant::HessianObserver { features: self.lock().features, sum: vec![], count: 0 };
        let part = match &device {
            Some(d) => {
                let be = d.backend();
                with_slice!(x, s => detach(py, || be.hessian_partial(&shell, s, &shape)))?
            }
            None => with_slice!(x, s => detach(py, || shell.partial(s, &shape)))?,
        };
        // The lock is taken with the GIL released: a thread waiting for it blocks no Python code.
        detach(py, || self.lock().add_owned(part))
    }

    /// Adds another observer's statistics.
    fn merge(&self, other: &Bound<'_, HessianObserver>) -> PyResult<()> {
        let theirs = other.get().lock().clone();
        self.lock().merge(&theirs).map_err(to_py)
    }

    #[getter]
    fn count(&self) -> u64 {
        self.lock().count
    }

    #[getter]
    fn features(&self) -> Option<usize> {
        self.lock().features
    }

    /// `2 XᵀX / N` as a float64 `(in, in)` array.
    fn hessian<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let o = self.lock().clone();
        let h = detach(py, || o.hessian())?;
        let f = o.features.unwrap_or(0);
        to_numpy(py, h, &[f, f])
    }

    /// `E[x_j²]` as a float64 `(in,)` array.
    fn importance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let o = self.lock();
        let v = o.importance().map_err(to_py)?;
        let n = v.len();
        to_numpy(py, v, &[n])
    }

    /// `(features, count, sum)` with `sum` the float64 running `XᵀX`: its lower triangle packed
    /// by rows (`in (in + 1) / 2` values).
    fn state<'py>(&self, py: Python<'py>) -> PyResult<(Option<usize>, u64, Bound<'py, PyAny>)> {
        let o = self.lock().clone();
        let n = o.sum.len();
        Ok((o.features, o.count, to_numpy(py, o.sum, &[n])?))
    }

    /// Restores a state from `state()` (checked for consistency).
    fn set_state(&self, features: Option<usize>, count: u64, sum: PyReadonlyArray1<'_, f64>) -> PyResult<()> {
        let f = features.unwrap_or(0);
        if sum.len() != f * (f + 1) / 2 || (features.is_none() && count != 0) {
            return Err(to_py(rxquant::Error::Shape(format!(
                "observer state: a packed sum of {} values does not fit {f} features and {count} rows",
                sum.len()
            ))));
        }
        let sum = sum.as_array().iter().copied().collect();
        *self.lock() =
            rxquant::HessianObserver { features, sum: if features.is_some() { sum } else { vec![] }, count };
        Ok(())
    }
}
