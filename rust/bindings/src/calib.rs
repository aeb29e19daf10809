//! Calibration bindings: one-shot `calibrate` and the streaming `Observer`.

use crate::arrays::{qparams_arrays, to_numpy, FloatArray};
use crate::errors::{detach, to_py};
use crate::opencl::OpenClDevice;
use crate::scheme::{parse, SchemeSpec};
use crate::with_slice;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rxquant::hist::Hist;
use rxquant::{CalibOptions, Method};

/// `(bins, percentile, averaging, exact, exact_limit, ignore_nonfinite)`.
pub type OptsSpec = (usize, f64, Option<f64>, Option<bool>, usize, bool);

pub fn options(o: OptsSpec) -> CalibOptions {
    let (bins, percentile, averaging, exact, exact_limit, ignore_nonfinite) = o;
    CalibOptions { bins, percentile, averaging, exact, exact_limit, ignore_nonfinite }
}

type Arrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// Calibrates `x`; returns `(scale, zero_point)` shaped like the parameter grid. With `device`,
/// the range and histogram passes run on that OpenCL device.
#[pyfunction]
#[pyo3(signature = (x, method, spec, opts, device=None))]
pub fn calibrate<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    method: &str,
    spec: SchemeSpec,
    opts: OptsSpec,
    device: Option<PyRef<'py, OpenClDevice>>,
) -> PyResult<Arrays<'py>> {
    let x = FloatArray::extract(x)?;
    let (scheme, method, opts, shape) =
        (parse(&spec)?, Method::parse(method).map_err(to_py)?, options(opts), x.shape());
    let qp = match &device {
        Some(d) => {
            let (v, be) = (x.f32_data(), d.backend());
            detach(py, || rxquant::calibrate_on(be, &v, &shape, scheme, method, &opts))?
        }
        None => with_slice!(x, s => detach(py, || rxquant::calibrate(s, &shape, scheme, method, &opts)))?,
    };
    qparams_arrays(py, qp)
}

/// Streaming calibration state (wrapped by `rxquant.Observer`).
#[pyclass(module = "rxquant._rxquant")]
pub struct Observer {
    inner: rxquant::Observer,
}

#[pymethods]
impl Observer {
    #[new]
    fn new(method: &str, spec: SchemeSpec, opts: OptsSpec) -> PyResult<Self> {
        let m = Method::parse(method).map_err(to_py)?;
        Ok(Observer { inner: rxquant::Observer::new(parse(&spec)?, m, options(opts)).map_err(to_py)? })
    }

    /// Folds one batch in (GIL released), its passes on `device` when given.
    #[pyo3(signature = (x, device=None))]
    pub fn update(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        device: Option<PyRef<'_, OpenClDevice>>,
    ) -> PyResult<()> {
        let x = FloatArray::extract(x)?;
        let shape = x.shape();
        let inner = &mut self.inner;
        match &device {
            Some(d) => {
                let (v, be) = (x.f32_data(), d.backend());
                detach(py, || inner.update_on(be, &v, &shape))
            }
            None => with_slice!(x, s => detach(py, || inner.update(s, &shape))),
        }
    }

    fn merge(&mut self, other: PyRef<'_, Observer>) -> PyResult<()> {
        self.inner.merge(&other.inner).map_err(to_py)
    }

    fn qparams<'py>(&self, py: Python<'py>) -> PyResult<Arrays<'py>> {
        let inner = &self.inner;
        let qp = detach(py, || inner.qparams())?;
        qparams_arrays(py, qp)
    }

    #[getter]
    fn batches(&self) -> u64 {
        self.inner.batches
    }

    /// The running state as numpy arrays: grid, min, max, hist_lo, hist_width, hist_zeros, counts, batches.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let o = &self.inner;
        let d = PyDict::new(py);
        d.set_item("grid", o.grid.clone())?;
        d.set_item("min", to_numpy(py, o.min.clone(), &[o.min.len()])?)?;
        d.set_item("max", to_numpy(py, o.max.clone(), &[o.max.len()])?)?;
        let n = o.hists.len();
        d.set_item("hist_lo", to_numpy(py, o.hists.iter().map(|h| h.lo).collect(), &[n])?)?;
        d.set_item("hist_width", to_numpy(py, o.hists.iter().map(|h| h.width).collect(), &[n])?)?;
        d.set_item("hist_zeros", to_numpy(py, o.hists.iter().map(|h| h.zeros).collect(), &[n])?)?;
        let counts: Vec<u64> = o.hists.iter().flat_map(|h| h.counts.iter().copied()).collect();
        d.set_item("counts", to_numpy(py, counts, &[n, if n == 0 { 0 } else { o.opts.bins }])?)?;
        d.set_item("batches", o.batches)?;
        Ok(d)
    }

    /// Restores a state produced by `state()` (checked for consistency).
    #[allow(clippy::too_many_arguments)]
    fn set_state(
        &mut self,
        grid: Option<Vec<usize>>,
        min: PyReadonlyArray1<'_, f32>,
        max: PyReadonlyArray1<'_, f32>,
        hist_lo: PyReadonlyArray1<'_, f64>,
        hist_width: PyReadonlyArray1<'_, f64>,
        hist_zeros: PyReadonlyArray1<'_, u64>,
        counts: PyReadonlyArray2<'_, u64>,
        batches: u64,
    ) -> PyResult<()> {
        let o = &mut self.inner;
        let n = min.len();
        let uses_hist = o.method != Method::MinMax;
        let hist_rows = if uses_hist { n } else { 0 };
        let ok = max.len() == n
            && hist_lo.len() == hist_rows
            && hist_width.len() == hist_rows
            && hist_zeros.len() == hist_rows
            && counts.shape()[0] == hist_rows
            && (hist_rows == 0 || counts.shape()[1] == o.opts.bins)
            && grid.as_ref().map(|g| g.iter().product::<usize>() == n).unwrap_or(n == 0);
        if !ok {
            return Err(to_py(rxquant::Error::Shape("observer state arrays do not fit together".into())));
        }
        let c = counts.as_array();
        o.grid = grid;
        o.min = min.as_array().to_vec();
        o.max = max.as_array().to_vec();
        o.hists = (0..hist_rows)
            .map(|p| Hist {
                lo: hist_lo.as_array()[p],
                width: hist_width.as_array()[p],
                counts: c.row(p).to_vec(),
                zeros: hist_zeros.as_array()[p],
            })
            .collect();
        o.batches = batches;
        Ok(())
    }
}
