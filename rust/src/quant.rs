//! Quantize, dequantize and fake-quantize kernels: `q = clamp(rint(x / s) + z, qmin, qmax)`,
//! `x' = (q - z) * s`, parallel over chunks with rayon.
//!
//! Division (not multiplication by `1/s`) and round-half-to-even match ONNX Runtime's
//! QuantizeLinear and `numpy.rint`, so results are bit-identical to those references.

use crate::elem::{as_f32, code_bytes, is_finite, Elem, QInt};
use crate::error::{Error, Result};
use crate::layout::{ParamMap, Run};
use crate::pack::{pack_into, pack_nibbles};
use crate::qparams::QParams;
use crate::range::{ranges, short_groups, CHUNK};
use crate::scheme::Scheme;
use rayon::prelude::*;

/// `1.5 * 2^23`: adding and subtracting it rounds half to even for `|v| < 2^22`.
const MAGIC: f32 = 12_582_912.0;

/// Rounds half to even; exact for `|v| < 2^22`, and keeps larger values outside any grid bound.
#[inline(always)]
fn rint(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// One element: the clamped integer offset `q - z` as f32, and whether it was inside the grid.
#[inline(always)]
fn step(v: f32, s: f32, lo: f32, hi: f32) -> (f32, bool) {
    let r = rint(v / s);
    let inside = r >= lo && r <= hi;
    let c = if r > lo { r } else { lo };
    (if c < hi { c } else { hi }, inside)
}

/// One element's code offset `q - z` as an integer. Clamps before rounding (equivalent, since the
/// bounds are integers) and reads the rounded integer straight from the bits of `r + MAGIC`,
/// which keeps the whole loop in SIMD integer/float ops.
#[inline(always)]
pub(crate) fn code(v: f32, s: f32, lo: f32, hi: f32) -> i32 {
    let r = v / s;
    let r = if r > lo { r } else { lo };
    let r = if r < hi { r } else { hi };
    (r + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// Per-parameter constants of a kernel: scale, zero point and the offset bounds `qmin - z`, `qmax - z`.
#[derive(Clone, Copy)]
struct Param {
    s: f32,
    z: i32,
    lo: f32,
    hi: f32,
}

impl Param {
    #[inline(always)]
    fn new(qp: &QParams, p: usize, qmin: i32, qmax: i32) -> Self {
        let z = qp.zero_point[p];
        Param { s: qp.scale[p], z, lo: (qmin - z) as f32, hi: (qmax - z) as f32 }
    }
}

/// Drives `f(x_run, out_run, params_of_run)` over all runs of `map`, in parallel chunks.
/// `per_out` is how many input elements one output slot covers (2 for packed INT4).
fn for_each_run<T: Sync, O: Send>(
    x: &[T],
    out: &mut [O],
    map: &ParamMap,
    f: impl Fn(&[T], &mut [O], usize, Run) -> usize + Sync,
) -> usize {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .map(|(ci, (oc, xc))| crate::simd::simd!(chunk_runs(map, ci * CHUNK, xc, oc, &f)))
        .sum()
}

/// One chunk's runs. Dispatched to SIMD once per chunk (not per run), so that short runs (groups
/// of 32) cost no per-run dispatch and the kernels inline into the loop.
#[inline(always)]
fn chunk_runs<T, O>(
    map: &ParamMap,
    base: usize,
    xc: &[T],
    oc: &mut [O],
    f: &impl Fn(&[T], &mut [O], usize, Run) -> usize,
) -> usize {
    let mut bad = 0;
    let g = map.group;
    if map.per_group && map.inner == 1 && base % g == 0 && xc.len() % g == 0 {
        // Groups along the last axis, whole groups in this chunk: group j is parameter
        // `(base + j * g) / g`, with no run bookkeeping between groups.
        for (j, (xs, os)) in xc.chunks_exact(g).zip(oc.chunks_exact_mut(g)).enumerate() {
            bad += f(xs, os, base + j * g, Run::Const(base / g + j));
        }
        return bad;
    }
    for (off, len, run) in map.runs(base, base + xc.len()) {
        let a = off - base;
        bad += f(&xc[a..a + len], &mut oc[a..a + len], off, run);
    }
    bad
}

/// Applies `f(element, params)` over one run, writing `out`; returns how many calls flagged
/// their element (non-finite inputs). The one loop behind quantize, dequantize, fake-quantize
/// and the STE mask.
#[inline(always)]
fn map_run<T: Copy, O>(
    x: &[T],
    out: &mut [O],
    run: Run,
    qp: &QParams,
    q: (i32, i32),
    f: impl Fn(T, Param) -> (O, bool),
) -> usize {
    // Counted in u32 lanes (a run is at most one chunk): a usize counter would make the
    // vectorized loop widen every flag to 64 bits.
    let mut bad = 0u32;
    match run {
        Run::Const(p) => {
            let k = Param::new(qp, p, q.0, q.1);
            for (o, &v) in out.iter_mut().zip(x) {
                let (r, b) = f(v, k);
                *o = r;
                bad += b as u32;
            }
        }
        Run::Seq(p) => {
            let n = x.len();
            let (s, z) = (&qp.scale[p..p + n], &qp.zero_point[p..p + n]);
            for (((o, &v), &s), &z) in out.iter_mut().zip(x).zip(s).zip(z) {
                let (r, b) = f(v, Param { s, z, lo: (q.0 - z) as f32, hi: (q.1 - z) as f32 });
                *o = r;
                bad += b as u32;
            }
        }
    }
    bad as usize
}

/// Quantizes one run; returns its non-finite count.
#[inline(always)]
fn quant_run<T: Elem, Q: QInt>(x: &[T], out: &mut [Q], run: Run, qp: &QParams, q: (i32, i32)) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let (Run::Const(p), Some(xf), true) = (run, as_f32(x), crate::simd::avx2()) {
        let k = Param::new(qp, p, q.0, q.1);
        if let (true, Some(bytes)) = (crate::quant_avx2::applies(k.s, k.lo, k.hi), code_bytes(out)) {
            let (s, z, lo, hi) = (k.s, k.z, k.lo, k.hi);
            // SAFETY: AVX2 was just checked, `applies` holds and `out` is as long as `x`.
            let done = unsafe {
                if Q::SIGNED {
                    crate::quant_avx2::quantize_const::<true>(xf, bytes, s, z, lo, hi)
                } else {
                    crate::quant_avx2::quantize_const::<false>(xf, bytes, s, z, lo, hi)
                }
            };
            // A NaN or Inf (`None`) sends the run to the counting loop below.
            if let Some(done) = done {
                return quant_run_portable(&x[done..], &mut out[done..], run, qp, q);
            }
        }
    }
    quant_run_portable(x, out, run, qp, q)
}

/// [`quant_run`] as plain loops (every element type, every run, every CPU).
#[inline(always)]
fn quant_run_portable<T: Elem, Q: QInt>(
    x: &[T],
    out: &mut [Q],
    run: Run,
    qp: &QParams,
    q: (i32, i32),
) -> usize {
    map_run(x, out, run, qp, q, |v, k| {
        let v = v.to_f32();
        (Q::from_i32(code(v, k.s, k.lo, k.hi) + k.z), !is_finite(v))
    })
}

/// Checks lengths and parameters, returning the map.
fn prepare(len: usize, shape: &[usize], qp: &QParams, out_len: usize) -> Result<ParamMap> {
    let map = ParamMap::new(shape, qp.scheme.granularity)?;
    if len != map.len {
        return Err(Error::Shape(format!("data has {len} elements but shape {shape:?} has {}", map.len)));
    }
    if out_len != len {
        return Err(Error::Shape(format!("output has {out_len} elements, input has {len}")));
    }
    qp.validate(&map)?;
    Ok(map)
}

/// Non-finite inputs are an error unless ignored; ignored NaNs are set to the zero point
/// (Inf already saturates to the grid ends).
fn settle_nonfinite<T: Elem, Q: QInt>(
    x: &[T],
    bad: usize,
    ignore: bool,
    map: &ParamMap,
    qp: &QParams,
    out: &mut [Q],
) -> Result<()> {
    if bad == 0 {
        return Ok(());
    }
    if !ignore {
        let first_index = crate::elem::first_nonfinite(x).unwrap_or(0);
        return Err(Error::NonFinite { count: bad, first_index });
    }
    map.for_runs(0, x.len(), |off, len, run| {
        for k in 0..len {
            if x[off + k].to_f32().is_nan() {
                let p = match run {
                    Run::Const(p) => p,
                    Run::Seq(p) => p + k,
                };
                out[off + k] = Q::from_i32(qp.zero_point[p]);
            }
        }
    });
    Ok(())
}

/// Min-max parameters for `x` (shape `shape`) under `scheme`.
pub fn minmax_qparams<T: Elem>(
    x: &[T],
    shape: &[usize],
    scheme: Scheme,
    ignore_nonfinite: bool,
) -> Result<QParams> {
    if !scheme.precision.is_integer() {
        return Err(Error::Invalid(format!("{} has no scale or zero point", scheme.precision.name())));
    }
    let map = ParamMap::new(shape, scheme.granularity)?;
    let r = ranges(x, &map, ignore_nonfinite)?;
    Ok(QParams::from_ranges(scheme, &map, &r))
}

/// Quantizes `x` into `out` (one code per element). `Q` must match the scheme: `i8` when
/// symmetric, `u8` otherwise.
pub fn quantize<T: Elem, Q: QInt>(
    x: &[T],
    shape: &[usize],
    qp: &QParams,
    ignore_nonfinite: bool,
    out: &mut [Q],
) -> Result<()> {
    let map = prepare(x.len(), shape, qp, out.len())?;
    let q = qp.scheme.qrange();
    let bad = match given_groups(x, &map, qp, q, out) {
        Some(bad) => bad,
        None => for_each_run(x, out, &map, |xs, os, _, run| quant_run(xs, os, run, qp, q)),
    };
    settle_nonfinite(x, bad, ignore_nonfinite, &map, qp, out)
}

/// Short groups along the last axis of an `f32` tensor (group `p` is elements `p g .. (p + 1) g`),
/// in the AVX2 group kernel a chunk at a time; None where that kernel does not apply. Long
/// groups (a whole tensor is one) go through the runs, which split them across threads.
fn given_groups<T: Elem, Q: QInt>(
    x: &[T],
    map: &ParamMap,
    qp: &QParams,
    q: (i32, i32),
    out: &mut [Q],
) -> Option<usize> {
    let g = map.group;
    let short = map.per_group && map.inner == 1 && g % 32 == 0 && g * 8 <= CHUNK;
    if !(short && crate::simd::avx2() && as_f32(x).is_some()) {
        return None;
    }
    let cg = (CHUNK / g).max(1) * g;
    let bad = out
        .par_chunks_mut(cg)
        .zip(x.par_chunks(cg))
        .enumerate()
        .map(|(ci, (oc, xc))| {
            let (p0, n) = (ci * (cg / g), xc.len() / g);
            let (sc, zc) = (&qp.scale[p0..p0 + n], &qp.zero_point[p0..p0 + n]);
            if code_bytes(oc).is_some_and(|bytes| groups_avx2(xc, bytes, g, sc, zc, q.0, q.1)) {
                return 0;
            }
            // A NaN or Inf (or an extreme scale): the counting loop, group by group.
            let runs = xc.chunks_exact(g).zip(oc.chunks_exact_mut(g)).enumerate();
            runs.map(|(j, (xs, os))| quant_run_portable(xs, os, Run::Const(p0 + j), qp, q)).sum()
        })
        .sum();
    Some(bad)
}

/// Quantizes to INT4 and packs two codes per byte (element `2i` in the low nibble) in one pass.
pub fn quantize_packed<T: Elem>(
    x: &[T],
    shape: &[usize],
    qp: &QParams,
    ignore_nonfinite: bool,
    out: &mut [u8],
) -> Result<()> {
    if qp.scheme.precision != crate::scheme::Precision::Int4 {
        return Err(Error::Invalid("packing needs int4".into()));
    }
    let map = prepare(x.len(), shape, qp, x.len())?;
    if out.len() != x.len().div_ceil(2) {
        return Err(Error::Shape(format!(
            "packed output needs {} bytes, got {}",
            x.len().div_ceil(2),
            out.len()
        )));
    }
    let q = qp.scheme.qrange();
    let bad: usize = out
        .par_chunks_mut(CHUNK / 2)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .map(|(ci, (oc, xc))| {
            let base = ci * CHUNK;
            let mut codes = vec![0i8; xc.len()];
            let quant = |xs: &[T], cs: &mut [i8], _: usize, run: Run| quant_run(xs, cs, run, qp, q);
            let bad = crate::simd::simd!(chunk_runs(&map, base, xc, &mut codes, &quant));
            pack_nibbles(&codes, oc);
            bad
        })
        .sum();
    if bad > 0 {
        // Rare path: redo unpacked to place zero points, then repack.
        let mut codes = vec![0i8; x.len()];
        quantize(x, shape, qp, ignore_nonfinite, &mut codes)?;
        pack_nibbles(&codes, out);
    }
    Ok(())
}

/// Min-max parameters and codes in one call: equal to [`minmax_qparams`] then [`quantize`]
/// (`out` holds the codes' bytes, two's complement for signed grids) or, with `pack`,
/// [`quantize_packed`]. Groups along the last axis take one pass: each group's range, parameters
/// and codes while the group is in cache.
pub fn quantize_minmax<T: Elem>(
    x: &[T],
    shape: &[usize],
    scheme: Scheme,
    ignore_nonfinite: bool,
    pack: bool,
    out: &mut [u8],
) -> Result<QParams> {
    let map = ParamMap::new(shape, scheme.granularity)?;
    let want = if pack { x.len().div_ceil(2) } else { x.len() };
    if x.len() != map.len || out.len() != want {
        return Err(Error::Shape(format!(
            "data has {} elements, shape {shape:?} has {}, output {} (want {want})",
            x.len(),
            map.len,
            out.len()
        )));
    }
    if pack && scheme.precision != crate::scheme::Precision::Int4 {
        return Err(Error::Invalid("packing needs int4".into()));
    }
    // Every parameter must own a whole group of this slice (an empty tensor still has one
    // per-tensor parameter, which the two-pass path sets).
    let whole_groups = map.per_group && map.inner == 1 && map.n_params() * map.group == x.len();
    if scheme.precision.is_integer() && whole_groups && !x.is_empty() && CHUNK % map.group == 0 {
        if let Some(qp) = fused_groups(x, &map, scheme, pack, out) {
            return Ok(qp);
        }
    }
    let qp = minmax_qparams(x, shape, scheme, ignore_nonfinite)?;
    if pack {
        quantize_packed(x, shape, &qp, ignore_nonfinite, out)?;
    } else if qp.scheme.signed() {
        // SAFETY: i8 and u8 have the same size and alignment; every byte is a valid i8.
        let codes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<i8>(), out.len()) };
        quantize(x, shape, &qp, ignore_nonfinite, codes)?;
    } else {
        quantize(x, shape, &qp, ignore_nonfinite, out)?;
    }
    Ok(qp)
}

/// The one-pass path of [`quantize_minmax`]; None when some value is NaN/Inf (the two-pass path
/// then reports them, or handles them under `ignore_nonfinite`).
fn fused_groups<T: Elem>(
    x: &[T],
    map: &ParamMap,
    scheme: Scheme,
    pack: bool,
    out: &mut [u8],
) -> Option<QParams> {
    let (g, np) = (map.group, map.n_params());
    let (mut scale, mut zero_point) = (vec![0f32; np], vec![0i32; np]);
    let bad: usize = x
        .par_chunks(CHUNK)
        .zip(out.par_chunks_mut(if pack { CHUNK / 2 } else { CHUNK }))
        .zip(scale.par_chunks_mut(CHUNK / g).zip(zero_point.par_chunks_mut(CHUNK / g)))
        .map(|((xc, oc), (sc, zc))| crate::simd::simd!(fused_chunk(xc, oc, sc, zc, g, scheme, pack)))
        .sum();
    (bad == 0).then(|| QParams { scheme, grid: map.grid.clone(), scale, zero_point })
}

/// One chunk of whole groups: ranges, parameters, codes (packed or as bytes); returns the
/// non-finite count. With AVX2, one pass ([`fused_avx2`]); elsewhere, or where that kernel
/// declines, three passes over the chunk (it stays in cache), each a loop the compiler
/// vectorizes: every group's range, then every group's parameters (independent divisions that
/// overlap, not one per group between the code loops), then the codes.
#[inline(always)]
fn fused_chunk<T: Elem>(
    xc: &[T],
    oc: &mut [u8],
    sc: &mut [f32],
    zc: &mut [i32],
    g: usize,
    scheme: Scheme,
    pack: bool,
) -> usize {
    if fused_avx2(xc, oc, sc, zc, g, scheme, pack) {
        return 0;
    }
    let (qmin, qmax) = scheme.qrange();
    let n = xc.len() / g;
    let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
    let bad = short_groups(xc, g, &mut lo, &mut hi);
    QParams::pairs_into(scheme, &lo, &hi, sc, zc);
    if pack {
        let mut codes = vec![0u8; xc.len()];
        group_codes(xc, &mut codes, sc, zc, g, qmin, qmax);
        pack_into(&codes, oc);
    } else {
        group_codes(xc, oc, sc, zc, g, qmin, qmax);
    }
    bad
}

/// [`fused_chunk`] in the one-pass AVX2 kernel ([`crate::quant_avx2::fused_groups`]); false where
/// it does not apply (another CPU, element type or group size, a NaN or Inf, an extreme scale),
/// for the caller's passes to redo the chunk.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn fused_avx2<T: Elem>(
    xc: &[T],
    oc: &mut [u8],
    sc: &mut [f32],
    zc: &mut [i32],
    g: usize,
    scheme: Scheme,
    pack: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let (Some(xf), true, true) = (as_f32(xc), g % 32 == 0, crate::simd::avx2()) {
        use crate::quant_avx2::fused_groups;
        let n = xf.len() / g;
        let (sc, zc) = (&mut sc[..n], &mut zc[..n]);
        // SAFETY: AVX2 was checked, g % 32 == 0, and the slices hold `n` whole groups.
        return unsafe {
            match (scheme.signed(), pack) {
                (true, true) => fused_groups::<true, true>(xf, oc, g, sc, zc, scheme),
                (true, false) => fused_groups::<true, false>(xf, oc, g, sc, zc, scheme),
                (false, true) => fused_groups::<false, true>(xf, oc, g, sc, zc, scheme),
                (false, false) => fused_groups::<false, false>(xf, oc, g, sc, zc, scheme),
            }
        };
    }
    false
}

/// Whole groups of an `f32` chunk in the AVX2 group kernel ([`crate::quant_avx2`]), as code
/// bytes; false where it does not apply (another CPU, element type or group size, a NaN or Inf,
/// an extreme scale), for the caller's portable loop to redo the chunk.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn groups_avx2<T: Elem>(
    xc: &[T],
    codes: &mut [u8],
    g: usize,
    sc: &[f32],
    zc: &[i32],
    qmin: i32,
    qmax: i32,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let (Some(xf), true, true) = (as_f32(xc), g % 32 == 0, crate::simd::avx2()) {
        // SAFETY: AVX2 was checked, g % 32 == 0, and the slices hold `sc.len()` whole groups.
        return unsafe {
            if qmin < 0 {
                crate::quant_avx2::quantize_groups::<true>(xf, codes, g, sc, zc, qmin, qmax)
            } else {
                crate::quant_avx2::quantize_groups::<false>(xf, codes, g, sc, zc, qmin, qmax)
            }
        };
    }
    false
}

/// Codes of whole groups (as bytes, two's complement for signed grids) from their parameters.
#[inline(always)]
fn group_codes<T: Elem>(xc: &[T], codes: &mut [u8], sc: &[f32], zc: &[i32], g: usize, qmin: i32, qmax: i32) {
    if groups_avx2(xc, codes, g, &sc[..xc.len() / g], &zc[..xc.len() / g], qmin, qmax) {
        return;
    }
    for ((xs, cs), (&s, &z)) in xc.chunks_exact(g).zip(codes.chunks_exact_mut(g)).zip(sc.iter().zip(zc)) {
        let (lo, hi) = ((qmin - z) as f32, (qmax - z) as f32);
        for (c, &v) in cs.iter_mut().zip(xs) {
            *c = (code(v.to_f32(), s, lo, hi) + z) as u8;
        }
    }
}

/// Dequantizes codes: `out = (q - z) * s`.
pub fn dequantize<Q: QInt>(q: &[Q], shape: &[usize], qp: &QParams, out: &mut [f32]) -> Result<()> {
    let map = prepare(q.len(), shape, qp, out.len())?;
    let r = qp.scheme.qrange();
    for_each_run(q, out, &map, |qs, os, _, run| {
        map_run(qs, os, run, qp, r, |v, k| ((v.to_i32() - k.z) as f32 * k.s, false))
    });
    Ok(())
}

/// Quantize then dequantize in one pass. When `mask` is given it receives the
/// straight-through-estimator mask: true where `rint(x / s) + z` lies inside `qmin..=qmax`.
pub fn fake_quantize<T: Elem>(
    x: &[T],
    shape: &[usize],
    qp: &QParams,
    ignore_nonfinite: bool,
    out: &mut [f32],
    mask: Option<&mut [bool]>,
) -> Result<()> {
    let map = prepare(x.len(), shape, qp, out.len())?;
    let r = qp.scheme.qrange();
    let bad = for_each_run(x, out, &map, |xs, os, _, run| {
        map_run(xs, os, run, qp, r, |v, k| {
            let v = v.to_f32();
            (step(v, k.s, k.lo, k.hi).0 * k.s, !is_finite(v))
        })
    });
    if bad > 0 {
        if !ignore_nonfinite {
            let first_index = crate::elem::first_nonfinite(x).unwrap_or(0);
            return Err(Error::NonFinite { count: bad, first_index });
        }
        x.iter().zip(out.iter_mut()).filter(|(v, _)| v.to_f32().is_nan()).for_each(|(_, o)| *o = 0.0);
    }
    if let Some(m) = mask {
        if m.len() != x.len() {
            return Err(Error::Shape(format!("mask has {} elements, input has {}", m.len(), x.len())));
        }
        for_each_run(x, m, &map, |xs, ms, _, run| {
            map_run(xs, ms, run, qp, r, |v, k| (step(v.to_f32(), k.s, k.lo, k.hi).1, false))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{Granularity, Precision};

    #[test]
    fn rint_is_half_even() {
        for (v, r) in
            [(0.5f32, 0.0f32), (1.5, 2.0), (2.5, 2.0), (-2.5, -2.0), (126.5, 126.0), (-127.5, -128.0)]
        {
            assert_eq!(rint(v), r);
        }
    }

    #[test]
    fn int8_symmetric_round_trip() {
        let x: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let scheme = Scheme::new(Precision::Int8);
        let qp = minmax_qparams(&x, &[1000], scheme, false).unwrap();
        let mut q = vec![0i8; 1000];
        quantize(&x, &[1000], &qp, false, &mut q).unwrap();
        let mut y = vec![0f32; 1000];
        dequantize(&q, &[1000], &qp, &mut y).unwrap();
        let s = qp.scale[0];
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= s / 2.0 * 1.0001));
        assert!(q.iter().all(|&v| (-127..=127).contains(&v)));
        let mut f = vec![0f32; 1000];
        fake_quantize(&x, &[1000], &qp, false, &mut f, None).unwrap();
        assert_eq!(f, y);
    }

    #[test]
    fn mask_marks_clipped_values() {
        let x = [-3.0f32, -1.0, 0.0, 0.4, 1.0, 2.0];
        let scheme = Scheme::new(Precision::Int8);
        let qp = QParams { scheme, grid: vec![], scale: vec![1.0 / 127.0], zero_point: vec![0] };
        let mut out = [0f32; 6];
        let mut mask = [false; 6];
        fake_quantize(&x, &[6], &qp, false, &mut out, Some(&mut mask)).unwrap();
        assert_eq!(mask, [false, true, true, true, true, false]);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[5], 1.0);
    }

    #[test]
    fn nan_is_an_error_unless_ignored() {
        let x = [1.0f32, f32::NAN, -1.0];
        let scheme = Scheme::new(Precision::Int8).asymmetric(true);
        assert!(matches!(
            minmax_qparams(&x, &[3], scheme, false),
            Err(Error::NonFinite { count: 1, first_index: 1 })
        ));
        let qp = minmax_qparams(&x, &[3], scheme, true).unwrap();
        let mut q = [0u8; 3];
        assert!(quantize(&x, &[3], &qp, false, &mut q).is_err());
        quantize(&x, &[3], &qp, true, &mut q).unwrap();
        assert_eq!(q[1] as i32, qp.zero_point[0]);
    }

    /// Groups whose values come near `f32::MAX` overflow the one-pass scan's NaN/Inf sums (two
    /// such values in one lane): the portable path redoes them, with the same codes and
    /// parameters as the value-by-value rule.
    #[test]
    fn one_pass_groups_near_f32_max_match_the_rule() {
        let shape = [16, 64];
        let mut x: Vec<f32> = (0..1024).map(|i| ((i * 7919 % 211) as f32) / 50.0 - 2.0).collect();
        (x[40], x[48], x[600], x[608]) = (3e38, 3e38, -3e38, -3.1e38);
        let scheme = Scheme::new(Precision::Int8)
            .asymmetric(true)
            .with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
        let mut q = vec![0u8; 1024];
        let qp = quantize_minmax(&x, &shape, scheme, false, false, &mut q).unwrap();
        let (qmin, qmax) = scheme.qrange();
        for (j, xs) in x.chunks_exact(32).enumerate() {
            let mn = xs.iter().fold(f32::INFINITY, |a, &b| a.min(b));
            let mx = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let (s, z) = scheme.params(mn, mx);
            assert_eq!((qp.scale[j], qp.zero_point[j]), (s, z), "group {j}");
            for (k, &v) in xs.iter().enumerate() {
                let want = (code(v, s, (qmin - z) as f32, (qmax - z) as f32) + z) as u8;
                assert_eq!(q[32 * j + k], want, "group {j} value {k}");
            }
        }
    }

    /// The same for the per-tensor kernel with a given scale: its NaN/Inf check by lane sums
    /// sends a run whose sums overflow to the counting loop, with the same codes.
    #[test]
    fn per_tensor_values_near_f32_max_match_the_rule() {
        let mut x: Vec<f32> = (0..4096).map(|i| ((i * 7919 % 211) as f32) / 50.0 - 2.0).collect();
        (x[1000], x[1008], x[3000]) = (3e38, 3.3e38, -3e38);
        let scheme = Scheme::new(Precision::Int8);
        let qp = QParams { scheme, grid: vec![], scale: vec![0.02], zero_point: vec![0] };
        let (qmin, qmax) = scheme.qrange();
        let mut q = vec![0i8; 4096];
        quantize(&x, &[4096], &qp, false, &mut q).unwrap();
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(q[i] as i32, code(v, 0.02, qmin as f32, qmax as f32), "value {i}");
        }
    }

    #[test]
    fn per_group_packed_matches_unpacked() {
        let shape = [4, 64];
        let x: Vec<f32> = (0..256).map(|i| ((i * 7919 % 211) as f32) / 50.0 - 2.0).collect();
        let scheme =
            Scheme::new(Precision::Int4).with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
        let qp = minmax_qparams(&x, &shape, scheme, false).unwrap();
        assert_eq!(qp.grid, vec![4, 2]);
        let mut q = vec![0i8; 256];
        quantize(&x, &shape, &qp, false, &mut q).unwrap();
        let mut packed = vec![0u8; 128];
        quantize_packed(&x, &shape, &qp, false, &mut packed).unwrap();
        assert_eq!(crate::pack::unpack_int4_signed(&packed, 256).unwrap(), q);
    }
}
