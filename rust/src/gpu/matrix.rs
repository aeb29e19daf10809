//! Matrix products on the device, where a GPU's arithmetic pays for the bus: `XᵀX` for
//! [`HessianObserver`] batches, GPTQ's block updates ([`Trailing`]) and the data-aware layer
//! error `tr((W − Ŵ) H (W − Ŵ)ᵀ) / 2`. All three run the tiled `gemm` of `kernels/matrix.cl`.
//!
//! Precision: products are f32 with f32 sums over at most [`SLICE_ROWS`] rows; `XᵀX` is then
//! accumulated across slices as an unevaluated f32 pair (two-sum, about 48 bits) on the device
//! and in f64 on the host, so a long batch loses no more than the CPU path's f32 blocks do.

use super::cl::{cl_err, ClBackend};
use crate::elem::{f32_in, Elem};
use crate::error::{Error, Result};
use crate::gptq::{gptq_with, Gptq, GptqOptions, Trailing};
use crate::hessian::{tri_index, HessianObserver, Partial};
use crate::scheme::Scheme;
use opencl3::kernel::ExecuteKernel;
use opencl3::memory::Buffer;
use opencl3::types::{cl_float, cl_int, cl_ulong, CL_BLOCKING};

/// Rows of `X` summed in f32 inside one product before the two-sum accumulation.
pub const SLICE_ROWS: usize = 512;
/// Values of `X` (or of `W − Ŵ`) uploaded at a time: 64 MiB of f32.
const UPLOAD: usize = 1 << 24;

/// The tiling of the matrix product: `tm × tm` outputs per work-group in `tk`-deep slices,
/// `wpt × wpt` outputs per work-item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    pub tm: usize,
    pub tk: usize,
    pub wpt: usize,
}

impl Tiles {
    /// The largest tiling the device takes: 128 × 128 (8 × 8 a work-item) on GPUs, 64 × 64
    /// (4 × 4) otherwise, shrunk until the work-group (`(tm / wpt)²` items) fits the device's
    /// limit and the two staged slices fit its local memory (GCN: 256 items, 32 KiB).
    /// `RXQUANT_CL_TILES=TMxWPT` (e.g. `64x4`) overrides, for tuning on a new card.
    pub fn for_device(max_work_group: usize, local_memory: u64, is_gpu: bool) -> Result<Tiles> {
        let fits = |t: &Tiles| {
            let items = (t.tm / t.wpt) * (t.tm / t.wpt);
            items <= max_work_group && (2 * t.tk * (t.tm + 1) * 4) as u64 <= local_memory
        };
        if let Ok(v) = std::env::var("RXQUANT_CL_TILES") {
            // A tuning request that cannot be met is an error, not a silent return to the default.
            let t = Tiles::parse(&v)?;
            if !fits(&t) {
                return Err(Error::Invalid(format!(
                    "RXQUANT_CL_TILES={v:?}: {} work-items and {} bytes of local memory a work-group; \
                     the device allows {max_work_group} and {local_memory}",
                    (t.tm / t.wpt) * (t.tm / t.wpt),
                    2 * t.tk * (t.tm + 1) * 4
                )));
            }
            return Ok(t);
        }
        let wanted: &[(usize, usize)] =
            if is_gpu { &[(128, 8), (64, 4), (32, 4), (16, 2)] } else { &[(64, 4), (32, 4), (16, 2)] };
        for &(tm, wpt) in wanted {
            for tk in [16, 8] {
                let t = Tiles { tm, tk, wpt };
                if fits(&t) {
                    return Ok(t);
                }
            }
        }
        Ok(Tiles { tm: 8, tk: 8, wpt: 1 })
    }

    /// `TMxWPT` (e.g. `64x4`): `tm × tm` outputs a work-group, `wpt × wpt` a work-item, slices 16
    /// deep; `wpt` must divide `tm`.
    pub fn parse(v: &str) -> Result<Tiles> {
        let bad = |why: &str| Error::Invalid(format!("RXQUANT_CL_TILES={v:?}: {why}"));
        let (tm, wpt) = v.split_once('x').ok_or_else(|| bad("expected TMxWPT, e.g. 64x4"))?;
        let (tm, wpt) = match (tm.trim().parse::<usize>(), wpt.trim().parse::<usize>()) {
            (Ok(tm), Ok(wpt)) => (tm, wpt),
            _ => return Err(bad("expected TMxWPT with two positive integers, e.g. 64x4")),
        };
        if wpt == 0 || tm == 0 || tm % wpt != 0 {
            return Err(bad("WPT must be positive and divide TM"));
        }
        Ok(Tiles { tm, tk: 16, wpt })
    }

    /// The kernel's `-D` options.
    pub fn defines(&self) -> String {
        format!("-D RX_TM={} -D RX_TK={} -D RX_WPT={}", self.tm, self.tk, self.wpt)
    }
}

/// A matrix operand read through strides: element `(r, c)` at `off + r · rs + c · cs`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub buf: &'a Buffer<cl_float>,
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

fn int(v: usize, what: &str) -> Result<cl_int> {
    cl_int::try_from(v)
        .map_err(|_| Error::Device(format!("{what} {v} is too large for the device's product")))
}

impl ClBackend {
    /// `C = beta · C + alpha · A B` for `A` (m × k) and `B` (k × n); with `lower`, only the
    /// tiles touching `C`'s lower triangle. `C[r, c]` is at `c_off + r · c_rs + c`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        a: Operand<'_>,
        b: Operand<'_>,
        c: &Buffer<cl_float>,
        (c_off, c_rs): (usize, usize),
        (alpha, beta): (f32, f32),
        lower: bool,
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let t = self.tiles;
        let side = t.tm / t.wpt;
        let kernel = self.kernel("gemm")?;
        let (mi, ni, ki) = (int(m, "rows")?, int(n, "columns")?, int(k, "depth")?);
        let (ars, acs, brs, bcs, crs) = (
            int(a.rs, "stride")?,
            int(a.cs, "stride")?,
            int(b.rs, "stride")?,
            int(b.cs, "stride")?,
            int(c_rs, "stride")?,
        );
        let (ao, bo, co) = (a.off as cl_ulong, b.off as cl_ulong, c_off as cl_ulong);
        let low = lower as cl_int;
        let mut e = ExecuteKernel::new(&kernel);
        // SAFETY: every argument is set, in the kernel's order; the buffers outlive the launch.
        let ev = unsafe {
            e.set_arg(&mi).set_arg(&ni).set_arg(&ki);
            e.set_arg(a.buf).set_arg(&ao).set_arg(&ars).set_arg(&acs);
            e.set_arg(b.buf).set_arg(&bo).set_arg(&brs).set_arg(&bcs);
            e.set_arg(c).set_arg(&co).set_arg(&crs).set_arg(&alpha).set_arg(&beta).set_arg(&low);
            e.set_global_work_sizes(&[n.div_ceil(t.tm) * side, m.div_ceil(t.tm) * side])
                .set_local_work_sizes(&[side, side])
                .enqueue_nd_range(&self.queue)
        }
        .map_err(cl_err("matrix product launch"))?;
        self.record(|| "gemm".into(), ev);
        Ok(())
    }

    /// A zero-filled device buffer of `n` f32.
    fn zeros(&self, n: usize) -> Result<Buffer<cl_float>> {
        let mut b = self.output::<cl_float>(n)?;
        // SAFETY: the fill covers the whole buffer; `finish` waits for it before any use.
        unsafe { self.queue.enqueue_fill_buffer(&mut b, &[0f32], 0, n.max(1) * 4, &[]) }
            .map_err(cl_err("fill"))?;
        Ok(b)
    }

    /// One batch's `XᵀX` on the device, as [`HessianObserver::partial`] returns it (checked by
    /// the same rules against `obs`).
    pub fn hessian_partial<T: Elem>(
        &self,
        obs: &HessianObserver,
        x: &[T],
        shape: &[usize],
    ) -> Result<Partial> {
        let (rows, f) = obs.check_batch(x, shape)?;
        let mut sum = vec![0f64; f * (f + 1) / 2];
        if rows == 0 || f == 0 {
            return Ok(Partial { features: f, sum, count: rows as u64 });
        }
        let per_upload = (UPLOAD / f).max(1).div_ceil(SLICE_ROWS) * SLICE_ROWS;
        let per_upload = per_upload.min(rows.div_ceil(SLICE_ROWS) * SLICE_ROWS);
        let mut xb = self.output::<cl_float>(per_upload * f)?;
        let (c, hi, lo) = (self.zeros(f * f)?, self.zeros(f * f)?, self.zeros(f * f)?);
        let acc = self.kernel("accumulate2")?;
        let nn = (f * f) as cl_ulong;
        let mut convert = Vec::new();
        for r0 in (0..rows).step_by(per_upload) {
            let nr = per_upload.min(rows - r0);
            self.write(&mut xb, f32_in(&x[r0 * f..(r0 + nr) * f], &mut convert))?;
            for s0 in (0..nr).step_by(SLICE_ROWS) {
                let k = SLICE_ROWS.min(nr - s0);
                let xt = Operand { buf: &xb, off: s0 * f, rs: 1, cs: f };
                let xm = Operand { buf: &xb, off: s0 * f, rs: f, cs: 1 };
                self.gemm((f, f, k), xt, xm, &c, (0, f), (1.0, 0.0), true)?;
                self.launch(&acc, f * f, |e, base| unsafe {
                    e.set_arg(&hi).set_arg(&lo).set_arg(&c).set_arg(&base).set_arg(&nn);
                })?;
            }
        }
        let (mut h, mut l) = (vec![0f32; f * f], vec![0f32; f * f]);
        self.download(&hi, &mut h)?;
        self.download(&lo, &mut l)?;
        for i in 0..f {
            for j in 0..=i {
                sum[tri_index(i, j)] = h[i * f + j] as f64 + l[i * f + j] as f64;
            }
        }
        Ok(Partial { features: f, sum, count: rows as u64 })
    }

    /// `tr(D H Dᵀ) / 2` for `D = W − Ŵ` (row-major `rows × cols`) and `H` (`cols × cols`): the
    /// layer's output error `‖X Dᵀ‖² / N` for `H = 2 XᵀX / N`. f32 products, f64 sum.
    pub fn layer_error(&self, d: &[f32], rows: usize, cols: usize, hessian: &[f64]) -> Result<f64> {
        if d.len() != rows * cols || hessian.len() != cols * cols {
            return Err(Error::Shape(format!(
                "difference has {} values for ({rows}, {cols}), Hessian {} for ({cols}, {cols})",
                d.len(),
                hessian.len()
            )));
        }
        if d.is_empty() {
            return Ok(0.0);
        }
        let h: Vec<f32> = hessian.iter().map(|&v| v as f32).collect();
        let hb = self.upload(&h)?;
        let per = (UPLOAD / cols).clamp(1, rows);
        let mut db = self.output::<cl_float>(per * cols)?;
        let pb = self.output::<cl_float>(per * cols)?;
        let wg = self.work_group;
        let partial = self.output::<cl_float>((per * cols).div_ceil(wg))?;
        let dot = self.kernel("dot_partials")?;
        let mut total = 0f64;
        for r0 in (0..rows).step_by(per) {
            let nr = per.min(rows - r0);
            let n = nr * cols;
            self.write(&mut db, &d[r0 * cols..r0 * cols + n])?;
            let dm = Operand { buf: &db, off: 0, rs: cols, cs: 1 };
            let hm = Operand { buf: &hb, off: 0, rs: cols, cs: 1 };
            self.gemm((nr, cols, cols), dm, hm, &pb, (0, cols), (1.0, 0.0), false)?;
            let nu = n as cl_ulong;
            self.launch(&dot, n, |e, base| unsafe {
                e.set_arg(&pb).set_arg(&db).set_arg(&partial).set_arg_local_buffer(4 * wg);
                e.set_arg(&base).set_arg(&nu).set_arg(&(base / wg as cl_ulong));
            })?;
            let mut p = vec![0f32; n.div_ceil(wg)];
            self.download(&partial, &mut p)?;
            total += p.iter().map(|&v| v as f64).sum::<f64>();
        }
        Ok(total / 2.0)
    }

    /// [`crate::gptq()`] with the block updates on this device ([`Trailing`]).
    pub fn gptq(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        hessian: &[f64],
        scheme: Scheme,
        opts: &GptqOptions,
    ) -> Result<Gptq> {
        let mut dev = DeviceTrailing { be: self, wt: None, u: None, err: None, rows: 0, cols: 0 };
        gptq_with(w, rows, cols, hessian, scheme, opts, Some(&mut dev))
    }
}

/// GPTQ's `Wᵀ` and `U` kept on the device between blocks.
struct DeviceTrailing<'a> {
    be: &'a ClBackend,
    wt: Option<Buffer<cl_float>>,
    u: Option<Buffer<cl_float>>,
    err: Option<(Buffer<cl_float>, usize)>,
    rows: usize,
    cols: usize,
}

impl Trailing for DeviceTrailing<'_> {
    fn start(&mut self, wt: &[f32], u: &[f32], rows: usize, cols: usize) -> Result<()> {
        self.wt = Some(self.be.upload(wt)?);
        self.u = Some(self.be.upload(u)?);
        (self.rows, self.cols) = (rows, cols);
        Ok(())
    }

    fn fetch(&mut self, i1: usize, i2: usize, dst: &mut [f32]) -> Result<()> {
        let wt = self.wt.as_ref().ok_or_else(|| Error::Device("gptq block fetched before start".into()))?;
        debug_assert_eq!(dst.len(), (i2 - i1) * self.rows);
        // SAFETY: `dst` covers rows i1..i2 of the buffer; the read blocks until done.
        let e = unsafe { self.be.queue.enqueue_read_buffer(wt, CL_BLOCKING, i1 * self.rows * 4, dst, &[]) }
            .map_err(cl_err("download"))?;
        self.be.record(|| "download".into(), e);
        Ok(())
    }

    fn update(&mut self, i1: usize, i2: usize, err: &[f32]) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        if !matches!(&self.err, Some((_, n)) if *n >= err.len()) {
            self.err = Some((self.be.output::<cl_float>(err.len())?, err.len()));
        }
        let (eb, _) = self.err.as_mut().expect("allocated above");
        self.be.write(eb, err)?;
        let (wt, u) = (self.wt.as_ref().expect("started"), self.u.as_ref().expect("started"));
        let a = Operand { buf: u, off: i1 * cols + i2, rs: 1, cs: cols };
        let b = Operand { buf: eb, off: 0, rs: rows, cs: 1 };
        self.be.gemm((cols - i2, rows, i2 - i1), a, b, wt, (i2 * rows, rows), (-1.0, 1.0), false)
    }
}

#[cfg(test)]
mod tests {
    use super::Tiles;

    /// A tuning override that cannot be used is refused with the reason (it fell back silently).
    #[test]
    fn tile_overrides_parse_or_say_why() {
        assert_eq!(Tiles::parse("64x4").unwrap(), Tiles { tm: 64, tk: 16, wpt: 4 });
        assert_eq!(Tiles::parse(" 32 x 2 ").unwrap(), Tiles { tm: 32, tk: 16, wpt: 2 });
        for (v, why) in [
            ("64", "expected TMxWPT"),
            ("64x", "two positive integers"),
            ("64x3", "divide TM"),
            ("0x0", "positive"),
        ] {
            let e = Tiles::parse(v).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("RXQUANT_CL_TILES"), "{v}: {e}");
        }
    }
}
