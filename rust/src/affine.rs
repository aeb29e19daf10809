//! Affine grids with a free offset: the scale and minimum of a grid `0..=nmax` with the least
//! (weighted) squared error for a group of values, found by least-squares fits from candidate
//! ranges and refined by alternating codes and fits. llama.cpp's Q4_1/Q5_1 and K-type blocks use
//! it (`ggml`), and so does ONNX Runtime's MatMulNBits with float zero points (`affine_groups`).

use crate::error::{Error, Result};
use crate::ggml::nearest_int;
use rayon::prelude::*;

/// Least-squares affine fit `x ≈ scale · q + min` of codes `q` with weights `w`.
#[inline(always)]
fn affine_fit(x: &[f32], q: &[i32], w: Option<&[f32]>) -> Option<(f32, f32)> {
    let (mut sw, mut sx, mut sl, mut sl2, mut sxl) = (0f32, 0f32, 0f32, 0f32, 0f32);
    for i in 0..x.len() {
        let (wi, qi) = (w.map_or(1.0, |w| w[i]), q[i] as f32);
        sw += wi;
        sx += wi * x[i];
        sl += wi * qi;
        sl2 += wi * qi * qi;
        sxl += wi * qi * x[i];
    }
    let dd = sw * sl2 - sl * sl;
    (dd > 0.0).then(|| ((sw * sxl - sx * sl) / dd, (sl2 * sx - sl * sxl) / dd))
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
    let err = |s: f32, m: f32| -> f32 {
        let (s, m) = (round(s), round(m));
        if s <= 0.0 {
            return f32::INFINITY;
        }
        let inv = 1.0 / s;
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let q = nearest_int((v - m) * inv).clamp(0, nmax);
                let d = v - (s * q as f32 + m);
                w.map_or(1.0, |w| w[i]) * d * d
            })
            .sum()
    };
    // The least-squares scale and min for codes `q`; where the min must not be positive (the K
    // types store it negated), a positive one is set to 0 and the scale refitted alone.
    let fit = |q: &[i32]| -> Option<(f32, f32)> {
        let (s, m) = affine_fit(x, q, w)?;
        if !(nonpositive_min && m > 0.0) {
            return Some((s, m));
        }
        let (num, den) = x.iter().zip(q).enumerate().fold((0f32, 0f32), |(a, b), (i, (&v, &qi))| {
            let wi = w.map_or(1.0, |w| w[i]);
            (a + wi * v * qi as f32, b + wi * (qi * qi) as f32)
        });
        Some((if den > 0.0 { num / den } else { s }, 0.0))
    };
    let mut best = ((max - min) / nmax as f32, min);
    let mut best_err = err(best.0, best.1);
    let mut stack = [0i32; 256];
    let mut heap = Vec::new();
    let q: &mut [i32] = if x.len() <= stack.len() {
        &mut stack[..x.len()]
    } else {
        heap.resize(x.len(), 0);
        &mut heap
    };
    // Codes counted up from the minimum; for the affine types also down from the maximum (that
    // finds the fits which clip the low end). The K types' sub-blocks gain nothing from it.
    let starts = if nonpositive_min { 41 } else { 82 };
    for c in 0..starts {
        let is = c % 41;
        let iscale = (nmax as f32 - 2.0 + 0.1 * is as f32) / (max - min);
        for (o, &v) in q.iter_mut().zip(x) {
            *o =
                if c < 41 { nearest_int(iscale * (v - min)) } else { nmax - nearest_int(iscale * (max - v)) }
                    .clamp(0, nmax);
        }
        if let Some((s, m)) = fit(q) {
            let e = err(s, m);
            if e < best_err {
                (best, best_err) = ((s, m), e);
            }
        }
    }
    // Alternate from the best: nearest codes for the parameters, parameters refitted to the codes.
    for _ in 0..4 {
        let (s, m) = (round(best.0), round(best.1));
        for (o, &v) in q.iter_mut().zip(x) {
            *o = nearest_int((v - m) / s).clamp(0, nmax);
        }
        let Some((s, m)) = fit(q) else { break };
        let e = err(s, m);
        if e.total_cmp(&best_err).is_ge() {
            break;
        }
        (best, best_err) = ((s, m), e);
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
            affine_search(xs, w, nmax, false, round)
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

    #[test]
    fn refusals() {
        assert!(affine_groups(&[1.0; 10], 4, 15, None, false).is_err());
        assert!(affine_groups(&[f32::NAN; 4], 4, 15, None, false).is_err());
        assert!(affine_groups(&[1.0; 4], 4, 0, None, false).is_err());
    }
}
