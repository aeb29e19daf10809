//! FP16 conversion with round-to-nearest-even and counted saturation.

use crate::elem::{is_finite, Elem};
use crate::error::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Largest finite f16.
pub const FP16_MAX: f32 = 65504.0;
const BLOCK: usize = 4096;

/// Converts to f16 (round to nearest even). Finite values beyond ±65504 are saturated to
/// ±65504 instead of becoming Inf; the count of such values is returned so callers can report it.
/// Non-finite inputs are an error unless `ignore_nonfinite` (then they pass through as NaN/Inf).
pub fn to_fp16<T: Elem>(x: &[T], ignore_nonfinite: bool, out: &mut [f16]) -> Result<usize> {
    if out.len() != x.len() {
        return Err(Error::Shape(format!("output has {} elements, input has {}", out.len(), x.len())));
    }
    let (over, bad) = out
        .par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .map(|(o, xs)| {
            let mut buf = [0f32; BLOCK];
            let (mut over, mut bad) = (0usize, 0usize);
            for (b, v) in buf.iter_mut().zip(xs) {
                let v = v.to_f32();
                let fin = is_finite(v);
                bad += (!fin) as usize;
                let big = fin && v.abs() > FP16_MAX;
                over += big as usize;
                *b = if big { FP16_MAX.copysign(v) } else { v };
            }
            o.convert_from_f32_slice(&buf[..xs.len()]);
            (over, bad)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    if bad > 0 && !ignore_nonfinite {
        let first_index = crate::elem::first_nonfinite(x).unwrap_or(0);
        return Err(Error::NonFinite { count: bad, first_index });
    }
    Ok(over)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_and_counts() {
        let x = [1.0f32, 70000.0, -1e9, 65504.0, 0.5];
        let mut out = [f16::ZERO; 5];
        assert_eq!(to_fp16(&x, false, &mut out).unwrap(), 2);
        assert_eq!(out[1].to_f32(), 65504.0);
        assert_eq!(out[2].to_f32(), -65504.0);
        assert_eq!(out[3].to_f32(), 65504.0);
    }

    #[test]
    fn ties_round_to_even() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even gives 1.
        let mut out = [f16::ZERO; 2];
        to_fp16(&[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)], false, &mut out).unwrap();
        assert_eq!(out[0].to_f32(), 1.0);
        assert_eq!(out[1].to_f32(), 1.0 + 2.0 * 2f32.powi(-10));
    }
}
