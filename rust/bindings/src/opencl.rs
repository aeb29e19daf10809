//! The OpenCL backend as a Python object (`rxquant.devices` picks it for `device="opencl..."`).
//! OpenCL handles are not thread-safe to move, so this class stays on its creating thread and
//! runs with the GIL held.

use crate::arrays::{to_numpy, FloatArray};
use crate::errors::to_py;
use crate::scheme::{parse, SchemeSpec};
use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use rxquant::gpu::cl::ClBackend;
use rxquant::{ParamMap, QParams};

#[pyclass(module = "rxquant._rxquant", unsendable)]
pub struct OpenClDevice {
    inner: ClBackend,
}

fn f32_input(x: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let a = FloatArray::extract(x)?;
    let shape = a.shape();
    let v = crate::with_slice!(a, s => s.iter().map(|v| rxquant::Elem::to_f32(*v)).collect::<Vec<f32>>());
    Ok((v, shape))
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

#[pymethods]
impl OpenClDevice {
    /// Opens `opencl:index`, or the first GPU when `index` is None.
    #[new]
    #[pyo3(signature = (index=None, work_group=64))]
    fn new(index: Option<usize>, work_group: usize) -> PyResult<Self> {
        Ok(OpenClDevice { inner: ClBackend::open(index, work_group).map_err(to_py)? })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.device_name.clone()
    }

    #[getter]
    fn exact_division(&self) -> bool {
        self.inner.exact_division
    }

    /// Min-max scale and zero point, the ranges computed on the device.
    fn minmax_qparams<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        spec: SchemeSpec,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let (v, shape) = f32_input(x)?;
        let scheme = parse(&spec)?;
        let map = ParamMap::new(&shape, scheme.granularity).map_err(to_py)?;
        let r = self.inner.ranges(&v, &map).map_err(to_py)?;
        let qp = QParams::from_ranges(scheme, &map, &r);
        Ok((to_numpy(py, qp.scale, &qp.grid)?, to_numpy(py, qp.zero_point, &qp.grid)?))
    }

    /// One code per element (int8 for symmetric schemes, uint8 otherwise).
    fn quantize<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        spec: SchemeSpec,
        scale: PyReadonlyArrayDyn<'py, f32>,
        zero_point: PyReadonlyArrayDyn<'py, i32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, shape) = f32_input(x)?;
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let mut out = vec![0u8; v.len()];
        self.inner.quantize(&v, &map, &qp, &mut out).map_err(to_py)?;
        if qp.scheme.signed() {
            to_numpy(py, out.into_iter().map(|b| b as i8).collect::<Vec<i8>>(), &shape)
        } else {
            to_numpy(py, out, &shape)
        }
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
        let (codes, shape): (Vec<u8>, Vec<usize>) = if let Ok(a) = q.cast::<numpy::PyArrayDyn<i8>>() {
            let a = a.readonly();
            (a.as_slice()?.iter().map(|&c| c as u8).collect(), a.shape().to_vec())
        } else {
            let a = q.cast::<numpy::PyArrayDyn<u8>>()?.readonly();
            (a.as_slice()?.to_vec(), a.shape().to_vec())
        };
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let mut out = vec![0f32; codes.len()];
        self.inner.dequantize(&codes, &map, &qp, &mut out).map_err(to_py)?;
        to_numpy(py, out, &shape)
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
        let (v, shape) = f32_input(x)?;
        let (map, qp) = qparams(&spec, &shape, scale, zero_point)?;
        let (mut out, mut mask) = (vec![0f32; v.len()], vec![0u8; v.len()]);
        self.inner.fake_quantize(&v, &map, &qp, &mut out, &mut mask).map_err(to_py)?;
        let mask: Vec<bool> = mask.into_iter().map(|m| m == 1).collect();
        Ok((to_numpy(py, out, &shape)?, to_numpy(py, mask, &shape)?))
    }
}
