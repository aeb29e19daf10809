//! GPTQ (Frantar et al., 2022): rounding that compensates each column's error on the columns
//! not yet quantized, using the layer's input statistics `H = 2 XᵀX / N`, so that the layer's
//! output error `‖X (W − Ŵ)ᵀ‖²` is small rather than the weight error.
//!
//! For a weight `W` (out × in): dead inputs (`H_ii = 0`) get `H_ii = 1` and `W[:, i] = 0`;
//! `λ = damp · mean(diag H)` is added to the diagonal; `U` is the upper Cholesky factor of `H⁻¹`.
//! Columns are quantized in order (by decreasing `H_ii` with activation order) in blocks of
//! `block_size` ("lazy batch"): for column `i`, `e = (w_i − q_i) / U_ii` and the block's later
//! columns get `W[:, j] −= e · U_ij`; after the block, the remaining columns get one matrix update
//! `−E · U[block, rest]`. Each group's parameters are chosen when its first column is reached, on
//! the already-updated weights; with activation order, groups are static (chosen on the weights
//! before any update, in their natural order), so the stored layout is that of `quantize`.
//!
//! `U` is computed as `J M⁻¹ J` where `J` reverses indices and `J H J = M Mᵀ` (Cholesky): one
//! factorization and one triangular inverse, in f64 (faer). The column loop runs in f32 like the
//! reference implementation; the block updates are faer matrix products (rayon).

use crate::calib::{calibrate, CalibOptions, Method};
use crate::elem::first_nonfinite;
use crate::error::{Error, Result};
use crate::layout::normalize_axis;
use crate::qparams::QParams;
use crate::quant::code;
use crate::scheme::{Granularity, Scheme};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

/// Options of [`gptq`].
#[derive(Debug, Clone)]
pub struct GptqOptions {
    /// Fraction of the mean of `diag H` added to the diagonal (default 0.01).
    pub damp: f64,
    /// Columns per lazy-batch block (default 128; rounded up to a multiple of the group size, so
    /// that a group never spans two blocks).
    pub block_size: usize,
    /// Quantize columns by decreasing `H_ii` (with static groups).
    pub act_order: bool,
    /// How each parameter cell's clip range is chosen: [`Method::Mse`] (default) or
    /// [`Method::MinMax`].
    pub method: Method,
    /// Options of that search (as for [`calibrate`]).
    pub calib: CalibOptions,
    /// Round each scale to float16 (magnitude clamped to `[2^-14, 65504]`, sign kept) as soon as
    /// it is chosen, so the codes are computed with the scale a file stores as float16.
    pub f16_scales: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            block_size: 128,
            act_order: false,
            method: Method::Mse,
            calib: CalibOptions::default(),
            f16_scales: false,
        }
    }
}

/// The result of [`gptq`]: codes in `quantize`'s layout and parameters.
#[derive(Debug, Clone)]
pub struct Gptq {
    /// One code per weight, row-major `(out, in)`: two's-complement bytes for signed grids.
    pub codes: Vec<u8>,
    pub qparams: QParams,
    /// Inputs whose `H_ii` was 0 (their weights were set to 0 before quantization).
    pub dead_inputs: usize,
    /// The `λ` added to the diagonal.
    pub damping: f64,
}

/// Where the block updates of the columns after the current block run: a device that keeps `Wᵀ`
/// (in quantization order, `cols × rows`) and `U` in its memory (see `gpu::matrix`). The column
/// loop inside a block stays on the host; only the block's rows of `Wᵀ` come back before it, and
/// its errors go out after it, so the transfers are `2 · rows · cols` values per layer whatever
/// the block count, while the `O(rows · cols²)` product runs on the device.
pub trait Trailing {
    /// Takes `Wᵀ` and `U` (row-major `cols × cols`, f32) before the sweep.
    fn start(&mut self, wt: &[f32], u: &[f32], rows: usize, cols: usize) -> Result<()>;
    /// Writes the current rows `i1..i2` of `Wᵀ` into `dst`.
    fn fetch(&mut self, i1: usize, i2: usize, dst: &mut [f32]) -> Result<()>;
    /// `Wᵀ[i2..] −= U[i1..i2, i2..]ᵀ · err` with `err` the block's errors (`(i2 − i1) × rows`).
    fn update(&mut self, i1: usize, i2: usize, err: &[f32]) -> Result<()>;
}

/// Fills `dst` (row-major, `dst.len() / width` rows of `width`) with `at(column, row)` in 64 x 64
/// tiles, so that a transposition reads and writes cache lines, not single values.
fn transpose_into<T: Copy + Send>(dst: &mut [T], width: usize, at: impl Fn(usize, usize) -> T + Sync) {
    const TILE: usize = 64;
    dst.par_chunks_mut(width * TILE).enumerate().for_each(|(t, rows)| {
        let n = rows.len() / width;
        for c0 in (0..width).step_by(TILE) {
            for c in c0..(c0 + TILE).min(width) {
                for k in 0..n {
                    rows[k * width + c] = at(c, t * TILE + k);
                }
            }
        }
    });
}

/// How the column sweep quantizes a weight and when it chooses parameters: a [`Scheme`]'s grid
/// here, a ggml block type in [`crate::ggml`].
pub(crate) trait ColumnCodec: Sync {
    /// The stored code of weight `v` at `(row, col)` (`col` in the weight's own order) and the
    /// value it decodes to.
    fn code(&self, row: usize, col: usize, v: f32) -> (u8, f32);
    /// Chooses the parameters of columns `c0 .. c0 + g` from `cell` (row-major `rows × g`), the
    /// weights as the sweep has updated them.
    fn choose(&mut self, c0: usize, cell: &[f32]) -> Result<()>;
}

/// One sub-block of columns `s0..sb_end` of the block starting at `i1`: each column quantized
/// with its parameters, its scaled error `(w - q) / U_ii` kept, and that error applied to the
/// sub-block's later columns. Rows are independent here, so chunks of rows run in parallel.
struct SubBlock {
    s0: usize,
    sb_end: usize,
    i1: usize,
    rows: usize,
    cols: usize,
}

/// A raw pointer that may cross threads: [`SubBlock::run`] hands each task disjoint rows.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: only used by SubBlock::run, whose tasks touch disjoint elements.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so closures capture the `Shared`, not the raw field).
    fn ptr(self) -> *mut T {
        self.0
    }
}

impl SubBlock {
    fn run<C: ColumnCodec>(
        &self,
        codec: &C,
        wt: &mut [f32],
        codes_t: &mut [u8],
        err: &mut [f32],
        u: &[f32],
        order: &[usize],
    ) {
        const ROWS: usize = 256;
        let (rows, cols) = (self.rows, self.cols);
        assert!(wt.len() >= self.sb_end * rows && codes_t.len() >= self.sb_end * rows);
        assert!(err.len() >= (self.sb_end - self.i1) * rows);
        let (w, c, e) = (Shared(wt.as_mut_ptr()), Shared(codes_t.as_mut_ptr()), Shared(err.as_mut_ptr()));
        (0..rows.div_ceil(ROWS)).into_par_iter().for_each(|t| {
            let (r0, r1) = (t * ROWS, ((t + 1) * ROWS).min(rows));
            let n = r1 - r0;
            // SAFETY: rows r0..r1 of columns s0..sb_end belong to this task alone; the asserts
            // above keep every index inside the buffers.
            let slice_w = |i: usize| unsafe { std::slice::from_raw_parts_mut(w.ptr().add(i * rows + r0), n) };
            for i in self.s0..self.sb_end {
                let d = u[i * cols + i];
                let col = order[i];
                let codes = unsafe { std::slice::from_raw_parts_mut(c.ptr().add(i * rows + r0), n) };
                let ei = unsafe { std::slice::from_raw_parts_mut(e.ptr().add((i - self.i1) * rows + r0), n) };
                let wi = slice_w(i);
                for k in 0..n {
                    let (q, back) = codec.code(r0 + k, col, wi[k]);
                    codes[k] = q;
                    ei[k] = (wi[k] - back) / d;
                }
                for j in i + 1..self.sb_end {
                    let f = u[i * cols + j];
                    if f != 0.0 {
                        slice_w(j).iter_mut().zip(ei.iter()).for_each(|(v, &x)| *v -= f * x);
                    }
                }
            }
        });
    }
}

/// Columns per sub-block of the lazy-batch block (see the column loop).
const SUB_BLOCK: usize = 16;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Which weights share a parameter.
#[derive(Clone, Copy, PartialEq)]
enum Cells {
    Tensor,
    Row,
    Group(usize),
}

/// A [`Scheme`]'s grid: one scale and zero point per cell.
struct SchemeCodec<'a> {
    scheme: Scheme,
    opts: &'a GptqOptions,
    cells: Cells,
    rows: usize,
    ng: usize,
    qmin: i32,
    qmax: i32,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
}

impl SchemeCodec<'_> {
    fn set(&mut self, qp: QParams) {
        (self.scale, self.zero_point) = (qp.scale, qp.zero_point);
        if self.opts.f16_scales {
            self.scale.iter_mut().for_each(|s| *s = f16_scale(*s));
        }
    }
}

impl ColumnCodec for SchemeCodec<'_> {
    #[inline(always)]
    fn code(&self, row: usize, col: usize, v: f32) -> (u8, f32) {
        let p = match self.cells {
            Cells::Tensor => 0,
            Cells::Row => row,
            Cells::Group(g) => row * self.ng + col / g,
        };
        let (s, z) = (self.scale[p], self.zero_point[p]);
        let q = code(v, s, (self.qmin - z) as f32, (self.qmax - z) as f32) + z;
        (q as u8, (q - z) as f32 * s)
    }

    fn choose(&mut self, c0: usize, cell: &[f32]) -> Result<()> {
        let g = cell.len() / self.rows;
        let qp = calibrate(cell, &[self.rows, g], self.scheme, self.opts.method, &self.opts.calib)?;
        for r in 0..self.rows {
            let s = qp.scale[r];
            self.scale[r * self.ng + c0 / g] = if self.opts.f16_scales { f16_scale(s) } else { s };
            self.zero_point[r * self.ng + c0 / g] = qp.zero_point[r];
        }
        Ok(())
    }
}

/// The inputs of the column sweep: the weight with dead inputs zeroed, the quantization order
/// and `U`.
pub(crate) struct Prepared<'a> {
    /// The weight (row-major `rows × cols`) with dead inputs' columns set to 0.
    /// The weight with dead inputs zeroed (borrowed when there are none: no 4-byte-per-weight
    /// copy of a layer that needs no change).
    pub wd: std::borrow::Cow<'a, [f32]>,
    pub order: Vec<usize>,
    u: Vec<f32>,
    pub dead_inputs: usize,
    pub damping: f64,
}

/// Checks `w` and `hessian`, zeroes dead inputs, orders the columns and factors `H⁻¹`.
pub(crate) fn prepare<'a>(
    w: &'a [f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    opts: &GptqOptions,
) -> Result<Prepared<'a>> {
    if w.len() != rows * cols {
        return Err(Error::Shape(format!(
            "weight has {} values, shape ({rows}, {cols}) has {}",
            w.len(),
            rows * cols
        )));
    }
    if hessian.len() != cols * cols {
        return Err(Error::Shape(format!(
            "the Hessian has {} values; a weight with {cols} inputs needs {cols} x {cols} = {}",
            hessian.len(),
            cols * cols
        )));
    }
    if let Some(first_index) = first_nonfinite(w) {
        let count = w.iter().filter(|v| !v.is_finite()).count();
        return Err(Error::NonFinite { count, first_index });
    }
    if let Some(i) = hessian.iter().position(|v| !v.is_finite()) {
        let count = hessian.iter().filter(|v| !v.is_finite()).count();
        return Err(Error::Invalid(format!(
            "the Hessian has {count} non-finite value(s); the first at ({}, {})",
            i / cols,
            i % cols
        )));
    }
    if !(opts.damp.is_finite() && opts.damp >= 0.0) || opts.block_size == 0 {
        return Err(Error::Invalid(format!(
            "damp must be a finite number >= 0 and block_size > 0, got {} and {}",
            opts.damp, opts.block_size
        )));
    }
    let diag: Vec<f64> = (0..cols).map(|i| hessian[i * cols + i]).collect();
    if let Some(i) = diag.iter().position(|&d| d < 0.0) {
        return Err(Error::Invalid(format!(
            "the Hessian's diagonal entry {i} is negative ({}): not a matrix 2 XᵀX / N",
            diag[i]
        )));
    }
    let dead: Vec<bool> = diag.iter().map(|&d| d == 0.0).collect();
    let dead_inputs = dead.iter().filter(|&&d| d).count();
    let mut wd = std::borrow::Cow::Borrowed(w);
    if dead_inputs > 0 {
        wd.to_mut()
            .par_chunks_mut(cols.max(1))
            .for_each(|row| row.iter_mut().zip(&dead).filter(|(_, &d)| d).for_each(|(v, _)| *v = 0.0));
    }
    let mut order: Vec<usize> = (0..cols).collect();
    if opts.act_order {
        let key = |i: usize| if dead[i] { 1.0 } else { diag[i] };
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    }
    if rows == 0 || cols == 0 {
        return Ok(Prepared { wd, order, u: vec![], dead_inputs, damping: 0.0 });
    }
    let mean = (0..cols).map(|i| if dead[i] { 1.0 } else { diag[i] }).sum::<f64>() / cols as f64;
    let damping = opts.damp * mean;
    let u = inverse_upper_factor(hessian, cols, &order, &dead, damping)?;
    Ok(Prepared { wd, order, u, dead_inputs, damping })
}

/// The column sweep: quantizes `prep.wd` (row-major `rows × cols`) column by column in
/// `prep.order` with `codec`, spreading each column's error over the later ones. With
/// `groups = Some(g)`, the codec chooses the parameters of each `g` columns when the sweep
/// reaches them (so `g` columns are contiguous in the order). Returns the codes, row-major in the
/// weight's own column order.
pub(crate) fn sweep<C: ColumnCodec>(
    prep: Prepared<'_>,
    rows: usize,
    cols: usize,
    groups: Option<usize>,
    block_size: usize,
    codec: &mut C,
    mut device: Option<&mut dyn Trailing>,
) -> Result<Vec<u8>> {
    let Prepared { wd, order, u, .. } = prep;
    if rows == 0 || cols == 0 {
        return Ok(vec![]);
    }
    // Wᵀ in quantization order: column i of W is the contiguous row i of `wt`.
    let mut wt = vec![0f32; cols * rows];
    transpose_into(&mut wt, rows, |r, k| wd[r * cols + order[k]]);
    drop(wd);
    if let Some(d) = device.as_deref_mut() {
        d.start(&wt, &u, rows, cols)?;
    }
    let block = groups.map_or(block_size, |g| block_size.div_ceil(g) * g);
    // Sub-blocks inside a block: rank-1 updates stay within one (a few rows of Wᵀ, in cache); a
    // finished sub-block updates the rest of the block with one matrix product. A sub-block
    // divides the group size, so a group starts on a sub-block boundary with its columns updated.
    let sub = groups.map_or(SUB_BLOCK, |g| gcd(SUB_BLOCK, g));
    let mut codes_t = vec![0u8; cols * rows];
    let mut err = vec![0f32; block.min(cols) * rows];
    // One group's weights, row-major, reused by every group (a fresh 2 MiB buffer per group of a
    // 4096-row layer would fault in its pages each time).
    let mut cell = Vec::new();
    for i1 in (0..cols).step_by(block) {
        let i2 = (i1 + block).min(cols);
        if let Some(d) = device.as_deref_mut() {
            d.fetch(i1, i2, &mut wt[i1 * rows..i2 * rows])?;
        }
        for s0 in (i1..i2).step_by(sub) {
            let sb_end = (s0 + sub).min(i2);
            if let Some(g) = groups {
                if s0 % g == 0 {
                    // A group starts on a sub-block boundary, where every column of the block is
                    // up to date.
                    cell.resize(rows * g, 0.0);
                    transpose_into(&mut cell, g, |k, r| wt[(s0 + k) * rows + r]);
                    codec.choose(order[s0], &cell)?;
                }
            }
            let sb = SubBlock { s0, sb_end, i1, rows, cols };
            sb.run(codec, &mut wt, &mut codes_t, &mut err, &u, &order);
            if sb_end < i2 {
                // The finished sub-block's errors go to the block's remaining columns at once.
                let count = sb_end - s0;
                let lhs = MatRef::from_row_major_slice(&u, cols, cols)
                    .submatrix(s0, sb_end, count, i2 - sb_end)
                    .transpose();
                let rhs =
                    MatRef::from_row_major_slice(&err[(s0 - i1) * rows..(sb_end - i1) * rows], count, rows);
                let dst =
                    MatMut::from_row_major_slice_mut(&mut wt[sb_end * rows..i2 * rows], i2 - sb_end, rows);
                matmul(dst, Accum::Add, lhs, rhs, -1.0f32, Par::rayon(0));
            }
        }
        if let (true, Some(d)) = (i2 < cols, device.as_deref_mut()) {
            d.update(i1, i2, &err[..(i2 - i1) * rows])?;
        } else if i2 < cols {
            let count = i2 - i1;
            let lhs =
                MatRef::from_row_major_slice(&u, cols, cols).submatrix(i1, i2, count, cols - i2).transpose();
            let rhs = MatRef::from_row_major_slice(&err[..count * rows], count, rows);
            let dst = MatMut::from_row_major_slice_mut(&mut wt[i2 * rows..], cols - i2, rows);
            matmul(dst, Accum::Add, lhs, rhs, -1.0f32, Par::rayon(0));
        }
    }
    let mut inverse = vec![0usize; cols];
    order.iter().enumerate().for_each(|(k, &c)| inverse[c] = k);
    let mut codes = vec![0u8; rows * cols];
    transpose_into(&mut codes, cols, |c, r| codes_t[inverse[c] * rows + r]);
    Ok(codes)
}

/// GPTQ-quantizes `w` (row-major `rows × cols`, an `out × in` weight) under `scheme` with the
/// Hessian `hessian` (row-major `cols × cols`, `2 XᵀX / N` of the layer's inputs `X`). The scheme
/// must be per tensor, per channel along axis 0 (one scale per output) or in groups along the
/// input axis (1 or −1). Returns codes and parameters exactly as [`crate::quantize`] lays them out.
pub fn gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    scheme: Scheme,
    opts: &GptqOptions,
) -> Result<Gptq> {
    gptq_with(w, rows, cols, hessian, scheme, opts, None)
}

/// [`gptq`] with the block updates on `device` (the same arithmetic in another order: codes may
/// differ from the host's where a value sits within rounding error of a step boundary).
pub fn gptq_with(
    w: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    scheme: Scheme,
    opts: &GptqOptions,
    device: Option<&mut dyn Trailing>,
) -> Result<Gptq> {
    scheme.check()?;
    if !scheme.precision.is_integer() {
        return Err(Error::Invalid(format!("gptq needs int8 or int4, not {}", scheme.precision.name())));
    }
    if !matches!(opts.method, Method::Mse | Method::MinMax) {
        return Err(Error::Invalid(format!(
            "gptq chooses parameters with mse or minmax, not {}",
            opts.method.name()
        )));
    }
    let cells = match scheme.granularity {
        Granularity::PerTensor => Cells::Tensor,
        Granularity::PerChannel { axis } if normalize_axis(axis, 2)? == 0 => Cells::Row,
        Granularity::PerGroup { axis, size } if normalize_axis(axis, 2)? == 1 => {
            if size == 0 || cols % size != 0 {
                return Err(Error::GroupSize { group: size, axis: 1, size: cols });
            }
            Cells::Group(size)
        }
        _ => {
            return Err(Error::Invalid(
                "gptq quantizes per tensor, per output channel (axis 0) or in groups along the input axis (1 or -1)"
                    .into(),
            ))
        }
    };
    let prep = prepare(w, rows, cols, hessian, opts)?;
    if rows == 0 || cols == 0 {
        let qp = calibrate(w, &[rows, cols], scheme, opts.method, &opts.calib)?;
        return Ok(Gptq { codes: vec![], qparams: qp, dead_inputs: 0, damping: 0.0 });
    }
    let (dead_inputs, damping) = (prep.dead_inputs, prep.damping);
    let (ng, grid) = match cells {
        Cells::Tensor => (1, vec![]),
        Cells::Row => (1, vec![rows]),
        Cells::Group(g) => (cols / g, vec![rows, cols / g]),
    };
    let np = if cells == Cells::Tensor { 1 } else { rows * ng };
    let (qmin, qmax) = scheme.qrange();
    let mut codec = SchemeCodec {
        scheme,
        opts,
        cells,
        rows,
        ng,
        qmin,
        qmax,
        scale: vec![1f32; np],
        zero_point: vec![0i32; np],
    };
    // Parameters chosen before the sweep: per tensor and per row on the original weight (as the
    // reference implementation), static groups (activation order) on the weight with dead inputs
    // zeroed; otherwise each group's when the sweep reaches it.
    let groups = match cells {
        Cells::Tensor | Cells::Row => {
            codec.set(calibrate(w, &[rows, cols], scheme, opts.method, &opts.calib)?);
            None
        }
        Cells::Group(_) if opts.act_order => {
            codec.set(calibrate(&prep.wd, &[rows, cols], scheme, opts.method, &opts.calib)?);
            None
        }
        Cells::Group(g) => Some(g),
    };
    let codes = sweep(prep, rows, cols, groups, opts.block_size, &mut codec, device)?;
    Ok(Gptq {
        codes,
        qparams: QParams { scheme, grid, scale: codec.scale, zero_point: codec.zero_point },
        dead_inputs,
        damping,
    })
}

/// A scale as a file stores it in float16: magnitude clamped to float16's normal range, sign kept.
fn f16_scale(s: f32) -> f32 {
    let m = half::f16::from_f32(s.abs().clamp(6.103_515_6e-5, 65504.0)).to_f32();
    m.copysign(s)
}

/// `U` (row-major f32, `n × n`, upper triangular) with `Uᵀ U = H⁻¹` for `H` permuted to `order`,
/// dead inputs set to 1 on the diagonal and `damping` added to it. Factored in f32 (as GPTQ's
/// reference does; twice the SIMD width of f64), or in f64 when f32 finds the matrix not positive
/// definite.
fn inverse_upper_factor(
    h: &[f64],
    n: usize,
    order: &[usize],
    dead: &[bool],
    damping: f64,
) -> Result<Vec<f32>> {
    let u = factor_f32(h, n, order, dead, damping)
        .or_else(|_| factor::<f64>(h, n, order, dead, damping, |v| v, |v| v as f32))?;
    if let Some(i) = (0..n).find(|&i| !(u[i * n + i].is_finite() && u[i * n + i] > 0.0)) {
        return Err(Error::Invalid(format!(
            "the Hessian is numerically singular at input {} even after dampening by {damping:e}; raise damp",
            order[i]
        )));
    }
    Ok(u)
}

/// [`inverse_upper_factor`] in precision `T`: `K = J P H P J` (index `i` of `K` is
/// `order[n - 1 - i]`), `K = M Mᵀ`, `U = J M⁻¹ J`.
/// The Cholesky factor of `J H J` (`J` reverses the quantization order), dampened, dead inputs
/// set to the identity.
fn reversed_llt<T: faer::traits::RealField + Copy>(
    h: &[f64],
    n: usize,
    order: &[usize],
    dead: &[bool],
    damping: f64,
    to: fn(f64) -> T,
) -> Result<faer::linalg::solvers::Llt<T>> {
    let at = |i: usize| order[n - 1 - i];
    // faer fills column by column: reading H[b][a] (H is symmetric) walks a row of H in order.
    let k = Mat::<T>::from_fn(n, n, |i, j| {
        let (a, b) = (at(i), at(j));
        to(if a == b {
            (if dead[a] { 1.0 } else { h[a * n + a] }) + damping
        } else if dead[a] || dead[b] {
            0.0
        } else {
            h[b * n + a]
        })
    });
    k.llt(Side::Lower).map_err(|_| {
        Error::Invalid(format!(
            "the Hessian is not positive definite after dampening by {damping:e}; raise damp (or check that it is \
             2 XᵀX / N of the layer's inputs)"
        ))
    })
}

/// [`factor`] in f32 without the intermediate inverse: `U` (row-major) is `Vᵀ` for the
/// column-major `V = J (M⁻¹)ᵀ J`, the inverse of the lower-triangular `J Mᵀ J`, so the inverse is
/// written straight into `U`'s buffer (one `n²` buffer and one pass fewer than [`factor`]).
fn factor_f32(h: &[f64], n: usize, order: &[usize], dead: &[bool], damping: f64) -> Result<Vec<f32>> {
    let llt = reversed_llt(h, n, order, dead, damping, |v| v as f32)?;
    let mut u = vec![0f32; n * n];
    let src = llt.L().transpose().reverse_rows_and_cols();
    invert_lower_triangular(MatMut::from_column_major_slice_mut(&mut u, n, n), src, Par::rayon(0));
    Ok(u)
}

fn factor<T: faer::traits::RealField + Copy>(
    h: &[f64],
    n: usize,
    order: &[usize],
    dead: &[bool],
    damping: f64,
    to: fn(f64) -> T,
    back: fn(T) -> f32,
) -> Result<Vec<f32>> {
    let llt = reversed_llt(h, n, order, dead, damping, to)?;
    let mut m_inv = Mat::<T>::zeros(n, n);
    invert_lower_triangular(m_inv.as_mut(), llt.L(), Par::rayon(0));
    drop(llt);
    // U[i][j] = M⁻¹[n-1-i][n-1-j] for i <= j (row-major), copied in tiles down M⁻¹'s columns.
    let mut u = vec![0f32; n * n];
    transpose_into(&mut u, n, |j, i| if j >= i { back(m_inv[(n - 1 - i, n - 1 - j)]) } else { 0.0 });
    Ok(u)
}
