//! GPU discovery, loaded at run time so that nothing GPU-related is needed to build or import:
//! the AMD KFD topology in sysfs, the HIP runtime (`libamdhip64`, via `dlopen`), and OpenCL
//! platforms (via `opencl3`, which loads `libOpenCL.so.1` at run time).
//!
//! `cl` runs the element-wise kernels on an OpenCL device, `stream` moves host tensors through
//! it with pinned, overlapped transfers, `matrix` runs the products (Hessians, GPTQ, layer
//! errors), `measure` times the device and the CPU so callers can choose by cost, `select` picks
//! a device for Rust callers, and the rest reports what is there. With the `hip` cargo feature,
//! `hipsys` adds HIP device queries and device memory through `hip-sys` (linked at build time).

pub mod cl;
pub mod hip;
#[cfg(feature = "hip")]
pub mod hipsys;
pub mod kfd;
pub mod matrix;
pub mod measure;
pub mod opencl;
pub mod select;
pub mod stream;
