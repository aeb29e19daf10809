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

use crate::qparams::QParams;
use crate::scheme::Scheme;
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
    /// The zero point in 16-bit lanes: codes are clamped before it is added, so `q + z` lies on
    /// the grid and fits.
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
        z: _mm256_set1_epi16(z as i16),
    }
}

/// The 32 values at `p`, prefetching ahead.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const f32) -> [__m256; 4] {
    crate::simd::prefetch(p);
    crate::simd::prefetch(p.wrapping_add(16));
    [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))]
}

/// Codes of the 32 values at `p` into the 32 bytes at `o`; false (nothing written) when one of
/// them is NaN or Inf. (Compiled with the features itself, not `inline(always)`: the closures
/// inside a function without them become calls that pass every vector through memory.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step32<const SIGNED: bool>(p: *const f32, o: *mut u8, k: &Grid) -> bool {
    let v = load32(p);
    // The flag of [`crate::range_avx2::scan_group`]: `t - t` of the lane sums `t` is +0 while
    // they are finite and NaN once a NaN or Inf was added, a few operations where a compare of
    // every `|v|` takes twelve. Sums that overflow (values near `f32::MAX`) fail too, and the
    // caller's counting path redoes the run: slower, never wrong.
    let t = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
    if crate::range_avx2::any_bits(_mm256_sub_ps(t, t)) {
        return false;
    }
    _mm256_storeu_si256(o.cast(), codes32::<SIGNED>(v, k));
    true
}

/// `clamp(rint(x / s), lo, hi)` of the 32 finite values `v` as integers, from the products
/// `x · r` (`r = 1/s`) clamped first: `lo` and `hi` are integers, so clamping and rounding commute,
/// and a clamped product is an integer that no tie check needs. The products are used where all
/// of them lie more than [`DELTA`] from a half-integer, else the quotients (see the module docs).
/// The conversion rounds to nearest even (the default MXCSR mode, which Rust assumes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn clamped_rint(v: [__m256; 4], k: &Grid) -> [__m256i; 4] {
    let clamp = |p: __m256| _mm256_min_ps(_mm256_max_ps(p, k.lo), k.hi);
    let prod = v.map(|v| clamp(_mm256_mul_ps(v, k.r)));
    let q = prod.map(|p| _mm256_cvtps_epi32(p));
    if near_tie(prod, q.map(|q| _mm256_cvtepi32_ps(q))) {
        return v.map(|v| _mm256_cvtps_epi32(clamp(_mm256_div_ps(v, k.s))));
    }
    q
}

/// `rint(x / s)` of the 32 finite values `v` as integers, for quotients within ±256 (as in
/// [`codes32_bounded`]), from the products `x · r` (`r = 1/s`) where all of them lie more than
/// [`DELTA`] from a half-integer, else from the quotients (see the module docs). The conversion
/// rounds to nearest even (the default MXCSR mode, which Rust assumes), and its integers convert
/// back exactly for the tie check: no rounding instruction (two micro-ops) and no truncating
/// conversion after it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bounded_rint(v: [__m256; 4], s: __m256, r: __m256) -> [__m256i; 4] {
    let prod = v.map(|v| _mm256_mul_ps(v, r));
    let q = prod.map(|p| _mm256_cvtps_epi32(p));
    if near_tie(prod, q.map(|q| _mm256_cvtepi32_ps(q))) {
        return v.map(|v| _mm256_cvtps_epi32(_mm256_div_ps(v, s)));
    }
    q
}

/// Whether one of the products `prod` lies within [`DELTA`] of a half-integer, given their
/// nearest integers `q`: the largest distance from an integer among the 32, one compare for all.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn near_tie(prod: [__m256; 4], q: [__m256; 4]) -> bool {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let f: [__m256; 4] = std::array::from_fn(|i| _mm256_and_ps(_mm256_sub_ps(prod[i], q[i]), abs_mask));
    let far = _mm256_max_ps(_mm256_max_ps(f[0], f[1]), _mm256_max_ps(f[2], f[3]));
    _mm256_movemask_ps(_mm256_cmp_ps(far, _mm256_set1_ps(0.5 - DELTA), _CMP_GT_OQ)) != 0
}

/// The 32 code bytes, in order, of the finite values `v` under `k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes32<const SIGNED: bool>(v: [__m256; 4], k: &Grid) -> __m256i {
    let c = clamped_rint(v, k);
    // Clamped, `q + z` is a code of the grid: exact in 16 bits and in a byte.
    let a = _mm256_add_epi16(_mm256_packs_epi32(c[0], c[1]), k.z);
    let b = _mm256_add_epi16(_mm256_packs_epi32(c[2], c[3]), k.z);
    let bytes = if SIGNED { _mm256_packs_epi16(a, b) } else { _mm256_packus_epi16(a, b) };
    // The packs leave dwords in the order [0-3, 8-11, 16-19, 24-27 | 4-7, …].
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// One group's constants for [`codes32_bounded`], broadcast: the zero point in 16-bit lanes and
/// the grid's ends in bytes.
struct Bounded {
    s: __m256,
    r: __m256,
    z: __m256i,
    qlo: __m256i,
    qhi: __m256i,
}

/// [`codes32`] for values whose quotients `x / s` lie within ±256, as every value of a group does
/// under its own min-max parameters (so in [`fused_groups`]): the codes are clamped as bytes, two
/// operations for 32 codes, instead of as floats, eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes32_bounded<const SIGNED: bool>(v: [__m256; 4], k: &Bounded) -> __m256i {
    // Integers within ±256: exact in 32 and 16 bits; `q + z` saturates into a byte, then the clamp
    // to the grid is that of the float path.
    let c = bounded_rint(v, k.s, k.r);
    let a = _mm256_add_epi16(_mm256_packs_epi32(c[0], c[1]), k.z);
    let b = _mm256_add_epi16(_mm256_packs_epi32(c[2], c[3]), k.z);
    let bytes = if SIGNED {
        _mm256_max_epi8(_mm256_min_epi8(_mm256_packs_epi16(a, b), k.qhi), k.qlo)
    } else {
        _mm256_max_epu8(_mm256_min_epu8(_mm256_packus_epi16(a, b), k.qhi), k.qlo)
    };
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// 32 code bytes two to a byte, element `2i` in the low nibble (as [`crate::pack`]): 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(b: __m256i) -> __m128i {
    // Each byte pair becomes `b[2i] + 16 b[2i+1]` (at most 255) in 16 bits, then one byte.
    let w = _mm256_maddubs_epi16(_mm256_and_si256(b, _mm256_set1_epi8(0x0f)), _mm256_set1_epi16(0x1001));
    let p = _mm256_packus_epi16(w, w);
    _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(p))
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

/// [`QParams::pairs_into`] of eight ranges on the grid `qmin..=qmax` (ONNX Runtime's rule, not
/// llama.cpp's signed scale) in vectors, bit for bit: the same float64 steps as the portable
/// lanes, whose two divisions the compiler left scalar (a quarter of the one-pass kernel's time).
/// NaN reaches only lanes that a later selection replaces, as there.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn params8<const SYMMETRIC: bool>(
    rmin: __m256,
    rmax: __m256,
    qmin: i32,
    qmax: i32,
) -> (__m256, __m256i) {
    const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let abs_ps = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (zero, sign) = (_mm256_setzero_pd(), _mm256_set1_pd(-0.0));
    let (k, qlo, qhi) =
        (_mm256_set1_pd((qmax - qmin) as f64), _mm256_set1_pd(qmin as f64), _mm256_set1_pd(qmax as f64));
    let (mut s4, mut z4) = ([_mm_setzero_ps(); 2], [_mm_setzero_si128(); 2]);
    for h in 0..2 {
        let (a, b) = if h == 0 {
            (_mm256_castps256_ps128(rmin), _mm256_castps256_ps128(rmax))
        } else {
            (_mm256_extractf128_ps::<1>(rmin), _mm256_extractf128_ps::<1>(rmax))
        };
        // The range widened to hold 0 (max/min return the second operand on ties and NaN).
        let (mut lo, mut hi) =
            (_mm256_min_pd(_mm256_cvtps_pd(a), zero), _mm256_max_pd(_mm256_cvtps_pd(b), zero));
        if SYMMETRIC {
            hi = _mm256_max_pd(_mm256_andnot_pd(sign, lo), _mm256_andnot_pd(sign, hi));
            lo = _mm256_xor_pd(hi, sign);
        }
        let scale = _mm256_div_pd(_mm256_sub_pd(hi, lo), k);
        let zpf = if SYMMETRIC {
            _mm256_set1_pd(crate::qparams::round_even((qmin + qmax) as f64 / 2.0))
        } else {
            _mm256_round_pd::<RN>(_mm256_sub_pd(qlo, _mm256_div_pd(lo, scale)))
        };
        let zp = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(zpf, qlo), qhi));
        // The low dword of each 64-bit mask lane: a 32-bit mask per range.
        let tiny =
            _mm256_castpd_si256(_mm256_cmp_pd(scale, _mm256_set1_pd(f32::MIN_POSITIVE as f64), _CMP_LT_OQ));
        let tiny = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
            tiny,
            _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
        ));
        s4[h] = _mm_blendv_ps(_mm256_cvtpd_ps(scale), _mm_set1_ps(1.0), _mm_castsi128_ps(tiny));
        z4[h] = _mm_andnot_si128(tiny, zp);
    }
    let (mut s, mut z) = (_mm256_set_m128(s4[1], s4[0]), _mm256_set_m128i(z4[1], z4[0]));
    let zero_ps = _mm256_setzero_ps();
    let constant =
        _mm256_and_ps(_mm256_cmp_ps(rmin, rmax, _CMP_EQ_OQ), _mm256_cmp_ps(rmin, zero_ps, _CMP_NEQ_UQ));
    let kzp = if SYMMETRIC {
        _mm256_setzero_si256()
    } else {
        let positive = _mm256_castps_si256(_mm256_cmp_ps(rmin, zero_ps, _CMP_GT_OQ));
        _mm256_andnot_si256(positive, _mm256_set1_epi32(qmin + 1))
    };
    s = _mm256_blendv_ps(s, _mm256_and_ps(rmin, abs_ps), constant);
    z = _mm256_blendv_epi8(z, kzp, _mm256_castps_si256(constant));
    let most = _mm256_set1_ps(f32::MAX);
    let good = _mm256_and_ps(
        _mm256_cmp_ps(rmin, rmax, _CMP_LE_OQ),
        _mm256_and_ps(
            _mm256_cmp_ps(_mm256_and_ps(rmin, abs_ps), most, _CMP_LE_OQ),
            _mm256_cmp_ps(_mm256_and_ps(rmax, abs_ps), most, _CMP_LE_OQ),
        ),
    );
    (_mm256_blendv_ps(_mm256_set1_ps(1.0), s, good), _mm256_and_si256(z, _mm256_castps_si256(good)))
}

/// Eight groups' reciprocal scales, from [`batch_params`] for [`batch_codes`].
type Batch = [f32; 8];

/// Short groups in one pass, eight at a time: their ranges ([`crate::range_avx2`]), their
/// parameters ([`params8`]; for llama.cpp's signed scale [`QParams::pairs_into`], the portable
/// rule compiled here) and their codes, the values read again from L1. Writes the parameters into
/// `sc` and `zc` and the codes into `out` as bytes, or two to a byte when `PACK`. Returns false,
/// with the outputs partly written, at a NaN or Inf (or values near `f32::MAX`, see
/// [`crate::range_avx2::scan_group`]), at a parameter where [`applies`] fails, or
/// when the group count is not a multiple of 8: the caller then redoes the groups on its portable
/// path. The three passes over a chunk that this replaces spent more time in per-group overhead
/// than in reading memory.
///
/// The parameters run one batch ahead of the codes: their float64 divisions (a long dependent
/// chain) then overlap the previous batch's codes instead of stalling before them.
///
/// # Safety
/// The CPU must have AVX2 ([`crate::simd::avx2`]); `g % 32 == 0`; `x` holds `sc.len() * g`
/// values, `zc` as many zero points as `sc`, `out` `x.len()` bytes (half as many when `PACK`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fused_groups<const SIGNED: bool, const PACK: bool>(
    x: &[f32],
    out: &mut [u8],
    g: usize,
    sc: &mut [f32],
    zc: &mut [i32],
    scheme: Scheme,
) -> bool {
    let n = sc.len();
    debug_assert!(g % 32 == 0 && x.len() == n * g && zc.len() == n);
    debug_assert!(out.len() == if PACK { x.len() / 2 } else { x.len() });
    if n % 8 != 0 {
        return false;
    }
    let mut bad = _mm256_setzero_ps();
    let Some(mut next) = batch_params(x, g, 0, sc, zc, scheme, &mut bad) else { return false };
    for j in (0..n).step_by(8) {
        let r8 = next;
        if j + 8 < n {
            match batch_params(x, g, j + 8, sc, zc, scheme, &mut bad) {
                Some(r) => next = r,
                None => return false,
            }
        }
        batch_codes::<SIGNED, PACK>(x, out, g, j, &sc[j..j + 8], &zc[j..j + 8], &r8, scheme);
    }
    !crate::range_avx2::any_bits(bad)
}

/// The parameters of groups `j..j + 8` into `sc` and `zc`, NaN and Inf flagged into `bad`; their
/// reciprocal scales, or None where [`applies`] fails.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn batch_params(
    x: &[f32],
    g: usize,
    j: usize,
    sc: &mut [f32],
    zc: &mut [i32],
    scheme: Scheme,
    bad: &mut __m256,
) -> Option<Batch> {
    use crate::range_avx2::{fold8, scan_group};
    let (qmin, qmax) = scheme.qrange();
    let base = x.as_ptr().add(j * g);
    let (mut mn, mut mx) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
    for k in 0..8 {
        // Groups of 32 (the common size) get a scan without a loop: four loads and their folds.
        let (a, b, c) =
            if g == 32 { scan_group(base.add(k * 32), 32) } else { scan_group(base.add(k * g), g) };
        (mn[k], mx[k], *bad) = (a, b, _mm256_or_ps(*bad, c));
    }
    let (rmin, rmax) = (fold8::<false>(mn), fold8::<true>(mx));
    let (s8, z8) = (&mut sc[j..j + 8], &mut zc[j..j + 8]);
    let (s, z) = if scheme.signed_scale {
        let (mut lo8, mut hi8) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(lo8.as_mut_ptr(), rmin);
        _mm256_storeu_ps(hi8.as_mut_ptr(), rmax);
        QParams::pairs_into(scheme, &lo8, &hi8, s8, z8);
        (_mm256_loadu_ps(s8.as_ptr()), _mm256_loadu_si256(z8.as_ptr().cast()))
    } else {
        let (s, z) = if scheme.symmetric {
            params8::<true>(rmin, rmax, qmin, qmax)
        } else {
            params8::<false>(rmin, rmax, qmin, qmax)
        };
        _mm256_storeu_ps(s8.as_mut_ptr(), s);
        _mm256_storeu_si256(z8.as_mut_ptr().cast(), z);
        (s, z)
    };
    // The eight grids at once, [`applies`] and [`grid`] as vectors: one division for 1/s.
    let r = _mm256_div_ps(_mm256_set1_ps(1.0), s);
    let lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(qmin), z));
    let hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(qmax), z));
    let abs_r = _mm256_and_ps(r, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let ok = _mm256_and_ps(
        _mm256_and_ps(
            _mm256_cmp_ps(abs_r, _mm256_set1_ps(f32::MIN_POSITIVE), _CMP_GE_OQ),
            _mm256_cmp_ps(abs_r, _mm256_set1_ps(f32::MAX), _CMP_LE_OQ),
        ),
        _mm256_and_ps(
            _mm256_cmp_ps(lo, _mm256_set1_ps(-256.0), _CMP_GE_OQ),
            _mm256_cmp_ps(hi, _mm256_set1_ps(256.0), _CMP_LE_OQ),
        ),
    );
    if _mm256_movemask_ps(ok) != 0xff {
        return None;
    }
    let mut r8 = [0f32; 8];
    _mm256_storeu_ps(r8.as_mut_ptr(), r);
    Some(r8)
}

/// The codes of groups `j..j + 8` under their scales `s8`, zero points `z8` and reciprocals `r8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn batch_codes<const SIGNED: bool, const PACK: bool>(
    x: &[f32],
    out: &mut [u8],
    g: usize,
    j: usize,
    s8: &[f32],
    z8: &[i32],
    r8: &Batch,
    scheme: Scheme,
) {
    let (qmin, qmax) = scheme.qrange();
    let (qlo, qhi) = (_mm256_set1_epi8(qmin as i8), _mm256_set1_epi8(qmax as i8));
    for k in 0..8 {
        let grid = Bounded {
            s: _mm256_set1_ps(s8[k]),
            r: _mm256_set1_ps(r8[k]),
            z: _mm256_set1_epi16(z8[k] as i16),
            qlo,
            qhi,
        };
        for i in (0..g).step_by(32) {
            let at = (j + k) * g + i;
            let c = codes32_bounded::<SIGNED>(load32(x.as_ptr().add(at)), &grid);
            if PACK {
                _mm_storeu_si128(out.as_mut_ptr().add(at / 2).cast(), nibbles(c));
            } else {
                _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), c);
            }
        }
    }
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

    /// The byte clamp of the bounded codes against the float clamp, on quotients across ±256 (so
    /// beyond every grid's ends), half-integers among them, for six grids and their zero points.
    #[test]
    fn bounded_codes_equal_the_float_clamp() {
        if !crate::simd::avx2() {
            return;
        }
        let grids = [(-128, 127, 0), (0, 255, 0), (0, 255, 200), (-8, 7, 0), (0, 15, 9), (-127, 127, 0)];
        for s in [0.1f32, 1.0 / 3.0, 7.3e-4] {
            for (qmin, qmax, z) in grids {
                let (lo, hi) = ((qmin - z) as f32, (qmax - z) as f32);
                let x: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.5 - 256.0) * s).collect();
                for v in x.chunks_exact(32) {
                    let (mut want, mut got) = ([0u8; 32], [0u8; 32]);
                    unsafe {
                        let vs = load32(v.as_ptr());
                        _mm256_storeu_si256(
                            want.as_mut_ptr().cast(),
                            if qmin < 0 {
                                codes32::<true>(vs, &grid(s, z, lo, hi))
                            } else {
                                codes32::<false>(vs, &grid(s, z, lo, hi))
                            },
                        );
                        let k = Bounded {
                            s: _mm256_set1_ps(s),
                            r: _mm256_set1_ps(1.0 / s),
                            z: _mm256_set1_epi16(z as i16),
                            qlo: _mm256_set1_epi8(qmin as i8),
                            qhi: _mm256_set1_epi8(qmax as i8),
                        };
                        _mm256_storeu_si256(
                            got.as_mut_ptr().cast(),
                            if qmin < 0 {
                                codes32_bounded::<true>(vs, &k)
                            } else {
                                codes32_bounded::<false>(vs, &k)
                            },
                        );
                    }
                    assert_eq!(got, want, "s = {s}, grid {qmin}..={qmax}, z = {z}, values {:?}", &v[..2]);
                }
            }
        }
    }

    /// The vector parameter rule against the portable one on edge and random ranges, six grids.
    #[test]
    fn params8_equal_scale_zero_point() {
        if !crate::simd::avx2() {
            return;
        }
        let mut pairs = crate::qparams::tests::edge_and_random_ranges();
        pairs.resize(pairs.len().next_multiple_of(8), (0.0, 1.0));
        for (qmin, qmax) in [(0, 255), (0, 15), (-127, 127), (-8, 7), (-128, 127), (-7, 7)] {
            for p in pairs.chunks_exact(8) {
                let lo: Vec<f32> = p.iter().map(|r| r.0).collect();
                let hi: Vec<f32> = p.iter().map(|r| r.1).collect();
                let (mut s, mut z) = ([0f32; 8], [0i32; 8]);
                unsafe {
                    let (a, b) = (_mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(hi.as_ptr()));
                    let (sv, zv) = if qmin < 0 {
                        params8::<true>(a, b, qmin, qmax)
                    } else {
                        params8::<false>(a, b, qmin, qmax)
                    };
                    _mm256_storeu_ps(s.as_mut_ptr(), sv);
                    _mm256_storeu_si256(z.as_mut_ptr().cast(), zv);
                }
                for (k, &(a, b)) in p.iter().enumerate() {
                    let want = crate::qparams::scale_zero_point(a, b, qmin, qmax, qmin < 0);
                    assert_eq!(
                        (s[k].to_bits(), z[k]),
                        (want.0.to_bits(), want.1),
                        "{a:e}..{b:e} on {qmin}..={qmax}"
                    );
                }
            }
        }
    }

    /// The one-pass kernel against ranges, parameters and codes computed value by value, for
    /// six schemes (llama.cpp's signed scale among them), two group sizes, codes as bytes and
    /// packed; groups of ties, zeros, constants and tiny values included. It refuses NaN, Inf,
    /// a group count that is not a multiple of 8, and a grid it cannot hold exactly.
    #[test]
    fn fused_groups_equal_the_value_by_value_rule() {
        use crate::scheme::{Granularity, Precision};
        if !crate::simd::avx2() {
            return;
        }
        let group = Granularity::PerGroup { axis: -1, size: 32 };
        let int4 = Scheme::new(Precision::Int4).with_granularity(group);
        let int8 = Scheme::new(Precision::Int8).with_granularity(group);
        let mut int8_full = int8;
        int8_full.full_range = true;
        let schemes =
            [int4, int4.asymmetric(true), int8, int8.asymmetric(true), int8_full, int4.with_signed_scale()];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut unit = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for g in [32usize, 64] {
            let n = 24;
            let mut x: Vec<f32> = (0..n * g).map(|i| unit() * (1 + i / g) as f32).collect();
            x[..g].fill(0.0);
            x[g..2 * g].fill(-2.5);
            x[2 * g..3 * g].fill(0.75);
            x[3 * g..4 * g].iter_mut().for_each(|v| *v *= 1e-39);
            // Values on half-integers of the group's step (ties of x / s).
            for (i, v) in x[4 * g..5 * g].iter_mut().enumerate() {
                *v = (i as f32 - 16.5) * 0.125;
            }
            for scheme in schemes {
                let (qmin, qmax) = scheme.qrange();
                let mut want = vec![0u8; x.len()];
                for (xs, ws) in x.chunks_exact(g).zip(want.chunks_exact_mut(g)) {
                    let mn = xs.iter().fold(f32::INFINITY, |a, &b| a.min(b));
                    let mx = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let (s, z) = scheme.params(mn, mx);
                    for (w, &v) in ws.iter_mut().zip(xs) {
                        *w = (code(v, s, (qmin - z) as f32, (qmax - z) as f32) + z) as u8;
                    }
                }
                let mut packed = vec![0u8; x.len() / 2];
                crate::pack::pack_into(&want, &mut packed);
                let (mut sc, mut zc) = (vec![0f32; n], vec![0i32; n]);
                let mut got = vec![0u8; x.len()];
                let mut got_packed = vec![0u8; x.len() / 2];
                let signed = scheme.signed();
                unsafe {
                    let ok = if signed {
                        fused_groups::<true, false>(&x, &mut got, g, &mut sc, &mut zc, scheme)
                            && fused_groups::<true, true>(&x, &mut got_packed, g, &mut sc, &mut zc, scheme)
                    } else {
                        fused_groups::<false, false>(&x, &mut got, g, &mut sc, &mut zc, scheme)
                            && fused_groups::<false, true>(&x, &mut got_packed, g, &mut sc, &mut zc, scheme)
                    };
                    assert!(ok, "{scheme:?}");
                }
                assert_eq!(got, want, "{scheme:?}, g {g}");
                assert_eq!(got_packed, packed, "{scheme:?}, g {g}");
                for (j, xs) in x.chunks_exact(g).enumerate() {
                    let mn = xs.iter().fold(f32::INFINITY, |a, &b| a.min(b));
                    let mx = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    assert_eq!(scheme.params(mn, mx), (sc[j], zc[j]), "{scheme:?}, group {j}");
                }
            }
            let scheme = int8;
            let (mut sc, mut zc) = (vec![0f32; n], vec![0i32; n]);
            let mut out = vec![0u8; x.len()];
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut y = x.clone();
                y[n * g - 3] = bad;
                assert!(!unsafe { fused_groups::<true, false>(&y, &mut out, g, &mut sc, &mut zc, scheme) });
            }
            let short = &x[..7 * g];
            assert!(!unsafe {
                fused_groups::<true, false>(short, &mut out[..7 * g], g, &mut sc[..7], &mut zc[..7], scheme)
            });
            // A group of f32::MAX (a constant: s = MAX) has 1/s below the smallest normal float
            // (and sums that overflow); in the first batch, and in the third, whose parameters
            // come while the second's codes are still to be written.
            for group in [5, 17] {
                let mut y = x.clone();
                y[group * g..(group + 1) * g].fill(f32::MAX);
                assert!(!unsafe { fused_groups::<true, false>(&y, &mut out, g, &mut sc, &mut zc, scheme) });
            }
        }
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
