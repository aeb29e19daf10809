//! Short measurements of a device and of the CPU path (well under a second each on a GPU), so
//! that a caller can send an operation where it is predicted to finish first, transfers
//! included: the Python layer caches these figures per device and decides `device="auto"` with
//! them (`rxquant.core.costs`).

use super::cl::{cl_err, ClBackend};
use super::matrix::Operand;
use super::stream::CHUNK;
use crate::error::Result;
use crate::hessian::HessianObserver;
use crate::layout::ParamMap;
use crate::qparams::QParams;
use crate::scheme::{Granularity, Precision, Scheme};
use opencl3::memory::{Buffer, CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_WRITE};
use opencl3::types::{cl_float, cl_mem, cl_ulong, CL_BLOCKING};
use std::time::Instant;

/// What one device can do, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFigures {
    /// Host to device from pinned memory (GB/s, device time).
    pub upload_gbs: f64,
    /// Device to pinned host memory (GB/s, device time).
    pub download_gbs: f64,
    /// Host to device from ordinary (pageable) memory, one blocking call (GB/s, wall time).
    pub pageable_upload_gbs: f64,
    /// Device memory bandwidth: a copy kernel's bytes read and written per second (GB/s).
    pub memory_gbs: f64,
    /// The INT8 quantize kernel alone: bytes read and written per second (GB/s).
    pub quantize_gbs: f64,
    /// The matrix product alone (GFLOP/s, 2 flops a multiply-add).
    pub gemm_gflops: f64,
    /// Quantize of a host array streamed through the device, end to end: input bytes a second.
    pub stream_gbs: f64,
    /// A round trip of a few bytes and an empty launch (seconds, wall).
    pub latency_s: f64,
}

/// What the CPU path does on this machine with the current rayon pool.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuFigures {
    /// INT8 per-channel quantize of f32: input bytes a second.
    pub quantize_gbs: f64,
    /// `XᵀX` of a Hessian batch: GFLOP/s of the work done (its lower triangle, `rows · in²`
    /// flops), the rate the block products of GPTQ and the layer error run at too.
    pub gemm_gflops: f64,
    pub threads: usize,
}

fn best(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut t = f64::INFINITY;
    for _ in 0..reps {
        t = t.min(f()?);
    }
    Ok(t.max(1e-9))
}

fn wall(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64())
}

fn test_tensor(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i.wrapping_mul(2654435761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect()
}

fn int8_per_channel(rows: usize, x: &[f32]) -> (ParamMap, QParams) {
    let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
    let shape = [rows, x.len() / rows];
    let map = ParamMap::new(&shape, s.granularity).expect("valid shape");
    let qp = crate::calib::calibrate(x, &shape, s, crate::calib::Method::MinMax, &Default::default())
        .expect("finite test tensor");
    (map, qp)
}

impl ClBackend {
    /// Measures transfers, the device's memory bandwidth, the quantize kernel, the matrix
    /// product, a streamed quantize and the round-trip latency.
    pub fn measure(&self) -> Result<DeviceFigures> {
        let n = CHUNK; // 16 MiB of f32
        let bytes = (n * 4) as f64;
        let x = test_tensor(n);
        // Pinned staging, mapped for the measurement.
        // SAFETY: allocation and a blocking map; the pointer is used while the buffer lives and
        // unmapped before it is dropped.
        let (pinned, ptr) = unsafe {
            let b = Buffer::<u8>::create(
                &self.context,
                CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR,
                n * 4,
                std::ptr::null_mut(),
            )
            .map_err(cl_err("pinned allocation"))?;
            let mut p: cl_mem = std::ptr::null_mut();
            self.queue
                .enqueue_map_buffer(&b, CL_BLOCKING, CL_MAP_READ | CL_MAP_WRITE, 0, n * 4, &mut p, &[])
                .map_err(cl_err("map"))?;
            (b, p as *mut u8)
        };
        // SAFETY: the mapping is n * 4 bytes.
        let host = unsafe { std::slice::from_raw_parts_mut(ptr, n * 4) };
        let mut dev = self.output::<u8>(n * 4)?;
        let event_time = |e: opencl3::event::Event| -> Result<f64> {
            e.wait().map_err(cl_err("event wait"))?;
            let s = e.profiling_command_start().map_err(cl_err("profiling"))?;
            let t = e.profiling_command_end().map_err(cl_err("profiling"))?;
            Ok(t.saturating_sub(s) as f64 * 1e-9)
        };
        let up = best(3, || {
            // SAFETY: the pinned slice outlives the blocking write.
            event_time(
                unsafe { self.queue.enqueue_write_buffer(&mut dev, CL_BLOCKING, 0, host, &[]) }
                    .map_err(cl_err("upload"))?,
            )
        })?;
        let down = best(3, || {
            // SAFETY: as above, for the read.
            let e = unsafe { self.queue.enqueue_read_buffer(&dev, CL_BLOCKING, 0, host, &[]) }
                .map_err(cl_err("download"))?;
            event_time(e)
        })?;
        // SAFETY: unmapping the mapping made above, once.
        unsafe {
            let _ =
                self.queue.enqueue_unmap_mem_object(opencl3::memory::ClMem::get(&pinned), ptr as *mut _, &[]);
        }
        self.queue.finish().map_err(cl_err("finish"))?;
        drop(pinned);
        let mut xb = self.output::<cl_float>(n)?;
        let pageable = best(3, || wall(|| self.write(&mut xb, &x)))?;
        let yb = self.output::<cl_float>(n)?;
        let copy = self.kernel("copy_f32")?;
        let n4 = (n / 4) as cl_ulong;
        let copy_t = best(3, || {
            self.start_trace();
            self.launch(&copy, n / 4, |e, base| unsafe {
                e.set_arg(&xb).set_arg(&yb).set_arg(&base).set_arg(&n4);
            })?;
            Ok(self.take_trace()?.iter().map(|t| t.seconds).sum())
        })?;
        let rows = 4096;
        let (map, qp) = int8_per_channel(rows, &x);
        let quant_t = best(3, || {
            self.start_trace();
            self.codes_in::<f32>(&xb, n, &map, &qp)?;
            Ok(self.take_trace()?.iter().filter(|t| t.kind.starts_with("quantize")).map(|t| t.seconds).sum())
        })?;
        let (m, k) = (1024, 512);
        let (a, c) = (self.upload(&x[..m * k])?, self.output::<cl_float>(m * m)?);
        let gemm_t = best(3, || {
            self.start_trace();
            let op = Operand { buf: &a, off: 0, rs: k, cs: 1 };
            let opt = Operand { buf: &a, off: 0, rs: 1, cs: k };
            self.gemm((m, m, k), op, opt, &c, (0, m), (1.0, 0.0), false)?;
            self.queue.finish().map_err(cl_err("finish"))?;
            Ok(self.take_trace()?.iter().map(|t| t.seconds).sum())
        })?;
        let mut out = vec![0u8; n];
        let stream = best(2, || wall(|| self.quantize(&x, &map, &qp, &mut out)))?;
        let small = self.upload(&[1f32; 4])?;
        let latency = best(3, || {
            wall(|| {
                let one = 1 as cl_ulong;
                self.launch(&copy, 1, |e, base| unsafe {
                    e.set_arg(&small).set_arg(&small).set_arg(&base).set_arg(&one);
                })?;
                let mut back = [0f32; 4];
                self.download(&small, &mut back)
            })
        })?;
        Ok(DeviceFigures {
            upload_gbs: bytes / up * 1e-9,
            download_gbs: bytes / down * 1e-9,
            pageable_upload_gbs: bytes / pageable * 1e-9,
            memory_gbs: 2.0 * bytes / copy_t * 1e-9,
            quantize_gbs: (bytes + n as f64) / quant_t * 1e-9,
            gemm_gflops: 2.0 * (m * m * k) as f64 / gemm_t * 1e-9,
            stream_gbs: bytes / stream * 1e-9,
            latency_s: latency,
        })
    }
}

/// Measures the CPU path: INT8 quantize of 16 MiB of f32 and a `(2048, 512)` Hessian batch.
pub fn measure_cpu() -> Result<CpuFigures> {
    let n = CHUNK;
    let x = test_tensor(n);
    let (_, qp) = int8_per_channel(4096, &x);
    let mut out = vec![0i8; n];
    let quant = best(3, || wall(|| crate::quant::quantize(&x, &[4096, n / 4096], &qp, false, &mut out)))?;
    let (rows, f) = (2048, 512);
    let obs = HessianObserver::new();
    let xs = &x[..rows * f];
    let gemm = best(3, || wall(|| obs.partial(xs, &[rows, f]).map(drop)))?;
    Ok(CpuFigures {
        quantize_gbs: (n * 4) as f64 / quant * 1e-9,
        gemm_gflops: (rows * f * f) as f64 / gemm * 1e-9,
        threads: rayon::current_num_threads(),
    })
}
