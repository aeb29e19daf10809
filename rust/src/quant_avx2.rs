//! The quantize kernel's hot case in AVX2 intrinsics: an `f32` run under one scale and zero point
//! (a whole per-tensor chunk, a per-channel row, a group), 32 values a step.
//!
//! The portable kernel divides every value by the scale (bit-identical to ONNX Runtime's
//! QuantizeLinear and `numpy.rint(x / s)`), and `vdivps` bounded it at about half the speed of
//! torch's multiply by `1/s`. Here each value is multiplied by `r = 1/s`, and the product is used
//! only where it provably rounds like the quotient: `x·r` and `fl(x / s)` differ by at most
//! `3·2⁻²⁴·|x/s|` (three roundings), under `2⁻¹⁴` while `|x/s| < 300`, so when `x·r` lies more
//! than [`DELTA`] `= 2⁻¹³` from every half-integer both round to the same integer. Steps with a
//! value closer to a half-integer (about one in 128 for 32 random values) are divided. Beyond 300
//! both saturate at the grid end, which is why the grid must lie within ±256.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Margin from a half-integer beyond which the product rounds like the quotient (see above).
const DELTA: f32 = 1.0 / 8192.0;

/// Whether [`quantize_const`] is exact for scale `s` and code offsets `lo..=hi` (`q - z`): a
/// normal `1/s` (relative error bounds need no subnormals) and a grid inside ±256.
pub(crate) fn applies(s: f32, lo: f32, hi: f32) -> bool {
    (1.0 / s).is_normal() && lo >= -256.0 && hi <= 256.0
}

/// One scale's constants, broadcast.
struct Grid {
    s: __m256,
    r: __m256,
    lo: __m256,
    hi: __m256,
    z: __m256i,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn grid(s: f32, z: i32, lo: f32, hi: f32) -> Grid {
    Grid {
        s: _mm256_set1_ps(s),
        r: _mm256_set1_ps(1.0 / s),
        lo: _mm256_set1_ps(lo),
        hi: _mm256_set1_ps(hi),
        z: _mm256_set1_epi32(z),
    }
}

/// Codes of the 32 values at `p` into the 32 bytes at `o`; false (nothing written) when one of
/// them is NaN or Inf. (Compiled with the features itself, not `inline(always)`: the closures
/// inside a function without them become calls that pass every vector through memory.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step32<const SIGNED: bool>(p: *const f32, o: *mut u8, k: &Grid) -> bool {
    const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    crate::simd::prefetch(p);
    crate::simd::prefetch(p.wrapping_add(16));
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    // NaN and Inf fail `|v| < inf`.
    let inf = _mm256_set1_ps(f32::INFINITY);
    let finite = v.iter().fold(0xffu32, |m, &v| {
        m & _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_LT_OQ)) as u32
    });
    if finite != 0xff {
        return false;
    }
    let prod = v.map(|v| _mm256_mul_ps(v, k.r));
    let mut r = prod.map(|p| _mm256_round_ps::<RN>(p));
    let near = _mm256_set1_ps(0.5 - DELTA);
    let close = prod.iter().zip(&r).fold(0u32, |m, (&p, &r)| {
        let f = _mm256_and_ps(_mm256_sub_ps(p, r), abs_mask);
        m | _mm256_movemask_ps(_mm256_cmp_ps(f, near, _CMP_GT_OQ)) as u32
    });
    if close != 0 {
        r = v.map(|v| _mm256_round_ps::<RN>(_mm256_div_ps(v, k.s)));
    }
    // Clamped to integer bounds, the truncating conversion is exact.
    let c =
        r.map(|r| _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, k.lo), k.hi)), k.z));
    let (a, b) = (_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    let bytes = if SIGNED { _mm256_packs_epi16(a, b) } else { _mm256_packus_epi16(a, b) };
    // The packs leave dwords in the order [0-3, 8-11, 16-19, 24-27 | 4-7, …].
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(o.cast(), bytes);
    true
}

/// Writes `clamp(rint(x / s), lo, hi) + z` for the whole 32-value steps of `x` into `out` as
/// bytes (`i8` codes when `SIGNED`, else `u8`) and returns how many values it wrote, or `None`
/// at the first step holding a NaN or Inf (the caller redoes the run on its counting path).
///
/// # Safety
/// The CPU must have AVX2 ([`crate::simd::avx2`]); [`applies`] must hold; `out` is at least as
/// long as `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_const<const SIGNED: bool>(
    x: &[f32],
    out: &mut [u8],
    s: f32,
    z: i32,
    lo: f32,
    hi: f32,
) -> Option<usize> {
    debug_assert!(out.len() >= x.len() && applies(s, lo, hi));
    let n = x.len() / 32 * 32;
    let k = grid(s, z, lo, hi);
    for i in (0..n).step_by(32) {
        if !step32::<SIGNED>(x.as_ptr().add(i), out.as_mut_ptr().add(i), &k) {
            return None;
        }
    }
    Some(n)
}

/// Codes of consecutive groups of `g` values (a multiple of 32), group `j` under `sc[j]` and
/// `zc[j]` on the grid `qmin..=qmax`, into `out` as bytes. Returns false, with `out` partly
/// written, at a NaN or Inf or a group where [`applies`] fails: the caller then redoes the
/// groups on its counting path. One call for many groups, so that short groups pay no call and
/// no CPU check each (a call per group of 32 cost twice the codes themselves).
///
/// # Safety
/// The CPU must have AVX2 ([`crate::simd::avx2`]); `g % 32 == 0`; `x` and `out` hold
/// `sc.len() * g` values, `zc` as many zero points as `sc`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_groups<const SIGNED: bool>(
    x: &[f32],
    out: &mut [u8],
    g: usize,
    sc: &[f32],
    zc: &[i32],
    qmin: i32,
    qmax: i32,
) -> bool {
    debug_assert!(g % 32 == 0 && x.len() == sc.len() * g && out.len() == x.len() && zc.len() == sc.len());
    for (j, (&s, &z)) in sc.iter().zip(zc).enumerate() {
        let (lo, hi) = ((qmin - z) as f32, (qmax - z) as f32);
        if !applies(s, lo, hi) {
            return false;
        }
        let k = grid(s, z, lo, hi);
        for i in (j * g..(j + 1) * g).step_by(32) {
            if !step32::<SIGNED>(x.as_ptr().add(i), out.as_mut_ptr().add(i), &k) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::code;

    /// Bit for bit the portable `clamp(rint(x / s)) + z`, on values the product path could get
    /// wrong: exact half-integers of `x / s`, their float neighbours, saturating and tiny values.
    #[test]
    fn equals_the_division_on_ties_and_neighbours() {
        if !crate::simd::avx2() {
            return;
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut unit = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let scales = [0.1f32, 1.0 / 3.0, 0.007_812_5, 3.7e-5, 1.3e3, 2.0f32.powi(-100), 6.1e-3];
        let grids = [(-128, 127, 0), (0, 255, 0), (0, 255, 131), (-8, 7, 0), (0, 15, 9), (-127, 127, 0)];
        for &s in &scales {
            for &(qmin, qmax, z) in &grids {
                let (lo, hi) = ((qmin - z) as f32, (qmax - z) as f32);
                assert!(applies(s, lo, hi));
                let mut x = Vec::new();
                for k in -300..300 {
                    let t = (k as f32 + 0.5) * s;
                    let (up, down) = (f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits() - 1));
                    x.extend([t, up, down, k as f32 * s, -t]);
                }
                x.extend((0..4000).map(|_| (unit() - 0.5) * 300.0 * s));
                x.extend([0.0, -0.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, -f32::MAX, 1e30, -1e30]);
                x.resize(x.len().next_multiple_of(32), 1.0);
                let mut got = vec![0u8; x.len()];
                let done = unsafe {
                    if qmin < 0 {
                        quantize_const::<true>(&x, &mut got, s, z, lo, hi)
                    } else {
                        quantize_const::<false>(&x, &mut got, s, z, lo, hi)
                    }
                };
                assert_eq!(done, Some(x.len()));
                for (i, &v) in x.iter().enumerate() {
                    let want = (code(v, s, lo, hi) + z) as u8;
                    assert_eq!(got[i], want, "x = {v:e} (bits {:#x}), s = {s:e}, z = {z}", v.to_bits());
                }
            }
        }
    }

    /// Groups of 64 under their own scales and zero points (ties among their values), against the
    /// portable code of each value; a NaN in the last group fails the call.
    #[test]
    fn groups_equal_the_portable_codes() {
        if !crate::simd::avx2() {
            return;
        }
        let (g, groups, qmin, qmax) = (64usize, 40usize, 0, 15);
        let sc: Vec<f32> = (0..groups).map(|j| 0.01 + j as f32 * 0.013).collect();
        let zc: Vec<i32> = (0..groups).map(|j| (j % 16) as i32).collect();
        let x: Vec<f32> = (0..groups * g)
            .map(|i| {
                let (j, k) = (i / g, (i % g) as f32);
                let s = sc[j];
                if i % 3 == 0 {
                    (k - 32.0 + 0.5) * s
                } else {
                    (k * 0.37).sin() * 9.0 * s
                }
            })
            .collect();
        let mut got = vec![0u8; x.len()];
        assert!(unsafe { quantize_groups::<false>(&x, &mut got, g, &sc, &zc, qmin, qmax) });
        for (i, &v) in x.iter().enumerate() {
            let (s, z) = (sc[i / g], zc[i / g]);
            let want = (code(v, s, (qmin - z) as f32, (qmax - z) as f32) + z) as u8;
            assert_eq!(got[i], want, "value {i} = {v:e}, s = {s:e}, z = {z}");
        }
        let mut bad = x.clone();
        bad[groups * g - 1] = f32::NAN;
        assert!(!unsafe { quantize_groups::<false>(&bad, &mut got, g, &sc, &zc, qmin, qmax) });
    }

    #[test]
    fn stops_at_a_non_finite_step_and_refuses_wide_grids() {
        if !crate::simd::avx2() {
            return;
        }
        let mut x = vec![1.0f32; 64];
        x[40] = f32::NAN;
        let mut out = vec![0u8; 64];
        assert_eq!(unsafe { quantize_const::<true>(&x, &mut out, 0.1, 0, -128.0, 127.0) }, None);
        assert!(!applies(0.1, -1000.0, 1000.0));
        assert!(!applies(f32::MAX, -128.0, 127.0)); // 1/s subnormal
    }
}
