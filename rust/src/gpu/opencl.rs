//! OpenCL platforms and devices through `opencl3`, whose `dynamic` feature loads
//! `libOpenCL.so.1` at run time: a machine without an OpenCL loader gets an explanation, not a
//! failed import.

use opencl3::device::{Device, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_GPU};
use opencl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED;
use opencl3::platform::{get_platforms, Platform};

/// One OpenCL device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClDevice {
    /// `opencl:N` index, in platform then device order.
    pub index: usize,
    pub platform: String,
    pub name: String,
    pub is_gpu: bool,
    pub compute_units: u32,
    pub opencl_c_version: String,
    pub global_memory: u64,
    /// Maximum clock (MHz), for peak-throughput estimates.
    pub max_clock_mhz: u32,
    /// The driver's version string (a new driver invalidates cached measurements).
    pub driver_version: String,
}

/// The OpenCL platforms, or why there are none (no loader library, no driver registered).
pub fn platforms() -> Result<Vec<Platform>, String> {
    get_platforms().map_err(|e| {
        if e.0 == DLOPEN_RUNTIME_LOAD_FAILED {
            "no OpenCL loader: libOpenCL.so.1 cannot be loaded (install ocl-icd-libopencl1 and a driver)"
                .into()
        } else {
            format!("no OpenCL platform: {e}")
        }
    })
}

/// The devices, or why there are none.
pub fn devices() -> Result<Vec<ClDevice>, String> {
    let platforms = platforms()?;
    let mut out = Vec::new();
    for p in platforms {
        let pname = p.name().unwrap_or_default();
        let ids = p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default();
        for id in ids {
            let d = Device::new(id);
            out.push(ClDevice {
                index: out.len(),
                platform: pname.clone(),
                name: d.name().unwrap_or_default(),
                is_gpu: d.dev_type().map(|t| t & CL_DEVICE_TYPE_GPU != 0).unwrap_or(false),
                compute_units: d.max_compute_units().unwrap_or(0),
                opencl_c_version: d.opencl_c_version().unwrap_or_default(),
                global_memory: d.global_mem_size().unwrap_or(0),
                driver_version: d.driver_version().unwrap_or_default(),
                max_clock_mhz: d.max_clock_frequency().unwrap_or(0),
            });
        }
    }
    Ok(out)
}
