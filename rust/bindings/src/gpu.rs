//! GPU discovery bindings: HIP runtime status, the KFD topology and OpenCL devices.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rxquant::gpu::{hip, kfd, opencl};

/// HIP runtime status and the KFD topology's GPUs, as a dict.
#[pyfunction]
#[pyo3(signature = (kfd_root=None))]
pub fn rocm_status<'py>(py: Python<'py>, kfd_root: Option<String>) -> PyResult<Bound<'py, PyDict>> {
    let st = py.detach(hip::status);
    let gpus = kfd::gpus(kfd_root.as_deref().unwrap_or(kfd::TOPOLOGY));
    let d = PyDict::new(py);
    d.set_item("hip_available", st.library.is_some())?;
    d.set_item("library", st.library)?;
    d.set_item("hip_version", st.runtime_version.map(hip::version_string))?;
    let devices = PyList::empty(py);
    for dev in &st.devices {
        let e = PyDict::new(py);
        e.set_item("index", dev.index)?;
        e.set_item("name", &dev.name)?;
        // The runtime lists the KFD's GPU nodes in the same order.
        let k = gpus.get(dev.index as usize);
        e.set_item("gfx_target", k.map(|g| g.gfx_target.clone()))?;
        e.set_item("compute_units", k.map(|g| g.compute_units))?;
        devices.append(e)?;
    }
    d.set_item("devices", devices)?;
    let kfd_list = PyList::empty(py);
    for g in &gpus {
        let e = PyDict::new(py);
        e.set_item("node", g.node)?;
        e.set_item("name", &g.name)?;
        e.set_item("gfx_target", &g.gfx_target)?;
        e.set_item("compute_units", g.compute_units)?;
        kfd_list.append(e)?;
    }
    d.set_item("kfd_gpus", kfd_list)?;
    d.set_item("reason", st.reason)?;
    Ok(d)
}

/// OpenCL devices as a list of dicts; raises RuntimeError naming why there are none.
#[pyfunction]
pub fn opencl_devices<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let devs = py.detach(opencl::devices).map_err(pyo3::exceptions::PyRuntimeError::new_err)?;
    let out = PyList::empty(py);
    for d in devs {
        let e = PyDict::new(py);
        e.set_item("index", d.index)?;
        e.set_item("platform", d.platform)?;
        e.set_item("name", d.name)?;
        e.set_item("type", if d.is_gpu { "gpu" } else { "other" })?;
        e.set_item("compute_units", d.compute_units)?;
        e.set_item("opencl_c_version", d.opencl_c_version)?;
        e.set_item("global_memory", d.global_memory)?;
        e.set_item("driver_version", d.driver_version)?;
        e.set_item("max_clock_mhz", d.max_clock_mhz)?;
        out.append(e)?;
    }
    Ok(out)
}

/// Measures the CPU path (INT8 quantize and a Hessian batch's `XᵀX` with the current threads),
/// the figures `device="auto"` compares a device's with.
#[pyfunction]
pub fn measure_cpu<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let f = crate::errors::detach(py, rxquant::gpu::measure::measure_cpu)?;
    let d = PyDict::new(py);
    d.set_item("quantize_gbs", f.quantize_gbs)?;
    d.set_item("gemm_gflops", f.gemm_gflops)?;
    d.set_item("threads", f.threads)?;
    Ok(d)
}
