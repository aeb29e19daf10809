//! Scale and zero point from a range, with the ONNX Runtime formulas (`quant_utils.compute_scale_zp`).

use crate::error::{Error, Result};
use crate::layout::ParamMap;
use crate::range::Ranges;
use crate::scheme::Scheme;

/// Quantization parameters of one tensor: `x ~ (q - zero_point) * scale`, one pair per grid cell.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    pub scheme: Scheme,
    /// Shape of the parameter grid (`[]` per tensor).
    pub grid: Vec<usize>,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
}

/// Rounds half to even, like `numpy.rint` and `nearbyint`. Adding and subtracting 1.5 * 2^52
/// rounds in the FPU's default mode (no libm call on baseline x86-64); larger values are integers.
#[inline(always)]
pub fn round_even(v: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    if v.abs() < 4_503_599_627_370_496.0 {
        (v + MAGIC) - MAGIC
    } else {
        v
    }
}

/// Scale and zero point for the range `[rmin, rmax]` on the grid `qmin..=qmax`.
///
/// Follows ONNX Runtime: widen the range to contain 0; symmetric schemes use `[-absmax, absmax]`;
/// `s = (rmax - rmin) / (qmax - qmin)` in f64, stored as f32; `z = round(qmin - rmin / s)`
/// (symmetric: `round((qmin + qmax) / 2)`); a scale below the smallest normal f32 becomes
/// `s = 1, z = 0`. One addition: a degenerate range `rmin == rmax != 0` is a constant, and gets
/// `s = |c|` so that the constant reconstructs exactly (as `q - z = ±1`).
/// A range with no values (`rmin > rmax`, e.g. all elements were NaN and ignored) gives `s = 1, z = 0`.
#[inline(always)]
pub fn scale_zero_point(rmin: f32, rmax: f32, qmin: i32, qmax: i32, symmetric: bool) -> (f32, i32) {
    if rmin > rmax || !rmin.is_finite() || !rmax.is_finite() {
        return (1.0, 0);
    }
    if rmin == rmax && rmin != 0.0 {
        // Symmetric: q = ±1, z = 0. Asymmetric (qmin = 0): c > 0 is q = 1, z = 0; c < 0 is q = 0, z = 1.
        let zp = if symmetric || rmin > 0.0 { 0 } else { qmin + 1 };
        return (rmin.abs(), zp);
    }
    let (mut lo, mut hi) = (rmin.min(0.0) as f64, rmax.max(0.0) as f64);
    if symmetric {
        let a = lo.abs().max(hi.abs());
        lo = -a;
        hi = a;
    }
    let scale = (hi - lo) / (qmax - qmin) as f64;
    if scale < f32::MIN_POSITIVE as f64 {
        return (1.0, 0);
    }
    let zp =
        if symmetric { round_even((qmin + qmax) as f64 / 2.0) } else { round_even(qmin as f64 - lo / scale) };
    (scale as f32, (zp as i32).clamp(qmin, qmax))
}

/// [`scale_zero_point`] without branches, every case computed and the result selected, so that a
/// loop over many ranges (groups of 32: one pair per 32 values) vectorizes instead of taking
/// unpredictable branches and two float64 divisions one pair at a time. Same results (tested).
#[inline(always)]
fn scale_zero_point_lanes<const SYMMETRIC: bool>(rmin: f32, rmax: f32, qmin: i32, qmax: i32) -> (f32, i32) {
    // Ordered and finite (NaN fails every comparison).
    let good = (rmin <= rmax) & (rmin.abs() <= f32::MAX) & (rmax.abs() <= f32::MAX);
    let constant = (rmin == rmax) & (rmin != 0.0);
    let (mut lo, mut hi) =
        (if rmin < 0.0 { rmin } else { 0.0 } as f64, if rmax > 0.0 { rmax } else { 0.0 } as f64);
    if SYMMETRIC {
        let a = if lo.abs() > hi.abs() { lo.abs() } else { hi.abs() };
        (lo, hi) = (-a, a);
    }
    let scale = (hi - lo) / (qmax - qmin) as f64;
    let tiny = scale < f32::MIN_POSITIVE as f64;
    let zpf =
        if SYMMETRIC { round_even((qmin + qmax) as f64 / 2.0) } else { round_even(qmin as f64 - lo / scale) };
    // Clamped as a float first: the same integer as `as i32` then clamping, for every value that
    // reaches the result (NaN only in cases selected away).
    let zp = (if zpf < qmin as f64 {
        qmin as f64
    } else if zpf > qmax as f64 {
        qmax as f64
    } else {
        zpf
    }) as i32;
    let kzp = if SYMMETRIC || rmin > 0.0 { 0 } else { qmin + 1 };
    let (s, z) = if constant {
        (rmin.abs(), kzp)
    } else if tiny {
        (1.0, 0)
    } else {
        (scale as f32, zp)
    };
    if good {
        (s, z)
    } else {
        (1.0, 0)
    }
}

/// llama.cpp's signed scale (Q4_0, Q5_0): the value of largest magnitude in `[rmin, rmax]`
/// divided by `qmin`, so that it quantizes exactly to `qmin` and all codes `qmin..=qmax` are used;
/// the scale is negative when that value is positive. Zero point 0. A range whose ends have equal
/// magnitude (a symmetric clip) takes the negative end, so the scale is positive. A range with no
/// values, or a scale below the smallest normal f32, gives `s = 1, z = 0`.
#[inline(always)]
pub fn signed_scale(rmin: f32, rmax: f32, qmin: i32) -> (f32, i32) {
    if rmin > rmax || !rmin.is_finite() || !rmax.is_finite() {
        return (1.0, 0);
    }
    let m = if rmax > -rmin { rmax } else { rmin };
    let s = m as f64 / qmin as f64;
    if s.abs() < f32::MIN_POSITIVE as f64 {
        return (1.0, 0);
    }
    (s as f32, 0)
}

impl QParams {
    /// Parameters for every cell of `map` from its ranges.
    pub fn from_ranges(scheme: Scheme, map: &ParamMap, r: &Ranges) -> Self {
        use rayon::prelude::*;
        // Per group there is one pair per 32 values (512K for a 4096 x 4096 matrix): parallel
        // chunks, each with the rounding compiled inline (SSE4.1/AVX2).
        const CHUNK: usize = 1 << 14;
        let n = r.min.len();
        let (mut scale, mut zero_point) = (vec![0f32; n], vec![0i32; n]);
        scale.par_chunks_mut(CHUNK).zip(zero_point.par_chunks_mut(CHUNK)).enumerate().for_each(
            |(i, (s, z))| {
                let (lo, hi) =
                    (&r.min[i * CHUNK..i * CHUNK + s.len()], &r.max[i * CHUNK..i * CHUNK + s.len()]);
                crate::simd::simd!(Self::pairs_into(scheme, lo, hi, s, z))
            },
        );
        QParams { scheme, grid: map.grid.clone(), scale, zero_point }
    }

    #[inline(always)]
    pub(crate) fn pairs_into(scheme: Scheme, lo: &[f32], hi: &[f32], scale: &mut [f32], zp: &mut [i32]) {
        let pairs = lo.iter().zip(hi).zip(scale.iter_mut()).zip(zp.iter_mut());
        if scheme.signed_scale {
            for (((&a, &b), s), z) in pairs {
                (*s, *z) = scheme.params(a, b);
            }
            return;
        }
        let (qmin, qmax) = scheme.qrange();
        if scheme.symmetric {
            for (((&a, &b), s), z) in pairs {
                (*s, *z) = scale_zero_point_lanes::<true>(a, b, qmin, qmax);
            }
        } else {
            for (((&a, &b), s), z) in pairs {
                (*s, *z) = scale_zero_point_lanes::<false>(a, b, qmin, qmax);
            }
        }
    }

    /// Checks that these parameters fit `map` and are usable: positive finite scales (nonzero
    /// finite ones with a signed scale), zero points on the grid.
    pub fn validate(&self, map: &ParamMap) -> Result<()> {
        self.scheme.check()?;
        if !self.scheme.precision.is_integer() {
            return Err(Error::Invalid(format!(
                "{} needs no scale; integer quantization needs int8 or int4",
                self.scheme.precision.name()
            )));
        }
        if self.grid != map.grid {
            return Err(Error::Shape(format!(
                "quantization parameters have grid shape {:?}, but the tensor needs {:?}",
                self.grid, map.grid
            )));
        }
        let n = map.n_params();
        if self.scale.len() != n || self.zero_point.len() != n {
            return Err(Error::Shape(format!(
                "expected {n} scales and zero points, got {} and {}",
                self.scale.len(),
                self.zero_point.len()
            )));
        }
        // Each check is a branch-free fold over all values first (vectorized: per-group
        // parameters run to millions), and a search for the culprit only when one fails.
        let signed = self.scheme.signed_scale;
        let scale_ok = |s: &f32| {
            if signed {
                s.abs() <= f32::MAX && s.abs() >= f32::MIN_POSITIVE
            } else {
                s.abs() <= f32::MAX && *s > 0.0
            }
        };
        if !self.scale.iter().fold(true, |ok, s| ok & scale_ok(s)) {
            let (i, s) = self.scale.iter().enumerate().find(|(_, s)| !scale_ok(s)).expect("a failing scale");
            let what = if signed { "a nonzero normal number" } else { "a positive finite number" };
            return Err(Error::Invalid(format!("scale {s} at index {i} is not {what}")));
        }
        let (qmin, qmax) = self.scheme.qrange();
        let zp_ok = |z: &i32| (qmin <= *z) & (*z <= qmax);
        if !self.zero_point.iter().fold(true, |ok, z| ok & zp_ok(z)) {
            let (i, z) =
                self.zero_point.iter().enumerate().find(|(_, z)| !zp_ok(z)).expect("a failing zero point");
            return Err(Error::Invalid(format!("zero point {z} at index {i} is outside {qmin}..={qmax}")));
        }
        Ok(())
    }

    /// The real interval each parameter cell represents: `(qmin - z) * s` to `(qmax - z) * s`,
    /// low end first (a negative signed scale swaps them).
    pub fn clip_range(&self) -> Vec<(f32, f32)> {
        let (qmin, qmax) = self.scheme.qrange();
        self.scale
            .iter()
            .zip(&self.zero_point)
            .map(|(&s, &z)| {
                let (a, b) = ((qmin - z) as f32 * s, (qmax - z) as f32 * s);
                (a.min(b), a.max(b))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ranges that test the parameter rule: every pair of edge values (zeros of both signs,
    /// subnormals, ±MAX, ±Inf, NaN, ...) and 20,000 random ordered pairs over 2⁻⁴⁰..2²³.
    pub(crate) fn edge_and_random_ranges() -> Vec<(f32, f32)> {
        let edge = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            1e-30,
            -1e-30,
            1e-45,
            -1e-45,
            f32::MIN_POSITIVE,
            3e38,
            -3e38,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.1,
            -0.37,
            65504.0,
            2.5e-8,
        ];
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut rand = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let e = (state >> 58) as i32 - 40;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2f32.powi(e)
        };
        let mut pairs: Vec<(f32, f32)> =
            edge.iter().flat_map(|&a| edge.iter().map(move |&b| (a, b))).collect();
        pairs.extend((0..20000).map(|_| {
            let (a, b) = (rand(), rand());
            (a.min(b), a.max(b))
        }));
        pairs
    }

    /// The branch-free lanes against the branchy reference on edge and random ranges, every grid.
    #[test]
    fn lanes_equal_scale_zero_point() {
        let pairs = edge_and_random_ranges();
        for (qmin, qmax) in [(0, 255), (0, 15), (-127, 127), (-8, 7), (-128, 127), (-7, 7)] {
            for &(a, b) in &pairs {
                let sym = qmin < 0;
                let want = scale_zero_point(a, b, qmin, qmax, sym);
                let got = if sym {
                    scale_zero_point_lanes::<true>(a, b, qmin, qmax)
                } else {
                    scale_zero_point_lanes::<false>(a, b, qmin, qmax)
                };
                assert_eq!(
                    (got.0.to_bits(), got.1),
                    (want.0.to_bits(), want.1),
                    "{a:e}..{b:e} on {qmin}..={qmax}"
                );
            }
        }
    }

    #[test]
    fn round_half_even() {
        for (v, r) in
            [(0.5, 0.0), (1.5, 2.0), (2.5, 2.0), (-0.5, 0.0), (-1.5, -2.0), (2.4, 2.0), (-2.6, -3.0)]
        {
            assert_eq!(round_even(v), r, "{v}");
        }
    }

    #[test]
    fn onnx_runtime_formulas() {
        // Symmetric INT8 restricted: s = absmax / 127, z = 0.
        assert_eq!(scale_zero_point(-2.0, 1.0, -127, 127, true), ((2.0f64 * 2.0 / 254.0) as f32, 0));
        // Asymmetric UINT8: the range is widened to contain 0.
        let (s, z) = scale_zero_point(0.5, 2.0, 0, 255, false);
        assert_eq!((s, z), ((2.0f64 / 255.0) as f32, 0));
        let (s, z) = scale_zero_point(-1.0, 3.0, 0, 255, false);
        assert_eq!(s, (4.0f64 / 255.0) as f32);
        assert_eq!(z, round_even(1.0 / (4.0 / 255.0)) as i32);
        // Zero range.
        assert_eq!(scale_zero_point(0.0, 0.0, -127, 127, true), (1.0, 0));
        assert_eq!(scale_zero_point(1e-40, 1e-40 + 1e-45, 0, 255, false), (1.0, 0));
    }

    #[test]
    fn signed_scale_puts_the_extreme_on_qmin() {
        // Positive extreme: negative scale, the extreme is code -8 exactly.
        let (s, z) = signed_scale(-1.0, 4.0, -8);
        assert_eq!((s, z), (-0.5, 0));
        assert_eq!(round_even((4.0 / s) as f64), -8.0);
        // Negative extreme: positive scale.
        assert_eq!(signed_scale(-4.0, 1.0, -8), (0.5, 0));
        // Equal magnitudes take the negative end; empty and zero ranges give s = 1.
        assert_eq!(signed_scale(-2.0, 2.0, -8), (0.25, 0));
        assert_eq!(signed_scale(1.0, -1.0, -8), (1.0, 0));
        assert_eq!(signed_scale(0.0, 0.0, -128), (1.0, 0));
        // A constant reconstructs exactly.
        let (s, _) = signed_scale(3.7, 3.7, -8);
        assert_eq!(round_even((3.7f32 / s) as f64) as f32 * s, 3.7);
    }

    #[test]
    fn constants_reconstruct_exactly() {
        for c in [3.7f32, -0.001, 1e30, -65000.0] {
            for (qmin, qmax, sym) in [(-127, 127, true), (0, 255, false), (0, 15, false), (-8, 7, true)] {
                let (s, z) = scale_zero_point(c, c, qmin, qmax, sym);
                let q = ((c / s).round() as i32 + z).clamp(qmin, qmax);
                assert_eq!((q - z) as f32 * s, c, "{c} {qmin} {qmax}");
            }
        }
    }
}
