//! Error metrics between a reference and its reconstruction, in one parallel pass with f64 sums.

use crate::elem::{as_f32, Elem};
use crate::error::{Error, Result};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;
const LANES: usize = 8;

/// Error of `y` against the reference `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// `10 log10(sum x^2 / sum (x - y)^2)`; `inf` when the error is exactly zero.
    pub sqnr_db: f64,
    /// `x·y / (|x| |y|)`; 1 when both are all zero, 0 when only one is.
    pub cosine: f64,
    pub mse: f64,
    pub mae: f64,
    pub max_abs_error: f64,
    pub count: usize,
}

/// Running sums: x², y², xy, (x−y)², |x−y| and max |x−y| (also filled by the OpenCL kernel).
#[derive(Clone, Copy, Default)]
pub(crate) struct Sums {
    pub xx: f64,
    pub yy: f64,
    pub xy: f64,
    pub ee: f64,
    pub ae: f64,
    pub max: f64,
}

impl Sums {
    pub(crate) fn merge(self, o: Sums) -> Sums {
        Sums {
            xx: self.xx + o.xx,
            yy: self.yy + o.yy,
            xy: self.xy + o.xy,
            ee: self.ee + o.ee,
            ae: self.ae + o.ae,
            max: self.max.max(o.max),
        }
    }
}

/// Sums over one chunk with independent lanes (vectorizable, deterministic order).
fn chunk_sums<A: Elem, B: Elem>(x: &[A], y: &[B]) -> Sums {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(y), true) = (as_f32(x), as_f32(y), crate::simd::avx2()) {
        // SAFETY: the CPU was just checked for AVX2, FMA and F16C.
        return unsafe { chunk_sums_avx2(x, y) };
    }
    crate::simd::simd!(chunk_sums_impl(x, y))
}

/// [`chunk_sums_impl`] for two `f32` slices in intrinsics, lane for lane in the same order. Left
/// to LLVM, the eight lanes of six sums came out as shuffles and stack spills (51 ms for 16M
/// values on one core); here each sum is two registers and the products are fused into the sums
/// (11 ms). The products of two `f32` are exact in `f64`, so `x²`, `y²` and `xy` are bit for bit
/// the portable sums; only `(x−y)²` may differ in its last bit, from the fused rounding.
///
/// # Safety
/// The CPU must have AVX2 ([`crate::simd::avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_sums_avx2(x: &[f32], y: &[f32]) -> Sums {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len()) / LANES * LANES;
    let z = _mm256_setzero_pd();
    let sign = _mm256_set1_pd(-0.0);
    // [sum][half]: the low half holds lanes 0-3, the high half lanes 4-7.
    let (mut xx, mut yy, mut xy, mut ee, mut ae, mut mx) = ([z; 2], [z; 2], [z; 2], [z; 2], [z; 2], [z; 2]);
    let mut i = 0;
    while i < n {
        if i % 16 == 0 {
            crate::simd::prefetch(x.as_ptr().add(i));
            crate::simd::prefetch(y.as_ptr().add(i));
        }
        let va = _mm256_loadu_ps(x.as_ptr().add(i));
        let vb = _mm256_loadu_ps(y.as_ptr().add(i));
        let a = [_mm256_cvtps_pd(_mm256_castps256_ps128(va)), _mm256_cvtps_pd(_mm256_extractf128_ps(va, 1))];
        let b = [_mm256_cvtps_pd(_mm256_castps256_ps128(vb)), _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1))];
        for h in 0..2 {
            let e = _mm256_sub_pd(a[h], b[h]);
            let abs = _mm256_andnot_pd(sign, e);
            xx[h] = _mm256_fmadd_pd(a[h], a[h], xx[h]);
            yy[h] = _mm256_fmadd_pd(b[h], b[h], yy[h]);
            xy[h] = _mm256_fmadd_pd(a[h], b[h], xy[h]);
            ee[h] = _mm256_fmadd_pd(e, e, ee[h]);
            ae[h] = _mm256_add_pd(ae[h], abs);
            // maxpd(abs, m) is `abs > m ? abs : m`, the portable select.
            mx[h] = _mm256_max_pd(abs, mx[h]);
        }
        i += LANES;
    }
    let lanes = |v: [__m256d; 2]| {
        let mut o = [0f64; LANES];
        _mm256_storeu_pd(o.as_mut_ptr(), v[0]);
        _mm256_storeu_pd(o.as_mut_ptr().add(4), v[1]);
        o
    };
    let (xx, yy, xy, ee, ae, mx) = (lanes(xx), lanes(yy), lanes(xy), lanes(ee), lanes(ae), lanes(mx));
    let mut tail = Sums::default();
    for (&a, &b) in x[n..].iter().zip(&y[n..]) {
        add(&mut tail, a as f64, b as f64);
    }
    (0..LANES).fold(tail, |acc, j| {
        acc.merge(Sums { xx: xx[j], yy: yy[j], xy: xy[j], ee: ee[j], ae: ae[j], max: mx[j] })
    })
}

/// Each sum in its own array of lanes (not one struct per lane), so that the lanes of a sum are
/// one vector register and the loop vectorizes; lane `j` adds elements `j, j + LANES, …`.
#[inline(always)]
fn chunk_sums_impl<A: Elem, B: Elem>(x: &[A], y: &[B]) -> Sums {
    let (mut xx, mut yy, mut xy) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
    let (mut ee, mut ae, mut mx) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
    let mut it_x = x.chunks_exact(LANES);
    let mut it_y = y.chunks_exact(LANES);
    for (cx, cy) in (&mut it_x).zip(&mut it_y) {
        for j in 0..LANES {
            let (a, b) = (cx[j].to_f32() as f64, cy[j].to_f32() as f64);
            let e = a - b;
            xx[j] += a * a;
            yy[j] += b * b;
            xy[j] += a * b;
            ee[j] += e * e;
            ae[j] += e.abs();
            mx[j] = if e.abs() > mx[j] { e.abs() } else { mx[j] };
        }
    }
    let mut tail = Sums::default();
    for (a, b) in it_x.remainder().iter().zip(it_y.remainder()) {
        add(&mut tail, a.to_f32() as f64, b.to_f32() as f64);
    }
    (0..LANES).fold(tail, |acc, j| {
        acc.merge(Sums { xx: xx[j], yy: yy[j], xy: xy[j], ee: ee[j], ae: ae[j], max: mx[j] })
    })
}

#[inline(always)]
fn add(s: &mut Sums, a: f64, b: f64) {
    let e = a - b;
    s.xx += a * a;
    s.yy += b * b;
    s.xy += a * b;
    s.ee += e * e;
    s.ae += e.abs();
    s.max = if e.abs() > s.max { e.abs() } else { s.max };
}

/// Computes [`Metrics`] of `y` against `x`. Both must have the same length and be finite.
pub fn metrics<A: Elem, B: Elem>(x: &[A], y: &[B]) -> Result<Metrics> {
    if x.len() != y.len() {
        return Err(Error::Shape(format!(
            "reference has {} elements, reconstruction has {}",
            x.len(),
            y.len()
        )));
    }
    let s = x
        .par_chunks(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .map(|(a, b)| chunk_sums(a, b))
        .reduce(Sums::default, Sums::merge);
    if !s.is_finite() {
        return Err(nonfinite_error(x, y));
    }
    Ok(s.finish(x.len()))
}

/// Where the NaN/Inf are, for the error (a cold path: only after the sums came out non-finite).
fn nonfinite_error<A: Elem, B: Elem>(x: &[A], y: &[B]) -> Error {
    let first_index =
        crate::elem::first_nonfinite(x).or_else(|| crate::elem::first_nonfinite(y)).unwrap_or(0);
    let count = x.iter().filter(|v| !v.to_f32().is_finite()).count()
        + y.iter().filter(|v| !v.to_f32().is_finite()).count();
    Error::NonFinite { count, first_index }
}

impl Sums {
    pub(crate) fn is_finite(&self) -> bool {
        [self.xx, self.yy, self.xy, self.ee, self.ae, self.max].iter().all(|v| v.is_finite())
    }

    /// The metrics of `n` elements from their sums.
    pub(crate) fn finish(&self, n: usize) -> Metrics {
        let s = self;
        let cosine = match (s.xx > 0.0, s.yy > 0.0) {
            (true, true) => (s.xy / (s.xx.sqrt() * s.yy.sqrt())).clamp(-1.0, 1.0),
            (false, false) => 1.0,
            _ => 0.0,
        };
        let sqnr_db = if s.ee == 0.0 { f64::INFINITY } else { 10.0 * (s.xx / s.ee).log10() };
        let per = |v: f64| if n == 0 { 0.0 } else { v / n as f64 };
        Metrics { sqnr_db, cosine, mse: per(s.ee), mae: per(s.ae), max_abs_error: s.max, count: n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let y = [1.0f32, 2.0, 3.0, 3.0];
        let m = metrics(&x, &y).unwrap();
        assert!((m.sqnr_db - 10.0 * 30f64.log10()).abs() < 1e-12);
        assert_eq!(m.mse, 0.25);
        assert_eq!(m.mae, 0.25);
        assert_eq!(m.max_abs_error, 1.0);
        let exact = metrics(&x, &x).unwrap();
        assert_eq!(exact.sqnr_db, f64::INFINITY);
        assert!((exact.cosine - 1.0).abs() < 1e-15);
    }

    /// The intrinsics path against the portable lanes: `x²`, `y²`, `xy`, `|x−y|` sums and the max
    /// bit for bit, `(x−y)²` to its fused rounding; lengths that leave a tail.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_path_equals_portable_lanes() {
        if !crate::simd::avx2() {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        for n in [0usize, 1, 7, 8, 9, 1000, 4099] {
            let x: Vec<f32> = (0..n).map(|_| next()).collect();
            let y: Vec<f32> = x.iter().map(|v| v + next() * 0.01).collect();
            let (want, got) = (chunk_sums_impl(&x, &y), unsafe { chunk_sums_avx2(&x, &y) });
            assert_eq!(
                (got.xx, got.yy, got.xy, got.ae, got.max),
                (want.xx, want.yy, want.xy, want.ae, want.max)
            );
            assert!((got.ee - want.ee).abs() <= 1e-14 * want.ee, "n={n}: {} vs {}", got.ee, want.ee);
        }
    }

    #[test]
    fn bad_input() {
        assert!(metrics(&[1.0f32], &[1.0f32, 2.0]).is_err());
        assert!(matches!(
            metrics(&[1.0f32, f32::NAN], &[1.0f32, 2.0]),
            Err(Error::NonFinite { count: 1, first_index: 1 })
        ));
        let e = metrics::<f32, f32>(&[], &[]).unwrap();
        assert_eq!(e.count, 0);
    }
}
