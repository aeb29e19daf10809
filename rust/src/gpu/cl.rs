//! OpenCL compute for the heavy kernels (`kernels/quant.cl`, embedded at build time), run on
//! whatever OpenCL device is chosen: a GPU such as a Polaris card, or PoCL on the CPU in tests.
//! Integer outputs are bit-identical to the CPU path (the program is built with correctly rounded
//! division where the platform supports it; `exact_division` says), ranges and histogram counts
//! are exact, and metric sums agree to 1e-6 relative.
//!
//! Every OpenCL failure is an [`Error::Device`], so a caller that picked the device itself can
//! fall back to the CPU. The handles are thread-safe (`opencl3` marks them `Send + Sync`; kernels,
//! whose arguments are not, are created per call), so callers may run this without the GIL.

use crate::calib::Reducer;
use crate::error::{Error, Result};
use crate::hist::{Hist, HistKind};
use crate::layout::ParamMap;
use crate::metrics::{Metrics, Sums};
use crate::qparams::QParams;
use crate::range::Ranges;
use crate::scheme::Scheme;
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::event::Event;
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{cl_float, cl_int, cl_uchar, cl_uint, cl_ulong, CL_BLOCKING};
use std::ptr;

/// The kernels' source, compiled at run time for the chosen device: the element-wise kernels and
/// the tiled matrix product ([`super::matrix`]).
pub const SOURCE: &str = concat!(include_str!("kernels/quant.cl"), include_str!("kernels/matrix.cl"));
/// Work-items per launch: keeps global sizes far below 2^32 whatever the tensor size, and u32
/// device counters from overflowing. A power of two, so every launch is whole work-groups.
const LAUNCH: usize = 1 << 24;
/// Work-groups the min/max reduction aims for (enough to fill a GPU), split across the cells.
const REDUCE_GROUPS: usize = 4096;

/// Input types of the quantize kernels: f32, and f16 read with `vload_half` (fp16 weights upload
/// at two bytes a value and are widened on the device, as on the CPU).
pub trait ClFloat: Copy {
    const QUANTIZE: &'static str;
}

impl ClFloat for f32 {
    const QUANTIZE: &'static str = "quantize_f32";
}

impl ClFloat for half::f16 {
    const QUANTIZE: &'static str = "quantize_f16";
}

/// An OpenCL device with the rxquant program built for it.
pub struct ClBackend {
    pub device_name: String,
    /// Work-group size: the requested one (a multiple of the wavefront: 64 on GCN), rounded down
    /// to a power of two (the reductions halve it) and to the device's limit.
    pub work_group: usize,
    /// Whether the program was built with `-cl-fp32-correctly-rounded-divide-sqrt`.
    pub exact_division: bool,
    /// Local memory per work-group, in bytes (bounds the histogram bins).
    pub local_memory: u64,
    /// Whether the device is a GPU (not a CPU platform such as PoCL).
    pub is_gpu: bool,
    /// The matrix product's tiling (from the work-group limit and local memory).
    pub tiles: super::matrix::Tiles,
    pub(super) context: Context,
    pub(super) queue: CommandQueue,
    pub(super) program: Program,
    /// Device buffers and pinned staging kept between streamed calls ([`super::stream`]).
    pub(super) lanes: std::sync::Mutex<Option<super::stream::Lanes>>,
    /// Profiling events recorded while a trace is on ([`ClBackend::start_trace`]).
    trace: std::sync::Mutex<Option<Vec<(String, Event)>>>,
}

/// One traced device command: `kind` is `upload`, `download` or the kernel's name.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    pub kind: String,
    pub seconds: f64,
}

pub(super) fn cl_err(what: &str) -> impl Fn(opencl3::error_codes::ClError) -> Error + '_ {
    move |e| Error::Device(format!("OpenCL {what} failed: {e}"))
}

impl ClBackend {
    /// Opens device `index` (in [`super::opencl::devices`] order), or the first GPU when `None`.
    pub fn open(index: Option<usize>, work_group: usize) -> Result<Self> {
        // Some ICDs (PoCL) are not safe to enumerate from two threads at once on first use.
        static OPEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let platforms = super::opencl::platforms().map_err(Error::Device)?;
        let mut all = Vec::new();
        for p in platforms {
            all.extend(p.get_devices(opencl3::device::CL_DEVICE_TYPE_ALL).unwrap_or_default());
        }
        let id = match index {
            Some(i) => *all.get(i).ok_or_else(|| {
                Error::Device(format!("no OpenCL device opencl:{i} ({} device(s) found)", all.len()))
            })?,
            None => *all
                .iter()
                .find(|&&d| {
                    Device::new(d)
                        .dev_type()
                        .map(|t| t & opencl3::device::CL_DEVICE_TYPE_GPU != 0)
                        .unwrap_or(false)
                })
                .ok_or_else(|| Error::Device("no OpenCL GPU device found".into()))?,
        };
        let device = Device::new(id);
        let context = Context::from_device(&device).map_err(cl_err("context creation"))?;
        #[allow(deprecated)]
        let queue = CommandQueue::create_default(&context, CL_QUEUE_PROFILING_ENABLE)
            .map_err(cl_err("queue creation"))?;
        let limit = device.max_work_group_size().unwrap_or(64).max(1);
        let local_memory = device.local_mem_size().unwrap_or(32 << 10);
        let is_gpu = device.dev_type().map(|t| t & opencl3::device::CL_DEVICE_TYPE_GPU != 0).unwrap_or(false);
        let tiles = super::matrix::Tiles::for_device(limit, local_memory, is_gpu)?;
        let defines = tiles.defines();
        let (program, exact_division) = match Program::create_and_build_from_source(
            &context,
            SOURCE,
            &format!("-cl-fp32-correctly-rounded-divide-sqrt {defines}"),
        ) {
            Ok(p) => (p, true),
            Err(_) => (
                Program::create_and_build_from_source(&context, SOURCE, &defines)
                    .map_err(|log| Error::Device(format!("OpenCL program build failed: {log}")))?,
                false,
            ),
        };
        let work_group = 1usize << work_group.clamp(1, limit).ilog2();
        Ok(ClBackend {
            device_name: device.name().unwrap_or_default(),
            work_group,
            exact_division,
            local_memory,
            is_gpu,
            tiles,
            context,
            queue,
            program,
            lanes: std::sync::Mutex::new(None),
            trace: std::sync::Mutex::new(None),
        })
    }

    /// Starts recording the device time of every upload, kernel and download (profiling
    /// events), dropping what an earlier trace held.
    pub fn start_trace(&self) {
        *self.trace.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// Stops the trace and returns its commands in order (device time from start to end).
    pub fn take_trace(&self) -> Result<Vec<TraceEntry>> {
        let events = self.trace.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        events
            .iter()
            .map(|(kind, e)| {
                e.wait().map_err(cl_err("event wait"))?;
                let start = e.profiling_command_start().map_err(cl_err("profiling"))?;
                let end = e.profiling_command_end().map_err(cl_err("profiling"))?;
                Ok(TraceEntry { kind: kind.clone(), seconds: end.saturating_sub(start) as f64 * 1e-9 })
            })
            .collect()
    }

    /// Keeps `event` for the trace, if one is on.
    pub(super) fn record(&self, kind: impl FnOnce() -> String, event: Event) {
        if let Some(t) = self.trace.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            t.push((kind(), event));
        }
    }

    pub(super) fn kernel(&self, name: &str) -> Result<Kernel> {
        Kernel::create(&self.program, name).map_err(cl_err("kernel creation"))
    }

    pub(super) fn upload<T: Copy>(&self, data: &[T]) -> Result<Buffer<T>> {
        // SAFETY: a fresh buffer of `data.len()` elements, written before any kernel reads it.
        unsafe {
            let mut b =
                Buffer::<T>::create(&self.context, CL_MEM_READ_WRITE, data.len().max(1), ptr::null_mut())
                    .map_err(cl_err("buffer allocation"))?;
            if !data.is_empty() {
                self.write(&mut b, data)?;
            }
            Ok(b)
        }
    }

    pub(super) fn output<T>(&self, n: usize) -> Result<Buffer<T>> {
        // SAFETY: allocation only; kernels write every element that is read back.
        unsafe {
            Buffer::<T>::create(&self.context, CL_MEM_READ_WRITE, n.max(1), ptr::null_mut())
                .map_err(cl_err("buffer allocation"))
        }
    }

    pub(super) fn download<T: Copy>(&self, b: &Buffer<T>, out: &mut [T]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: `out` fits the buffer; the read blocks until done.
        let e = unsafe { self.queue.enqueue_read_buffer(b, CL_BLOCKING, 0, out, &[]) }
            .map_err(cl_err("download"))?;
        self.record(|| "download".into(), e);
        Ok(())
    }

    /// Enqueues `k` over `items` work-items (rounded up to whole work-groups); `set` sets every
    /// argument.
    pub(super) fn enqueue(
        &self,
        k: &Kernel,
        items: usize,
        set: impl FnOnce(&mut ExecuteKernel),
    ) -> Result<()> {
        self.enqueue_on(&self.queue, k, items, set)
    }

    /// [`ClBackend::enqueue`] on another queue of this context (the streaming lanes').
    pub(super) fn enqueue_on(
        &self,
        queue: &CommandQueue,
        k: &Kernel,
        items: usize,
        set: impl FnOnce(&mut ExecuteKernel),
    ) -> Result<()> {
        let wg = self.work_group;
        let mut e = ExecuteKernel::new(k);
        set(&mut e);
        // SAFETY: every argument of the kernel was set by `set`, with buffers that outlive the launch.
        let ev = unsafe {
            e.set_global_work_size(items.div_ceil(wg) * wg).set_local_work_size(wg).enqueue_nd_range(queue)
        }
        .map_err(cl_err("kernel launch"))?;
        self.record(|| k.function_name().unwrap_or_default(), ev);
        Ok(())
    }

    /// Runs `k` over `n` items in chunked launches; `set` sets every argument, given the
    /// chunk's first index.
    pub(super) fn launch(
        &self,
        k: &Kernel,
        n: usize,
        set: impl Fn(&mut ExecuteKernel, cl_ulong),
    ) -> Result<()> {
        for base in (0..n).step_by(LAUNCH) {
            self.enqueue(k, (n - base).min(LAUNCH), |e| set(e, base as cl_ulong))?;
        }
        self.queue.finish().map_err(cl_err("finish"))
    }

    pub(super) fn write<T: Copy>(&self, b: &mut Buffer<T>, data: &[T]) -> Result<()> {
        // SAFETY: `data` fits the buffer; the write blocks until done.
        let e = unsafe { self.queue.enqueue_write_buffer(b, CL_BLOCKING, 0, data, &[]) }
            .map_err(cl_err("upload"))?;
        self.record(|| "upload".into(), e);
        Ok(())
    }

    pub(super) fn layout(map: &ParamMap) -> (cl_ulong, cl_ulong, cl_ulong, cl_int) {
        (map.dim as cl_ulong, map.inner as cl_ulong, map.group as cl_ulong, map.per_group as cl_int)
    }

    /// Quantizes `x` into one byte per element (two's complement for signed grids), streamed
    /// through pinned buffers ([`super::stream`]).
    pub fn quantize<T: ClFloat>(&self, x: &[T], map: &ParamMap, qp: &QParams, out: &mut [u8]) -> Result<()> {
        if x.len() != out.len() {
            return Err(Error::Shape(format!("input {}, output {}", x.len(), out.len())));
        }
        self.checked_stream(x, map, qp, false, out)
    }

    /// Quantizes `x` to INT4 and packs the codes two to a byte on the device, so only the packed
    /// bytes come back (the layout of [`crate::pack`]).
    pub fn quantize_packed<T: ClFloat>(
        &self,
        x: &[T],
        map: &ParamMap,
        qp: &QParams,
        out: &mut [u8],
    ) -> Result<()> {
        if qp.scheme.precision.bits() != 4 || out.len() != x.len().div_ceil(2) {
            return Err(Error::Shape(format!("packing needs INT4 and {} bytes", x.len().div_ceil(2))));
        }
        self.checked_stream(x, map, qp, true, out)
    }

    fn checked_stream<T: ClFloat>(
        &self,
        x: &[T],
        map: &ParamMap,
        qp: &QParams,
        pack: bool,
        out: &mut [u8],
    ) -> Result<()> {
        qp.validate(map)?;
        if x.len() != map.len {
            return Err(Error::Shape(format!("input {}, shape {}", x.len(), map.len)));
        }
        if x.is_empty() {
            return Ok(());
        }
        self.stream_codes(x, map, qp, pack, out)
    }

    /// The codes of `len > 0` values already on the device (parameters checked by the caller).
    pub(super) fn codes_in<T: ClFloat>(
        &self,
        bx: &Buffer<T>,
        len: usize,
        map: &ParamMap,
        qp: &QParams,
    ) -> Result<Buffer<cl_uchar>> {
        let (bs, bz) = (self.upload(&qp.scale)?, self.upload(&qp.zero_point)?);
        let bo = self.output::<cl_uchar>(len)?;
        let k = self.kernel(T::QUANTIZE)?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let (qmin, qmax) = qp.scheme.qrange();
        let n = len as cl_ulong;
        self.launch(&k, len, |e, base| unsafe {
            e.set_arg(bx).set_arg(&bo).set_arg(&bs).set_arg(&bz).set_arg(&base).set_arg(&0u64).set_arg(&n);
            e.set_arg(&dim);
            e.set_arg(&inner)
                .set_arg(&group)
                .set_arg(&per_group)
                .set_arg(&(qmin as cl_int))
                .set_arg(&(qmax as cl_int));
        })?;
        Ok(bo)
    }

    /// Min-max parameters and the codes of `x` (packed two to a byte when `pack`) from one
    /// upload: the common "quantize with fresh parameters" call moves the tensor across the bus
    /// once. NaN/Inf are an error (reported as on the CPU).
    pub fn quantize_minmax(
        &self,
        x: &[f32],
        map: &ParamMap,
        scheme: Scheme,
        pack: bool,
        out: &mut [u8],
    ) -> Result<QParams> {
        let want = if pack { x.len().div_ceil(2) } else { x.len() };
        if x.len() != map.len || out.len() != want {
            return Err(Error::Shape(format!(
                "input {}, shape {}, output {} (want {want})",
                x.len(),
                map.len,
                out.len()
            )));
        }
        if pack && scheme.precision.bits() != 4 {
            return Err(Error::Invalid("packing needs int4".into()));
        }
        if x.is_empty() {
            return Ok(QParams::from_ranges(scheme, map, &crate::range::ranges(x, map, false)?));
        }
        let bx = self.upload(x)?;
        let (r, bad) = self.minmax_in(&bx, x.len(), map)?;
        if bad > 0 {
            crate::range::ranges(x, map, false)?; // the CPU scan names the count and first index
        }
        let qp = QParams::from_ranges(scheme, map, &r);
        let bq = self.codes_in(&bx, x.len(), map, &qp)?;
        if pack {
            self.pack_buffer(&bq, x.len(), out)?;
        } else {
            self.download(&bq, out)?;
        }
        Ok(qp)
    }

    /// `(q - z) * s` from one byte per element.
    pub fn dequantize(&self, q: &[u8], map: &ParamMap, qp: &QParams, out: &mut [f32]) -> Result<()> {
        qp.validate(map)?;
        if q.len() != out.len() || q.len() != map.len {
            return Err(Error::Shape(format!("codes {}, output {}, shape {}", q.len(), out.len(), map.len)));
        }
        if q.is_empty() {
            return Ok(());
        }
        let (bq, bs, bz) = (self.upload(q)?, self.upload(&qp.scale)?, self.upload(&qp.zero_point)?);
        let bo = self.output::<cl_float>(q.len())?;
        let k = self.kernel("dequantize")?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let signed = qp.scheme.signed() as cl_int;
        let n = q.len() as cl_ulong;
        self.launch(&k, q.len(), |e, base| unsafe {
            e.set_arg(&bq).set_arg(&bo).set_arg(&bs).set_arg(&bz).set_arg(&base).set_arg(&n).set_arg(&dim);
            e.set_arg(&inner).set_arg(&group).set_arg(&per_group).set_arg(&signed);
        })?;
        self.download(&bo, out)
    }

    /// Fake quantization and the STE mask.
    pub fn fake_quantize(
        &self,
        x: &[f32],
        map: &ParamMap,
        qp: &QParams,
        out: &mut [f32],
        mask: &mut [u8],
    ) -> Result<()> {
        qp.validate(map)?;
        if x.len() != out.len() || x.len() != mask.len() || x.len() != map.len {
            return Err(Error::Shape(format!("input {}, outputs {} and {}", x.len(), out.len(), mask.len())));
        }
        if x.is_empty() {
            return Ok(());
        }
        let (bx, bs, bz) = (self.upload(x)?, self.upload(&qp.scale)?, self.upload(&qp.zero_point)?);
        let (bo, bm) = (self.output::<cl_float>(x.len())?, self.output::<cl_uchar>(x.len())?);
        let k = self.kernel("fake_quantize")?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let (qmin, qmax) = qp.scheme.qrange();
        let n = x.len() as cl_ulong;
        self.launch(&k, x.len(), |e, base| unsafe {
            e.set_arg(&bx).set_arg(&bo).set_arg(&bm).set_arg(&bs).set_arg(&bz).set_arg(&base).set_arg(&n);
            e.set_arg(&dim).set_arg(&inner).set_arg(&group).set_arg(&per_group);
            e.set_arg(&(qmin as cl_int)).set_arg(&(qmax as cl_int));
        })?;
        self.download(&bo, out)?;
        self.download(&bm, mask)
    }

    /// Packs INT4 codes (low nibble of each byte) two to a byte.
    pub fn pack_int4(&self, codes: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != codes.len().div_ceil(2) {
            return Err(Error::Shape(format!(
                "{} codes need {} bytes",
                codes.len(),
                codes.len().div_ceil(2)
            )));
        }
        if codes.is_empty() {
            return Ok(());
        }
        self.pack_buffer(&self.upload(codes)?, codes.len(), out)
    }

    /// Packs `n` codes of a device buffer and downloads the `ceil(n / 2)` bytes into `out`.
    pub(super) fn pack_buffer(&self, codes: &Buffer<cl_uchar>, n: usize, out: &mut [u8]) -> Result<()> {
        let bo = self.output::<cl_uchar>(out.len())?;
        let k = self.kernel("pack_int4")?;
        let n = n as cl_ulong;
        self.launch(&k, out.len(), |e, base| unsafe {
            e.set_arg(codes).set_arg(&bo).set_arg(&base).set_arg(&n);
        })?;
        self.download(&bo, out)
    }

    /// Min and max of the finite values of every parameter cell (`+inf, -inf` for cells without
    /// one) and the number of non-finite values, by a two-stage reduction: work-groups reduce
    /// strided parts of each cell in local memory, the host combines each cell's parts.
    pub fn minmax(&self, x: &[f32], map: &ParamMap) -> Result<(Ranges, u64)> {
        if x.is_empty() {
            let np = map.n_params();
            return Ok((Ranges { min: vec![f32::INFINITY; np], max: vec![f32::NEG_INFINITY; np] }, 0));
        }
        self.minmax_in(&self.upload(x)?, x.len(), map)
    }

    /// [`ClBackend::minmax`] of `n > 0` values already on the device.
    fn minmax_in(&self, bx: &Buffer<cl_float>, n: usize, map: &ParamMap) -> Result<(Ranges, u64)> {
        let np = map.n_params();
        let mut r = Ranges { min: vec![f32::INFINITY; np], max: vec![f32::NEG_INFINITY; np] };
        if np == 0 {
            return Ok((r, 0));
        }
        let wg = self.work_group;
        let m = n / np; // every cell has the same size
        let splits = self.splits(np, m);
        let groups = np * splits;
        let (bmn, bmx) = (self.output::<cl_float>(groups)?, self.output::<cl_float>(groups)?);
        let bbad = self.output::<cl_uint>(groups)?;
        let k = self.kernel("cell_minmax")?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let (npu, sp, mu) = (np as cl_ulong, splits as cl_uint, m as cl_ulong);
        self.enqueue_groups(&k, groups, |e, gb| unsafe {
            e.set_arg(bx).set_arg(&bmn).set_arg(&bmx).set_arg(&bbad);
            e.set_arg_local_buffer(4 * wg).set_arg_local_buffer(4 * wg).set_arg_local_buffer(4 * wg);
            e.set_arg(&gb).set_arg(&npu).set_arg(&sp).set_arg(&mu).set_arg(&dim);
            e.set_arg(&inner).set_arg(&group).set_arg(&per_group);
        })?;
        self.queue.finish().map_err(cl_err("finish"))?;
        let (mut mn, mut mx, mut bad) = (vec![0f32; groups], vec![0f32; groups], vec![0u32; groups]);
        self.download(&bmn, &mut mn)?;
        self.download(&bmx, &mut mx)?;
        self.download(&bbad, &mut bad)?;
        for p in 0..np {
            let part = p * splits..(p + 1) * splits;
            r.min[p] = mn[part.clone()].iter().fold(f32::INFINITY, |a, &b| a.min(b));
            r.max[p] = mx[part].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        }
        Ok((r, bad.iter().map(|&b| b as u64).sum()))
    }

    /// Work-groups per cell for the strided reductions: [`REDUCE_GROUPS`] in all, at most one
    /// per `work_group` elements of a cell.
    fn splits(&self, n_params: usize, cell: usize) -> usize {
        REDUCE_GROUPS.div_ceil(n_params).min(cell.div_ceil(self.work_group)).max(1)
    }

    /// Enqueues `groups` work-groups in launches of at most [`LAUNCH`] work-items; `set` sets
    /// every argument given the launch's first group.
    fn enqueue_groups(
        &self,
        k: &Kernel,
        groups: usize,
        set: impl Fn(&mut ExecuteKernel, cl_ulong),
    ) -> Result<()> {
        let per = LAUNCH / self.work_group;
        for g0 in (0..groups).step_by(per) {
            self.enqueue(k, (groups - g0).min(per) * self.work_group, |e| set(e, g0 as cl_ulong))?;
        }
        Ok(())
    }

    /// Histogram counts, `bins + 2` slots per parameter cell (the bins, then exact zeros, then
    /// NaN/Inf), binned as `floor(v * inv[p]) - start[p]` clamped to the bins: the CPU rule for
    /// power-of-two layouts (`inv` a power of two, `start` an integer; crate::hist). Device
    /// counts are u32, so cells are counted in slices of at most 2^30 values, each read back and
    /// summed here in u64.
    pub fn histogram_counts(
        &self,
        x: &[f32],
        map: &ParamMap,
        start: &[f32],
        inv: &[f32],
        bins: usize,
        abs: bool,
    ) -> Result<Vec<u64>> {
        let (np, slots) = (start.len(), start.len() * (bins + 2));
        if np != map.n_params() || inv.len() != np || bins == 0 || x.len() != map.len {
            return Err(Error::Shape(format!(
                "{np} ranges and {} values for {} parameters and {} values, {bins} bins",
                inv.len(),
                map.n_params(),
                map.len
            )));
        }
        if ((bins + 2) * 4) as u64 > self.local_memory {
            return Err(Error::Device(format!(
                "{bins} histogram bins do not fit the device's {} bytes of local memory",
                self.local_memory
            )));
        }
        let mut total = vec![0u64; slots];
        if x.is_empty() || np == 0 {
            return Ok(total);
        }
        const SLICE: usize = 1 << 30;
        let m = x.len() / np;
        let splits = self.splits(np, m);
        let k = self.kernel("cell_histogram")?;
        let (bx, bstart, binv) = (self.upload(x)?, self.upload(start)?, self.upload(inv)?);
        let mut bc = self.output::<cl_uint>(slots)?;
        let (zeros, mut counts) = (vec![0 as cl_uint; slots], vec![0 as cl_uint; slots]);
        let (npu, sp, b, a) = (np as cl_ulong, splits as cl_uint, bins as cl_uint, abs as cl_int);
        let (dim, inner, group, per_group) = Self::layout(map);
        for k0 in (0..m).step_by(SLICE) {
            let (kb, ke) = (k0 as cl_ulong, (k0 + SLICE).min(m) as cl_ulong);
            self.write(&mut bc, &zeros)?;
            self.enqueue_groups(&k, np * splits, |e, gb| unsafe {
                e.set_arg(&bx)
                    .set_arg(&bc)
                    .set_arg_local_buffer((bins + 2) * 4)
                    .set_arg(&bstart)
                    .set_arg(&binv);
                e.set_arg(&gb).set_arg(&npu).set_arg(&sp).set_arg(&kb).set_arg(&ke).set_arg(&b).set_arg(&a);
                e.set_arg(&dim).set_arg(&inner).set_arg(&group).set_arg(&per_group);
            })?;
            self.download(&bc, &mut counts)?;
            total.iter_mut().zip(&counts).for_each(|(t, &c)| *t += c as u64);
        }
        Ok(total)
    }

    /// [`Metrics`] of `y` against `x`: per-work-group partials in f32, summed here in f64.
    pub fn metrics(&self, x: &[f32], y: &[f32]) -> Result<Metrics> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "reference has {} elements, reconstruction has {}",
                x.len(),
                y.len()
            )));
        }
        let mut s = Sums::default();
        if !x.is_empty() {
            let wg = self.work_group;
            let (bx, by) = (self.upload(x)?, self.upload(y)?);
            let groups = x.len().div_ceil(wg);
            let bp = self.output::<cl_float>(6 * groups)?;
            let k = self.kernel("error_sums")?;
            let n = x.len() as cl_ulong;
            self.launch(&k, x.len(), |e, base| unsafe {
                e.set_arg(&bx).set_arg(&by).set_arg(&bp).set_arg_local_buffer(6 * 4 * wg);
                e.set_arg(&base).set_arg(&n).set_arg(&(base / wg as cl_ulong));
            })?;
            let mut partial = vec![0f32; 6 * groups];
            self.download(&bp, &mut partial)?;
            for c in partial.chunks_exact(6) {
                let max = c[5] as f64;
                let part = Sums {
                    xx: c[0] as f64,
                    yy: c[1] as f64,
                    xy: c[2] as f64,
                    ee: c[3] as f64,
                    ae: c[4] as f64,
                    max,
                };
                s = s.merge(part);
            }
        }
        if !s.is_finite() {
            // NaN/Inf in the input, or finite values whose squares overflow f32 (|v| > 1.8e19):
            // the CPU's f64 sums give the result or name the bad values.
            return crate::metrics::metrics(x, y);
        }
        Ok(s.finish(x.len()))
    }
}

impl Reducer<f32> for ClBackend {
    fn ranges(&self, x: &[f32], map: &ParamMap, ignore_nonfinite: bool) -> Result<Ranges> {
        if x.len() != map.len {
            return Err(Error::Shape(format!("input has {} elements, shape has {}", x.len(), map.len)));
        }
        let (r, bad) = self.minmax(x, map)?;
        if bad > 0 && !ignore_nonfinite {
            // The CPU scan reports the count and the first index.
            crate::range::ranges(x, map, false)?;
        }
        Ok(r)
    }

    fn histograms(&self, x: &[f32], map: &ParamMap, hists: &mut [Hist], kind: HistKind) -> Result<()> {
        let Some(bins) = hists.first().map(|h| h.counts.len()) else { return Ok(()) };
        if hists.iter().any(|h| h.counts.len() != bins) {
            return Err(Error::Invalid("histograms with different bin counts".into()));
        }
        // Power-of-two layouts: `2^-e` and the start `k` are exact in f32 (see crate::hist).
        let (start, inv): (Vec<f32>, Vec<f32>) =
            hists.iter().map(|h| (h.start() as f32, h.inv() as f32)).unzip();
        let counts = self.histogram_counts(x, map, &start, &inv, bins, kind == HistKind::Abs)?;
        for (h, c) in hists.iter_mut().zip(counts.chunks_exact(bins + 2)) {
            h.counts.iter_mut().zip(c).for_each(|(a, &b)| *a += b);
            h.zeros += c[bins];
        }
        Ok(())
    }
}
