//! The OpenCL backend as a Python object (`rxquant.devices` picks it for `device="opencl..."`).
//! Kernels run with the GIL released; calibration and metrics take it as their `device=`.

use crate::arrays::{codes_view, codes_with_params, fill, FloatArray};
use crate::calib::{Observer, OptsSpec};
use crate::errors::{detach, to_py};
use crate::scheme::SchemeSpec;
use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rxquant::gpu::cl::{ClBackend, ClFloat};
use rxquant::{ParamMap, QParams};

#[pyclass(module = "rxquant._rxquant", frozen)]
pub struct OpenClDevice {
    inner: ClBackend,
}

impl OpenClDevice {
    pub fn backend(&self) -> &ClBackend {
        &self.inner
    }
}

/// Core parameters (shape-checked, as on the CPU path) and the element map.
fn qparams(
    spec: &SchemeSpec,
    shape: &[usize],
    scale: PyReadonlyArrayDyn<'_, f32>,
    zp: PyReadonlyArrayDyn<'_, i32>,
) -> PyResult<(ParamMap, QParams)> {
    let qp = crate::quantize::qparams(spec, shape, scale, zp)?;
    let map = ParamMap::new(shape, qp.scheme.granularity).map_err(to_py)?;
    Ok((map, qp))
}

/// Codes of `x` on the device into `out`, packed two to a byte when `pack`.
fn codes_into<T: ClFloat>(
    be: &ClBackend,
    x: &[T],
    map: &ParamMap,
    qp: &QParams,
    pack: bool,
    out: &mut [u8],
) -> rxquant::Result<()> {
    if pack {
        be.quantize_packed(x, map, qp, out)
    } else {
        be.quantize(x, map, qp, out)
    }
}

#[pymethods]
impl OpenClDevice {
    /// Opens `opencl:index`, or the first GPU when `index` is None. `work_group`: a multiple of
    /// the wavefront (64 on GCN), rounded down to a power of two and the device's limit.
    #[new]
    #[pyo3(signature = (index=None, work_group=64))]
    fn new(py: Python<'_>, index: Option<usize>, work_group: usize) -> PyResult<Self> {
        Ok(OpenClDevice { inner: detach(py, || ClBackend::open(index, work_group))? })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.device_name.clone()
    }

    #[getter]
    fn work_group(&self) -> usize {
        self.inner.work_group
    }

    #[getter]
    fn exact_division(&self) -> bool {
        self.inner.exact_division
    }

    #[getter]
    fn is_gpu(&self) -> bool {
        self.inner.is_gpu
    }

    /// The matrix product's tiling: `(tile, depth, outputs per work-item side)`.
    #[getter]
    fn tiles(&self) -> (usize, usize, usize) {
        let t = self.inner.tiles;
        (t.tm, t.tk, t.wpt)
    }

    /// Measures this device (transfers, memory bandwidth, kernels, a streamed quantize, latency):
    /// a dict of the figures, in GB/s, GFLOP/s and seconds.
    fn measure<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = detach(py, || self.inner.measure())?;
        let d = PyDict::new(py);
        d.set_item("upload_gbs", f.upload_gbs)?;
        d.set_item("download_gbs", f.download_gbs)?;
        d.set_item("pageable_upload_gbs", f.pageable_upload_gbs)?;
        d.set_item("memory_gbs", f.memory_gbs)?;
        d.set_item("quantize_gbs", f.quantize_gbs)?;
        d.set_item("gemm_gflops", f.gemm_gflops)?;
        d.set_item("stream_gbs", f.stream_gbs)?;
        d.set_item("latency_s", f.latency_s)?;
        Ok(d)
    }

    /// Starts recording every upload, kernel and download's device time.
    fn start_trace(&self) {
        self.inner.start_trace()
    }

    /// The recorded commands as `(kind, seconds)`; stops the trace.
    fn take_trace(&self, py: Python<'_>) -> PyResult<Vec<(String, f64)>> {
        let t = detach(py, || self.inner.take_trace())?;
        Ok(t.into_iter().map(|e| (e.kind, e.seconds)).collect())
    }

    /// `tr(D H Dᵀ) / 2` for float32 `d` `(out, in)` and float64 `hessian` `(in, in)`.
    fn layer_error(
        &self,
        py: Python<'_>,
        d: numpy::PyReadonlyArray2<'_, f32>,
        hessian: numpy::PyReadonlyArray2<'_, f64>,
    ) -> PyResult<f64> {
        let (rows, cols) = (d.shape()[0], d.shape()[1]);
        let (ds, hs) = (d.as_slice()?, hessian.as_slice()?);
        detach(py, || self.inner.layer_error(ds, rows, cols, hs))
    }

    /// `calibrate(x, method, spec, opts, device=self)`: ranges and histograms on this device.
    fn calibrate<'py>(
        slf: PyRef<'py, Self>,
        x: &Bound<'py, PyAny>,
        method: &str,
        spec: SchemeSpec,
        opts: OptsSpec,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        crate::calib::calibrate(slf.py(), x, method, spec, opts, Some(slf))
    }

    /// `observer.update(x, device=self)`.
    fn observe(slf: PyRef<'_, Self>, observer: &Bound<'_, Observer>, x: &Bound<'_, PyAny>) -> PyResult<()> {
        observer.get().update(slf.py(), x, Some(slf))
    }

    /// `metrics(x, y, device=self)`.
    fn metrics<'py>(
        slf: PyRef<'py, Self>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        crate::metrics::metrics(slf.py(), x, y, Some(slf))
    }

    /// One code per element (int8 for symmetric schemes, uint8 otherwise); with `pack`, INT4
    /// codes packed two to a byte on the device (flat uint8).
    #[pyo3(signature = (x, spec, scale, zero_point, pack=false))]
    fn quantize<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        spec: SchemeSpec,
        scale: PyReadonlyArrayDyn<'py, f32>,
        zero_point: PyReadonlyArrayDyn<'py, i32>,
        pack: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = FloatArray::extract(x)?;
        let shape = a.shape();
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let be = &self.inner;
        let out_shape = if pack { vec![map.len.div_ceil(2)] } else { shape.clone() };
        let q = match &a {
            // float16 goes up as is and is widened on the device (vload_half).
            FloatArray::F16(h) => {
                let v = h.as_slice()?;
                fill::<u8>(py, &out_shape, |out| codes_into(be, v, &map, &qp, pack, out))?
            }
            _ => {
                let v = a.f32_data();
                fill::<u8>(py, &out_shape, |out| codes_into(be, &v[..], &map, &qp, pack, out))?
            }
        };
        codes_view(py, q, qp.scheme.signed() && !pack)
    }

    /// Min-max parameters and codes (packed when `pack`) from one upload of float32 `x`:
    /// `(codes, scale, zero_point)`.
    #[pyo3(signature = (x, spec, pack=false))]
    fn quantize_minmax<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
        spec: SchemeSpec,
        pack: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let shape = x.shape().to_vec();
        let scheme = crate::scheme::parse(&spec)?;
        let map = ParamMap::new(&shape, scheme.granularity).map_err(to_py)?;
        let (v, be) = (x.as_slice()?, &self.inner);
        codes_with_params(py, &shape, pack, |out| be.quantize_minmax(v, &map, scheme, pack, out))
    }

    /// Float32 `(q - z) * s` from int8/uint8 codes.
    fn dequantize<'py>(
        &self,
        py: Python<'py>,
        q: &Bound<'py, PyAny>,
        spec: SchemeSpec,
        scale: PyReadonlyArrayDyn<'py, f32>,
        zero_point: PyReadonlyArrayDyn<'py, i32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // int8 codes are read as their bytes (the kernel sign-extends for signed grids).
        let q = if q.cast::<numpy::PyArrayDyn<i8>>().is_ok() {
            q.call_method1("view", (numpy::dtype::<u8>(py),))?
        } else {
            q.clone()
        };
        let codes = q.cast::<numpy::PyArrayDyn<u8>>()?.readonly();
        let shape = codes.shape().to_vec();
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let (c, be) = (codes.as_slice()?, &self.inner);
        fill::<f32>(py, &shape, |out| be.dequantize(c, &map, &qp, out))
    }

    /// Fake-quantized float32 and the STE mask.
    fn fake_quantize<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        spec: SchemeSpec,
        scale: PyReadonlyArrayDyn<'py, f32>,
        zero_point: PyReadonlyArrayDyn<'py, i32>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let a = FloatArray::extract(x)?;
        let shape = a.shape();
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let (v, be) = (a.f32_data(), &self.inner);
        let mask = crate::arrays::zeros::<u8>(py, &shape);
        let y = {
            let mut m = mask.readwrite();
            let ms = m.as_slice_mut()?;
            fill::<f32>(py, &shape, |out| be.fake_quantize(&v, &map, &qp, out, ms))?
        };
        // The kernel writes 0 or 1, so the bytes are valid booleans.
        Ok((y, mask.call_method1("view", (numpy::dtype::<bool>(py),))?))
    }
}
