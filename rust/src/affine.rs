//! Affine grids with a free offset: the scale and minimum of a grid `0..=nmax` with the least
//! (weighted) squared error for a group of values, found by least-squares fits from candidate
//! ranges and refined by alternating codes and fits. llama.cpp's Q4_1/Q5_1 and K-type blocks use
//! it (`ggml`), and so does ONNX Runtime's MatMulNBits with float zero points (`affine_groups`).

use crate::error::{Error, Result};
use crate::ggml::nearest_int;
use rayon::prelude::*;

/// One group's search: its values, weights, grid and how its parameters are stored. The fits and
/// errors of eight candidates are taken at once, one a lane, each sum over the values in order:
/// a candidate at a time, the search was scalar sums and their reductions.
struct Group<'a> {
    x: &'a [f32],
    w: Option<&'a [f32]>,
    nmax: i32,
    nonpositive_min: bool,
    round: fn(f32) -> f32,
}

impl Group<'_> {
    /// Least-squares fits `x ≈ scale · q + min` of `L` code sets (lane `l`'s code of value `v` is
    /// `code(v, l)`, clamped to the grid); None where the codes do not determine both. Where the
    /// min must not be positive (the K types store it negated), a positive one is set to 0 and
    /// the scale refitted alone.
    #[inline(always)]
    fn fits<const L: usize>(&self, code: impl Fn(f32, usize) -> i32) -> [Option<(f32, f32)>; L] {
        let (mut sw, mut sx) = (0f32, 0f32);
        let (mut sl, mut sl2, mut sxl) = ([0f32; L], [0f32; L], [0f32; L]);
        for (i, &v) in self.x.iter().enumerate() {
            let wi = self.w.map_or(1.0, |w| w[i]);
            (sw, sx) = (sw + wi, sx + wi * v);
            for l in 0..L {
                let q = code(v, l).clamp(0, self.nmax) as f32;
                sl[l] += wi * q;
                sl2[l] += wi * q * q;
                sxl[l] += wi * q * v;
            }
        }
        std::array::from_fn(|l| {
            // dd > 0 also makes sw and sl2 positive.
            let dd = sw * sl2[l] - sl[l] * sl[l];
            (dd > 0.0).then(|| {
                let m = (sl2[l] * sx - sl[l] * sxl[l]) / dd;
                if self.nonpositive_min && m > 0.0 {
                    (sxl[l] / sl2[l], 0.0)
                } else {
                    ((sw * sxl[l] - sx * sl[l]) / dd, m)
                }
            })
        })
    }

    /// Weighted squared errors of `L` parameter pairs as stored (nearest codes); infinite for a
    /// scale that is not positive.
    #[inline(always)]
    fn errors<const L: usize>(&self, sm: [(f32, f32); L]) -> [f32; L] {
        let (s, m) = (sm.map(|(s, _)| (self.round)(s)), sm.map(|(_, m)| (self.round)(m)));
        let inv = s.map(|s| 1.0 / s);
        let mut e = [0f32; L];
        for (i, &v) in self.x.iter().enumerate() {
            let wi = self.w.map_or(1.0, |w| w[i]);
            for l in 0..L {
                let q = nearest_int((v - m[l]) * inv[l]).clamp(0, self.nmax);
                let d = v - (s[l] * q as f32 + m[l]);
                e[l] += wi * d * d;
            }
        }
        std::array::from_fn(|l| if s[l] > 0.0 { e[l] } else { f32::INFINITY })
    }
}

/// The affine parameters `(scale, min)` of a grid `0..=nmax` with the least weighted squared
/// error for `x`: candidate ranges shrunk and stretched around the data's, each refitted by least
/// squares; `min <= 0` when `nonpositive_min` (the K types store `-min`), as stored (`round`).
#[inline(always)]
pub fn affine_search(
    x: &[f32],
    w: Option<&[f32]>,
    nmax: i32,
    nonpositive_min: bool,
    round: fn(f32) -> f32,
) -> (f32, f32) {
    let (mut min, max) = x.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if nonpositive_min && min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        return (0.0, round(min));
    }
    let g = Group { x, w, nmax, nonpositive_min, round };
    let mut best = ((max - min) / nmax as f32, min);
    let [mut best_err] = g.errors([best]);
    // STARTS inverse scales around the range's, with codes counted up from the minimum; for the
    // affine types also down from the maximum (that finds the fits which clip the low end; the K
    // types' sub-blocks gain nothing from it). Eight a batch, in order, the last one repeated to
    // fill the last batch.
    const STARTS: usize = 41;
    for down in [false, true] {
        if down && nonpositive_min {
            break;
        }
        for b in 0..STARTS.div_ceil(8) {
            let iscale: [f32; 8] = std::array::from_fn(|l| {
                (nmax as f32 - 2.0 + 0.1 * (8 * b + l).min(STARTS - 1) as f32) / (max - min)
            });
            let fits = if down {
                g.fits::<8>(|v, l| nmax - nearest_int(iscale[l] * (max - v)))
            } else {
                g.fits::<8>(|v, l| nearest_int(iscale[l] * (v - min)))
            };
            // A lane without a fit is scored with scale 0: infinite.
            let errs = g.errors(fits.map(|f| f.unwrap_or((0.0, 0.0))));
            for (f, e) in fits.into_iter().zip(errs) {
                if let Some(f) = f.filter(|_| e < best_err) {
                    (best, best_err) = (f, e);
                }
            }
        }
    }
    // Alternate from the best: nearest codes for the parameters, parameters refitted to the codes.
    for _ in 0..4 {
        let (s, m) = (round(best.0), round(best.1));
        let [Some(f)] = g.fits::<1>(|v, _| nearest_int((v - m) / s)) else { break };
        let [e] = g.errors([f]);
        if e.total_cmp(&best_err).is_ge() {
            break;
        }
        (best, best_err) = (f, e);
    }
    (round(best.0), round(best.1))
}

/// `(scale, min)` of every group of `group` consecutive values of `x` for the grid `0..=nmax`,
/// each value's error weighted by `importance[i % group]` when given; with `f16`, the parameters
/// as float16 stores them. NaN/Inf are refused.
pub fn affine_groups(
    x: &[f32],
    group: usize,
    nmax: i32,
    importance: Option<&[f32]>,
    f16: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if group == 0 || x.len() % group != 0 {
        return Err(Error::Shape(format!("{} values are not whole groups of {group}", x.len())));
    }
    if !(1..=255).contains(&nmax) {
        return Err(Error::Invalid(format!("a grid 0..={nmax} is not one of 2 to 256 codes")));
    }
    if let Some(first_index) = crate::elem::first_nonfinite(x) {
        return Err(Error::NonFinite { count: x.iter().filter(|v| !v.is_finite()).count(), first_index });
    }
    if let Some(w) = importance {
        if w.len() % group != 0 || w.is_empty() {
            return Err(Error::Shape(format!(
                "importance has {} values, not a multiple of the group {group}",
                w.len()
            )));
        }
    }
    let round: fn(f32) -> f32 = if f16 { |v| half::f16::from_f32(v).to_f32() } else { |v| v };
    let (scale, min): (Vec<f32>, Vec<f32>) = x
        .par_chunks(group)
        .enumerate()
        .map(|(g, xs)| {
            let w = importance.map(|w| {
                let start = (g * group) % w.len();
                &w[start..start + group]
            });
            crate::simd::simd!(affine_search(xs, w, nmax, false, round))
        })
        .unzip();
    Ok((scale, min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sq_error(x: &[f32], s: f32, m: f32, nmax: i32) -> f32 {
        x.iter()
            .map(|&v| {
                let q = nearest_int((v - m) / s).clamp(0, nmax);
                (v - (s * q as f32 + m)).powi(2)
            })
            .sum()
    }

    #[test]
    fn the_fit_beats_the_data_range() {
        let x: Vec<f32> = (0..640).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0).powi(3)).collect();
        let (scale, min) = affine_groups(&x, 64, 15, None, false).unwrap();
        for (g, xs) in x.chunks(64).enumerate() {
            let (lo, hi) = xs.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(sq_error(xs, scale[g], min[g], 15) <= sq_error(xs, (hi - lo) / 15.0, lo, 15) * 1.0001);
        }
    }

    /// A lane's fit and error do not depend on the other lanes: eight at once equal one at a time.
    #[test]
    fn eight_lanes_equal_one_at_a_time() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0).powi(3)).collect();
        let w: Vec<f32> = (0..96).map(|i| (i % 5) as f32 * 0.25).collect();
        for (k, xs) in x.chunks(32).enumerate() {
            let w = (k != 1).then(|| &w[32 * k..32 * k + 32]);
            for nonpositive_min in [false, true] {
                let g = Group { x: xs, w, nmax: 15, nonpositive_min, round: |v| v };
                let iscale: [f32; 8] = std::array::from_fn(|l| 5.0 + 2.0 * l as f32);
                let code = |v: f32, l: usize| nearest_int(iscale[l] * (v + 0.3));
                let fits = g.fits::<8>(code);
                let errs = g.errors(fits.map(|f| f.unwrap_or((0.0, 0.0))));
                for l in 0..8 {
                    assert_eq!(fits[l], g.fits::<1>(|v, _| code(v, l))[0], "group {k} lane {l}");
                    assert_eq!(errs[l].to_bits(), g.errors([fits[l].unwrap_or((0.0, 0.0))])[0].to_bits());
                }
            }
        }
    }

    #[test]
    fn refusals() {
        assert!(affine_groups(&[1.0; 10], 4, 15, None, false).is_err());
        assert!(affine_groups(&[f32::NAN; 4], 4, 15, None, false).is_err());
        assert!(affine_groups(&[1.0; 4], 4, 0, None, false).is_err());
    }
}
