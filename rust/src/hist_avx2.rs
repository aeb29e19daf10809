//! The histograms' bin loop for f32 in AVX2 intrinsics (the vector half of [`crate::hist`]'s
//! counting loops), with the previous buffer's increments (the scalar half) interleaved.
//!
//! The portable loop, which also keeps each buffer's range, compiled to about twice the vector
//! operations: it clamps every bin for a safe conversion to integers and selects per lane. Here the
//! conversion needs no clamp, since the callers count a buffer only after checking its range and
//! redo a buffer with NaN/Inf; and NaN/Inf show in the maximum of the magnitudes' bits.

#![cfg(target_arch = "x86_64")]

use crate::hist::Counts;
use crate::range_avx2::fold1;
use std::arch::x86_64::*;

/// Bins of `c` into `ix` in the layout `floor(v inv) - k` (`|v| inv` when `ABS`, whose layouts
/// start at 0), with the min and max of `c`, its exact zeros, and whether all of it is finite.
/// With `TINY`, a negative `v` whose product underflows to -0 takes the bin below 0's. The bins
/// of values outside the layout, or of NaN/Inf, are meaningless: callers check the range first.
/// The checked slots `prev` are counted into `counts` meanwhile, 16 per 16 values binned.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bin_buffer<const ABS: bool, const TINY: bool>(
    c: &[f32],
    inv: f32,
    k: f32,
    ix: &mut [u32],
    prev: &[u32],
    counts: &mut Counts,
) -> (f32, f32, u32, bool) {
    assert!(c.len() <= ix.len());
    let magnitude = _mm256_set1_epi32(0x7fff_ffff);
    let (vinv, vk, sign) = (_mm256_set1_ps(inv), _mm256_set1_ps(k), _mm256_set1_epi32(i32::MIN));
    let (top, z) = (&mut _mm256_setzero_si256(), &mut _mm256_setzero_si256());
    let (p, q) = (c.as_ptr(), ix.as_mut_ptr());
    // One vector: bins stored, the running min and max in `m`.
    let mut step = |i: usize, m: &mut (__m256, __m256)| {
        let v = _mm256_loadu_ps(p.add(i));
        let b = _mm256_and_si256(_mm256_castps_si256(v), magnitude);
        *top = _mm256_max_epu32(*top, b);
        // NaN leaves the running min and max as they were (the second operand is returned).
        *m = (_mm256_min_ps(v, m.0), _mm256_max_ps(v, m.1));
        let zero = _mm256_cmpeq_epi32(b, _mm256_setzero_si256());
        *z = _mm256_sub_epi32(*z, zero);
        let bins = if ABS {
            _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(b), vinv))
        } else {
            let y = _mm256_mul_ps(v, vinv);
            let f = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_floor_ps(y), vk));
            if TINY {
                // -0 from a nonzero v: add the all-ones mask, -1.
                let under = _mm256_cmpeq_epi32(_mm256_castps_si256(y), sign);
                _mm256_add_epi32(f, _mm256_andnot_si256(zero, under))
            } else {
                f
            }
        };
        _mm256_storeu_si256(q.add(i) as *mut __m256i, bins);
    };
    // Two min/max accumulators: one would chain every vector to the previous one's result (4
    // cycles a vector, more than the rest of the loop takes).
    let empty = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(f32::NEG_INFINITY));
    let (mut m0, mut m1) = (empty, empty);
    let (n16, n) = (c.len() / 16 * 16, c.len() / 8 * 8);
    let paired = n16.min(prev.len() / 16 * 16);
    for i in (0..n16).step_by(16) {
        // The line 8 KiB ahead, one per iteration: a burst of prefetches per buffer waited on
        // the line fill buffers (a fifth of the loop's time).
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + crate::simd::PREFETCH_AHEAD / 4) as *const i8);
        step(i, &mut m0);
        step(i + 8, &mut m1);
        if i < paired {
            counts.add(&prev[i..i + 16]);
        }
    }
    counts.add(&prev[paired..]);
    if n > n16 {
        step(n16, &mut m0);
    }
    let (top, z) = (*top, *z);
    let (mn, mx) = (_mm256_min_ps(m0.0, m1.0), _mm256_max_ps(m0.1, m1.1));
    let (mut lo, mut hi) = (fold1::<false>(mn), fold1::<true>(mx));
    let (mut t, mut zs) = ([0u32; 8], [0u32; 8]);
    _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, top);
    _mm256_storeu_si256(zs.as_mut_ptr() as *mut __m256i, z);
    let (mut top, mut zeros) = (t.into_iter().max().unwrap_or(0), zs.iter().sum::<u32>());
    for (j, &v) in c.iter().enumerate().skip(n) {
        let b = v.to_bits() & 0x7fff_ffff;
        (top, zeros) = (top.max(b), zeros + (b == 0) as u32);
        (lo, hi) = (if v < lo { v } else { lo }, if v > hi { v } else { hi });
        let f = if ABS {
            f32::from_bits(b) * inv
        } else {
            let y = v * inv;
            (y.floor() - k) - (TINY && y == 0.0 && v < 0.0) as u32 as f32
        };
        ix[j] = f as i32 as u32;
    }
    (lo, hi, zeros, top < 0x7f80_0000)
}
