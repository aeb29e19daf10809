//! GPU discovery, loaded at run time so that nothing GPU-related is needed to build or import:
//! the AMD KFD topology in sysfs, the HIP runtime (`libamdhip64`, via `dlopen`), and OpenCL
//! platforms (via `opencl3`, which loads `libOpenCL.so.1` at run time).
//!
//! `cl` runs the heavy kernels on an OpenCL device; the rest reports what is there.

pub mod cl;
pub mod hip;
pub mod kfd;
pub mod opencl;
