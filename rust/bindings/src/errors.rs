//! Turns `rxquant::Error` into Python exceptions, and keeps Rust panics from reaching Python.

use pyo3::exceptions::{PyIndexError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

pyo3::create_exception!(
    _rxquant,
    DeviceError,
    pyo3::exceptions::PyRuntimeError,
    "A GPU runtime failed (no platform or device, build failure, out of memory, failed launch)."
);

/// Maps each error variant to one Python exception type.
pub fn to_py(e: rxquant::Error) -> PyErr {
    use rxquant::Error::*;
    let msg = e.to_string();
    match e {
        Axis { .. } => PyIndexError::new_err(msg),
        Io(_) => PyOSError::new_err(msg),
        Device(_) => DeviceError::new_err(msg),
        NonFinite { .. } | GroupSize { .. } | Shape(_) | OutOfRange { .. } | Invalid(_) | Format(_) => {
            PyValueError::new_err(msg)
        }
    }
}

/// Runs `f` with the GIL released, converting errors and panics to Python exceptions.
pub fn detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> rxquant::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(to_py),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(PyRuntimeError::new_err(format!("rxquant internal error (please report): {what}")))
        }
    }
}
