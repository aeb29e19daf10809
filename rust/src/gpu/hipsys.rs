//! HIP through `hip-sys`, linked at build time: the `hip` cargo feature. It is off by default,
//! because a wheel linked to libamdhip64 would not import without ROCm; the default build asks
//! the runtime through `dlopen` instead ([`super::hip`]). Here: device queries and device memory
//! (allocation and copies). There are no HIP kernels; on an AMD card the OpenCL path runs them.
//!
//! Build against Debian's `libamdhip64-dev` with `HIP_PATH=/usr`. Without an AMD GPU every call
//! answers error 100 (`hipErrorNoDevice`), reported as "no device".

use super::hip::describe_error;
use crate::error::{Error, Result};
use hip_sys::hiprt as rt;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;

/// A HIP device's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    /// `gcnArch`, e.g. 803 for Polaris (gfx803).
    pub gcn_arch: i32,
    pub compute_units: u32,
    pub wavefront: u32,
    pub total_memory: u64,
    pub free_memory: u64,
}

fn check(e: rt::hipError_t, call: &str) -> Result<()> {
    if e == rt::hipError_t::hipSuccess {
        return Ok(());
    }
    // SAFETY: hipGetErrorString returns a static string for any error code (or null).
    let text = unsafe {
        let p = rt::hipGetErrorString(e);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Err(Error::Device(format!("HIP {}", describe_error(call, e as c_int, &text))))
}

/// `hipRuntimeGetVersion`, e.g. 50221153 for 5.2.21153.
pub fn runtime_version() -> Result<i32> {
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    check(unsafe { rt::hipRuntimeGetVersion(&mut v) }, "hipRuntimeGetVersion")?;
    Ok(v)
}

/// The number of HIP devices; an [`Error::Device`] saying "no device" when there is none.
pub fn device_count() -> Result<usize> {
    let mut n: c_int = 0;
    // SAFETY: writes one int.
    check(unsafe { rt::hipGetDeviceCount(&mut n) }, "hipGetDeviceCount")?;
    Ok(n.max(0) as usize)
}

fn attribute(index: usize, attr: rt::hipDeviceAttribute_t, call: &str) -> Result<i32> {
    let mut v: c_int = 0;
    // SAFETY: writes one int for a valid device index.
    check(unsafe { rt::hipDeviceGetAttribute(&mut v, attr, index as c_int) }, call)?;
    Ok(v)
}

/// Free and total memory of device `index`, in bytes.
pub fn memory(index: usize) -> Result<(u64, u64)> {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: selects the device, then writes two sizes.
    unsafe {
        check(rt::hipSetDevice(index as c_int), "hipSetDevice")?;
        check(rt::hipMemGetInfo(&mut free, &mut total), "hipMemGetInfo")?;
    }
    Ok((free as u64, total as u64))
}

/// Every device with its properties.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    use rt::hipDeviceAttribute_t as A;
    (0..device_count()?)
        .map(|index| {
            let mut buf = [0 as c_char; 256];
            // SAFETY: writes a NUL-terminated name of at most `buf.len()` bytes.
            check(
                unsafe { rt::hipDeviceGetName(buf.as_mut_ptr(), buf.len() as c_int, index as c_int) },
                "hipDeviceGetName",
            )?;
            // SAFETY: NUL-terminated by hipDeviceGetName.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
            let (free_memory, total_memory) = memory(index)?;
            Ok(DeviceInfo {
                index,
                name,
                gcn_arch: attribute(index, A::hipDeviceAttributeGcnArch, "gcnArch")?,
                compute_units: attribute(
                    index,
                    A::hipDeviceAttributeMultiprocessorCount,
                    "multiprocessorCount",
                )? as u32,
                wavefront: attribute(index, A::hipDeviceAttributeWarpSize, "warpSize")? as u32,
                total_memory,
                free_memory,
            })
        })
        .collect()
}

/// `len` values of `T` in the memory of one HIP device, freed on drop.
pub struct DeviceBuffer<T: Copy> {
    ptr: *mut c_void,
    len: usize,
    device: usize,
    _elem: PhantomData<T>,
}

// SAFETY: device memory is not tied to a host thread; HIP calls are thread-safe.
unsafe impl<T: Copy + Send> Send for DeviceBuffer<T> {}

impl<T: Copy> DeviceBuffer<T> {
    /// Allocates `len` values on device `device` (uninitialized).
    pub fn new(device: usize, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Invalid("buffer too large".into()))?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: selects the device, then allocates; `ptr` is only used if hipMalloc succeeded.
        unsafe {
            check(rt::hipSetDevice(device as c_int), "hipSetDevice")?;
            check(rt::hipMalloc(&mut ptr, bytes.max(1)), "hipMalloc")?;
        }
        Ok(DeviceBuffer { ptr, len, device, _elem: PhantomData })
    }

    /// A device copy of `data`.
    pub fn from_host(device: usize, data: &[T]) -> Result<Self> {
        let mut b = Self::new(device, data.len())?;
        b.write(data)?;
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> usize {
        self.device
    }

    fn bytes(&self, n: usize) -> Result<usize> {
        if n != self.len {
            return Err(Error::Shape(format!("host slice has {n} values, device buffer {}", self.len)));
        }
        Ok(n * std::mem::size_of::<T>())
    }

    /// Copies `data` (exactly `len` values) to the device.
    pub fn write(&mut self, data: &[T]) -> Result<()> {
        let bytes = self.bytes(data.len())?;
        // SAFETY: both ranges are `bytes` long; the copy is synchronous.
        let e = unsafe {
            rt::hipMemcpy(self.ptr, data.as_ptr().cast(), bytes, rt::hipMemcpyKind::hipMemcpyHostToDevice)
        };
        check(e, "hipMemcpy (host to device)")
    }

    /// Copies the device values into `out` (exactly `len` values).
    pub fn read(&self, out: &mut [T]) -> Result<()> {
        let bytes = self.bytes(out.len())?;
        // SAFETY: both ranges are `bytes` long; the copy is synchronous.
        let e = unsafe {
            rt::hipMemcpy(out.as_mut_ptr().cast(), self.ptr, bytes, rt::hipMemcpyKind::hipMemcpyDeviceToHost)
        };
        check(e, "hipMemcpy (device to host)")
    }
}

impl<T: Copy> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from hipMalloc and is freed once.
        unsafe {
            rt::hipFree(self.ptr);
        }
    }
}
