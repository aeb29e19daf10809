//! Ranges of many short groups (32 values under one parameter) in AVX2 intrinsics.
//!
//! The portable scan folds 16 lanes into one min and one max per group; for a group of 32 values
//! that fold and the per-group loop overhead cost more than the loads. Here eight groups are
//! scanned side by side and their eight minima (and maxima) are folded together by a transpose
//! of min/max steps, so that one store writes eight groups' ends.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The eight horizontal minima (`MAX = false`) or maxima of `m[0..8]`, in order, as one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fold8<const MAX: bool>(m: [__m256; 8]) -> __m256 {
    let f = |a: __m256, b: __m256| if MAX { _mm256_max_ps(a, b) } else { _mm256_min_ps(a, b) };
    // [m_i low half, m_i+4 low half] against the high halves: 4 lanes left per group.
    let a: [__m256; 4] = std::array::from_fn(|i| {
        f(_mm256_permute2f128_ps::<0x20>(m[i], m[i + 4]), _mm256_permute2f128_ps::<0x31>(m[i], m[i + 4]))
    });
    // Per 128-bit half: [a0 lanes 0|2, a1 lanes 0|2, a0 lanes 1|3, a1 lanes 1|3]: 2 lanes left.
    let b0 = f(_mm256_unpacklo_ps(a[0], a[1]), _mm256_unpackhi_ps(a[0], a[1]));
    let b1 = f(_mm256_unpacklo_ps(a[2], a[3]), _mm256_unpackhi_ps(a[2], a[3]));
    // [g0, g1, g2, g3 | g4, g5, g6, g7].
    f(_mm256_shuffle_ps::<0x44>(b0, b1), _mm256_shuffle_ps::<0xee>(b0, b1))
}

/// The horizontal min or max of one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fold1<const MAX: bool>(m: __m256) -> f32 {
    let f = |a: __m128, b: __m128| if MAX { _mm_max_ps(a, b) } else { _mm_min_ps(a, b) };
    let h = f(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let h = f(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(f(h, _mm_shuffle_ps::<1>(h, h)))
}

/// Min, max and a vector with bits set ([`any_bits`]) where a lane saw a NaN or Inf, over the `g`
/// values (a multiple of 8) at `p`.
///
/// The flag is `s - s` for the lane sums `s`: +0 (no bits) while they are finite, NaN once a NaN
/// or Inf was added. A sum of finite values that overflows (values beyond about
/// `f32::MAX * 8 / g`) raises it too, and the caller's portable path then redoes those values:
/// slower, never wrong. One addition a vector, where a compare of `|v|` and an OR take three.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scan_group(p: *const f32, g: usize) -> (__m256, __m256, __m256) {
    crate::simd::prefetch(p);
    let v = _mm256_loadu_ps(p);
    let (mut lo, mut hi, mut sum) = (v, v, v);
    for i in (8..g).step_by(8) {
        if i % 16 == 0 {
            crate::simd::prefetch(p.add(i));
        }
        let v = _mm256_loadu_ps(p.add(i));
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
        sum = _mm256_add_ps(sum, v);
    }
    (lo, hi, _mm256_sub_ps(sum, sum))
}

/// Whether any bit of `m` is set: [`scan_group`]'s NaN/Inf flags, ORed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn any_bits(m: __m256) -> bool {
    let m = _mm256_castps_si256(m);
    _mm256_testz_si256(m, m) == 0
}

/// The min and max of each consecutive group of `g` values (a multiple of 8) of `x`, into `lo`
/// and `hi`. Returns false, with them partly written, when a value is NaN or Inf (or so large
/// that [`scan_group`]'s sums overflow): the caller's counting scan then redoes the groups. For
/// finite values the ends equal the portable scan's (a min or max is exact; only the sign of a
/// zero end may differ, which no parameter reads).
///
/// # Safety
/// The CPU must have AVX2 ([`crate::simd::avx2`]); `g % 8 == 0`, `g > 0`; `x` holds
/// `lo.len() * g` values and `hi` as many ends as `lo`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn group_ranges(x: &[f32], g: usize, lo: &mut [f32], hi: &mut [f32]) -> bool {
    debug_assert!(g % 8 == 0 && g > 0 && x.len() == lo.len() * g && hi.len() == lo.len());
    let n = lo.len();
    let p = x.as_ptr();
    let mut bad = _mm256_setzero_ps();
    let mut j = 0;
    while j + 8 <= n {
        let mut mn = [_mm256_setzero_ps(); 8];
        let mut mx = [_mm256_setzero_ps(); 8];
        for k in 0..8 {
            let (a, b, c) = scan_group(p.add((j + k) * g), g);
            (mn[k], mx[k], bad) = (a, b, _mm256_or_ps(bad, c));
        }
        _mm256_storeu_ps(lo.as_mut_ptr().add(j), fold8::<false>(mn));
        _mm256_storeu_ps(hi.as_mut_ptr().add(j), fold8::<true>(mx));
        j += 8;
    }
    for j in j..n {
        let (a, b, c) = scan_group(p.add(j * g), g);
        (lo[j], hi[j], bad) = (fold1::<false>(a), fold1::<true>(b), _mm256_or_ps(bad, c));
    }
    !any_bits(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every group's ends equal a plain fold's, for group sizes 8..64, group counts that leave
    /// remainders of the eight-group steps, and the refusal of NaN and ±Inf anywhere.
    #[test]
    fn equals_a_plain_fold_and_refuses_nonfinite() {
        if !crate::simd::avx2() {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut unit = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for g in [8, 16, 32, 64] {
            for n in [1, 7, 8, 9, 17, 64] {
                let mut x: Vec<f32> = (0..n * g).map(|i| unit() * (1 + i % 13) as f32 * 1e3).collect();
                x[0] = f32::MAX;
                x[n * g - 1] = -f32::MAX;
                let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
                assert!(unsafe { group_ranges(&x, g, &mut lo, &mut hi) });
                for (j, xs) in x.chunks_exact(g).enumerate() {
                    let want_lo = xs.iter().fold(f32::INFINITY, |a, &b| a.min(b));
                    let want_hi = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    assert_eq!((lo[j], hi[j]), (want_lo, want_hi), "g {g} n {n} group {j}");
                }
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    for at in [0, n * g / 2, n * g - 1] {
                        let mut y = x.clone();
                        y[at] = bad;
                        assert!(!unsafe { group_ranges(&y, g, &mut lo, &mut hi) }, "{bad} at {at}");
                    }
                }
            }
        }
    }
}
