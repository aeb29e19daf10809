//! GPU discovery, loaded at run time so that nothing GPU-related is needed to build or import:
//! the AMD KFD topology in sysfs, the HIP runtime (`libamdhip64`, via `dlopen`), and OpenCL
//! platforms (via `opencl3`, which loads `libOpenCL.so.1` at run time).
//!
//! `cl` runs the heavy kernels on an OpenCL device, `select` picks it or the CPU, and the rest
//! reports what is there. With the `hip` cargo feature, `hipsys` adds HIP device queries and
//! device memory through `hip-sys` (linked at build time).

pub mod cl;
pub mod hip;
#[cfg(feature = "hip")]
pub mod hipsys;
pub mod kfd;
pub mod opencl;
pub mod select;
