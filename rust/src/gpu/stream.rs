//! Streaming a host tensor through the device: pinned staging buffers (`CL_MEM_ALLOC_HOST_PTR`,
//! mapped once) and two lanes, each with its own command queue, so that one chunk's upload,
//! kernels and download overlap the next chunk's host copy and transfers.
//!
//! Host arrays live in pageable memory: the driver copies them into pinned memory before the DMA
//! anyway, one blocking call at a time. Here that copy is ours (a `memcpy` into the mapped staging
//! buffer), and it runs while the other lane's transfers and kernels are in flight. The lanes'
//! buffers and kernels are kept in the backend and reused by later calls.

use super::cl::{cl_err, ClBackend, ClFloat};
use crate::error::{Error, Result};
use crate::layout::ParamMap;
use crate::qparams::QParams;
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::{Buffer, CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_WRITE};
use opencl3::types::{cl_int, cl_mem, cl_ulong, CL_BLOCKING, CL_NON_BLOCKING};
use std::ptr;

/// Values a chunk holds: 16 MiB of f32 (a few milliseconds on PCIe, long enough to hide the
/// per-command overhead, short enough that the pipeline fills at once). Even, so packed INT4
/// chunks start on a byte.
pub const CHUNK: usize = 1 << 22;

/// A host-visible buffer, pinned by the driver and mapped for as long as it lives.
pub struct Pinned {
    buffer: Buffer<u8>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain host memory owned by `Pinned`; the `Lanes` holding it sit behind
// a mutex, so one thread at a time touches it.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(be: &ClBackend, len: usize) -> Result<Pinned> {
        // SAFETY: allocation, then a blocking map of the whole buffer.
        unsafe {
            let buffer = Buffer::<u8>::create(
                &be.context,
                CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR,
                len,
                ptr::null_mut(),
            )
            .map_err(cl_err("pinned allocation"))?;
            let mut mapped: cl_mem = ptr::null_mut();
            be.queue
                .enqueue_map_buffer(
                    &buffer,
                    CL_BLOCKING,
                    CL_MAP_READ | CL_MAP_WRITE,
                    0,
                    len,
                    &mut mapped,
                    &[],
                )
                .map_err(cl_err("map"))?;
            if mapped.is_null() {
                return Err(Error::Device("OpenCL map returned no pointer".into()));
            }
            Ok(Pinned { buffer, ptr: mapped as *mut u8, len })
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes and stays valid until `unmap`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes the access exclusive on the host.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn unmap(&mut self, queue: &CommandQueue) {
        // SAFETY: the pointer came from mapping this buffer; unmapped once.
        unsafe {
            if !self.ptr.is_null() {
                let _ = queue.enqueue_unmap_mem_object(
                    opencl3::memory::ClMem::get(&self.buffer),
                    self.ptr as *mut _,
                    &[],
                );
                let _ = queue.finish();
                self.ptr = ptr::null_mut();
            }
        }
    }
}

/// One lane: a queue, pinned staging both ways, and the device buffers of one chunk.
struct Lane {
    queue: CommandQueue,
    stage_in: Pinned,
    stage_out: Pinned,
    input: Buffer<u8>,
    codes: Buffer<u8>,
    packed: Buffer<u8>,
    /// The download of the chunk in flight: (its event, where its bytes go in the output, length).
    pending: Option<(Event, usize, usize)>,
}

/// Two lanes and the kernels they launch, kept by the backend between calls.
pub struct Lanes {
    lanes: Vec<Lane>,
    quantize_f32: Kernel,
    quantize_f16: Kernel,
    pack: Kernel,
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for l in &mut self.lanes {
            l.stage_in.unmap(&l.queue);
            l.stage_out.unmap(&l.queue);
        }
    }
}

impl Lanes {
    fn new(be: &ClBackend) -> Result<Lanes> {
        let mut lanes = Vec::with_capacity(2);
        for _ in 0..2 {
            #[allow(deprecated)]
            let queue = CommandQueue::create_default(&be.context, CL_QUEUE_PROFILING_ENABLE)
                .map_err(cl_err("queue creation"))?;
            lanes.push(Lane {
                queue,
                stage_in: Pinned::new(be, CHUNK * 4)?,
                stage_out: Pinned::new(be, CHUNK)?,
                input: be.output::<u8>(CHUNK * 4)?,
                codes: be.output::<u8>(CHUNK)?,
                packed: be.output::<u8>(CHUNK / 2)?,
                pending: None,
            });
        }
        Ok(Lanes {
            lanes,
            quantize_f32: be.kernel(<f32 as ClFloat>::QUANTIZE)?,
            quantize_f16: be.kernel(<half::f16 as ClFloat>::QUANTIZE)?,
            pack: be.kernel("pack_int4")?,
        })
    }
}

/// Waits for a lane's download and copies it to its place in `out`.
fn drain(be: &ClBackend, lane: &mut Lane, out: &mut [u8]) -> Result<()> {
    if let Some((event, at, len)) = lane.pending.take() {
        event.wait().map_err(cl_err("download"))?;
        out[at..at + len].copy_from_slice(&lane.stage_out.bytes()[..len]);
        be.record(|| "download".into(), event);
    }
    Ok(())
}

impl ClBackend {
    /// Codes of `x` (one byte each, or INT4 packed two to a byte when `pack`) into `out`,
    /// streamed through the device in chunks of [`CHUNK`] values (see the module docs).
    /// Parameters must be validated by the caller.
    pub(super) fn stream_codes<T: ClFloat>(
        &self,
        x: &[T],
        map: &ParamMap,
        qp: &QParams,
        pack: bool,
        out: &mut [u8],
    ) -> Result<()> {
        let mut guard = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Lanes::new(self)?);
        }
        let lanes = guard.as_mut().expect("lanes were just made");
        let result = self.stream_in(lanes, x, map, qp, pack, out);
        if result.is_err() {
            // A failed command may leave a lane half-used: start afresh next time.
            for l in &mut lanes.lanes {
                l.pending = None;
                let _ = l.queue.finish();
            }
        }
        result
    }

    fn stream_in<T: ClFloat>(
        &self,
        lanes: &mut Lanes,
        x: &[T],
        map: &ParamMap,
        qp: &QParams,
        pack: bool,
        out: &mut [u8],
    ) -> Result<()> {
        let (scale, zero) = (self.upload(&qp.scale)?, self.upload(&qp.zero_point)?);
        let (dim, inner, group, per_group) = Self::layout(map);
        let (qmin, qmax) = qp.scheme.qrange();
        let (qmin, qmax) = (qmin as cl_int, qmax as cl_int);
        let size = std::mem::size_of::<T>();
        let kernel = if size == 4 { &lanes.quantize_f32 } else { &lanes.quantize_f16 };
        for (k, start) in (0..x.len()).step_by(CHUNK).enumerate() {
            let len = CHUNK.min(x.len() - start);
            let lane = &mut lanes.lanes[k % 2];
            drain(self, lane, out)?;
            // SAFETY: `T` is f32 or f16, plain old data; the bytes are only copied.
            let src = unsafe { std::slice::from_raw_parts(x[start..].as_ptr() as *const u8, len * size) };
            lane.stage_in.bytes_mut()[..len * size].copy_from_slice(src);
            let q = &lane.queue;
            // SAFETY: the staging buffer is pinned and outlives the non-blocking write; the
            // in-order queue runs the kernels after it.
            let up = unsafe {
                q.enqueue_write_buffer(
                    &mut lane.input,
                    CL_NON_BLOCKING,
                    0,
                    &lane.stage_in.bytes()[..len * size],
                    &[],
                )
            }
            .map_err(cl_err("upload"))?;
            self.record(|| "upload".into(), up);
            let (base, end) = (start as cl_ulong, (start + len) as cl_ulong);
            self.enqueue_on(q, kernel, len, |e| unsafe {
                e.set_arg(&lane.input).set_arg(&lane.codes).set_arg(&scale).set_arg(&zero);
                e.set_arg(&base).set_arg(&base).set_arg(&end).set_arg(&dim).set_arg(&inner);
                e.set_arg(&group).set_arg(&per_group).set_arg(&qmin).set_arg(&qmax);
            })?;
            let (result, bytes, at) = if pack {
                let (zero_base, count) = (0 as cl_ulong, len as cl_ulong);
                self.enqueue_on(q, &lanes.pack, len.div_ceil(2), |e| unsafe {
                    e.set_arg(&lane.codes).set_arg(&lane.packed).set_arg(&zero_base).set_arg(&count);
                })?;
                (&lane.packed, len.div_ceil(2), start / 2)
            } else {
                (&lane.codes, len, start)
            };
            let stage = lane.stage_out.bytes_mut();
            // SAFETY: pinned staging outlives the non-blocking read, which `drain` waits for.
            let down = unsafe { q.enqueue_read_buffer(result, CL_NON_BLOCKING, 0, &mut stage[..bytes], &[]) }
                .map_err(cl_err("download"))?;
            q.flush().map_err(cl_err("flush"))?;
            lane.pending = Some((down, at, bytes));
        }
        for lane in &mut lanes.lanes {
            drain(self, lane, out)?;
        }
        drop((scale, zero));
        Ok(())
    }
}
