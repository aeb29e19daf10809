//! ggml's Q4_0 and Q8_0 reference quantizers (`quantize_row_q4_0_ref`, `quantize_row_q8_0_ref`)
//! in AVX2 intrinsics: a block of 32 values in four registers, and the scales of eight blocks
//! computed together as vectors; and the sub-block error the `mse` searches compare
//! ([`range_error`]).
//! They are the two types users pick for speed, and the portable encoder ([`super::ggml`]),
//! compiled for AVX2 too, spent about 4 cycles a value on per-block reductions, branches and
//! scalar conversions. Results are bit for bit the portable ones and ggml's C (Rust tests against
//! the portable path; Python tests against llama.cpp's library), including C's x86 conversion of
//! out-of-range floats to `i32::MIN` (whose low byte ggml stores).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// What stopped or marked a chunk: the index in `xc` of the first NaN/Inf, or the index (among
/// the chunk's blocks) of the first block whose float16 scale overflowed.
pub(crate) enum Flag {
    NonFinite(usize),
    Overflow(usize),
}

/// Encodes the blocks of 32 in `xc` into `oc` (18 bytes a block for Q4_0, 34 for Q8_0); the
/// first problem found stops the chunk (a non-finite value) or is reported after it (overflow).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`crate::simd::avx2`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn encode_chunk(q8: bool, xc: &[f32], oc: &mut [u8]) -> Option<Flag> {
    let ts = if q8 { 34 } else { 18 };
    let mut overflow = None;
    // Eight blocks at a time while they are finite, each batch's scales computed before the
    // previous batch's codes so that their divisions overlap those codes instead of stalling
    // before them; the rest, and a batch holding a NaN or Inf (which the loop below finds and
    // reports), block by block.
    let nb = xc.len() / 32;
    let batch = |k: usize| &xc[k * 32..(k + 8) * 32];
    let mut k0 = 0;
    let mut next = if nb >= 8 { scales8(q8, batch(0)) } else { None };
    while let Some(cur) = next {
        next = if k0 + 16 <= nb { scales8(q8, batch(k0 + 8)) } else { None };
        codes8(q8, batch(k0), &mut oc[k0 * ts..(k0 + 8) * ts], &cur);
        overflow = overflow.or(cur.h.iter().position(|&h| h & 0x7c00 == 0x7c00).map(|j| k0 + j));
        k0 += 8;
    }
    let (xc, oc) = (&xc[k0 * 32..], &mut oc[k0 * ts..]);
    for (k, (x, o)) in xc.chunks_exact(32).zip(oc.chunks_exact_mut(ts)).enumerate() {
        let k = k0 + k;
        let p = x.as_ptr();
        crate::simd::prefetch(p);
        crate::simd::prefetch(p.add(16));
        let v = load(p, 0);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let a = v.map(|v| _mm256_and_ps(v, abs_mask));
        // Finite: |v| < inf (NaN compares false).
        let inf = _mm256_set1_ps(f32::INFINITY);
        let finite = a
            .iter()
            .fold(0xffff_ffffu32, |m, &a| m & _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_LT_OQ)) as u32);
        if finite != 0xff {
            return Some(Flag::NonFinite(k * 32 + x.iter().position(|v| !v.is_finite()).unwrap_or(0)));
        }
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        let d = if q8 { amax / 127.0 } else { signed_max(x, a, amax) / -8.0 };
        let codes = scaled(q8, v, _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 }));
        let h = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(d))) as u16;
        if h & 0x7c00 == 0x7c00 && overflow.is_none() {
            overflow = Some(k);
        }
        o[..2].copy_from_slice(&h.to_le_bytes());
        store_codes(q8, codes, o);
    }
    overflow.map(Flag::Overflow)
}

/// Eight blocks' float16 scales `h` (as stored) and the multipliers `1/d` of their codes.
struct Scales {
    h: [u16; 8],
    id: [f32; 8],
}

/// The scales of eight blocks of 32 (`x`, 256 values), computed as vectors: the eight maxima
/// folded together ([`crate::range_avx2::fold8`]), one division each for `d` and `1/d` and one
/// float16 conversion for the eight, where [`encode_chunk`]'s block loop spends a horizontal
/// reduction, two scalar divisions and a scalar conversion on every block. The same operations
/// on the same values, so the same bytes. None when a value is NaN or Inf.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales8(q8: bool, x: &[f32]) -> Option<Scales> {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let p = x.as_ptr();
    let zero = _mm256_setzero_ps();
    let (mut am, mut hi, mut lo) = ([zero; 8], [zero; 8], [zero; 8]);
    let mut bad = zero;
    for k in 0..8 {
        crate::simd::prefetch(p.add(32 * k));
        crate::simd::prefetch(p.add(32 * k + 16));
        let v = load(p, k);
        let a = v.map(|v| _mm256_and_ps(v, abs_mask));
        for &a in &a {
            // NaN and Inf pass `!(|v| < inf)`.
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
        }
        am[k] = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        if !q8 {
            hi[k] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
            lo[k] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
        }
    }
    if _mm256_movemask_ps(bad) != 0 {
        return None;
    }
    let amax = crate::range_avx2::fold8::<true>(am);
    let d = if q8 {
        _mm256_div_ps(amax, _mm256_set1_ps(127.0))
    } else {
        // ggml's signed maximum: the first value of the largest magnitude in each block, +0 for
        // an all-zero block. Only its sign is unknown: that of the block's maximum when only the
        // maximum reaches `amax`, of its minimum when only the minimum does; a block holding
        // both `amax` and `-amax` takes its first ([`signed_max`]).
        let (hi, lo) = (crate::range_avx2::fold8::<true>(hi), crate::range_avx2::fold8::<false>(lo));
        let up = _mm256_cmp_ps(hi, amax, _CMP_EQ_OQ);
        let down = _mm256_cmp_ps(_mm256_xor_ps(lo, _mm256_set1_ps(-0.0)), amax, _CMP_EQ_OQ);
        let nonzero = _mm256_cmp_ps(amax, zero, _CMP_GT_OQ);
        let mut max = _mm256_and_ps(nonzero, _mm256_blendv_ps(lo, amax, up));
        let both = _mm256_movemask_ps(_mm256_and_ps(nonzero, _mm256_and_ps(up, down)));
        if both != 0 {
            let (mut m8, mut a8) = ([0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(m8.as_mut_ptr(), max);
            _mm256_storeu_ps(a8.as_mut_ptr(), amax);
            for k in (0..8).filter(|k| both >> k & 1 != 0) {
                let a = load(p, k).map(|v| _mm256_and_ps(v, abs_mask));
                m8[k] = signed_max(&x[32 * k..32 * k + 32], a, a8[k]);
            }
            max = _mm256_loadu_ps(m8.as_ptr());
        }
        _mm256_div_ps(max, _mm256_set1_ps(-8.0))
    };
    let d_zero = _mm256_cmp_ps(d, zero, _CMP_EQ_OQ);
    let id = _mm256_andnot_ps(d_zero, _mm256_div_ps(_mm256_set1_ps(1.0), d));
    let mut out = Scales { h: [0; 8], id: [0.0; 8] };
    _mm_storeu_si128(out.h.as_mut_ptr().cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d));
    _mm256_storeu_ps(out.id.as_mut_ptr(), id);
    Some(out)
}

/// Eight blocks of 32 (`x`) into `o` (`8 * ts` bytes) under their [`scales8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes8(q8: bool, x: &[f32], o: &mut [u8], sc: &Scales) {
    let ts = if q8 { 34 } else { 18 };
    for (k, o) in o.chunks_exact_mut(ts).enumerate() {
        o[..2].copy_from_slice(&sc.h[k].to_le_bytes());
        store_codes(q8, scaled(q8, load(x.as_ptr(), k), _mm256_set1_ps(sc.id[k])), o);
    }
}

/// Block `k` of 32 values from `p`, in four registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const f32, k: usize) -> [__m256; 4] {
    std::array::from_fn(|i| _mm256_loadu_ps(p.add(32 * k + 8 * i)))
}

/// ggml's signed maximum of a block of 32 (`x`; `a` its magnitudes, `amax` the largest): the first
/// value of that magnitude, found from a bit mask of equal lanes; 0 for an all-zero block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_max(x: &[f32], a: [__m256; 4], amax: f32) -> f32 {
    if amax == 0.0 {
        return 0.0;
    }
    let b = _mm256_set1_ps(amax);
    let eq = a.map(|a| _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)) as u32);
    x[((eq[0] | eq[1] << 8 | eq[2] << 16 | eq[3] << 24).trailing_zeros() & 31) as usize]
}

/// A block's values times `1/d` (`id`), as ggml's C scales them before converting: rounded half
/// away from zero for Q8_0, offset by 8.5 (truncated later) for Q4_0. (These helpers are compiled
/// with the features themselves: a closure inside an `inline(always)` function without them
/// became a call that passed every vector through memory, 20x slower.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scaled(q8: bool, v: [__m256; 4], id: __m256) -> [__m256; 4] {
    if q8 {
        v.map(|v| round_away(_mm256_mul_ps(v, id)))
    } else {
        v.map(|v| _mm256_add_ps(_mm256_mul_ps(v, id), _mm256_set1_ps(8.5)))
    }
}

/// The codes of one block (the scaled values before conversion) into its bytes after the scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_codes(q8: bool, codes: [__m256; 4], o: &mut [u8]) {
    let bytes = low_bytes(codes.map(|c| _mm256_cvttps_epi32(c)));
    if q8 {
        _mm256_storeu_si256(o.as_mut_ptr().add(2) as *mut __m256i, bytes);
    } else {
        // MIN(15, (int8_t)v), then the first 16 codes in the low nibbles, the others above.
        let c = _mm256_min_epi8(bytes, _mm256_set1_epi8(15));
        let (lo, hi) = (_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c));
        let nib = _mm_or_si128(
            _mm_and_si128(lo, _mm_set1_epi8(0x0f)),
            _mm_and_si128(_mm_slli_epi16::<4>(hi), _mm_set1_epi8(0xf0u8 as i8)),
        );
        _mm_storeu_si128(o.as_mut_ptr().add(2) as *mut __m128i, nib);
    }
}

/// C's `roundf` (half away from zero) of each lane; large values and infinities pass through
/// (their conversion then gives `i32::MIN`, as in C).
#[inline(always)]
unsafe fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm256_and_ps(_mm256_sub_ps(v, t), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
    let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// The low byte of each of 32 `i32` lanes (4 registers), in order: what C's store of an `int`
/// into an `int8_t` keeps.
#[inline(always)]
unsafe fn low_bytes(q: [__m256i; 4]) -> __m256i {
    let ff = _mm256_set1_epi32(0xff);
    let q = q.map(|q| _mm256_and_si256(q, ff));
    // Packs work within 128-bit lanes; the permutation puts the 32 bytes back in order.
    let b = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
    _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// [`super::range_error`] for a range of whole vectors (`xs.len()` a multiple of 8): the same
/// terms in the same lanes, summed in the same order ([`crate::simd::lane_sum`]), so bit for bit
/// the portable sum. The compiler's own vectorization of the portable loop kept half of it in
/// 128-bit registers (Q4_K `mse`: 264 ns a weight on one thread, 171 with this).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`crate::simd::avx2`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn range_error(
    xs: &[f32],
    ws: Option<&[f32]>,
    d: f32,
    dm: f32,
    qmin: i32,
    qmax: i32,
) -> f32 {
    debug_assert!(xs.len() % 8 == 0 && ws.is_none_or(|w| w.len() == xs.len()));
    let (vd, vdm) = (_mm256_set1_ps(d), _mm256_set1_ps(dm));
    let (lo, hi) = (_mm256_set1_epi32(qmin), _mm256_set1_epi32(qmax));
    let (magic, mask, bias) =
        (_mm256_set1_ps(12_582_912.0), _mm256_set1_epi32(0x007f_ffff), _mm256_set1_epi32(0x0040_0000));
    let mut acc = _mm256_setzero_ps();
    for c in (0..xs.len()).step_by(8) {
        let v = _mm256_loadu_ps(xs.as_ptr().add(c));
        // `nearest_int((v + dm) / d)`: the float's bits after adding 1.5 * 2^23.
        let t = _mm256_add_ps(_mm256_div_ps(_mm256_add_ps(v, vdm), vd), magic);
        let q = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), mask), bias);
        let q = _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(q, lo), hi));
        let e = _mm256_sub_ps(v, _mm256_sub_ps(_mm256_mul_ps(vd, q), vdm));
        let we = match ws {
            Some(w) => _mm256_mul_ps(_mm256_loadu_ps(w.as_ptr().add(c)), e),
            None => e,
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(we, e));
    }
    // ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), as lane_sum folds its lanes.
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)))
}
