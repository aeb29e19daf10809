//! OpenCL compute for the heavy kernels (`kernels/quant.cl`, embedded at build time), run on
//! whatever OpenCL device is chosen: a GPU such as a Polaris card, or PoCL on the CPU in tests.
//! Results are meant to be bit-identical to the CPU path for integer outputs (the program is
//! built with correctly rounded division where the platform supports it; `exact_division` says).

use crate::error::{Error, Result};
use crate::layout::ParamMap;
use crate::qparams::QParams;
use crate::range::Ranges;
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
use opencl3::platform::get_platforms;
use opencl3::program::Program;
use opencl3::types::{cl_float, cl_int, cl_uchar, cl_uint, cl_ulong, CL_BLOCKING};
use std::ptr;

/// The kernels' source, compiled at run time for the chosen device.
pub const SOURCE: &str = include_str!("kernels/quant.cl");
/// Elements per launch: keeps global sizes far below 2^32 whatever the tensor size.
const LAUNCH: usize = 1 << 24;

/// An OpenCL device with the rxquant program built for it.
pub struct ClBackend {
    pub device_name: String,
    /// Work-group size (a multiple of the wavefront: 64 on GCN).
    pub work_group: usize,
    /// Whether the program was built with `-cl-fp32-correctly-rounded-divide-sqrt`.
    pub exact_division: bool,
    context: Context,
    queue: CommandQueue,
    program: Program,
}

fn cl_err(what: &str) -> impl Fn(opencl3::error_codes::ClError) -> Error + '_ {
    move |e| Error::Invalid(format!("OpenCL {what} failed: {e}"))
}

impl ClBackend {
    /// Opens device `index` (in [`super::opencl::devices`] order), or the first GPU when `None`.
    pub fn open(index: Option<usize>, work_group: usize) -> Result<Self> {
        // Some ICDs (PoCL) are not safe to enumerate from two threads at once on first use.
        static OPEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let platforms = get_platforms().map_err(|e| Error::Invalid(format!("no OpenCL platform: {e}")))?;
        let mut all = Vec::new();
        for p in platforms {
            all.extend(p.get_devices(opencl3::device::CL_DEVICE_TYPE_ALL).unwrap_or_default());
        }
        let id = match index {
            Some(i) => *all.get(i).ok_or_else(|| {
                Error::Invalid(format!("no OpenCL device opencl:{i} ({} device(s) found)", all.len()))
            })?,
            None => *all
                .iter()
                .find(|&&d| {
                    Device::new(d)
                        .dev_type()
                        .map(|t| t & opencl3::device::CL_DEVICE_TYPE_GPU != 0)
                        .unwrap_or(false)
                })
                .ok_or_else(|| Error::Invalid("no OpenCL GPU device found".into()))?,
        };
        let device = Device::new(id);
        let context = Context::from_device(&device).map_err(cl_err("context creation"))?;
        #[allow(deprecated)]
        let queue = CommandQueue::create_default(&context, 0).map_err(cl_err("queue creation"))?;
        let (program, exact_division) = match Program::create_and_build_from_source(
            &context,
            SOURCE,
            "-cl-fp32-correctly-rounded-divide-sqrt",
        ) {
            Ok(p) => (p, true),
            Err(_) => (
                Program::create_and_build_from_source(&context, SOURCE, "")
                    .map_err(|log| Error::Invalid(format!("OpenCL program build failed: {log}")))?,
                false,
            ),
        };
        Ok(ClBackend {
            device_name: device.name().unwrap_or_default(),
            work_group: work_group.max(1),
            exact_division,
            context,
            queue,
            program,
        })
    }

    fn kernel(&self, name: &str) -> Result<Kernel> {
        Kernel::create(&self.program, name).map_err(cl_err("kernel creation"))
    }

    fn upload<T: Copy>(&self, data: &[T]) -> Result<Buffer<T>> {
        // SAFETY: a fresh buffer of `data.len()` elements, written before any kernel reads it.
        unsafe {
            let mut b =
                Buffer::<T>::create(&self.context, CL_MEM_READ_WRITE, data.len().max(1), ptr::null_mut())
                    .map_err(cl_err("buffer allocation"))?;
            if !data.is_empty() {
                self.queue
                    .enqueue_write_buffer(&mut b, CL_BLOCKING, 0, data, &[])
                    .map_err(cl_err("upload"))?;
            }
            Ok(b)
        }
    }

    fn output<T>(&self, n: usize) -> Result<Buffer<T>> {
        // SAFETY: allocation only; kernels write every element that is read back.
        unsafe {
            Buffer::<T>::create(&self.context, CL_MEM_READ_WRITE, n.max(1), ptr::null_mut())
                .map_err(cl_err("buffer allocation"))
        }
    }

    fn download<T: Copy>(&self, b: &Buffer<T>, out: &mut [T]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: `out` has the buffer's length; the read blocks until done.
        unsafe { self.queue.enqueue_read_buffer(b, CL_BLOCKING, 0, out, &[]) }.map_err(cl_err("download"))?;
        Ok(())
    }

    /// Runs `k` over `n` items in chunked launches; `set` sets every argument, given the
    /// chunk's first index.
    fn launch(&self, k: &Kernel, n: usize, set: impl Fn(&mut ExecuteKernel, cl_ulong)) -> Result<()> {
        let wg = self.work_group;
        let mut base = 0usize;
        while base < n {
            let items = (n - base).min(LAUNCH);
            let global = items.div_ceil(wg) * wg;
            let mut e = ExecuteKernel::new(k);
            set(&mut e, base as cl_ulong);
            // SAFETY: every argument of the kernel was set by `set`, with buffers that outlive the launch.
            unsafe { e.set_global_work_size(global).set_local_work_size(wg).enqueue_nd_range(&self.queue) }
                .map_err(cl_err("kernel launch"))?;
            base += items;
        }
        self.queue.finish().map_err(cl_err("finish"))?;
        Ok(())
    }

    fn layout(map: &ParamMap) -> (cl_ulong, cl_ulong, cl_ulong, cl_int) {
        (map.dim as cl_ulong, map.inner as cl_ulong, map.group as cl_ulong, map.per_group as cl_int)
    }

    /// Quantizes `x` into one byte per element (two's complement for signed grids).
    pub fn quantize(&self, x: &[f32], map: &ParamMap, qp: &QParams, out: &mut [u8]) -> Result<()> {
        qp.validate(map)?;
        if x.len() != out.len() || x.len() != map.len {
            return Err(Error::Shape(format!("input {}, output {}, shape {}", x.len(), out.len(), map.len)));
        }
        if x.is_empty() {
            return Ok(());
        }
        let (bx, bs, bz) = (self.upload(x)?, self.upload(&qp.scale)?, self.upload(&qp.zero_point)?);
        let bo = self.output::<cl_uchar>(x.len())?;
        let k = self.kernel("quantize_f32")?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let (qmin, qmax) = qp.scheme.qrange();
        let n = x.len() as cl_ulong;
        self.launch(&k, x.len(), |e, base| unsafe {
            e.set_arg(&bx).set_arg(&bo).set_arg(&bs).set_arg(&bz).set_arg(&base).set_arg(&n).set_arg(&dim);
            e.set_arg(&inner)
                .set_arg(&group)
                .set_arg(&per_group)
                .set_arg(&(qmin as cl_int))
                .set_arg(&(qmax as cl_int));
        })?;
        self.download(&bo, out)
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
        let (bc, bo) = (self.upload(codes)?, self.output::<cl_uchar>(out.len())?);
        let k = self.kernel("pack_int4")?;
        let n = codes.len() as cl_ulong;
        self.launch(&k, out.len(), |e, base| unsafe {
            e.set_arg(&bc).set_arg(&bo).set_arg(&base).set_arg(&n);
        })?;
        self.download(&bo, out)
    }

    /// Min and max of every parameter cell (finite values; empty cells give `+inf, -inf`).
    pub fn ranges(&self, x: &[f32], map: &ParamMap) -> Result<Ranges> {
        let np = map.n_params();
        let mut r = Ranges { min: vec![f32::INFINITY; np], max: vec![f32::NEG_INFINITY; np] };
        if x.is_empty() || np == 0 {
            return Ok(r);
        }
        let bx = self.upload(x)?;
        let (bmn, bmx) = (self.output::<cl_float>(np)?, self.output::<cl_float>(np)?);
        let k = self.kernel("cell_minmax")?;
        let (dim, inner, group, per_group) = Self::layout(map);
        let (npu, outer) = (np as cl_ulong, map.outer as cl_ulong);
        self.launch(&k, np, |e, _| unsafe {
            e.set_arg(&bx).set_arg(&bmn).set_arg(&bmx).set_arg(&npu).set_arg(&outer).set_arg(&dim);
            e.set_arg(&inner).set_arg(&group).set_arg(&per_group);
        })?;
        self.download(&bmn, &mut r.min)?;
        self.download(&bmx, &mut r.max)?;
        Ok(r)
    }

    /// Histogram counts with local-memory atomics: `(counts, zeros, non-finite)` for values
    /// (or `|values|`) binned as `((v - lo) * inv)` clamped to the bins.
    pub fn histogram(
        &self,
        x: &[f32],
        lo: f32,
        inv: f32,
        bins: usize,
        abs: bool,
    ) -> Result<(Vec<u64>, u64, u64)> {
        let mut total = vec![0u64; bins + 2];
        let k = self.kernel("histogram")?;
        let mut base = 0usize;
        // Counts are u32 on the device: at most LAUNCH values per pass, summed on the host in u64.
        while base < x.len() {
            let part = &x[base..(base + LAUNCH).min(x.len())];
            let bx = self.upload(part)?;
            let bc = self.upload(&vec![0 as cl_uint; bins + 2])?;
            let (n, b, a) = (part.len() as cl_ulong, bins as cl_uint, abs as cl_int);
            self.launch(&k, part.len(), |e, off| unsafe {
                e.set_arg(&bx).set_arg(&bc).set_arg_local_buffer((bins + 2) * 4).set_arg(&off).set_arg(&n);
                e.set_arg(&lo).set_arg(&inv).set_arg(&b).set_arg(&a);
            })?;
            let mut counts = vec![0u32; bins + 2];
            self.download(&bc, &mut counts)?;
            total.iter_mut().zip(&counts).for_each(|(t, &c)| *t += c as u64);
            base += part.len();
        }
        let (bad, zeros) = (total.pop().unwrap_or(0), total.pop().unwrap_or(0));
        Ok((total, zeros, bad))
    }

    /// `sum x^2, sum y^2, sum xy, sum (x - y)^2` (work-group partials in f32, summed in f64).
    pub fn error_sums(&self, x: &[f32], y: &[f32]) -> Result<[f64; 4]> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!("{} and {} elements", x.len(), y.len())));
        }
        let mut s = [0f64; 4];
        if x.is_empty() {
            return Ok(s);
        }
        let (bx, by) = (self.upload(x)?, self.upload(y)?);
        let groups = x.len().div_ceil(self.work_group);
        let bp = self.output::<cl_float>(4 * groups)?;
        let k = self.kernel("error_sums")?;
        let n = x.len() as cl_ulong;
        let wg = self.work_group;
        // Partials are indexed by work-group id within a launch: one launch covers all groups.
        let mut e = ExecuteKernel::new(&k);
        // SAFETY: all arguments set; buffers outlive the launch; the queue is finished below.
        unsafe {
            e.set_arg(&bx)
                .set_arg(&by)
                .set_arg(&bp)
                .set_arg_local_buffer(4 * 4 * wg)
                .set_arg(&(0 as cl_ulong))
                .set_arg(&n);
            e.set_global_work_size(groups * wg).set_local_work_size(wg).enqueue_nd_range(&self.queue)
        }
        .map_err(cl_err("kernel launch"))?;
        self.queue.finish().map_err(cl_err("finish"))?;
        let mut partial = vec![0f32; 4 * groups];
        self.download(&bp, &mut partial)?;
        for c in partial.chunks_exact(4) {
            for k in 0..4 {
                s[k] += c[k] as f64;
            }
        }
        Ok(s)
    }
}
