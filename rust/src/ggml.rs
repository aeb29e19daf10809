//! llama.cpp's block formats (ggml-common.h): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32 values),
//! the K types Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256), and IQ4_NL (32) and IQ4_XS
//! (256), whose codes index 16 fixed levels ([`IQ4_VALUES`]). Every type has:
//!
//! - its parameters ([`BlockParams`]) and codes, packed into the block's bytes exactly as ggml
//!   lays them out ([`pack`]), and the block's decoder ([`dequantize_rows`], bit for bit ggml's
//!   `dequantize_row_*`);
//! - ggml's reference quantizer (`quantize_row_*_ref`; for the IQ4 types the `quantize_iq4_*`
//!   that llama-quantize runs), ported operation for operation ([`Rounding::Nearest`]);
//! - a search for the parameters with the least squared error, optionally weighted per input by
//!   its importance `E[x²]` ([`Rounding::Mse`], [`Rounding::Importance`]);
//! - the per-value quantizer GPTQ uses with parameters chosen inside its column sweep
//!   (`GgmlCodec`).
//!
//! Rows run along the last (input) axis, as in GGUF files; a row holds whole blocks.

// The reference quantizers are ports of ggml's C loops, index for index, so they can be read
// side by side with ggml-quants.c.
#![allow(clippy::needless_range_loop)]

use crate::affine::affine_search;
use crate::error::{Error, Result};
use crate::gptq::{self, ColumnCodec, GptqOptions};
use half::f16;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values per super-block of the K types.
pub const QK_K: usize = 256;
/// ggml's threshold below which a group is treated as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;
/// The largest scale the symmetric searches try, in units of the block's `amax / qmax`. Scales
/// above 1 leave the largest value off the grid's end but can fit the rest better; on MiniLM's
/// linears, widening this from 1.02 to 1.5 cut Q6_K's `mse` error from 0.91 to 0.85 of `nearest`
/// and Q8_0's from 0.83 to 0.76 (benches/kquant_bound.py, `make accuracy`).
const SEARCH_HI: f32 = 1.5;
/// Q8_0's 255 levels make every step of the sweep's interval cost many events; past 1.2 the
/// search took 1.4x longer on MiniLM for 0.001 of the error ratio.
const Q8_SEARCH_HI: f32 = 1.2;

/// A ggml block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    IQ4NL,
    IQ4XS,
}

/// Every type, in ggml's order.
pub const TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

// The block sizes of ggml-common.h (`static_assert(sizeof(block_q4_0) == ...)` there).
const _: () = assert!(GgmlType::Q4_0.type_size() == 2 + 32 / 2);
const _: () = assert!(GgmlType::Q4_1.type_size() == 2 * 2 + 32 / 2);
const _: () = assert!(GgmlType::Q5_0.type_size() == 2 + 4 + 32 / 2);
const _: () = assert!(GgmlType::Q5_1.type_size() == 2 * 2 + 4 + 32 / 2);
const _: () = assert!(GgmlType::Q8_0.type_size() == 2 + 32);
const _: () = assert!(GgmlType::Q2K.type_size() == QK_K / 16 + QK_K / 4 + 2 * 2);
const _: () = assert!(GgmlType::Q3K.type_size() == QK_K / 8 + QK_K / 4 + 12 + 2);
const _: () = assert!(GgmlType::Q4K.type_size() == 2 * 2 + 12 + QK_K / 2);
const _: () = assert!(GgmlType::Q5K.type_size() == 2 * 2 + 12 + QK_K / 8 + QK_K / 2);
const _: () = assert!(GgmlType::Q6K.type_size() == 2 + QK_K / 16 + 3 * QK_K / 4);
const _: () = assert!(GgmlType::IQ4NL.type_size() == 2 + 32 / 2);
const _: () = assert!(GgmlType::IQ4XS.type_size() == 2 + 2 + QK_K / 64 + QK_K / 2);

/// IQ4_NL's and IQ4_XS's 16 levels (`kvalues_iq4nl`): a grid denser near zero, where most of a
/// bell-shaped block's values are, than the evenly spaced levels of Q4_0.
pub const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

impl GgmlType {
    /// Parses `q4_0`, `Q4_K`, ... (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "q8_0" => GgmlType::Q8_0,
            "q4_0" => GgmlType::Q4_0,
            "q4_1" => GgmlType::Q4_1,
            "q5_0" => GgmlType::Q5_0,
            "q5_1" => GgmlType::Q5_1,
            "q2_k" => GgmlType::Q2K,
            "q3_k" => GgmlType::Q3K,
            "q4_k" => GgmlType::Q4K,
            "q5_k" => GgmlType::Q5K,
            "q6_k" => GgmlType::Q6K,
            "iq4_nl" => GgmlType::IQ4NL,
            "iq4_xs" => GgmlType::IQ4XS,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown ggml type {other:?}; expected q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl or iq4_xs"
                )))
            }
        })
    }

    /// ggml's name (`Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::IQ4NL => "IQ4_NL",
            GgmlType::IQ4XS => "IQ4_XS",
        }
    }

    /// The `ggml_type` enum value (GGUF's tensor type field).
    pub fn ggml_id(self) -> u32 {
        match self {
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::IQ4NL => 20,
            GgmlType::IQ4XS => 23,
        }
    }

    /// Values per block.
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::IQ4XS => QK_K,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
            GgmlType::IQ4NL => 18,
            GgmlType::IQ4XS => 136,
        }
    }

    /// Bits a weight, block parameters included.
    pub fn bits_per_weight(self) -> f64 {
        8.0 * self.type_size() as f64 / self.block_size() as f64
    }

    /// The affine K types' values per sub-block (one scale and min each): Q2_K 16, Q4_K/Q5_K 32.
    const fn affine_sub(self) -> usize {
        if matches!(self, GgmlType::Q2K) {
            16
        } else {
            32
        }
    }

    /// The symmetric K types' code offset: stored codes `0..2h` are the integers `-h..h`
    /// (Q3_K 4, Q6_K 32).
    const fn half_codes(self) -> i32 {
        (self.max_code() + 1) / 2
    }

    /// The symmetric K types' range of sub-block scales (signed, 6 bits for Q3_K and IQ4_XS, 8
    /// for Q6_K).
    const fn sub_scales(self) -> (i32, i32) {
        if matches!(self, GgmlType::Q3K | GgmlType::IQ4XS) {
            (-32, 31)
        } else {
            (-128, 127)
        }
    }

    /// The largest magnitude a block can hold: float16's largest scale times the largest code
    /// (and sub-scale) the grid has. No parameters hold a larger value, and an encoder asked to
    /// would store garbage (an infinite scale, or a search that clips it to nothing).
    pub fn max_magnitude(self) -> f32 {
        let steps = match self {
            GgmlType::Q8_0 => 128,
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 | GgmlType::Q4_1 => 16,
            GgmlType::Q5_1 => 32,
            GgmlType::Q2K => 15 * 3,
            GgmlType::Q3K => 32 * 4,
            GgmlType::Q4K => 63 * 15,
            GgmlType::Q5K => 63 * 31,
            GgmlType::Q6K => 128 * 32,
            GgmlType::IQ4NL => 127,
            GgmlType::IQ4XS => 32 * 127,
        };
        65504.0 * steps as f32
    }

    /// Code range `0..=max` as stored.
    const fn max_code(self) -> i32 {
        match self {
            GgmlType::Q8_0 => 255,
            GgmlType::Q2K => 3,
            GgmlType::Q3K => 7,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K | GgmlType::IQ4NL | GgmlType::IQ4XS => 15,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => 31,
            GgmlType::Q6K => 63,
        }
    }
}

/// How a block's parameters and codes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// ggml's reference quantizer, bit for bit.
    Nearest,
    /// The parameters with the least squared error, searched per block.
    Mse,
    /// The same search with each value's error weighted by its input's importance.
    Importance,
}

impl Rounding {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "nearest" => Ok(Rounding::Nearest),
            "mse" => Ok(Rounding::Mse),
            "importance" => Ok(Rounding::Importance),
            other => Err(Error::Invalid(format!(
                "unknown rounding {other:?}; expected nearest, mse or importance"
            ))),
        }
    }
}

/// A block's parameters as stored (the float16 ones as f32 values), so that decoding with them
/// reproduces the file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockParams {
    /// Scale (`d`); for the K types the super-block scale.
    pub d: f32,
    /// Q4_1 / Q5_1: the minimum `m`; Q2_K / Q4_K / Q5_K: the super-block `dmin`.
    pub m: f32,
    /// K types: the sub-blocks' scales (Q2_K: 16 of 4 bits; Q3_K: 16 of 6 bits, each the signed
    /// scale plus 32; Q4_K / Q5_K: 8 of 6 bits; Q6_K: 16 int8 scales, stored as u8; IQ4_XS: 8 of
    /// 6 bits, each the signed scale plus 32).
    pub sc: [u8; 16],
    /// Q2_K / Q4_K / Q5_K: the sub-blocks' mins (Q2_K: 16 of 4 bits; 8 of 6 bits).
    pub mn: [u8; 16],
}

#[inline(always)]
fn f16r(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// ggml's `nearest_int`: round half to even via the float's bits (exact for |v| < 2^22).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let val = v + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// A float converted to an integer as ggml's C code does on x86 (`cvttss2si`): truncated toward
/// zero, and `i32::MIN` where the value is out of range or NaN (as when a block of values near
/// 1e-44 makes the inverse scale infinite). Also what vectorizes: one `cvttps2dq`, where Rust's
/// saturating `as` adds fix-ups. The C stores then keep the low byte (`as i8` / `as u8`).
#[inline(always)]
fn c_trunc(v: f32) -> i32 {
    if v.abs() < 2_147_483_648.0 {
        // SAFETY: finite and within i32's range, just checked.
        unsafe { v.to_int_unchecked::<i32>() }
    } else {
        i32::MIN
    }
}

/// C's `roundf` (half away from zero) for `|v| < 2^31`, the range of ggml's codes: the truncation
/// is one conversion instruction, where `f32::round` is a libm call on baseline x86-64.
#[inline(always)]
fn roundf(v: f32) -> f32 {
    let t = c_trunc(v) as f32; // truncation; `v - t`, the fraction, is exact
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

// ------------------------------------------------------------------ value <-> code

/// Reconstructed value of code `q` (as stored, `0..=max_code`) at position `k` of its block.
#[inline(always)]
pub fn decode_value(ty: GgmlType, p: &BlockParams, k: usize, q: i32) -> f32 {
    match ty {
        GgmlType::Q8_0 => (q as u8 as i8) as f32 * p.d,
        GgmlType::Q4_0 => p.d * (q - 8) as f32,
        GgmlType::Q5_0 => p.d * (q - 16) as f32,
        GgmlType::Q4_1 | GgmlType::Q5_1 => p.d * q as f32 + p.m,
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => {
            let j = k / ty.affine_sub();
            (p.d * p.sc[j] as f32) * q as f32 - p.m * p.mn[j] as f32
        }
        GgmlType::Q3K | GgmlType::Q6K => sub_step(ty, p, k / 16) * (q - ty.half_codes()) as f32,
        GgmlType::IQ4NL => p.d * IQ4_VALUES[q as usize & 15] as f32,
        GgmlType::IQ4XS => sub_step(ty, p, k / 32) * IQ4_VALUES[q as usize & 15] as f32,
    }
}

/// The stored code nearest to `v` at position `k` with parameters `p` (round half to even, clamped).
#[inline(always)]
pub fn encode_value(ty: GgmlType, p: &BlockParams, k: usize, v: f32) -> i32 {
    let clamp = |q: i32| q.clamp(0, ty.max_code());
    match ty {
        GgmlType::Q8_0 => {
            let q = if p.d == 0.0 { 0 } else { nearest_int(v / p.d).clamp(-128, 127) };
            q as i8 as u8 as i32
        }
        GgmlType::Q4_0 => {
            if p.d == 0.0 {
                8
            } else {
                clamp(nearest_int(v / p.d) + 8)
            }
        }
        GgmlType::Q5_0 => {
            if p.d == 0.0 {
                16
            } else {
                clamp(nearest_int(v / p.d) + 16)
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            if p.d == 0.0 {
                0
            } else {
                clamp(nearest_int((v - p.m) / p.d))
            }
        }
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => {
            let j = k / ty.affine_sub();
            let (d, dm) = (p.d * p.sc[j] as f32, p.m * p.mn[j] as f32);
            if d == 0.0 {
                0
            } else {
                clamp(nearest_int((v + dm) / d))
            }
        }
        GgmlType::Q3K | GgmlType::Q6K => {
            let (d, h) = (sub_step(ty, p, k / 16), ty.half_codes());
            if d == 0.0 {
                h
            } else {
                nearest_int(v / d).clamp(-h, h - 1) + h
            }
        }
        GgmlType::IQ4NL => iq4_code(v, p.d) as i32,
        GgmlType::IQ4XS => iq4_code(v, sub_step(ty, p, k / 32)) as i32,
    }
}

/// The midpoints of neighbouring IQ4 levels. ggml's `best_index_int8` picks level `k + 1` over
/// `k` where `!(y - k_lo < k_hi - y)`: both sides are monotone in `y` and equal at the midpoint,
/// so that holds exactly from the midpoint up (and for NaN), which is `!(y < mid)`; a test
/// checks every midpoint and the floats beside it against ggml's search.
const IQ4_MIDS: [f32; 15] = {
    let mut m = [0f32; 15];
    let mut k = 0;
    while k < 15 {
        m[k] = (IQ4_VALUES[k] as f32 + IQ4_VALUES[k + 1] as f32) / 2.0;
        k += 1;
    }
    m
};

/// ggml's `best_index_int8` for the IQ4 levels: the level nearest to `y` (the upper one of two
/// equally near; the ends past the grid; 15 for NaN), as the count of midpoints `y` is not
/// below: no branches, no table.
#[inline(always)]
fn iq4_index(y: f32) -> usize {
    IQ4_MIDS.iter().map(|&m| not_below(y, m) as usize).sum()
}

/// `!(y < m)`: also true for NaN, which ggml's search puts at the top level.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn not_below(y: f32, m: f32) -> bool {
    !(y < m)
}

/// The levels [`iq4_index`] picks for the values `y`, as floats, into `out` (as long): the lowest
/// level plus the step past every midpoint a value is not below (sums of small integers, exact).
/// A midpoint at a time over all the values: loops that vectorize, where a value at a time over
/// the fifteen midpoints compiled to scalar code.
#[inline(always)]
fn iq4_levels(y: &[f32], out: &mut [f32]) {
    out.fill(IQ4_VALUES[0] as f32);
    for k in 0..15 {
        let (m, step) = (IQ4_MIDS[k], (IQ4_VALUES[k + 1] - IQ4_VALUES[k]) as f32);
        for (o, &y) in out.iter_mut().zip(y) {
            *o += if not_below(y, m) { step } else { 0.0 };
        }
    }
}

/// [`iq4_levels`] of `f` of each of 32 values.
#[inline(always)]
fn levels32(x: &[f32], f: impl Fn(f32) -> f32) -> [f32; 32] {
    let y: [f32; 32] = std::array::from_fn(|i| f(x[i]));
    let mut q = [0f32; 32];
    iq4_levels(&y, &mut q);
    q
}

/// The IQ4 code of `v` at step `d`: the level nearest to `v / d` (8, the level 1 nearest to 0,
/// where `d` is 0, as ggml codes an all-zero block).
#[inline(always)]
fn iq4_code(v: f32, d: f32) -> usize {
    if d == 0.0 {
        8
    } else {
        iq4_index(v / d)
    }
}

/// The signed scale of sub-block `j` (of 16 values; 32 for IQ4_XS) of the symmetric K types, as
/// stored.
#[inline(always)]
fn sub_scale(ty: GgmlType, p: &BlockParams, j: usize) -> i32 {
    if matches!(ty, GgmlType::Q3K | GgmlType::IQ4XS) {
        p.sc[j] as i32 - 32
    } else {
        (p.sc[j] as i8) as i32
    }
}

/// Stores `s` (within [`GgmlType::sub_scales`]) as sub-block `j`'s scale.
#[inline(always)]
fn set_sub_scale(ty: GgmlType, p: &mut BlockParams, j: usize, s: i32) {
    p.sc[j] = if matches!(ty, GgmlType::Q3K | GgmlType::IQ4XS) { (s + 32) as u8 } else { s as i8 as u8 };
}

/// The step of sub-block `j` of the symmetric K types: `d` times its scale, as ggml multiplies.
#[inline(always)]
fn sub_step(ty: GgmlType, p: &BlockParams, j: usize) -> f32 {
    p.d * sub_scale(ty, p, j) as f32
}

// ------------------------------------------------------------------ packing

#[inline(always)]
fn put_f16(out: &mut [u8], v: f32) {
    out.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

#[inline(always)]
fn get_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 12 bytes of eight 6-bit scales and mins (ggml's `get_scale_min_k4` order).
fn pack_scales_k4(sc: &[u8; 16], mn: &[u8; 16], out: &mut [u8]) {
    out[..12].fill(0);
    for j in 0..8 {
        let (ls, lm) = (sc[j].min(63), mn[j].min(63));
        if j < 4 {
            out[j] = ls;
            out[j + 4] = lm;
        } else {
            out[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            out[j - 4] |= (ls >> 4) << 6;
            out[j] |= (lm >> 4) << 6;
        }
    }
}

fn unpack_scales_k4(q: &[u8]) -> ([u8; 16], [u8; 16]) {
    let (mut sc, mut mn) = ([0u8; 16], [0u8; 16]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = q[j] & 63;
            mn[j] = q[j + 4] & 63;
        } else {
            sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            mn[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }
    (sc, mn)
}

/// Where Q2_K and Q3_K keep the low two bits of value `k` of a super-block in their 64 bytes of
/// `qs`: byte `32 (k / 128) + k % 32`, bits `2 (k / 32 % 4)` up.
#[inline(always)]
fn crumb_at(k: usize) -> (usize, usize) {
    (32 * (k / 128) + k % 32, 2 * (k / 32 % 4))
}

/// The low two bits of the 256 codes `l` into `qs` ([`crumb_at`]).
fn pack_crumbs(l: &[u8], qs: &mut [u8]) {
    qs[..64].fill(0);
    for (k, &q) in l[..QK_K].iter().enumerate() {
        let (b, s) = crumb_at(k);
        qs[b] |= (q & 3) << s;
    }
}

/// The 12 bytes of Q3_K's sixteen 6-bit scales: the low nibbles of scales `j` and `j + 8` in byte
/// `j`, the high two bits of scale `j` at bit `2 (j / 4)` of byte `8 + j % 4` (ggml's order).
fn pack_scales_q3(sc: &[u8; 16], out: &mut [u8]) {
    out[..12].fill(0);
    for (j, &l) in sc.iter().enumerate() {
        if j < 8 {
            out[j] = l & 0xF;
        } else {
            out[j - 8] |= (l & 0xF) << 4;
        }
        out[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
}

fn unpack_scales_q3(q: &[u8]) -> [u8; 16] {
    std::array::from_fn(|j| {
        let lo = if j < 8 { q[j] & 0xF } else { q[j - 8] >> 4 };
        lo | ((q[8 + j % 4] >> (2 * (j / 4))) & 3) << 4
    })
}

/// `out[i] = lo[i] & 0xF | hi[i] << 4` (the high nibble's extra bits, ggml's 5th bit, dropped),
/// written over zipped slices so that it compiles to vector instructions without bound checks.
#[inline(always)]
fn pack_nibbles(lo: &[u8], hi: &[u8], out: &mut [u8]) {
    for (o, (&a, &b)) in out.iter_mut().zip(lo.iter().zip(hi)) {
        *o = (a & 0xF) | (b << 4);
    }
}

/// Packs one block: parameters `p` (f16 ones rounded on the way) and stored codes `l`
/// (`block_size` values, `0..=max_code`) into `out` (`type_size` bytes).
#[inline(always)]
pub fn pack(ty: GgmlType, p: &BlockParams, l: &[u8], out: &mut [u8]) {
    match ty {
        GgmlType::Q8_0 => {
            put_f16(&mut out[..2], p.d);
            out[2..34].copy_from_slice(&l[..32]);
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let off = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            put_f16(&mut out[..2], p.d);
            if ty == GgmlType::Q4_1 {
                put_f16(&mut out[2..4], p.m);
            }
            pack_nibbles(&l[..16], &l[16..32], &mut out[off..off + 16]);
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let off = if ty == GgmlType::Q5_1 { 4 } else { 2 };
            put_f16(&mut out[..2], p.d);
            if ty == GgmlType::Q5_1 {
                put_f16(&mut out[2..4], p.m);
            }
            let qh = (0..32).fold(0u32, |h, j| h | (((l[j] >> 4) as u32 & 1) << j));
            out[off..off + 4].copy_from_slice(&qh.to_le_bytes());
            pack_nibbles(&l[..16], &l[16..32], &mut out[off + 4..off + 20]);
        }
        GgmlType::Q2K => {
            // A 4-bit scale and min per 16 values in a byte; codes 0..=3 as Q3_K's low two bits.
            let (scales, rest) = out.split_at_mut(16);
            for (o, (&a, &b)) in scales.iter_mut().zip(p.sc.iter().zip(&p.mn)) {
                *o = (a & 0xF) | (b << 4);
            }
            pack_crumbs(l, rest);
            put_f16(&mut rest[64..66], p.d);
            put_f16(&mut rest[66..68], p.m);
        }
        GgmlType::Q3K => {
            // Codes 0..=7: the third bit in `hmask` (value k at bit k / 32 of byte k % 32), the
            // low two in `qs` ([`crumb_at`]).
            let (hmask, rest) = out.split_at_mut(32);
            let (qs, rest) = rest.split_at_mut(64);
            hmask.fill(0);
            for (k, &q) in l[..QK_K].iter().enumerate() {
                hmask[k % 32] |= (q >> 2 & 1) << (k / 32);
            }
            pack_crumbs(l, qs);
            pack_scales_q3(&p.sc, &mut rest[..12]);
            put_f16(&mut rest[12..14], p.d);
        }
        GgmlType::Q4K => {
            put_f16(&mut out[..2], p.d);
            put_f16(&mut out[2..4], p.m);
            pack_scales_k4(&p.sc, &p.mn, &mut out[4..16]);
            for (q, lc) in out[16..144].chunks_exact_mut(32).zip(l.chunks_exact(64)) {
                pack_nibbles(&lc[..32], &lc[32..], q);
            }
        }
        GgmlType::Q5K => {
            put_f16(&mut out[..2], p.d);
            put_f16(&mut out[2..4], p.m);
            pack_scales_k4(&p.sc, &p.mn, &mut out[4..16]);
            let (qh, ql) = out[16..176].split_at_mut(32);
            qh.fill(0);
            for c in 0..4 {
                let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
                for i in 0..32 {
                    let (mut l1, mut l2) = (l[64 * c + i], l[64 * c + i + 32]);
                    if l1 > 15 {
                        l1 -= 16;
                        qh[i] |= m1;
                    }
                    if l2 > 15 {
                        l2 -= 16;
                        qh[i] |= m2;
                    }
                    ql[32 * c + i] = l1 | (l2 << 4);
                }
            }
        }
        GgmlType::Q6K => {
            let (ql, rest) = out.split_at_mut(128);
            let (qh, rest) = rest.split_at_mut(64);
            let (sc, d) = rest.split_at_mut(16);
            for half in 0..2 {
                let (j, ql, qh) = (128 * half, &mut ql[64 * half..], &mut qh[32 * half..]);
                for i in 0..32 {
                    let (q1, q2, q3, q4) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
                    ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                    ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                    qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                }
            }
            sc.copy_from_slice(&p.sc);
            put_f16(d, p.d);
        }
        GgmlType::IQ4NL => {
            put_f16(&mut out[..2], p.d);
            pack_nibbles(&l[..16], &l[16..32], &mut out[2..18]);
        }
        GgmlType::IQ4XS => {
            // Each sub-block's 6-bit scale: the low four bits in `scales_l` (two a byte), the
            // high two in `scales_h` (a u16, two bits a sub-block).
            put_f16(&mut out[..2], p.d);
            let (mut high, mut low) = (0u16, [0u8; 4]);
            for (ib, &s) in p.sc[..8].iter().enumerate() {
                low[ib / 2] |= (s & 0xF) << (4 * (ib % 2));
                high |= ((s >> 4) as u16 & 3) << (2 * ib);
            }
            out[2..4].copy_from_slice(&high.to_le_bytes());
            out[4..8].copy_from_slice(&low);
            for (q, lc) in out[8..136].chunks_exact_mut(16).zip(l.chunks_exact(32)) {
                pack_nibbles(&lc[..16], &lc[16..], q);
            }
        }
    }
}

/// The 32 values of a Q4/Q5 block: values `j` and `j + 16` from byte `j`'s low and high nibbles
/// of `qs` (16 bytes), with bits `j` and `j + 16` of `qh` as their fifth bits (Q5; 0 for Q4).
/// One loop a type, without bounds checks, so that it vectorizes.
#[inline(always)]
fn decode_nibbles(out: &mut [f32], qs: &[u8], qh: u32, value: impl Fn(i32) -> f32) {
    let (Ok(out), Ok(qs)) = (<&mut [f32; 32]>::try_from(out), <&[u8; 16]>::try_from(qs)) else {
        unreachable!("a Q4/Q5 block is 32 values of 16 code bytes")
    };
    for j in 0..16 {
        let lo = (qs[j] & 0xF) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        (out[j], out[j + 16]) = (value(lo as i32), value(hi as i32));
    }
}

/// Decodes one block into `out` (`block_size` values), in ggml's arithmetic order.
#[inline(always)]
pub fn decode_block(ty: GgmlType, b: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::Q8_0 => {
            let d = get_f16(b);
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                *o = (q as i8) as f32 * d;
            }
        }
        GgmlType::Q4_0 => {
            let d = get_f16(b);
            decode_nibbles(out, &b[2..18], 0, |q| d * (q - 8) as f32);
        }
        GgmlType::Q4_1 => {
            let (d, m) = (get_f16(b), get_f16(&b[2..]));
            decode_nibbles(out, &b[4..20], 0, |q| d * q as f32 + m);
        }
        GgmlType::Q5_0 => {
            let d = get_f16(b);
            decode_nibbles(out, &b[6..22], u32::from_le_bytes([b[2], b[3], b[4], b[5]]), |q| {
                d * (q - 16) as f32
            });
        }
        GgmlType::Q5_1 => {
            let (d, m) = (get_f16(b), get_f16(&b[2..]));
            decode_nibbles(out, &b[8..24], u32::from_le_bytes([b[4], b[5], b[6], b[7]]), |q| {
                d * q as f32 + m
            });
        }
        GgmlType::Q2K => {
            let (scales, qs) = (&b[..16], &b[16..80]);
            let (d, dmin) = (get_f16(&b[80..]), get_f16(&b[82..]));
            let dl: [f32; 16] = std::array::from_fn(|j| d * (scales[j] & 0xF) as f32);
            let ml: [f32; 16] = std::array::from_fn(|j| dmin * (scales[j] >> 4) as f32);
            // Runs of 32 values share their bytes' shift ([`crumb_at`]): loops that vectorize.
            for (c, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
                let (b0, sh) = crumb_at(32 * c);
                for (i, o) in o.iter_mut().enumerate() {
                    let j = 2 * c + i / 16;
                    *o = dl[j] * ((qs[b0 + i] >> sh) & 3) as f32 - ml[j];
                }
            }
        }
        GgmlType::Q3K => {
            let (hmask, qs, sc) = (&b[..32], &b[32..96], unpack_scales_q3(&b[96..108]));
            let d = get_f16(&b[108..]);
            let dl: [f32; 16] = std::array::from_fn(|j| d * (sc[j] as i32 - 32) as f32);
            // The low two bits, less 4 where the value's bit in `hmask` (bit k / 32 of byte
            // k % 32) is clear; runs of 32 values as for Q2_K.
            for (c, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
                let (b0, sh) = crumb_at(32 * c);
                for (i, o) in o.iter_mut().enumerate() {
                    let high = (hmask[i] >> c) & 1;
                    let q = ((qs[b0 + i] >> sh) & 3) as i32 - if high != 0 { 0 } else { 4 };
                    *o = dl[2 * c + i / 16] * q as f32;
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (get_f16(b), get_f16(&b[2..]));
            let (sc, mn) = unpack_scales_k4(&b[4..16]);
            let (qh, ql) =
                if ty == GgmlType::Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for c in 0..4 {
                let (d1, m1) = (d * sc[2 * c] as f32, dmin * mn[2 * c] as f32);
                let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * mn[2 * c + 1] as f32);
                for i in 0..32 {
                    let q = ql[32 * c + i];
                    let (mut lo, mut hi) = ((q & 0xF) as u32, (q >> 4) as u32);
                    if ty == GgmlType::Q5K {
                        lo += if qh[i] & (1 << (2 * c)) != 0 { 16 } else { 0 };
                        hi += if qh[i] & (2 << (2 * c)) != 0 { 16 } else { 0 };
                    }
                    out[64 * c + i] = d1 * lo as f32 - m1;
                    out[64 * c + i + 32] = d2 * hi as f32 - m2;
                }
            }
        }
        GgmlType::Q6K => {
            let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
            let d = get_f16(&b[208..]);
            for half in 0..2 {
                let (ql, qh, sc, y) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..], 128 * half);
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    out[y + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    out[y + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    out[y + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    out[y + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        GgmlType::IQ4NL => {
            let d = get_f16(b);
            decode_nibbles(out, &b[2..18], 0, |q| d * IQ4_VALUES[q as usize & 15] as f32);
        }
        GgmlType::IQ4XS => {
            let d = get_f16(b);
            let high = u16::from_le_bytes([b[2], b[3]]);
            for (ib, (o, qs)) in out[..QK_K].chunks_exact_mut(32).zip(b[8..136].chunks_exact(16)).enumerate()
            {
                let ls =
                    ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | (((high >> (2 * ib)) & 3) << 4) as i32;
                let dl = d * (ls - 32) as f32;
                decode_nibbles(o, qs, 0, |q| dl * IQ4_VALUES[q as usize & 15] as f32);
            }
        }
    }
}

// ------------------------------------------------------------------ ggml's reference quantizers

/// ggml's `quantize_row_iq4_nl_impl` as llama-quantize runs it without an importance matrix
/// (`quantize_iq4_nl`, `quantize_iq4_xs`: each value weighted by its square, `ntry` 7) for an
/// IQ4_NL block (one sub-block of 32) or an IQ4_XS one (eight, with 6-bit sub-scales of one
/// float16 scale). Each sub-block's scale is the best least-squares fit of 16 tries that put its
/// largest magnitude at or near the grid's -127 end. (ggml's `quantize_row_iq4_nl_ref` runs no
/// tries; llama-quantize's files are what users have, so `nearest` is them, bit for bit.)
#[inline(always)]
fn iq4_ref(x: &[f32], l: &mut [u8]) -> BlockParams {
    if x.len() == QK_K {
        // IQ4_XS: the eight sub-blocks side by side.
        let xt: [[f32; 8]; 32] = std::array::from_fn(|j| std::array::from_fn(|b| x[32 * b + j]));
        return iq4_finish(x, &iq4_scales(&xt), l);
    }
    let xt: [[f32; 1]; 32] = std::array::from_fn(|j| [x[j]]);
    iq4_finish(x, &iq4_scales(&xt), l)
}

/// The scales ggml's IQ4 search picks for `N` sub-blocks of 32 side by side (value `j` of
/// sub-block `b` at `xt[j][b]`; 0 for a sub-block of (near) zeros). Each sub-block's sums run in
/// ggml's order, value by value, so the scales are ggml's bit for bit; with `N = 8` the eight
/// chains of sums run in vector lanes at once (a sub-block's sums chain every value to the
/// previous one, which bounds one sub-block at a time).
#[inline(always)]
fn iq4_scales<const N: usize>(xt: &[[f32; N]; 32]) -> [f32; N] {
    const NTRY: i32 = 7;
    let (mut amax, mut max) = ([0f32; N], [0f32; N]);
    for row in xt {
        for b in 0..N {
            if row[b].abs() > amax[b] {
                (amax[b], max[b]) = (row[b].abs(), row[b]);
            }
        }
    }
    let level0 = IQ4_VALUES[0] as f32;
    let (sumqx, sumq2) = iq4_sums(xt, &std::array::from_fn(|b| 1.0 / (-max[b] / level0)));
    let mut d: [f32; N] = std::array::from_fn(|b| if sumq2[b] > 0.0 { sumqx[b] / sumq2[b] } else { 0.0 });
    let mut best: [f32; N] = std::array::from_fn(|b| d[b] * sumqx[b]);
    for itry in -NTRY..=NTRY {
        let id = std::array::from_fn(|b| (itry + IQ4_VALUES[0] as i32) as f32 / max[b]);
        let (sumqx, sumq2) = iq4_sums(xt, &id);
        for b in 0..N {
            if sumq2[b] > 0.0 && sumqx[b] * sumqx[b] > best[b] * sumq2[b] {
                d[b] = sumqx[b] / sumq2[b];
                best[b] = d[b] * sumqx[b];
            }
        }
    }
    std::array::from_fn(|b| if amax[b] < GROUP_MAX_EPS { 0.0 } else { d[b] })
}

/// [`iq4_scales`]' weighted sums of the levels at inverse scales `id`: each value weighted by its
/// square, in ggml's order of operations (the levels first, all at once, in loops that vectorize).
#[inline(always)]
fn iq4_sums<const N: usize>(xt: &[[f32; N]; 32], id: &[f32; N]) -> ([f32; N], [f32; N]) {
    let y: [[f32; N]; 32] = std::array::from_fn(|j| std::array::from_fn(|b| id[b] * xt[j][b]));
    let mut q = [[0f32; N]; 32];
    // SAFETY: an array of arrays is its 32·N floats in a row, without padding.
    let (yf, qf) = unsafe {
        (
            std::slice::from_raw_parts(y.as_ptr() as *const f32, 32 * N),
            std::slice::from_raw_parts_mut(q.as_mut_ptr() as *mut f32, 32 * N),
        )
    };
    iq4_levels(yf, qf);
    let (mut sumqx, mut sumq2) = ([0f32; N], [0f32; N]);
    for (row, q) in xt.iter().zip(&q) {
        for b in 0..N {
            let (v, q) = (row[b], q[b]);
            let w = v * v;
            sumqx[b] += w * q * v;
            sumq2[b] += w * q * q;
        }
    }
    (sumqx, sumq2)
}

/// The rest of [`iq4_ref`] for a block `x` whose sub-blocks have the scales `scales` (one for
/// IQ4_NL, eight for IQ4_XS): the stored parameters and the codes.
#[inline(always)]
fn iq4_finish(x: &[f32], scales: &[f32], l: &mut [u8]) -> BlockParams {
    let mut p = BlockParams::default();
    if scales.len() == 1 {
        p.d = f16r(scales[0]);
        let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
        for (o, &v) in l.iter_mut().zip(x) {
            *o = iq4_index(id * v) as u8;
        }
        return p;
    }
    // IQ4_XS: the largest sub-scale (the first of the largest magnitude) at -32; the codes follow
    // the unrounded scales, as ggml's do.
    let max_scale = scales.iter().fold(0f32, |m, &d| if d.abs() > m.abs() { d } else { m });
    let d = -max_scale / 32.0;
    p.d = f16r(d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (ib, (lb, xb)) in l.chunks_exact_mut(32).zip(x.chunks_exact(32)).enumerate() {
        let s = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * s as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for (o, &v) in lb.iter_mut().zip(xb) {
            *o = iq4_index(idl * v) as u8;
        }
        p.sc[ib] = (s + 32) as u8;
    }
    p
}

/// ggml's signed maximum of a block of 32: the first value of the largest magnitude (0 for an
/// all-zero block). The magnitude is found lane-wise, then its first holder from a bit mask of
/// equal lanes (compares and a mask, no branch per value: a search loop's mispredicted exit cost
/// as much as the rest of the block).
#[inline(always)]
fn signed_max(x: &[f32]) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        return 0.0;
    }
    let mut mask = 0u32;
    for (i, v) in x[..32].iter().enumerate() {
        mask |= ((v.abs() == amax) as u32) << i;
    }
    x[mask.trailing_zeros() as usize & 31]
}

/// The largest `|v|` of `x` (whole groups of 8 values), in 8 lanes that compile to vector maxima.
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    for c in x.chunks_exact(8) {
        for i in 0..8 {
            let a = c[i].abs();
            m[i] = if a > m[i] { a } else { m[i] };
        }
    }
    m.iter().fold(0f32, |a, &v| if v > a { v } else { a })
}

/// `(min, max)` of `x` (whole groups of 8 values) as ggml's sequential scan finds them: lane-wise,
/// then a zero result takes the sign of the scan's first zero (the only values equal but for
/// their bits).
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut mn, mut mx) = ([f32::MAX; 8], [-f32::MAX; 8]);
    for c in x.chunks_exact(8) {
        for i in 0..8 {
            mn[i] = if c[i] < mn[i] { c[i] } else { mn[i] };
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let mut min = mn.iter().fold(f32::MAX, |a, &v| if v < a { v } else { a });
    let mut max = mx.iter().fold(-f32::MAX, |a, &v| if v > a { v } else { a });
    let first_zero = || x.iter().copied().find(|&v| v == 0.0).unwrap_or(0.0);
    if min == 0.0 {
        min = first_zero();
    }
    if max == 0.0 {
        max = first_zero();
    }
    (min, max)
}

/// One block by ggml's `quantize_row_*_ref`: the stored parameters and codes.
#[inline(always)]
fn encode_ref(ty: GgmlType, x: &[f32], l: &mut [u8]) -> BlockParams {
    let mut p = BlockParams::default();
    match ty {
        GgmlType::Q8_0 => {
            let d = abs_max(x) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            p.d = f16r(d);
            for (o, &v) in l.iter_mut().zip(x) {
                *o = c_trunc(roundf(v * id)) as u8;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let (div, off, top) = if ty == GgmlType::Q4_0 { (-8.0, 8.5, 15) } else { (-16.0, 16.5, 31) };
            let d = signed_max(x) / div;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            p.d = f16r(d);
            for (o, &v) in l.iter_mut().zip(x) {
                *o = ((c_trunc(v * id + off) as i8) as i32).min(top) as u8;
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let (min, max) = min_max(x);
            let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
            let d = (max - min) / nmax as f32;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            (p.d, p.m) = (f16r(d), f16r(min));
            for (o, &v) in l.iter_mut().zip(x) {
                // Q4_1 truncates through int8 and caps at 15; Q5_1 through uint8 (never above 31).
                *o = if ty == GgmlType::Q4_1 {
                    ((c_trunc((v - min) * id + 0.5) as i8) as i32).min(15) as u8
                } else {
                    c_trunc((v - min) * id + 0.5) as u8
                };
            }
        }
        GgmlType::IQ4NL | GgmlType::IQ4XS => p = iq4_ref(x, l),
        GgmlType::Q4K | GgmlType::Q5K => {
            let (nmax, rmin, nstep) = if ty == GgmlType::Q4K { (15, -1.0, 20) } else { (31, -0.5, 15) };
            let mut w = [0f32; QK_K];
            for (ws, xs) in w.chunks_exact_mut(32).zip(x.chunks_exact(32)) {
                let mut sum_x2 = 0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                for (o, v) in ws.iter_mut().zip(xs) {
                    *o = av_x + v.abs();
                }
            }
            let (scales, mins) = make_qkx2_quants::<8, 32, false>(nmax, x, &w, l, rmin, 0.1, nstep);
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..8 {
                max_scale = if scales[j] > max_scale { scales[j] } else { max_scale };
                max_min = if mins[j] > max_min { mins[j] } else { max_min };
            }
            let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                p.sc[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                p.mn[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            (p.d, p.m) = (f16r(max_scale / 63.0), f16r(max_min / 63.0));
            for j in 0..8 {
                let d = p.d * p.sc[j] as f32;
                if d == 0.0 {
                    continue; // ggml keeps the codes found for the unquantized scale
                }
                let dm = p.m * p.mn[j] as f32;
                for i in 0..32 {
                    l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
                }
            }
        }
        GgmlType::Q2K => {
            let w: [f32; QK_K] = std::array::from_fn(|i| x[i].abs());
            let (scales, mins) = make_qkx2_quants::<16, 16, true>(3, x, &w, l, -0.5, 0.1, 15);
            let largest = |v: &[f32]| v.iter().fold(0f32, |a, &b| if b > a { b } else { a });
            let (max_scale, max_min) = (largest(&scales), largest(&mins));
            // ggml stores each scale's integer as a byte, then ORs the min's in above it.
            let mut bytes = [0u8; 16];
            if max_scale > 0.0 {
                let iscale = 15.0 / max_scale;
                for j in 0..16 {
                    bytes[j] = nearest_int(iscale * scales[j]) as u8;
                }
                p.d = f16r(max_scale / 15.0);
            }
            if max_min > 0.0 {
                let iscale = 15.0 / max_min;
                for j in 0..16 {
                    bytes[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                p.m = f16r(max_min / 15.0);
            }
            for j in 0..16 {
                (p.sc[j], p.mn[j]) = (bytes[j] & 0xF, bytes[j] >> 4);
                let d = p.d * p.sc[j] as f32;
                if d == 0.0 {
                    continue; // ggml keeps the codes found for the unquantized scale
                }
                let dm = p.m * p.mn[j] as f32;
                for i in 0..16 {
                    l[16 * j + i] = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3) as u8;
                }
            }
        }
        GgmlType::Q3K => {
            let mut scales = [0f32; 16];
            let (mut max_scale, mut amax) = (0f32, 0f32);
            for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
                scales[j] = make_q3_quants(4, xs, ls);
                if scales[j].abs() > amax {
                    (amax, max_scale) = (scales[j].abs(), scales[j]);
                }
            }
            // ggml leaves the scale bytes zero (each scale -32) when every sub-block is zero.
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..16 {
                    p.sc[j] = ((nearest_int(iscale * scales[j]) as i8 as i32).clamp(-32, 31) + 32) as u8;
                }
                p.d = f16r(1.0 / iscale);
            }
            for j in 0..16 {
                let d = sub_step(ty, &p, j);
                if d == 0.0 {
                    continue; // ggml keeps the codes found for the unquantized scale
                }
                for i in 0..16 {
                    l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-4, 3) + 4) as u8;
                }
            }
        }
        GgmlType::Q6K => {
            let scales = make_qx_quants_x16(32, x, l);
            let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
            for ib in 0..16 {
                if scales[ib].abs() > max_abs_scale {
                    max_abs_scale = scales[ib].abs();
                    max_scale = scales[ib];
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                // ggml zeroes the whole block: codes 0 (stored), scales 0, d 0.
                l.fill(0);
                return BlockParams::default();
            }
            let iscale = -128.0 / max_scale;
            p.d = f16r(1.0 / iscale);
            for ib in 0..16 {
                p.sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
            }
            for j in 0..16 {
                let d = p.d * (p.sc[j] as i8) as f32;
                if d == 0.0 {
                    continue;
                }
                for i in 0..16 {
                    l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as u8;
                }
            }
        }
    }
    p
}

/// ggml's `make_q3_quants` with `do_rmse` for one sub-block: a symmetric grid `-nmax..nmax-1`
/// from the value of largest magnitude, then up to five passes that move single codes while the
/// `x²`-weighted least-squares fit improves. Codes (plus `nmax`) in `l`; returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut q = [0i32; 16];
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let w = v * v;
        sumlx += w * v * *qi as f32;
        suml2 += w * *qi as f32 * *qi as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (qi, &v) in q.iter_mut().zip(x) {
            let w = v * v;
            let mut slx = sumlx - w * v * *qi as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * *qi as f32 * *qi as f32;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != *qi {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        (*qi, sumlx, suml2, changed) = (new, slx, sl2, true);
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &qi) in l.iter_mut().zip(&q) {
        *o = (qi + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's `make_qkx2_quants` for the `S` sub-blocks of `N` values of a K super-block at once
/// (Q4_K/Q5_K: 8 of 32; Q2_K: 16 of 16), one per lane: the scale and (negated) min of an affine
/// grid `0..=nmax` for each sub-block, least squares over `nstep + 1` candidate ranges (each
/// starting from the best so far, as in ggml), codes in `l`; a range's error sums weighted
/// absolute differences with `MAD` (ggml's `use_mad`, Q2_K's), else squares. Every lane runs
/// ggml's scalar loop in its own order, so each result is bit for bit the scalar one; side by
/// side, the lanes compile to vector instructions where one sub-block at a time was bound by the
/// latency of its running sums. `x`, `w`: 256 values. Returns `(scales, -mins)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants<const S: usize, const N: usize, const MAD: bool>(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([f32; S], [f32; S]) {
    let cost = |diff: f32| if MAD { diff.abs() } else { diff * diff };
    // Lane s holds sub-block s: xt[i][s] = x[32 s + i].
    let (mut xt, mut wt) = ([[0f32; S]; N], [[0f32; S]; N]);
    for s in 0..S {
        for i in 0..N {
            xt[i][s] = x[N * s + i];
            wt[i][s] = w[N * s + i];
        }
    }
    let (mut min, mut max, mut sum_w) = (xt[0], xt[0], wt[0]);
    let mut sum_x = [0f32; S];
    for s in 0..S {
        sum_x[s] = sum_w[s] * xt[0][s];
    }
    for i in 1..N {
        for s in 0..S {
            let v = xt[i][s];
            min[s] = if v < min[s] { v } else { min[s] };
            max[s] = if v > max[s] { v } else { max[s] };
            sum_w[s] += wt[i][s];
            sum_x[s] += wt[i][s] * v;
        }
    }
    let (mut scale, mut iscale, mut flat) = ([0f32; S], [0f32; S], [false; S]);
    for s in 0..S {
        if min[s] > 0.0 {
            min[s] = 0.0;
        }
        // ggml returns at once for a constant sub-block (codes 0, scale 0); its lane runs along
        // and is reset at the end.
        flat[s] = max[s] == min[s];
        iscale[s] = nmax as f32 / (max[s] - min[s]);
        scale[s] = 1.0 / iscale[s];
    }
    let min0 = min;
    let (mut lt, mut best_error) = ([[0u8; S]; N], [0f32; S]);
    for i in 0..N {
        for s in 0..S {
            let q = nearest_int(iscale[s] * (xt[i][s] - min[s])).clamp(0, nmax);
            lt[i][s] = q as u8;
            let diff = scale[s] * q as f32 + min[s] - xt[i][s];
            best_error[s] += wt[i][s] * cost(diff);
        }
    }
    let code = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    for is in 0..=nstep {
        for s in 0..S {
            iscale[s] = (rmin + rdelta * is as f32 + nmax as f32) / (max[s] - min[s]);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; S], [0f32; S], [0f32; S]);
        for i in 0..N {
            for s in 0..S {
                let qf = code(iscale[s], xt[i][s], min[s]) as f32;
                sum_l[s] += wt[i][s] * qf;
                sum_l2[s] += wt[i][s] * qf * qf;
                sum_xl[s] += wt[i][s] * qf * xt[i][s];
            }
        }
        let (mut this_scale, mut this_min, mut fits) = ([0f32; S], [0f32; S], [false; S]);
        for s in 0..S {
            let dd = sum_w[s] * sum_l2[s] - sum_l[s] * sum_l[s];
            fits[s] = dd > 0.0;
            this_scale[s] = (sum_w[s] * sum_xl[s] - sum_x[s] * sum_l[s]) / dd;
            this_min[s] = (sum_l2[s] * sum_x[s] - sum_l[s] * sum_xl[s]) / dd;
            if this_min[s] > 0.0 {
                this_min[s] = 0.0;
                this_scale[s] = sum_xl[s] / sum_l2[s];
            }
        }
        // The step's codes again (cheaper than keeping them: the lanes stay in registers).
        let mut cur_error = [0f32; S];
        for i in 0..N {
            for s in 0..S {
                let qf = code(iscale[s], xt[i][s], min[s]) as f32;
                let diff = this_scale[s] * qf + this_min[s] - xt[i][s];
                cur_error[s] += wt[i][s] * cost(diff);
            }
        }
        // Few lanes improve at a step: their codes are kept (computed with the step's min,
        // before it moves), the others' left alone.
        for s in 0..S {
            if !(fits[s] && cur_error[s] < best_error[s]) {
                continue;
            }
            for i in 0..N {
                lt[i][s] = code(iscale[s], xt[i][s], min[s]) as u8;
            }
            best_error[s] = cur_error[s];
            scale[s] = this_scale[s];
            min[s] = this_min[s];
        }
    }
    let mut neg_min = [0f32; S];
    for s in 0..S {
        if flat[s] {
            scale[s] = 0.0;
            min[s] = min0[s];
        }
        neg_min[s] = -min[s];
        for i in 0..N {
            l[N * s + i] = if flat[s] { 0 } else { lt[i][s] };
        }
    }
    (scale, neg_min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights `x²`) for the 16 sub-blocks of 16 of a
/// Q6_K super-block at once, one per lane: the scale of a symmetric grid `-nmax..nmax-1` for each
/// sub-block, the best of 19 candidates; codes (plus `nmax`) in `l`. As in
/// [`make_qkx2_quants`], each lane runs ggml's loop in its own order, so results are bit for
/// bit the scalar ones. `x`: 256 values. Returns the 16 scales.
#[inline(always)]
fn make_qx_quants_x16(nmax: i32, x: &[f32], l: &mut [u8]) -> [f32; 16] {
    const S: usize = 16;
    const N: usize = 16;
    let mut xt = [[0f32; S]; N];
    for s in 0..S {
        for i in 0..N {
            xt[i][s] = x[N * s + i];
        }
    }
    // The first value of the largest magnitude, as ggml's scan keeps it.
    let (mut max, mut amax) = ([0f32; S], [0f32; S]);
    for row in &xt {
        for s in 0..S {
            let a = row[s].abs();
            let gt = a > amax[s];
            amax[s] = if gt { a } else { amax[s] };
            max[s] = if gt { row[s] } else { max[s] };
        }
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let (mut iscale, mut sumlx, mut suml2) = ([0f32; S], [0f32; S], [0f32; S]);
    let mut lt = [[0u8; S]; N];
    for s in 0..S {
        iscale[s] = -(nmax as f32) / max[s];
    }
    for i in 0..N {
        for s in 0..S {
            let v = xt[i][s];
            let q = code(iscale[s], v);
            lt[i][s] = (q + nmax) as u8;
            let w = v * v;
            sumlx[s] += w * v * q as f32;
            suml2[s] += w * q as f32 * q as f32;
        }
    }
    let (mut scale, mut best) = ([0f32; S], [0f32; S]);
    for s in 0..S {
        scale[s] = if suml2[s] != 0.0 { sumlx[s] / suml2[s] } else { 0.0 };
        best[s] = scale[s] * sumlx[s];
    }
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        for s in 0..S {
            iscale[s] = -(nmax as f32 + 0.1 * is as f32) / max[s];
            sumlx[s] = 0.0;
            suml2[s] = 0.0;
        }
        for i in 0..N {
            for s in 0..S {
                let v = xt[i][s];
                let q = code(iscale[s], v) as f32;
                let w = v * v;
                sumlx[s] += w * v * q;
                suml2[s] += w * q * q;
            }
        }
        let mut better = [false; S];
        for s in 0..S {
            better[s] = suml2[s] > 0.0 && sumlx[s] * sumlx[s] > best[s] * suml2[s];
            if better[s] {
                scale[s] = sumlx[s] / suml2[s];
                best[s] = scale[s] * sumlx[s];
            }
        }
        // Few lanes improve at a step: their codes are recomputed, the others' left alone.
        for s in (0..S).filter(|&s| better[s]) {
            for i in 0..N {
                lt[i][s] = (code(iscale[s], xt[i][s]) + nmax) as u8;
            }
        }
    }
    for s in 0..S {
        // ggml returns 0 with codes 0 for a sub-block of (near) zeros; its lane ran along.
        let zero = amax[s] < GROUP_MAX_EPS;
        if zero {
            scale[s] = 0.0;
        }
        for i in 0..N {
            l[N * s + i] = if zero { 0 } else { lt[i][s] };
        }
    }
    scale
}

// ------------------------------------------------------------------ searched parameters

/// Weighted squared error of `x` coded with `p` (codes from [`encode_value`]): the sum of its
/// sub-blocks' [`range_error`] (the whole block for the types with one scale).
#[inline(always)]
fn block_error(ty: GgmlType, p: &BlockParams, x: &[f32], w: Option<&[f32]>) -> f32 {
    match ty {
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => {
            let sub = ty.affine_sub();
            (0..QK_K / sub).map(|j| range_error(ty, p, x, w, sub * j..sub * j + sub)).sum()
        }
        GgmlType::Q3K | GgmlType::Q6K => (0..16).map(|j| range_error(ty, p, x, w, 16 * j..16 * j + 16)).sum(),
        GgmlType::IQ4XS => (0..8).map(|j| range_error(ty, p, x, w, 32 * j..32 * j + 32)).sum(),
        _ => range_error(ty, p, x, w, 0..x.len()),
    }
}

/// Weighted squared error of sub-block `r` of `x` (positions in the block: whole sub-blocks of
/// the K types, the whole block for the others) coded with `p`: the terms of the per-value coder
/// ([`encode_value`], [`decode_value`]), summed in lanes ([`crate::simd::lane_sum`]) so that they
/// vectorize: the K-type searches call this for every sub-block at every candidate scale
/// (hundreds of calls a super-block), and the block error of the one-scale types was most of
/// their search.
#[inline(always)]
fn range_error(
    ty: GgmlType,
    p: &BlockParams,
    x: &[f32],
    w: Option<&[f32]>,
    r: std::ops::Range<usize>,
) -> f32 {
    // The range's step and offset, `value = d · q − dm` for codes `q` in `qmin..=qmax`
    // (as `decode_value` and `encode_value` spell them for these types; `x − (−m)` is `x + m`
    // exactly, and the one-scale types' stored codes are `q` shifted by a constant).
    let (d, dm, qmin, qmax) = match ty {
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => {
            let j = r.start / ty.affine_sub();
            (p.d * p.sc[j] as f32, p.m * p.mn[j] as f32, 0, ty.max_code())
        }
        GgmlType::Q3K | GgmlType::Q6K => {
            let h = ty.half_codes();
            (sub_step(ty, p, r.start / 16), 0.0, -h, h - 1)
        }
        GgmlType::Q8_0 => (p.d, 0.0, -128, 127),
        GgmlType::Q4_0 => (p.d, 0.0, -8, 7),
        GgmlType::Q5_0 => (p.d, 0.0, -16, 15),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (p.d, -p.m, 0, ty.max_code()),
        GgmlType::IQ4NL | GgmlType::IQ4XS => {
            let d = if ty == GgmlType::IQ4NL { p.d } else { sub_step(ty, p, r.start / 32) };
            return iq4_error(&x[r.clone()], w.map(|w| &w[r]), d);
        }
    };
    // With d = 0 every code decodes to −dm, whichever (finite, clamped) code the division gives:
    // `encode_value`'s zero code.
    let (xs, ws) = (&x[r.clone()], w.map(|w| &w[r]));
    #[cfg(target_arch = "x86_64")]
    if xs.len() % 8 == 0 && crate::simd::avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C; whole vectors, and `ws` as long as `xs`.
        return unsafe { crate::ggml_avx2::range_error(xs, ws, d, dm, qmin, qmax) };
    }
    coded_error(xs, ws, d, dm, qmin, qmax)
}

/// The terms of [`range_error`] for values `xs` on the grid `d · q − dm`, `q` in `qmin..=qmax`.
#[inline(always)]
fn coded_error(xs: &[f32], ws: Option<&[f32]>, d: f32, dm: f32, qmin: i32, qmax: i32) -> f32 {
    crate::simd::lane_sum(xs.len(), |i| {
        let v = xs[i];
        let e = v - (d * nearest_int((v + dm) / d).clamp(qmin, qmax) as f32 - dm);
        ws.map_or(1.0, |w| w[i]) * e * e
    })
}

/// The terms of [`range_error`] for values `xs` on the IQ4 levels at step `d`.
#[inline(always)]
fn iq4_error(xs: &[f32], ws: Option<&[f32]>, d: f32) -> f32 {
    debug_assert!(xs.len() == 32);
    // With d = 0 every value decodes to 0 ([`iq4_code`]'s zero code).
    let (q, d) = if d == 0.0 { ([0.0; 32], 0.0) } else { (levels32(xs, |v| v / d), d) };
    crate::simd::lane_sum(32, |i| {
        let e = xs[i] - d * q[i];
        ws.map_or(1.0, |w| w[i]) * e * e
    })
}

/// Refits the stored float16 scales of `p` by weighted least squares with the codes fixed
/// (`x ≈ d · a − dmin · b`, where `a`, `b` are what multiplies `d` and `dmin` at each position),
/// re-encodes, and keeps the refit while the error falls.
#[inline(always)]
fn refit(ty: GgmlType, p: &mut BlockParams, x: &[f32], w: Option<&[f32]>, mut err: f32) -> f32 {
    let with_min =
        matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K);
    for _ in 0..4 {
        // Coefficients of d and of the min term at each position under the current codes.
        let unit_d = BlockParams { d: 1.0, m: 0.0, ..*p };
        let unit_m = BlockParams { d: 0.0, m: 1.0, ..*p };
        let (mut saa, mut sab, mut sbb, mut sxa, mut sxb) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (k, &v) in x.iter().enumerate() {
            let q = encode_value(ty, p, k, v);
            let (a, b) = (decode_value(ty, &unit_d, k, q), decode_value(ty, &unit_m, k, q));
            let wk = w.map_or(1.0, |w| w[k]);
            saa += wk * a * a;
            sab += wk * a * b;
            sbb += wk * b * b;
            sxa += wk * v * a;
            sxb += wk * v * b;
        }
        let mut cand = *p;
        if with_min {
            let det = saa * sbb - sab * sab;
            if det <= 0.0 {
                break;
            }
            cand.d = f16r((sxa * sbb - sxb * sab) / det);
            cand.m = f16r((saa * sxb - sab * sxa) / det);
        } else {
            if saa <= 0.0 {
                break;
            }
            cand.d = f16r(sxa / saa);
        }
        let e = block_error(ty, &cand, x, w);
        if e.total_cmp(&err).is_ge() {
            break;
        }
        (*p, err) = (cand, e);
    }
    err
}

/// A `t = 1/d` past which [`symmetric_search`]'s sweep finds nothing better than before it.
///
/// Let `e0` be the error at `d0 = amax / q` (the largest magnitude at its end of the grid, which
/// has `q` codes that way); `d0` is inside every interval searched (`lo <= 1 <= hi`). Past the
/// returned `t`, some value `v` of weight `w` is saturated (`|v| t > q + 0.5`) and costs at least
/// `e0` on its own at every `d <= (|v| - sqrt(e0 / w)) / q`. Codes there are thus no better than
/// `e0` unless their least-squares `d` is larger, and then no better than the nearest codes at
/// that `d`, which the sweep before `t` covers where the best scale lies (that `d` stays below
/// `1.5 / t`, inside the interval for `hi >= 1.5`; Q8_0's 1.2 was checked). The blocks of
/// MiniLM's linears and of random tensors (mse, importance, GPTQ) came out byte-identical, and a
/// test compares the two sweeps; Q8_0 `mse` took 69 instead of 118 ns a weight, Q6_K 127 instead
/// of 172 (benches/gguf_rounding.py, 2 threads).
#[inline(always)]
fn clip_bound(x: &[f32], flip: f32, w: Option<&[f32]>, qmin: i32, qmax: i32, amax: f32) -> f32 {
    let end = |v: f32| if v > 0.0 { qmax as f32 } else { -(qmin as f32) };
    let big = x.iter().map(|&v| v * flip).fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
    let d0 = amax / end(big);
    let mut e0 = 0f64;
    for (i, &xv) in x.iter().enumerate() {
        let v = xv * flip;
        let q = roundf(v / d0).clamp(qmin as f32, qmax as f32);
        e0 += w.map_or(1.0, |w| w[i]) as f64 * ((v - d0 * q) as f64).powi(2);
    }
    let mut cap = f32::INFINITY;
    for (i, &xv) in x.iter().enumerate() {
        let (v, wi) = (xv * flip, w.map_or(1.0, |w| w[i]));
        if v == 0.0 || wi <= 0.0 {
            continue;
        }
        let (a, q) = (v.abs() as f64, end(v) as f64);
        let slack = (e0 / wi as f64).sqrt();
        let on_grid = (q + 0.5) / a;
        let t = if a > slack { on_grid.max(q / (a - slack)) } else { f64::INFINITY };
        cap = cap.min(t as f32);
    }
    // Rounding margin: the bound must not cut off the best scale's own events.
    cap * (1.0 + 1e-4)
}

/// The scale `d > 0` of the grid `qmin..=qmax` with the least weighted squared error for
/// `flip · x` among `d` from `lo · amax / -qmin` to `hi · amax / qmax`: exact over that interval.
/// As `t = 1/d` grows, each code `clamp(round(y t))` changes by one at known points; between them
/// the codes are fixed and the best `d` is the least-squares `Σ w y q / Σ w q²` with error
/// `Σ w y² − (Σ w y q)² / Σ w q²`. Sweeping the sorted change points keeps both sums up to date
/// in O(1) per point; they are float64, as the error is a small difference of two large terms.
/// Change points at the same `t` (values equal in magnitude, or in ratio) are applied together:
/// only the codes after all of them hold just beyond `t`, and so the result does not depend on
/// how the sort orders ties, nor on the order of the values. Each point is one `u64` (`t`'s bits
/// above the value's index; `t > 0`, so the bits sort as the floats do), a sort of plain integers
/// where tuples with a float comparison were a third of the search.
#[inline(always)]
fn symmetric_search(x: &[f32], flip: f32, w: Option<&[f32]>, qmin: i32, qmax: i32, lo: f32, hi: f32) -> f32 {
    debug_assert!(x.len() <= 32);
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let t_lo = qmax as f32 / (amax * hi);
    let t_hi = clip_bound(x, flip, w, qmin, qmax, amax).min(-(qmin as f32) / (amax * lo));
    sweep(x, flip, w, qmin, qmax, amax, t_lo, t_hi)
}

/// [`symmetric_search`]'s sweep of the change points in `t_lo..=t_hi`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sweep(
    x: &[f32],
    flip: f32,
    w: Option<&[f32]>,
    qmin: i32,
    qmax: i32,
    amax: f32,
    t_lo: f32,
    t_hi: f32,
) -> f32 {
    let (mut sxq, mut sqq) = (0f64, 0f64);
    let mut codes = [0i32; 32];
    let mut events: Vec<u64> = Vec::with_capacity(8 * x.len());
    for (i, &xv) in x.iter().enumerate() {
        let (v, wi) = (xv * flip, w.map_or(1.0, |w| w[i]));
        let q = roundf(v * t_lo).clamp(qmin as f32, qmax as f32) as i32;
        codes[i] = q;
        sxq += (wi * v) as f64 * q as f64;
        sqq += wi as f64 * (q * q) as f64;
        if v == 0.0 || wi == 0.0 {
            continue;
        }
        let end = if v > 0.0 { qmax } else { qmin };
        // Crossing from code ±k to ±(k + 1) at |y t| = k + 0.5 (`q` has the sign of `v`).
        let inv = 1.0 / v.abs();
        for k in q.abs()..end.abs() {
            let t = (k as f32 + 0.5) * inv;
            if t > t_hi {
                break;
            }
            if t > t_lo {
                events.push((t.to_bits() as u64) << 32 | i as u64);
            }
        }
    }
    best_scale(&mut events, sxq, sqq, amax / -(qmin as f32), |i| {
        let (v, wi, q) = (x[i] * flip, w.map_or(1.0, |w| w[i]), codes[i]);
        let step = if v > 0.0 { 1 } else { -1 };
        codes[i] = q + step;
        ((wi * v) as f64 * step as f64, wi as f64 * ((2 * q + step) * step) as f64)
    })
}

/// The sweep's bookkeeping, shared by the uniform grids and the IQ4 levels: the change points
/// `events` (`t`'s bits above a value's index) applied in order of `t`, all those at one `t`
/// together, each by `apply` (which moves that value's code one step and returns the change of
/// `Σ w y q` and of `Σ w q²`), from the sums `sxq`, `sqq` of the codes before the first point.
/// Returns the least-squares scale `Σ w y q / Σ w q²` of the codes with the least error (the
/// largest `(Σ w y q)² / Σ w q²`), or `fallback` where no codes fit a positive scale.
#[inline(always)]
fn best_scale(
    events: &mut [u64],
    mut sxq: f64,
    mut sqq: f64,
    fallback: f32,
    mut apply: impl FnMut(usize) -> (f64, f64),
) -> f32 {
    events.sort_unstable();
    // The best point so far as its two sums; the codes before the first point first.
    let (mut best_sxq, mut best_sqq) = if sqq > 0.0 { (sxq, sqq) } else { (0.0, 1.0) };
    let mut n = 0;
    while n < events.len() {
        let t = events[n] >> 32;
        while n < events.len() && events[n] >> 32 == t {
            let (dxq, dqq) = apply(events[n] as u32 as usize);
            (sxq, sqq) = (sxq + dxq, sqq + dqq);
            n += 1;
        }
        // `sxq² / sqq > best_sxq² / best_sqq`, multiplied out (a division per point cost a tenth
        // of the search).
        if sxq > 0.0 && sqq > 0.0 && sxq * sxq * best_sqq > best_sxq * best_sxq * sqq {
            (best_sxq, best_sqq) = (sxq, sqq);
        }
    }
    let d = if best_sqq > 0.0 { (best_sxq / best_sqq) as f32 } else { 0.0 };
    if d > 0.0 {
        d
    } else {
        fallback
    }
}

/// [`symmetric_search`] on the IQ4 levels: the step `d > 0` with the least weighted squared error
/// for `flip · x` among `d` from `lo` to `hi` times `amax / 127`, exact over that interval. As
/// `t = 1/d` grows, a value's level moves one step outward each time `y t` passes the midpoint
/// of two levels; between those points the least-squares `d` of the fixed levels is the best, as
/// in [`sweep`] ([`best_scale`] for both).
#[inline(always)]
fn iq4_search(x: &[f32], flip: f32, w: Option<&[f32]>, lo: f32, hi: f32) -> f32 {
    debug_assert!(x.len() <= 32);
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let level = |i: usize| IQ4_VALUES[i] as f64;
    let mid = |k: usize| (IQ4_VALUES[k] as f32 + IQ4_VALUES[k + 1] as f32) / 2.0;
    let (t_lo, t_hi) = (127.0 / (amax * hi), 127.0 / (amax * lo));
    let (mut sxq, mut sqq) = (0f64, 0f64);
    let mut codes = [0usize; 32];
    let mut events: Vec<u64> = Vec::with_capacity(8 * x.len());
    // The levels at `t_lo` (a loop apart, which vectorizes).
    for (q, &xv) in codes.iter_mut().zip(x) {
        *q = iq4_index(xv * flip * t_lo);
    }
    for (i, &xv) in x.iter().enumerate() {
        let (y, wi, q) = (xv * flip, w.map_or(1.0, |w| w[i]), codes[i]);
        sxq += (wi * y) as f64 * level(q);
        sqq += wi as f64 * level(q) * level(q);
        if y == 0.0 || wi == 0.0 {
            continue;
        }
        // Outward crossings: up past the midpoints above level q for y > 0 (all positive, as
        // q >= 8 there), down past those below it for y < 0 (all negative).
        let mut push = |m: f32| {
            let t = m / y;
            if t > t_lo && t <= t_hi {
                events.push((t.to_bits() as u64) << 32 | i as u64);
            }
            t <= t_hi
        };
        if y > 0.0 {
            for k in q..15 {
                if !push(mid(k)) {
                    break;
                }
            }
        } else {
            for k in (0..q).rev() {
                if !push(mid(k)) {
                    break;
                }
            }
        }
    }
    best_scale(&mut events, sxq, sqq, amax / 127.0, |i| {
        let (y, wi, q) = (x[i] * flip, w.map_or(1.0, |w| w[i]), codes[i]);
        let next = if y > 0.0 { q + 1 } else { q - 1 };
        codes[i] = next;
        (
            (wi * y) as f64 * (level(next) - level(q)),
            wi as f64 * (level(next) * level(next) - level(q) * level(q)),
        )
    })
}

/// A block's parameters searched for the least (weighted) squared error; the codes are then the
/// nearest ones to each value with the stored parameters.
#[inline(always)]
fn choose_searched(ty: GgmlType, x: &[f32], w: Option<&[f32]>) -> BlockParams {
    let mut p = BlockParams::default();
    match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::IQ4NL => {
            let (qmin, qmax, lo, hi) = match ty {
                GgmlType::Q8_0 => (-127, 127, 0.8, Q8_SEARCH_HI),
                GgmlType::Q4_0 => (-8, 7, 0.5, SEARCH_HI),
                GgmlType::IQ4NL => (-127, 113, 0.5, SEARCH_HI),
                _ => (-16, 15, 0.6, SEARCH_HI),
            };
            // Both orientations of the grid (the largest magnitude at its long, negative end or
            // at the short, positive one): search `y = ±x` with d > 0, then flip d's sign back.
            let mut best = f32::INFINITY;
            for flip in [1.0f32, -1.0] {
                let d = if ty == GgmlType::IQ4NL {
                    iq4_search(x, flip, w, lo, hi)
                } else {
                    symmetric_search(x, flip, w, qmin, qmax, lo, hi)
                };
                if d == 0.0 {
                    return p;
                }
                // The best float16 value near the least-squares scale.
                let h = f16::from_f32(d * flip).to_bits();
                for step in -2i32..=2 {
                    let cand = BlockParams { d: f16::from_bits((h as i32 + step) as u16).to_f32(), ..p };
                    let e = block_error(ty, &cand, x, w);
                    if cand.d.is_finite() && e < best {
                        (best, p) = (e, cand);
                    }
                }
                if ty == GgmlType::Q8_0 {
                    break; // a symmetric grid: one orientation
                }
            }
            refit(ty, &mut p, x, w, best);
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
            (p.d, p.m) = affine_search(x, w, nmax, false, f16r);
            let e = block_error(ty, &p, x, w);
            refit(ty, &mut p, x, w, e);
        }
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => {
            // Sub-blocks of `sub` values, each with a scale and a min of `top + 1` levels.
            let (sub, top, lattice): (usize, i32, &[f32]) =
                if ty == GgmlType::Q2K { (16, 15, &Q2K_LATTICE) } else { (32, 63, &K_LATTICE) };
            let (subs, nmax) = (QK_K / sub, ty.max_code());
            let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
            for j in 0..subs {
                let r = sub * j..sub * j + sub;
                let (s, m) = affine_search(&x[r.clone()], w.map(|w| &w[r]), nmax, true, |v| v);
                (scales[j], mins[j]) = (s, -m);
            }
            let max_scale = scales.iter().fold(0f32, |a, &b| a.max(b));
            let max_min = mins.iter().fold(0f32, |a, &b| a.max(b));
            let start = |d: f32, v: f32| if d > 0.0 { nearest_int(v / d) } else { 0 };
            // Lattices of the super-block scales (the largest sub-scale and sub-min at `ns`,
            // `nm` of `top`): each sub-block takes its best integer pair next to its own fit.
            let mut err = f32::INFINITY;
            for &ns in lattice {
                for &nm in lattice {
                    let mut cand = BlockParams { d: f16r(max_scale / ns), m: f16r(max_min / nm), ..p };
                    let mut total = 0f32;
                    for j in 0..subs {
                        let (s0, m0) = (start(cand.d, scales[j]), start(cand.m, mins[j]));
                        let mut best = f32::INFINITY;
                        for sc in (s0 - 1).max(0)..=(s0 + 1).min(top) {
                            for mn in (m0 - 1).max(0)..=(m0 + 1).min(top) {
                                let mut t = cand;
                                (t.sc[j], t.mn[j]) = (sc as u8, mn as u8);
                                let e = range_error(ty, &t, x, w, sub * j..sub * j + sub);
                                if e < best {
                                    (best, cand.sc[j], cand.mn[j]) = (e, sc as u8, mn as u8);
                                }
                            }
                        }
                        total += best;
                    }
                    if total < err {
                        (err, p) = (total, cand);
                    }
                }
            }
            // Alternate: the best integer sub-scale and sub-min near each sub-block's (the
            // super-block scales fixed), then the super-block scales refitted (the codes fixed).
            for _ in 0..3 {
                for j in 0..subs {
                    let (s0, m0) = (p.sc[j] as i32, p.mn[j] as i32);
                    let mut best = f32::INFINITY;
                    for ds in -2..=2 {
                        for dm in -2..=2 {
                            let mut cand = p;
                            cand.sc[j] = (s0 + ds).clamp(0, top) as u8;
                            cand.mn[j] = (m0 + dm).clamp(0, top) as u8;
                            let e = range_error(ty, &cand, x, w, sub * j..sub * j + sub);
                            if e < best {
                                best = e;
                                (p.sc[j], p.mn[j]) = (cand.sc[j], cand.mn[j]);
                            }
                        }
                    }
                }
                let e = block_error(ty, &p, x, w);
                let refitted = refit(ty, &mut p, x, w, e);
                if refitted.total_cmp(&err).is_ge() {
                    break;
                }
                err = refitted;
            }
        }
        GgmlType::Q3K | GgmlType::Q6K | GgmlType::IQ4XS => return symmetric_k_search(ty, x, w),
    }
    p
}

/// Q3_K, Q6_K and IQ4_XS: each sub-block's best signed scale (either orientation of the grid,
/// Q6_K's -32..=31, Q3_K's -4..=3, the IQ4 levels), then the super-block scale `d` from a scan of lattices
/// `d = max_scale / -n`: the sub-blocks can only use multiples of `d`, and each one's error is
/// jagged in its scale (its least-squares optimum sits where codes change), so the lattice phase
/// matters. For each `d` every sub-block takes its best integer scale near its own; the best total
/// is then refined as before.
#[inline(always)]
fn symmetric_k_search(ty: GgmlType, x: &[f32], w: Option<&[f32]>) -> BlockParams {
    let (h, (smin, smax)) = (ty.half_codes(), ty.sub_scales());
    let iq4 = ty == GgmlType::IQ4XS;
    // Values a sub-block, and the grid's long end (the level of largest magnitude).
    let (sub, long) = if iq4 { (32, -(IQ4_VALUES[0] as i32)) } else { (16, h) };
    let (lo, lattice): (f32, &[f32]) =
        if ty == GgmlType::Q6K { (0.6, &Q6K_LATTICE) } else { (0.5, &Q3K_LATTICE) };
    let subs = QK_K / sub;
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for ib in 0..subs {
        let r = sub * ib..sub * ib + sub;
        let (xs, ws) = (&x[r.clone()], w.map(|w| &w[r]));
        let mut best = f32::INFINITY;
        for flip in [1.0f32, -1.0] {
            let e: f32;
            let d = if iq4 {
                let d = iq4_search(xs, flip, ws, lo, SEARCH_HI) * flip;
                e = iq4_error(xs, ws, d);
                d
            } else {
                let d = symmetric_search(xs, flip, ws, -h, h - 1, lo, SEARCH_HI) * flip;
                e = xs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let q = if d == 0.0 { 0.0 } else { (v / d).round().clamp(-h as f32, (h - 1) as f32) };
                        ws.map_or(1.0, |w| w[i]) * (v - d * q) * (v - d * q)
                    })
                    .sum();
                d
            };
            if e < best {
                (best, scales[ib]) = (e, d);
            }
        }
        if scales[ib].abs() > max_abs {
            (max_abs, max_scale) = (scales[ib].abs(), scales[ib]);
        }
    }
    if max_abs < GROUP_MAX_EPS {
        return BlockParams::default();
    }
    // Super-scales: the lattices, on which the largest sub-block takes sub-scale -n. A block with a
    // nonzero sub-block that would take a few steps or none (an outlier elsewhere in the block)
    // also tries a dense grid: with one or two steps that sub-block's error depends on the exact
    // super-scale, and the best one spends a little of the largest sub-block's error for it.
    let mut ds = [0f32; Q6K_LATTICE.len() + DENSE_LATTICE];
    for (d, &n) in ds.iter_mut().zip(lattice) {
        *d = max_scale / -n;
    }
    let mut nd = lattice.len();
    // (A sub-block of zeros, or of zero weights, has no error to win: it does not count.)
    if scales.iter().any(|&s| s != 0.0 && s.abs() * -smin as f32 <= SMALL_STEPS * max_abs) {
        // From 0.45x to 1.7x the super-scale at which the block's largest magnitude is the long
        // end of the grid (sub-scale `smin`, code `-h`).
        let big = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d0 = big / (long * -smin) as f32;
        for i in 0..DENSE_LATTICE {
            ds[nd + i] = d0 * (0.45 + 1.25 * i as f32 / (DENSE_LATTICE - 1) as f32);
        }
        nd += DENSE_LATTICE;
    }
    let mut p = BlockParams::default();
    let mut err = f32::INFINITY;
    for &d in &ds[..nd] {
        let mut cand = BlockParams { d: f16r(d), ..BlockParams::default() };
        if cand.d == 0.0 || !cand.d.is_finite() {
            continue;
        }
        let mut total = 0f32;
        for ib in 0..subs {
            let r = sub * ib..sub * ib + sub;
            let c = nearest_int(scales[ib] / cand.d);
            // A sub-block beyond the grid's reach (a dense super-scale) also tries the grid's
            // other end, where its largest value can sit on the long side of the codes.
            let ends: &[i32] = if c < smin || c > smax { &[smin, smax] } else { &[c] };
            let mut best = f32::INFINITY;
            for sc in ends.iter().flat_map(|&e| (e - K_REACH).max(smin)..=(e + K_REACH).min(smax)) {
                let mut t = cand;
                set_sub_scale(ty, &mut t, ib, sc);
                let e = range_error(ty, &t, x, w, r.clone());
                if e < best {
                    (best, cand.sc[ib]) = (e, t.sc[ib]);
                }
            }
            total += best;
        }
        if total < err {
            (err, p) = (total, cand);
        }
    }
    for _ in 0..3 {
        for ib in 0..subs {
            let base = sub_scale(ty, &p, ib);
            let mut best = f32::INFINITY;
            for ds in -2..=2 {
                let mut cand = p;
                set_sub_scale(ty, &mut cand, ib, (base + ds).clamp(smin, smax));
                let e = range_error(ty, &cand, x, w, sub * ib..sub * ib + sub);
                if e < best {
                    best = e;
                    p.sc[ib] = cand.sc[ib];
                }
            }
        }
        let e = block_error(ty, &p, x, w);
        let refitted = refit(ty, &mut p, x, w, e);
        if refitted.total_cmp(&err).is_ge() {
            break;
        }
        err = refitted;
    }
    p
}

/// Q4_K/Q5_K: the largest 6-bit sub-scale (and sub-min) in each lattice the search tries; Q2_K's
/// 4-bit ones, about as far apart.
const K_LATTICE: [f32; 3] = [63.0, 59.0, 55.0];
const Q2K_LATTICE: [f32; 3] = [15.0, 14.0, 13.0];
/// The largest sub-block's integer scale in each lattice [`symmetric_k_search`] tries: about 3%
/// apart, over a quarter of the scale range.
const Q6K_LATTICE: [f32; 8] = [128.0, 124.0, 120.0, 116.0, 112.0, 108.0, 104.0, 100.0];
const Q3K_LATTICE: [f32; 8] = [32.0, 31.0, 30.0, 29.0, 28.0, 27.0, 26.0, 25.0];
/// How far from its own scale (in steps of `d`) each sub-block looks on a lattice.
const K_REACH: i32 = 2;
/// [`symmetric_k_search`]: a block with a sub-block whose scale takes at most this many steps of
/// the largest lattice's super-scale searches [`DENSE_LATTICE`] super-scales.
const SMALL_STEPS: f32 = 2.0;
const DENSE_LATTICE: usize = 64;

/// The parameters of one block of `x` (`block_size` values) by `rounding`, and its stored codes.
#[inline(always)]
pub fn encode_block(
    ty: GgmlType,
    x: &[f32],
    rounding: Rounding,
    w: Option<&[f32]>,
    l: &mut [u8],
) -> BlockParams {
    if rounding == Rounding::Nearest {
        return encode_ref(ty, x, l);
    }
    let w = if rounding == Rounding::Importance { w } else { None };
    let mut p = choose_searched(ty, x, w);
    // ggml's own parameters compete too (with the nearest codes, which are never worse than its
    // codes for them), so a searched block is never worse than the reference one.
    let r = encode_ref(ty, x, l);
    if block_error(ty, &r, x, w) < block_error(ty, &p, x, w) {
        p = r;
    }
    for (k, (o, &v)) in l.iter_mut().zip(x).enumerate() {
        *o = encode_value(ty, &p, k, v) as u8;
    }
    p
}

// ------------------------------------------------------------------ rows

fn check_rows(ty: GgmlType, n: usize, row: usize) -> Result<()> {
    let bs = ty.block_size();
    if row == 0 || row % bs != 0 || n % row != 0 {
        return Err(Error::Shape(format!(
            "{} stores rows of whole blocks of {bs} values; a row of {row} values ({n} in all) does not fit",
            ty.name()
        )));
    }
    Ok(())
}

/// Quantizes `x` (rows of `row` values) into `out` (`n / block_size * type_size` bytes).
/// `importance` (`row` values, `E[x²]` per input) weights the search of [`Rounding::Importance`].
/// NaN/Inf are refused.
pub fn quantize_rows(
    ty: GgmlType,
    x: &[f32],
    row: usize,
    rounding: Rounding,
    importance: Option<&[f32]>,
    out: &mut [u8],
) -> Result<()> {
    check_rows(ty, x.len(), row)?;
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if out.len() != x.len() / bs * ts {
        return Err(Error::Shape(format!(
            "output has {} bytes, {} blocks need {}",
            out.len(),
            x.len() / bs,
            x.len() / bs * ts
        )));
    }
    if rounding == Rounding::Importance {
        match importance {
            Some(w) if w.len() == row => {
                if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                    return Err(Error::Invalid(format!(
                        "importance {v} at index {i} is not a finite non-negative number"
                    )));
                }
            }
            Some(w) => {
                return Err(Error::Shape(format!("importance has {} values, rows have {row}", w.len())));
            }
            None => {
                return Err(Error::Invalid(
                    "importance rounding needs the importance (E[x^2] per input)".into(),
                ))
            }
        }
    }
    let (overflow, nonfinite) = (AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX));
    // Chunks of blocks per task, so the code buffer is set up once per chunk, not per block; each
    // chunk checks its own values for NaN/Inf (one pass over the data instead of two).
    let per = (16384 / bs).max(1);
    out.par_chunks_mut(ts * per).zip(x.par_chunks(bs * per)).enumerate().for_each(|(c, (oc, xc))| {
        let done = if let Some(done) = encode_chunk_avx2(ty, rounding, xc, c * per, oc) {
            done
        } else {
            crate::simd::simd!(encode_chunk(ty, xc, rounding, importance, row, c * per, oc))
        };
        match done {
            Ok(Some(b)) => _ = overflow.fetch_min(b, Ordering::Relaxed),
            Ok(None) => {}
            Err(i) => _ = nonfinite.fetch_min(c * per * bs + i, Ordering::Relaxed),
        }
    });
    let first_index = nonfinite.into_inner();
    if first_index != usize::MAX {
        return Err(Error::NonFinite { count: x.iter().filter(|v| !v.is_finite()).count(), first_index });
    }
    check_overflow(ty, x, overflow.into_inner())
}

/// How a tensor's floats are stored in a file: little-endian F32, F16 or BF16 (ggml's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredFloat {
    F32,
    F16,
    BF16,
}

impl StoredFloat {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "F32" => Ok(Self::F32),
            "F16" => Ok(Self::F16),
            "BF16" => Ok(Self::BF16),
            _ => Err(Error::Invalid(format!("stored floats are F32, F16 or BF16, not {name}"))),
        }
    }

    pub const fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// [`quantize_rows`] of floats as a file stores them (`bytes`, little-endian `src`): F32 bytes
/// are used in place where aligned, F16/BF16 are widened first. This is how a GGUF or
/// safetensors tensor is requantized straight from its memory map.
pub fn quantize_stored(
    ty: GgmlType,
    src: StoredFloat,
    bytes: &[u8],
    row: usize,
    rounding: Rounding,
    out: &mut [u8],
) -> Result<()> {
    if bytes.len() % src.size() != 0 {
        return Err(Error::Shape(format!("{} bytes are not whole {src:?} values", bytes.len())));
    }
    let widened: Vec<f32>;
    let x: &[f32] = match src {
        StoredFloat::F32 => match unsafe { bytes.align_to::<f32>() } {
            // SAFETY: every bit pattern is an f32; `align_to` only hands out aligned values.
            (&[], v, &[]) if cfg!(target_endian = "little") => v,
            _ => {
                widened =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                &widened
            }
        },
        StoredFloat::F16 => {
            widened = bytes
                .par_chunks(2 * 16384)
                .flat_map_iter(|c| c.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()))
                .collect();
            &widened
        }
        StoredFloat::BF16 => {
            widened = bytes
                .par_chunks(2 * 16384)
                .flat_map_iter(|c| {
                    c.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                })
                .collect();
            &widened
        }
    };
    quantize_rows(ty, x, row, rounding, None, out)
}

/// [`encode_chunk`] of Q4_0 and Q8_0 by nearest rounding in AVX2 intrinsics where the CPU has
/// them (see `ggml_avx2.rs`); None for other types and CPUs.
#[inline(always)]
fn encode_chunk_avx2(
    ty: GgmlType,
    rounding: Rounding,
    xc: &[f32],
    b0: usize,
    oc: &mut [u8],
) -> Option<std::result::Result<Option<usize>, usize>> {
    #[cfg(target_arch = "x86_64")]
    if rounding == Rounding::Nearest && matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) && crate::simd::avx2() {
        use crate::ggml_avx2::{encode_chunk, Flag};
        // SAFETY: the CPU was just checked for AVX2, FMA and F16C.
        return Some(match unsafe { encode_chunk(ty == GgmlType::Q8_0, xc, oc) } {
            None => Ok(None),
            Some(Flag::Overflow(k)) => Ok(Some(b0 + k)),
            Some(Flag::NonFinite(i)) => Err(i),
        });
    }
    let _ = (ty, rounding, xc, b0, oc);
    None
}

/// Encodes and packs the blocks of `xc` (the first is block `b0` of the tensor) into `oc`;
/// returns the first block whose float16 scale or min overflowed, or as the error the index in
/// `xc` of the first NaN/Inf. Each block is checked as it is encoded (one read of the data).
#[inline(always)]
fn encode_chunk(
    ty: GgmlType,
    xc: &[f32],
    rounding: Rounding,
    importance: Option<&[f32]>,
    row: usize,
    b0: usize,
    oc: &mut [u8],
) -> std::result::Result<Option<usize>, usize> {
    if ty == GgmlType::IQ4NL && rounding == Rounding::Nearest {
        return iq4nl_chunk(xc, b0, oc);
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut l = [0u8; QK_K];
    let mut bad = None;
    for (k, (o, xs)) in oc.chunks_mut(ts).zip(xc.chunks(bs)).enumerate() {
        if !all_finite(xs) {
            return Err(k * bs + xs.iter().position(|v| !v.is_finite()).unwrap_or(0));
        }
        let b = b0 + k;
        let w = importance.map(|w| &w[(b * bs) % row..(b * bs) % row + bs]);
        let p = encode_block(ty, xs, rounding, w, &mut l[..bs]);
        if bad.is_none() && unholdable(ty, xs, &p) {
            bad = Some(b);
        }
        pack(ty, &p, &l[..bs], o);
    }
    Ok(bad)
}

/// [`encode_chunk`] of IQ4_NL by ggml's quantizer: eight blocks at a time in [`iq4_scales`]'
/// lanes.
#[inline(always)]
fn iq4nl_chunk(xc: &[f32], b0: usize, oc: &mut [u8]) -> std::result::Result<Option<usize>, usize> {
    let (mut l, mut bad) = ([0u8; 32], None);
    for (g, (og, xg)) in oc.chunks_mut(8 * 18).zip(xc.chunks(QK_K)).enumerate() {
        if !all_finite(xg) {
            return Err(g * QK_K + xg.iter().position(|v| !v.is_finite()).unwrap_or(0));
        }
        // Block b's value j at xt[j][b]; missing blocks are zeros.
        let xt: [[f32; 8]; 32] =
            std::array::from_fn(|j| std::array::from_fn(|b| xg.get(32 * b + j).copied().unwrap_or(0.0)));
        let scales = iq4_scales(&xt);
        for (k, (o, xs)) in og.chunks_mut(18).zip(xg.chunks(32)).enumerate() {
            let p = iq4_finish(xs, &scales[k..k + 1], &mut l);
            if bad.is_none() && unholdable(GgmlType::IQ4NL, xs, &p) {
                bad = Some(b0 + 8 * g + k);
            }
            pack(GgmlType::IQ4NL, &p, &l, o);
        }
    }
    Ok(bad)
}

/// Whether block `xs`, encoded as `p`, does not hold its values: a float16 scale or min that
/// overflowed, or a value beyond what any block of `ty` holds ([`GgmlType::max_magnitude`]),
/// which some searches otherwise stored as 0 with finite parameters.
#[inline(always)]
fn unholdable(ty: GgmlType, xs: &[f32], p: &BlockParams) -> bool {
    !(p.d.is_finite() && p.m.is_finite()) || abs_max(xs) > ty.max_magnitude()
}

/// Whether every value is finite, in lanes of integer tests that vectorize (no early exit).
#[inline(always)]
fn all_finite(x: &[f32]) -> bool {
    let mut bad = [0u32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            bad[i] |= ((c[i].to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32;
        }
    }
    bad.iter().all(|&b| b == 0) && chunks.remainder().iter().all(|v| v.is_finite())
}

/// The error for block `b` (`usize::MAX`: none) whose float16 scale or min overflowed.
fn check_overflow(ty: GgmlType, x: &[f32], b: usize) -> Result<()> {
    if b == usize::MAX {
        return Ok(());
    }
    let bs = ty.block_size();
    let amax = x[b * bs..(b + 1) * bs].iter().fold(0f32, |a, v| a.max(v.abs()));
    Err(Error::Invalid(format!(
        "{} cannot hold values as large as {amax:e} (values {}..{}): the block's float16 scale overflows",
        ty.name(),
        b * bs,
        (b + 1) * bs
    )))
}

/// Decodes `data` (whole blocks) into `out` (`blocks * block_size` values).
pub fn dequantize_rows(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if data.len() % ts != 0 || out.len() != data.len() / ts * bs {
        return Err(Error::Shape(format!(
            "{} data of {} bytes is not whole {ts}-byte blocks for {} values",
            ty.name(),
            data.len(),
            out.len()
        )));
    }
    // Chunks of blocks per task, each decoded in the AVX2 build (float16 scales convert inline):
    // a task and a baseline float16 call per block ran at a fifth of the copy bandwidth.
    let per = (16384 / bs).max(1);
    out.par_chunks_mut(bs * per).zip(data.par_chunks(ts * per)).for_each(|(o, d)| {
        crate::simd::simd!(for (o, b) in o.chunks_exact_mut(bs).zip(d.chunks_exact(ts)) {
            decode_block(ty, b, o)
        })
    });
    Ok(())
}

// ------------------------------------------------------------------ GPTQ

/// A ggml type as GPTQ's column codec: each block's parameters are chosen (by `rounding`) on the
/// weights as the sweep has updated them when it reaches the block's first column.
struct GgmlCodec<'a> {
    ty: GgmlType,
    rounding: Rounding,
    importance: Option<&'a [f32]>,
    rows: usize,
    blocks: usize,
    params: Vec<BlockParams>,
}

impl ColumnCodec for GgmlCodec<'_> {
    #[inline(always)]
    fn code(&self, row: usize, col: usize, v: f32) -> (u8, f32) {
        let bs = self.ty.block_size();
        let p = &self.params[row * self.blocks + col / bs];
        let q = encode_value(self.ty, p, col % bs, v);
        (q as u8, decode_value(self.ty, p, col % bs, q))
    }

    fn choose(&mut self, c0: usize, cell: &[f32]) -> Result<()> {
        let bs = self.ty.block_size();
        let w = self.importance.map(|w| &w[c0..c0 + bs]);
        let (ty, rounding, b) = (self.ty, self.rounding, c0 / bs);
        let chosen: Vec<BlockParams> = cell
            .par_chunks(bs)
            .map(|x| {
                let mut l = [0u8; QK_K];
                // In the AVX2 build, where float16 rounding is one inlined instruction: called
                // from baseline code it was a third of Q4_1's GPTQ.
                crate::simd::simd!(encode_block(ty, x, rounding, w, &mut l[..bs]))
            })
            .collect();
        for (r, p) in chosen.into_iter().enumerate().take(self.rows) {
            self.params[r * self.blocks + b] = p;
        }
        Ok(())
    }
}

/// GPTQ into ggml blocks: `w` (row-major `rows × cols`, an `out × in` weight; rows of whole
/// blocks) with the Hessian `hessian` (`cols × cols`, `2 XᵀX / N`). Each block's parameters are
/// chosen by `rounding` (with [`Rounding::Importance`], weighted by `importance`, or by
/// `diag H` when it is `None`) on the weights updated so far; with `opts.act_order`, on the
/// weights before any update. Writes the blocks to `out`; returns the inputs found dead and the
/// damping, as [`crate::gptq()`] does.
#[allow(clippy::too_many_arguments)]
pub fn gptq_rows(
    ty: GgmlType,
    w: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    rounding: Rounding,
    importance: Option<&[f32]>,
    opts: &GptqOptions,
    out: &mut [u8],
) -> Result<(usize, f64)> {
    check_rows(ty, rows * cols, cols.max(1)).or_else(|e| if rows * cols == 0 { Ok(()) } else { Err(e) })?;
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if out.len() != rows * cols / bs * ts {
        return Err(Error::Shape(format!(
            "output has {} bytes, {} blocks need {}",
            out.len(),
            rows * cols / bs,
            rows * cols / bs * ts
        )));
    }
    if let Some(w) = importance {
        if w.len() != cols {
            return Err(Error::Shape(format!("importance has {} values, rows have {cols}", w.len())));
        }
        if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return Err(Error::Invalid(format!(
                "importance {v} at index {i} is not a finite non-negative number"
            )));
        }
    }
    let prep = gptq::prepare(w, rows, cols, hessian, opts)?;
    let (dead, damping) = (prep.dead_inputs, prep.damping);
    if rows * cols == 0 {
        return Ok((dead, damping));
    }
    let diag: Vec<f32>;
    let importance = match (rounding, importance) {
        (Rounding::Importance, None) => {
            diag = (0..cols).map(|i| hessian[i * cols + i] as f32).collect();
            Some(&diag[..])
        }
        (_, w) => w,
    };
    let blocks = cols / bs;
    let mut codec = GgmlCodec {
        ty,
        rounding,
        importance,
        rows,
        blocks,
        params: vec![BlockParams::default(); rows * blocks],
    };
    let groups = if opts.act_order {
        for b in 0..blocks {
            let mut cell = vec![0f32; rows * bs];
            cell.par_chunks_mut(bs)
                .enumerate()
                .for_each(|(r, c)| c.copy_from_slice(&prep.wd[r * cols + b * bs..][..bs]));
            codec.choose(b * bs, &cell)?;
        }
        None
    } else {
        Some(bs)
    };
    let codes = gptq::sweep(prep, rows, cols, groups, opts.block_size, &mut codec, None)?;
    let bad = codec
        .params
        .iter()
        .zip(w.chunks(ty.block_size()))
        .position(|(p, xs)| unholdable(ty, xs, p))
        .unwrap_or(usize::MAX);
    check_overflow(ty, w, bad)?;
    out.par_chunks_mut(ts).zip(codes.par_chunks(bs)).enumerate().for_each(|(i, (o, l))| {
        pack(ty, &codec.params[i], l, o);
    });
    Ok((dead, damping))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear congruential stream of 24-bit integers from `seed`: test data without a crate.
    fn lcg(mut seed: u32) -> impl FnMut() -> u32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        }
    }

    #[test]
    fn roundf_is_c_roundf() {
        let mut v = -300.0f32;
        while v < 300.0 {
            let h = v + 0.5;
            let (below, above) =
                (f32::from_bits(h.to_bits().wrapping_sub(1)), f32::from_bits(h.to_bits() + 1));
            for x in [v, h, below, above].into_iter().filter(|x| x.is_finite()) {
                assert_eq!(roundf(x), x.round(), "{x}");
            }
            v += 0.25;
        }
        assert_eq!(roundf(0.499_999_97), 0.0);
        assert_eq!(roundf(-2.5), -3.0);
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!([nearest_int(2.5), nearest_int(3.5), nearest_int(-2.5), nearest_int(-0.4)], [2, 4, -2, 0]);
    }

    #[test]
    fn every_type_round_trips_its_own_codes() {
        // Decoding a block, then coding the decoded values with the same parameters, gives the
        // same codes: the per-value coder GPTQ uses agrees with the block layout.
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        for ty in TYPES {
            let bs = ty.block_size();
            let mut l = vec![0u8; bs];
            for xs in x.chunks(bs) {
                for rounding in [Rounding::Nearest, Rounding::Mse] {
                    let p = encode_block(ty, xs, rounding, None, &mut l);
                    let mut packed = vec![0u8; ty.type_size()];
                    pack(ty, &p, &l, &mut packed);
                    let mut y = vec![0f32; bs];
                    decode_block(ty, &packed, &mut y);
                    for (k, (&q, &v)) in l.iter().zip(&y).enumerate() {
                        assert_eq!(decode_value(ty, &p, k, q as i32), v, "{ty:?} {rounding:?} value {k}");
                        assert_eq!(encode_value(ty, &p, k, v), q as i32, "{ty:?} {rounding:?} value {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn mse_never_worse_than_nearest_in_any_block() {
        let x: Vec<f32> = (0..2048).map(|i| (i as f32 * 0.7).sin() * 3.0 + (i % 7) as f32 * 0.1).collect();
        for ty in TYPES {
            let bs = ty.block_size();
            let n = x.len() / bs * ty.type_size();
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            quantize_rows(ty, &x, 512, Rounding::Nearest, None, &mut a).unwrap();
            quantize_rows(ty, &x, 512, Rounding::Mse, None, &mut b).unwrap();
            let err = |d: &[u8]| {
                let mut y = vec![0f32; x.len()];
                dequantize_rows(ty, d, &mut y).unwrap();
                x.chunks(bs)
                    .zip(y.chunks(bs))
                    .map(|(a, b)| a.iter().zip(b).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>())
                    .collect::<Vec<_>>()
            };
            for (i, (m, r)) in err(&b).iter().zip(err(&a)).enumerate() {
                assert!(*m <= r * (1.0 + 1e-6), "{ty:?} block {i}: mse {m} > nearest {r}");
            }
        }
    }

    /// A Q3_K/Q6_K block with one outlier sub-block: `mse` gets within 2% of the format's optimum
    /// (every float16 super-scale of a fine grid, each sub-block at its best integer sub-scale,
    /// nearest codes). With only the lattices of the outlier's own scale, such a block of
    /// MiniLM's (one value of 4.4 among values under 0.2) had 2.4 times the optimum's error.
    #[test]
    fn an_outlier_block_gets_near_the_formats_optimum() {
        let mut bits = lcg(4_242);
        let mut rand = || bits() as f32 / (1u32 << 24) as f32 - 0.5;
        // Q6_K's 256 sub-scales make its exhaustive search four times Q3_K's: fewer cases, a
        // coarser grid (the test runs unoptimized in CI).
        for (ty, cases, steps) in [(GgmlType::Q3K, 6, 1500i32), (GgmlType::Q6K, 2, 600)] {
            let (h, (smin, smax)) = (ty.half_codes(), ty.sub_scales());
            for case in 0..cases {
                let mut x: Vec<f32> = (0..256).map(|_| rand() * 0.1).collect();
                x[16 * (case % 16) + case] = if case % 2 == 0 { 4.4 } else { -4.4 } * (1.0 + rand());
                let p = encode_block(ty, &x, Rounding::Mse, None, &mut [0u8; 256]);
                let got = block_error(ty, &p, &x, None) as f64;
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let mut best = f64::INFINITY;
                for i in -steps..=steps {
                    let d = f16r(
                        amax / (h * -smin) as f32
                            * (0.3 + 1.7 * i.abs() as f32 / steps as f32)
                            * i.signum() as f32,
                    );
                    if d == 0.0 {
                        continue;
                    }
                    let total: f64 = x
                        .chunks(16)
                        .map(|xs| {
                            (smin..=smax)
                                .map(|sc| {
                                    let step = d * sc as f32;
                                    xs.iter()
                                        .map(|&v| {
                                            let q = if step == 0.0 {
                                                0.0
                                            } else {
                                                (v / step).round().clamp(-h as f32, (h - 1) as f32)
                                            };
                                            ((v - step * q) as f64).powi(2)
                                        })
                                        .sum::<f64>()
                                })
                                .fold(f64::INFINITY, f64::min)
                        })
                        .sum();
                    best = best.min(total);
                }
                assert!(got <= best * 1.02, "{ty:?} case {case}: mse {got} > optimum {best}");
            }
        }
    }

    /// The sweep is exact over its interval: no scale on a fine grid of it does better.
    #[test]
    fn symmetric_search_beats_a_fine_grid() {
        let mut bits = lcg(12345);
        let mut rand = || bits() as f32 / (1u32 << 24) as f32 - 0.5;
        for _ in 0..200 {
            let y: Vec<f32> = (0..16).map(|_| rand() * rand().abs() * 4.0).collect();
            let err = |d: f32| -> f64 {
                y.iter().map(|&v| ((v - d * (v / d).round().clamp(-32.0, 31.0)) as f64).powi(2)).sum()
            };
            let d = symmetric_search(&y, 1.0, None, -32, 31, 0.6, SEARCH_HI);
            let amax = y.iter().fold(0f32, |a, v| a.max(v.abs()));
            let grid = (0..4000)
                .map(|i| amax / 32.0 * (0.6 + (SEARCH_HI * 32.0 / 31.0 - 0.6) * i as f32 / 3999.0))
                .map(err)
                .fold(f64::INFINITY, f64::min);
            assert!(err(d) <= grid * (1.0 + 1e-4) + 1e-12, "{} > {grid}", err(d));
        }
    }

    /// ggml's `best_index_int8`, as written there: a binary search, then the nearer neighbour.
    fn ggml_best_index(x: f32) -> usize {
        let val = IQ4_VALUES.map(|v| v as f32);
        if x <= val[0] {
            return 0;
        }
        if x >= val[15] {
            return 15;
        }
        let (mut ml, mut mu) = (0, 15);
        while mu - ml > 1 {
            let mav = (ml + mu) / 2;
            if x < val[mav] {
                mu = mav
            } else {
                ml = mav
            }
        }
        if x - val[mu - 1] < val[mu] - x {
            mu - 1
        } else {
            mu
        }
    }

    #[test]
    fn iq4_levels_are_ggmls_best_index() {
        // Random values over and past the grid; every level, every midpoint and the floats next
        // to them (ties go up, as ggml's comparison decides); the infinities and NaN.
        let mut bits = lcg(99);
        let mut ys: Vec<f32> =
            (0..4000).map(|_| (bits() as f32 / (1u32 << 24) as f32 - 0.5) * 300.0).collect();
        for k in 0..16 {
            let v = IQ4_VALUES[k] as f32;
            let m = if k < 15 { (v + IQ4_VALUES[k + 1] as f32) / 2.0 } else { v };
            for c in [v, m] {
                ys.extend([c, f32::from_bits(c.to_bits() + 1), f32::from_bits(c.to_bits() - 1), -c]);
            }
        }
        ys.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45, -1e-45]);
        for chunk in ys.chunks(32) {
            let mut y = [0f32; 32];
            y[..chunk.len()].copy_from_slice(chunk);
            let levels = levels32(&y, |v| v);
            for (i, &v) in y.iter().enumerate() {
                let want = ggml_best_index(v);
                assert_eq!(iq4_index(v), want, "{v}");
                assert_eq!(levels[i], IQ4_VALUES[want] as f32, "{v}");
            }
        }
    }

    /// The IQ4 sweep finds a step at least as good as a fine grid of steps over its interval,
    /// either orientation, weighted or not.
    #[test]
    fn iq4_search_beats_a_fine_grid() {
        let mut bits = lcg(31_337);
        let mut rand = || bits() as f32 / (1u32 << 24) as f32 - 0.5;
        for case in 0..100 {
            let y: Vec<f32> = (0..32).map(|_| rand() * rand().abs() * 4.0).collect();
            let w: Vec<f32> = (0..32).map(|_| rand() + 0.5).collect();
            let w = (case % 2 == 1).then_some(&w[..]);
            for flip in [1.0f32, -1.0] {
                let err = |d: f32| -> f64 {
                    let e = |i: usize| {
                        let v = y[i] * flip;
                        let q = IQ4_VALUES[ggml_best_index(v / d)] as f32;
                        w.map_or(1.0, |w| w[i]) as f64 * ((v - d * q) as f64).powi(2)
                    };
                    (0..32).map(e).sum()
                };
                let d = iq4_search(&y, flip, w, 0.5, SEARCH_HI);
                let amax = y.iter().fold(0f32, |a, v| a.max(v.abs()));
                let grid = (0..3000)
                    .map(|i| amax / 127.0 * (0.5 + (SEARCH_HI - 0.5) * i as f32 / 2999.0))
                    .map(err)
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    err(d) <= grid * (1.0 + 1e-4) + 1e-12,
                    "case {case} flip {flip}: {} > {grid}",
                    err(d)
                );
            }
        }
    }

    /// The sweep cut at [`clip_bound`] picks the scale the whole interval's sweep picks, for the
    /// four grids searched (Q8_0, Q4_0, Q5_0 and Q6_K's sub-blocks), both orientations, Gaussian
    /// and heavy-tailed blocks, with and without weights (some zero).
    #[test]
    fn the_cut_sweep_picks_the_whole_sweeps_scale() {
        let mut bits = lcg(20_241_129);
        let mut unit = || (bits() as f32 + 0.5) / (1u32 << 24) as f32;
        let grids =
            [(-127, 127, 0.8, Q8_SEARCH_HI, 32), (-8, 7, 0.5, SEARCH_HI, 32), (-16, 15, 0.6, SEARCH_HI, 32)];
        let grids = grids.into_iter().chain([(-32, 31, 0.6, SEARCH_HI, 16)]);
        let mut cut = 0usize;
        for (qmin, qmax, lo, hi, n) in grids {
            for case in 0..3000 {
                // Box-Muller normals; every third block heavy-tailed (a normal over a uniform).
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let g = (-2.0 * unit().ln()).sqrt() * (std::f32::consts::TAU * unit()).cos();
                        if case % 3 == 0 {
                            g / unit().max(0.05)
                        } else {
                            g
                        }
                    })
                    .collect();
                let w: Vec<f32> = (0..n).map(|_| if unit() < 0.1 { 0.0 } else { unit() * 4.0 }).collect();
                let w = (case % 2 == 1).then_some(&w[..]);
                for flip in [1.0f32, -1.0] {
                    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let (t_lo, t_hi) = (qmax as f32 / (amax * hi), -(qmin as f32) / (amax * lo));
                    let whole = sweep(&x, flip, w, qmin, qmax, amax, t_lo, t_hi);
                    let got = symmetric_search(&x, flip, w, qmin, qmax, lo, hi);
                    assert_eq!(got.to_bits(), whole.to_bits(), "grid {qmin}..{qmax} case {case} flip {flip}");
                    cut += (clip_bound(&x, flip, w, qmin, qmax, amax) < t_hi) as usize;
                }
            }
        }
        assert!(cut > 20_000, "the bound cut only {cut} of 24000 sweeps");
    }

    /// Tied change points (equal magnitudes, equal ratios) are applied together, so permuting the
    /// values (and their weights) cannot change the scale.
    #[test]
    fn symmetric_search_ignores_the_order_of_the_values() {
        let mut bits = lcg(987_654_321);
        let mut next = |n: u32| bits() % n;
        for case in 0..3000 {
            // Magnitudes from a few levels (bf16-like weights repeat), so many points tie.
            let x: Vec<f32> = (0..32)
                .map(|_| (next(12) as f32 + 1.0) / 8.0 * if next(2) == 0 { 1.0 } else { -1.0 })
                .collect();
            let w: Vec<f32> = (0..32).map(|_| 1.0 + next(3) as f32).collect();
            let (qmin, qmax) = [(-8, 7), (-16, 15), (-127, 127)][case % 3];
            let flip = if case % 2 == 0 { 1.0 } else { -1.0 };
            let d = symmetric_search(&x, flip, Some(&w), qmin, qmax, 0.5, SEARCH_HI);
            let mut order: Vec<usize> = (0..32).collect();
            for i in (1..32).rev() {
                order.swap(i, next(i as u32 + 1) as usize);
            }
            let xp: Vec<f32> = order.iter().map(|&i| x[i]).collect();
            let wp: Vec<f32> = order.iter().map(|&i| w[i]).collect();
            let e = symmetric_search(&xp, flip, Some(&wp), qmin, qmax, 0.5, SEARCH_HI);
            assert_eq!(d.to_bits(), e.to_bits(), "case {case}: {x:?}");
        }
    }

    /// The sub-block error's own step and offset agree with `encode_value` and `decode_value` for
    /// every sub-block of the K types and every block of the one-scale types, zero and negative
    /// scales included.
    #[test]
    fn range_error_equals_the_per_value_coder() {
        let x = awkward_blocks();
        let mut bits = lcg(7);
        let mut next = |n: u32| bits() % n;
        for (b, xs) in x.chunks_exact(256).enumerate() {
            let w: Vec<f32> = (0..256).map(|_| next(4) as f32 * 0.5).collect();
            let w = (b % 2 == 1).then_some(&w[..]);
            for ty in
                [GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::IQ4XS]
            {
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let mut p =
                    BlockParams { d: f16r(amax / 500.0), m: f16r(amax / 300.0), ..Default::default() };
                let (scales, mins) = match ty {
                    GgmlType::Q2K => (16, 16),
                    GgmlType::Q3K | GgmlType::IQ4XS => (64, 64),
                    _ => (256, 64),
                };
                let offset = matches!(ty, GgmlType::Q3K | GgmlType::IQ4XS);
                for j in 0..16 {
                    // Scale 0 (Q3_K, IQ4_XS: their stored 32) among random ones.
                    p.sc[j] = if j == 3 { offset as u8 * 32 } else { next(scales) as u8 };
                    p.mn[j] = next(mins) as u8;
                }
                let sub = if matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::IQ4XS) { 32 } else { 16 };
                for r in (0..256).step_by(sub).map(|s| s..s + sub) {
                    let want: f32 = r
                        .clone()
                        .map(|k| {
                            let d = xs[k] - decode_value(ty, &p, k, encode_value(ty, &p, k, xs[k]));
                            w.map_or(1.0, |w| w[k]) * d * d
                        })
                        .sum();
                    let got = range_error(ty, &p, xs, w, r.clone());
                    assert!((got - want).abs() <= want * 1e-5, "{ty:?} block {b} {r:?}: {got} != {want}");
                }
            }
        }
        // The one-scale types (whole blocks of 32): scales of either sign, zero, tiny and huge.
        for (b, xs) in x.chunks_exact(32).enumerate() {
            let w: Vec<f32> = (0..32).map(|_| next(4) as f32 * 0.5).collect();
            let w = (b % 2 == 1).then_some(&w[..]);
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            for ty in [
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q5_0,
                GgmlType::Q4_1,
                GgmlType::Q5_1,
                GgmlType::IQ4NL,
            ] {
                for d in [f16r(amax / 7.0), f16r(-amax / 8.0), 0.0, f16r(amax / 1000.0), f16r(amax * 3.0)] {
                    let p = BlockParams { d, m: f16r(-amax / 2.0), ..Default::default() };
                    let want: f32 = (0..32)
                        .map(|k| {
                            let e = xs[k] - decode_value(ty, &p, k, encode_value(ty, &p, k, xs[k]));
                            w.map_or(1.0, |w| w[k]) * e * e
                        })
                        .sum();
                    let got = block_error(ty, &p, xs, w);
                    assert!((got - want).abs() <= want * 1e-5, "{ty:?} block {b} d {d}: {got} != {want}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_range_error_is_the_portable_sum_bit_for_bit() {
        // The searches compare errors, so the AVX2 sum must be the portable one exactly: the same
        // lanes, the same order. Every grid the types use, scales of either sign, zero (division
        // by zero: infinite or NaN quotients), float32 subnormals, huge; weighted and not.
        if !crate::simd::avx2() {
            return;
        }
        let x = awkward_blocks();
        let mut bits = lcg(11);
        let mut next = |n: u32| bits() % n;
        let grids = [(0, 15), (0, 31), (-32, 31), (-128, 127), (-8, 7), (-16, 15)];
        for (b, xs) in x.chunks_exact(32).enumerate() {
            let w: Vec<f32> = (0..32).map(|_| next(5) as f32 * 0.37).collect();
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (qmin, qmax) in grids {
                for d in [amax / 7.0, -amax / 8.0, 0.0, amax / 1e4, amax * 3.0, f32::from_bits(3), 1e30] {
                    for dm in [0.0, amax / 2.0, -amax / 3.0] {
                        for (n, w) in [(32, None), (32, Some(&w[..])), (16, Some(&w[..16])), (8, None)] {
                            let want = coded_error(&xs[..n], w, d, dm, qmin, qmax);
                            // SAFETY: AVX2 checked above; whole vectors.
                            let got =
                                unsafe { crate::ggml_avx2::range_error(&xs[..n], w, d, dm, qmin, qmax) };
                            assert!(
                                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                                "block {b} grid {qmin}..={qmax} d {d} dm {dm} n {n}: {got} != {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Blocks whose encoding turns on a detail: zeros of either sign, ties in magnitude, float32
    /// subnormals (an infinite inverse scale), halves, a lone spike; then noise at many scales.
    fn awkward_blocks() -> Vec<f32> {
        let mut x = Vec::new();
        let mut push = |f: &mut dyn FnMut(usize) -> f32| x.extend((0..32).map(f));
        push(&mut |_| 0.0);
        push(&mut |i| if i % 2 == 0 { 0.0 } else { -0.0 });
        push(&mut |i| if i % 2 == 0 { 1.0 } else { -1.0 });
        push(&mut |i| if i % 2 == 0 { -1.0 } else { 1.0 });
        push(&mut |i| if i % 3 == 0 { 1e-44 } else { -3e-45 });
        push(&mut |i| (i as f32 - 15.5) * 0.5);
        push(&mut |i| if i == 7 { 900.0 } else { 0.01 * i as f32 });
        let mut seed = 12345u64;
        for b in 0..250 {
            let scale = 10f32.powi(b % 9 - 5);
            push(&mut |_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            });
        }
        x
    }

    #[test]
    fn vector_path_equals_portable_blocks() {
        let x = awkward_blocks();
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let ts = ty.type_size();
            let mut got = vec![0u8; x.len() / 32 * ts];
            quantize_rows(ty, &x, 32, Rounding::Nearest, None, &mut got).unwrap();
            let mut want = vec![0u8; got.len()];
            let mut l = [0u8; 32];
            for (xs, o) in x.chunks(32).zip(want.chunks_mut(ts)) {
                let p = encode_ref(ty, xs, &mut l);
                pack(ty, &p, &l, o);
            }
            assert_eq!(got, want, "{}", ty.name());
        }
    }

    /// Eight-block batches (Q4_0, Q8_0 in AVX2) report the first NaN/Inf by its index, after a
    /// finite batch and with another bad value later, and the first float16 scale overflow of two.
    #[test]
    fn batches_report_the_first_nonfinite_value_and_overflow() {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let mut x: Vec<f32> = (0..24 * 32).map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5).collect();
            let mut out = vec![0u8; 24 * ty.type_size()];
            (x[10 * 32 + 5], x[12 * 32], x[20 * 32 + 1]) = (f32::NAN, f32::INFINITY, f32::NAN);
            match quantize_rows(ty, &x, 32, Rounding::Nearest, None, &mut out) {
                Err(Error::NonFinite { count: 3, first_index: 325 }) => {}
                other => panic!("{}: {other:?}", ty.name()),
            }
            (x[10 * 32 + 5], x[12 * 32], x[20 * 32 + 1]) = (0.1, 0.2, 0.3);
            (x[11 * 32 + 3], x[21 * 32]) = (1e20, 1e21);
            let e = quantize_rows(ty, &x, 32, Rounding::Nearest, None, &mut out).unwrap_err();
            assert!(e.to_string().contains("cannot hold values as large as 1e20 (values 352..384)"), "{e}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut out = vec![0u8; 18];
        let e = quantize_rows(GgmlType::Q4_0, &[1.0; 48], 48, Rounding::Nearest, None, &mut out).unwrap_err();
        assert!(e.to_string().contains("row of 48"), "{e}");
        let mut out = vec![0u8; 34];
        let e =
            quantize_rows(GgmlType::Q8_0, &[1e20; 32], 32, Rounding::Nearest, None, &mut out).unwrap_err();
        assert!(e.to_string().contains("cannot hold values as large as"), "{e}");
        assert!(GgmlType::parse("iq2_xxs").is_err());
    }
}
