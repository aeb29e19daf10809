//! Calibration bindings: one-shot `calibrate` and the streaming `Observer`.

use crate::arrays::{qparams_arrays, to_numpy, FloatArray};
use crate::errors::{detach, to_py};
use crate::opencl::OpenClDevice;
use crate::scheme::{parse, SchemeSpec};
use crate::with_slice;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rxquant::hist::{Hist, HistKind};
use rxquant::{CalibOptions, Method};
use std::sync::Mutex;

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

/// Streaming calibration state (wrapped by `rxquant.Observer`). Any number of threads may feed
/// one observer: each batch's passes over the data run with the GIL released and without the lock;
/// the lock covers only adding the batch's ranges and counts (see `rxquant::Observer::observe`),
/// which merge exactly in any order.
#[pyclass(module = "rxquant._rxquant", frozen)]
pub struct Observer {
    inner: Mutex<rxquant::Observer>,
}

impl Observer {
    fn lock(&self) -> std::sync::MutexGuard<'_, rxquant::Observer> {
        // Every mutation checks first and then changes state in steps that cannot fail, so a
        // panic cannot leave a half-updated observer behind: a poisoned lock is safe to take.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One batch observed on `dev`, then absorbed (the GIL released throughout).
    fn feed<T: rxquant::Elem>(
        &self,
        py: Python<'_>,
        dev: &(impl rxquant::Reducer<T> + Sync),
        x: &[T],
        shape: &[usize],
    ) -> PyResult<()> {
        detach(py, || {
            // A copy without histograms is enough for the passes (they read scheme and grid).
            let shell = self.lock().clone_settings();
            let batch = shell.observe(dev, x, shape)?;
            self.lock().absorb(&batch)
        })
    }
}

#[pymethods]
impl Observer {
    #[new]
    fn new(method: &str, spec: SchemeSpec, opts: OptsSpec) -> PyResult<Self> {
        let m = Method::parse(method).map_err(to_py)?;
        let o = rxquant::Observer::new(parse(&spec)?, m, options(opts)).map_err(to_py)?;
        Ok(Observer { inner: Mutex::new(o) })
    }

    /// Folds one batch in (GIL released), its passes on `device` when given. Safe to call from
    /// several threads on one observer.
    #[pyo3(signature = (x, device=None))]
    pub fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        device: Option<PyRef<'_, OpenClDevice>>,
    ) -> PyResult<()> {
        let x = FloatArray::extract(x)?;
        let shape = x.shape();
        match &device {
            Some(d) => {
                let v = x.f32_data();
                self.feed(py, d.backend(), &v, &shape)
            }
            None => with_slice!(x, s => self.feed(py, &rxquant::Cpu, s, &shape)),
        }
    }

    fn merge(&self, py: Python<'_>, other: &Bound<'_, Observer>) -> PyResult<()> {
        let theirs = other.get().lock().clone();
        detach(py, || self.lock().merge(&theirs))
    }

    fn qparams<'py>(&self, py: Python<'py>) -> PyResult<Arrays<'py>> {
        let qp = detach(py, || self.lock().qparams())?;
        qparams_arrays(py, qp)
    }

    #[getter]
    fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// The running state as numpy arrays: grid, min, max, hist_lo, hist_width, hist_zeros, counts, batches.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let o = self.lock().clone();
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
        &self,
        grid: Option<Vec<usize>>,
        min: PyReadonlyArray1<'_, f32>,
        max: PyReadonlyArray1<'_, f32>,
        hist_lo: PyReadonlyArray1<'_, f64>,
        hist_width: PyReadonlyArray1<'_, f64>,
        hist_zeros: PyReadonlyArray1<'_, u64>,
        counts: PyReadonlyArray2<'_, u64>,
        batches: u64,
    ) -> PyResult<()> {
        let mut o = self.lock();
        let n = min.len();
        let uses_hist = o.method != Method::MinMax;
        let hist_rows = if uses_hist { n } else { 0 };
        // A state saved from many small cells has fewer bins than the option (capped memory).
        let bins = o.hist_bins(n);
        let ok = max.len() == n
            && hist_lo.len() == hist_rows
            && hist_width.len() == hist_rows
            && hist_zeros.len() == hist_rows
            && counts.shape()[0] == hist_rows
            && (hist_rows == 0 || counts.shape()[1] == bins)
            && grid.as_ref().map(|g| g.iter().product::<usize>() == n).unwrap_or(n == 0);
        if !ok {
            return Err(to_py(rxquant::Error::Shape("observer state arrays do not fit together".into())));
        }
        let c = counts.as_array();
        let abs = o.kind() == HistKind::Abs;
        let hists = (0..hist_rows)
            .map(|p| {
                let (lo, width) = (hist_lo.as_array()[p], hist_width.as_array()[p]);
                let bad =
                    |e: String| to_py(rxquant::Error::Invalid(format!("observer state, parameter {p}: {e}")));
                if abs && lo < 0.0 {
                    return Err(bad(format!("a histogram of |x| starts at 0, not at lo={lo}")));
                }
                Hist::restore(lo, width, c.row(p).to_vec(), hist_zeros.as_array()[p]).map_err(bad)
            })
            .collect::<PyResult<Vec<Hist>>>()?;
        o.grid = grid;
        o.opts.bins = bins;
        o.min = min.as_array().to_vec();
        o.max = max.as_array().to_vec();
        o.hists = hists;
        o.batches = batches;
        Ok(())
    }
}
