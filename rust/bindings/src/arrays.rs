//! Reading numpy arrays without copying them, and handing Rust buffers back to numpy.

use half::f16;
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A C-contiguous floating-point array borrowed from numpy.
pub enum FloatArray<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F16(PyReadonlyArrayDyn<'py, f16>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl<'py> FloatArray<'py> {
    /// Borrows `obj` as a float array; other dtypes are a `TypeError` naming the dtype.
    pub fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let arr = if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
            FloatArray::F32(a.readonly())
        } else if let Ok(a) = obj.cast::<PyArrayDyn<f16>>() {
            FloatArray::F16(a.readonly())
        } else if let Ok(a) = obj.cast::<PyArrayDyn<f64>>() {
            FloatArray::F64(a.readonly())
        } else {
            let dtype = obj.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
            return Err(PyTypeError::new_err(format!(
                "expected a float32, float16 or float64 array, got dtype {dtype}"
            )));
        };
        if !arr.c_contiguous() {
            return Err(PyValueError::new_err(
                "array must be C-contiguous (the Python layer copies when needed)",
            ));
        }
        Ok(arr)
    }

    fn c_contiguous(&self) -> bool {
        match self {
            FloatArray::F32(a) => a.is_c_contiguous(),
            FloatArray::F16(a) => a.is_c_contiguous(),
            FloatArray::F64(a) => a.is_c_contiguous(),
        }
    }

    /// The data as f32: borrowed for float32 arrays, converted otherwise (device kernels take f32).
    pub fn f32_data(&self) -> std::borrow::Cow<'_, [f32]> {
        use rxquant::Elem;
        match self {
            FloatArray::F32(a) => std::borrow::Cow::Borrowed(a.as_slice().expect("checked contiguous")),
            FloatArray::F16(a) => {
                a.as_slice().expect("checked contiguous").iter().map(|v| v.to_f32()).collect()
            }
            FloatArray::F64(a) => {
                a.as_slice().expect("checked contiguous").iter().map(|v| v.to_f32()).collect()
            }
        }
    }

    /// The array's shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            FloatArray::F32(a) => a.shape().to_vec(),
            FloatArray::F16(a) => a.shape().to_vec(),
            FloatArray::F64(a) => a.shape().to_vec(),
        }
    }
}

/// Runs `$body` with `$s` bound to the array's data as a typed slice (`&[f32]`, `&[f16]` or `&[f64]`).
#[macro_export]
macro_rules! with_slice {
    ($arr:expr, $s:ident => $body:expr) => {
        match &$arr {
            $crate::arrays::FloatArray::F32(a) => {
                let $s = a.as_slice().expect("checked contiguous");
                $body
            }
            $crate::arrays::FloatArray::F16(a) => {
                let $s = a.as_slice().expect("checked contiguous");
                $body
            }
            $crate::arrays::FloatArray::F64(a) => {
                let $s = a.as_slice().expect("checked contiguous");
                $body
            }
        }
    };
}

/// A new zeroed numpy array: large outputs are allocated by numpy (which asks the kernel for huge
/// pages) and filled in place by the kernels, instead of copying or faulting in a Rust buffer.
pub fn zeros<'py, T: numpy::Element>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyArrayDyn<T>> {
    PyArrayDyn::zeros(py, numpy::IxDyn(shape), false)
}

/// Fills a new array of `shape` with `f(slice)` run with the GIL released. `f` writes every
/// element (the array is returned only when it succeeds), so the memory is not zeroed first:
/// `calloc`'s zeroing or fresh pages cost as much as a fast kernel's own pass, and an allocation
/// the allocator reuses has its pages mapped already.
pub fn fill<'py, T: numpy::Element + Send>(
    py: Python<'py>,
    shape: &[usize],
    f: impl FnOnce(&mut [T]) -> rxquant::Result<()> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the array is not readable from Python until `f` has written every element; on an
    // error it is dropped unread.
    let out = unsafe { PyArrayDyn::<T>::new(py, numpy::IxDyn(shape), false) };
    {
        let mut rw = out.readwrite();
        let slice = rw.as_slice_mut()?;
        crate::errors::detach(py, || f(slice))?;
    }
    Ok(out.into_any())
}

/// [`fill`], or with `out` (a C-contiguous, writeable array of `T` and `shape`, checked with
/// clear messages by the Python layer) written in place and returned.
pub fn fill_or_into<'py, T: numpy::Element + Send>(
    py: Python<'py>,
    out: Option<&Bound<'py, PyAny>>,
    shape: &[usize],
    f: impl FnOnce(&mut [T]) -> rxquant::Result<()> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(o) = out else { return fill(py, shape, f) };
    let arr = o.cast::<PyArrayDyn<T>>().map_err(|_| PyTypeError::new_err("out has the wrong dtype"))?;
    if arr.shape() != shape {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}; the result has {shape:?}",
            arr.shape()
        )));
    }
    // The Python layer refuses read-only arrays, so a borrow error means shared memory.
    let mut rw = arr.try_readwrite().map_err(|e| {
        PyValueError::new_err(format!("out cannot be written: it shares memory with an input ({e})"))
    })?;
    let slice = rw.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
    crate::errors::detach(py, || f(slice))?;
    Ok(o.clone())
}

/// Moves a Rust vector into a numpy array of `shape` (no copy).
pub fn to_numpy<'py, T: numpy::Element>(
    py: Python<'py>,
    v: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let flat = numpy::PyArray1::from_vec(py, v);
    // numpy's own reshape (a view, no copy) also handles the 0-d shape `()`.
    flat.call_method1("reshape", (pyo3::types::PyTuple::new(py, shape)?,))
}

/// Scale and zero point as numpy arrays shaped like the parameter grid.
pub fn qparams_arrays<'py>(
    py: Python<'py>,
    qp: rxquant::QParams,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    Ok((to_numpy(py, qp.scale, &qp.grid)?, to_numpy(py, qp.zero_point, &qp.grid)?))
}

/// `(codes, scale, zero_point)` from `f`, which fills the code bytes of `n` values (packed INT4
/// when `pack`: a flat uint8 array) with the GIL released and returns their parameters.
pub fn codes_with_params<'py>(
    py: Python<'py>,
    shape: &[usize],
    pack: bool,
    f: impl FnOnce(&mut [u8]) -> rxquant::Result<rxquant::QParams> + Send,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let n: usize = shape.iter().product();
    let out_shape = if pack { vec![n.div_ceil(2)] } else { shape.to_vec() };
    let mut qp = None;
    let q = fill::<u8>(py, &out_shape, |out| {
        qp = Some(f(out)?);
        Ok(())
    })?;
    let qp = qp.expect("set by a successful fill");
    let q = codes_view(py, q, qp.scheme.signed() && !pack)?;
    let (scale, zero_point) = qparams_arrays(py, qp)?;
    Ok((q, scale, zero_point))
}

/// Code bytes as numpy hands them out: int8 for a signed grid (a view of the two's complement
/// bytes, no copy), uint8 otherwise.
pub fn codes_view<'py>(py: Python<'py>, q: Bound<'py, PyAny>, signed: bool) -> PyResult<Bound<'py, PyAny>> {
    if signed {
        q.call_method1("view", (numpy::dtype::<i8>(py),))
    } else {
        Ok(q)
    }
}

/// `a.T` of a C-contiguous 2-D float32 array, as a C-contiguous array: new, or `out` (the ONNX
/// writer lays every MatMul weight out as `N x K`, through one buffer for all of them, since
/// fresh pages cost as much as the transpose).
#[pyfunction]
#[pyo3(signature = (a, out=None))]
pub fn transpose<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = a
        .cast::<numpy::PyArray2<f32>>()
        .map_err(|_| PyTypeError::new_err("transpose takes a 2-D float32 array"))?
        .readonly();
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    let src = a.as_slice().map_err(|_| PyValueError::new_err("transpose needs a C-contiguous array"))?;
    fill_or_into::<f32>(py, out, &[cols, rows], |dst| rxquant::transpose(src, rows, cols, dst))
}
