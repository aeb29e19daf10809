//! Thin PyO3 bindings over the `rxquant` crate: one file per concept, no math here.

mod affine;
mod arrays;
mod calib;
mod checkpoint;
mod errors;
mod files;
mod ggml;
mod gguf;
mod gptq;
mod gpu;
mod hessian;
mod metrics;
mod opencl;
mod pack;
mod quantize;
mod scheme;

use pyo3::prelude::*;

/// The compiled part of the `rxquant` Python package (private: import `rxquant` instead).
#[pymodule]
fn _rxquant(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(quantize::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize::quantize_minmax, m)?)?;
    m.add_function(wrap_pyfunction!(quantize::dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize::fake_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize::to_fp16, m)?)?;
    m.add_function(wrap_pyfunction!(pack::pack_int4, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::transpose, m)?)?;
    m.add_function(wrap_pyfunction!(pack::unpack_int4, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::metrics, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    m.add_function(wrap_pyfunction!(calib::calibrate, m)?)?;
    m.add_class::<calib::Observer>()?;
    m.add_class::<hessian::HessianObserver>()?;
    m.add_function(wrap_pyfunction!(gptq::gptq, m)?)?;
    m.add_function(wrap_pyfunction!(gptq::calibrate_weighted, m)?)?;
    m.add_function(wrap_pyfunction!(affine::affine_groups, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_types, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::gguf_layout, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_quantize_file, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_gptq, m)?)?;
    m.add_class::<checkpoint::SafetensorsFile>()?;
    m.add_function(wrap_pyfunction!(gpu::rocm_status, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::opencl_devices, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::measure_cpu, m)?)?;
    m.add_class::<opencl::OpenClDevice>()?;
    m.add("DeviceError", m.py().get_type::<errors::DeviceError>())?;
    Ok(())
}

/// Number of worker threads rayon uses (set `RAYON_NUM_THREADS` before import to change it).
#[pyfunction]
fn threads() -> usize {
    rxquant::threads()
}
