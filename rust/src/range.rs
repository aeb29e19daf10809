//! Min/max reductions per quantization parameter, with a count of non-finite values.
//!
//! Non-finite values never enter a range; whether their presence is an error is the caller's call.

use crate::elem::{is_finite, Elem};
use crate::error::{Error, Result};
use crate::layout::ParamMap;
use rayon::prelude::*;

/// Elements handled by one parallel task.
pub(crate) const CHUNK: usize = 1 << 16;
const LANES: usize = 16;

/// Per-parameter ranges. A parameter with no finite element has `min = +inf`, `max = -inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// Min, max and non-finite count of one slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    pub min: f32,
    pub max: f32,
    pub bad: usize,
}

impl Scan {
    pub(crate) const EMPTY: Scan = Scan { min: f32::INFINITY, max: f32::NEG_INFINITY, bad: 0 };

    pub(crate) fn merge(self, o: Scan) -> Scan {
        Scan { min: self.min.min(o.min), max: self.max.max(o.max), bad: self.bad + o.bad }
    }
}

/// Scans a slice with independent lanes so the loop compiles to SIMD min/max.
pub(crate) fn scan<T: Elem>(x: &[T]) -> Scan {
    crate::simd::simd!(scan_impl(x))
}

#[inline(always)]
fn scan_impl<T: Elem>(x: &[T]) -> Scan {
    let mut mn = [f32::INFINITY; LANES];
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut bad = [0u32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        crate::simd::prefetch(c.as_ptr());
        for j in 0..LANES {
            let v = c[j].to_f32();
            let fin = is_finite(v);
            bad[j] += (!fin) as u32;
            let lo = if fin { v } else { f32::INFINITY };
            let hi = if fin { v } else { f32::NEG_INFINITY };
            mn[j] = if lo < mn[j] { lo } else { mn[j] };
            mx[j] = if hi > mx[j] { hi } else { mx[j] };
        }
    }
    // Lanes folded in halves (vector min/max: the lanes hold no NaN), not one by one: for a
    // group of 32 a lane-by-lane merge cost more than the scan itself.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            mn[j] = if mn[j + w] < mn[j] { mn[j + w] } else { mn[j] };
            mx[j] = if mx[j + w] > mx[j] { mx[j + w] } else { mx[j] };
            bad[j] += bad[j + w];
        }
    }
    let mut s = Scan { min: mn[0], max: mx[0], bad: bad[0] as usize };
    for v in chunks.remainder() {
        let v = v.to_f32();
        if is_finite(v) {
            s = s.merge(Scan { min: v, max: v, bad: 0 });
        } else {
            s.bad += 1;
        }
    }
    s
}

/// Element-wise scan of a row into per-element accumulators; returns the non-finite count.
fn scan_into<T: Elem>(x: &[T], mn: &mut [f32], mx: &mut [f32]) -> usize {
    crate::simd::simd!(scan_into_impl(x, mn, mx))
}

#[inline(always)]
fn scan_into_impl<T: Elem>(x: &[T], mn: &mut [f32], mx: &mut [f32]) -> usize {
    let mut bad = 0usize;
    for ((v, lo), hi) in x.iter().zip(mn.iter_mut()).zip(mx.iter_mut()) {
        let v = v.to_f32();
        let fin = is_finite(v);
        bad += (!fin) as usize;
        if fin {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
    bad
}

/// Computes the range of every parameter of `map` over `x`.
///
/// Non-finite values are left out of the ranges; unless `ignore_nonfinite`, their presence is
/// an [`Error::NonFinite`] naming the count and the first index.
pub fn ranges<T: Elem>(x: &[T], map: &ParamMap, ignore_nonfinite: bool) -> Result<Ranges> {
    if x.len() != map.len {
        return Err(Error::Shape(format!("data has {} elements, shape has {}", x.len(), map.len)));
    }
    let n = map.n_params();
    let mut r = Ranges { min: vec![f32::INFINITY; n], max: vec![f32::NEG_INFINITY; n] };
    let bad = if x.is_empty() {
        0
    } else if n == 1 {
        let s = x.par_chunks(CHUNK).map(scan).reduce(|| Scan::EMPTY, Scan::merge);
        r.min[0] = s.min;
        r.max[0] = s.max;
        s.bad
    } else if map.per_group {
        per_group(x, map, &mut r)
    } else {
        per_channel(x, map, &mut r)
    };
    if bad > 0 && !ignore_nonfinite {
        let first_index = crate::elem::first_nonfinite(x).unwrap_or(0);
        return Err(Error::NonFinite { count: bad, first_index });
    }
    Ok(r)
}

/// Per group: each block of `group * inner` elements owns `inner` consecutive parameters. Tasks
/// take many blocks at once and dispatch to SIMD once, so small groups cost no per-block overhead.
fn per_group<T: Elem>(x: &[T], map: &ParamMap, r: &mut Ranges) -> usize {
    let inner = map.inner;
    let block = map.group * inner;
    let blocks = (CHUNK / block.max(1)).max(1);
    x.par_chunks(block * blocks)
        .zip(r.min.par_chunks_mut(inner * blocks).zip(r.max.par_chunks_mut(inner * blocks)))
        .map(|(xs, (mn, mx))| crate::simd::simd!(group_blocks(xs, block, inner, mn, mx)))
        .sum()
}

#[inline(always)]
fn group_blocks<T: Elem>(xs: &[T], block: usize, inner: usize, mn: &mut [f32], mx: &mut [f32]) -> usize {
    if inner == 1 && xs.len() % block == 0 {
        return short_groups(xs, block, mn, mx);
    }
    let mut bad = 0;
    for ((xb, mn), mx) in xs.chunks(block).zip(mn.chunks_mut(inner)).zip(mx.chunks_mut(inner)) {
        if inner == 1 {
            let s = scan_impl(xb);
            mn[0] = s.min;
            mx[0] = s.max;
            bad += s.bad;
        } else {
            bad += xb.chunks(inner).map(|row| scan_into_impl(row, mn, mx)).sum::<usize>();
        }
    }
    bad
}

/// The ranges of the consecutive groups of `g` values that make up `xs` into `mn` and `mx`;
/// returns the non-finite count. `f32` groups of a multiple of 8 values go to the AVX2 kernel
/// ([`crate::range_avx2`]) when the CPU has it, which reads eight groups at a time; the lane
/// scan redoes them where it finds a NaN or Inf, to count them.
#[inline(always)]
pub(crate) fn short_groups<T: Elem>(xs: &[T], g: usize, mn: &mut [f32], mx: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let (Some(xf), true, true) = (crate::elem::as_f32(xs), g % 8 == 0 && g > 0, crate::simd::avx2()) {
        // SAFETY: AVX2 was checked, g is a positive multiple of 8 and `xs` holds whole groups.
        if unsafe { crate::range_avx2::group_ranges(xf, g, &mut mn[..xf.len() / g], &mut mx[..xf.len() / g]) }
        {
            return 0;
        }
    }
    let mut bad = 0;
    for ((xb, mn), mx) in xs.chunks_exact(g).zip(mn.iter_mut()).zip(mx.iter_mut()) {
        let s = scan_impl(xb);
        (*mn, *mx) = (s.min, s.max);
        bad += s.bad;
    }
    bad
}

/// Per channel: channel `c` owns parameter `c`; slabs of `dim * inner` elements repeat the pattern.
fn per_channel<T: Elem>(x: &[T], map: &ParamMap, r: &mut Ranges) -> usize {
    let (dim, inner) = (map.dim, map.inner);
    if map.outer == 1 {
        let min_len = (CHUNK / inner.max(1)).max(1);
        return x
            .par_chunks(inner)
            .zip(r.min.par_iter_mut().zip(r.max.par_iter_mut()))
            .with_min_len(min_len)
            .map(|(xc, (mn, mx))| {
                let s = scan(xc);
                *mn = s.min;
                *mx = s.max;
                s.bad
            })
            .sum();
    }
    let slab = dim * inner;
    let min_len = (CHUNK / slab.max(1)).max(1);
    let empty = || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim], 0usize);
    let (mn, mx, bad) = x
        .par_chunks(slab)
        .with_min_len(min_len)
        .fold(empty, |(mut mn, mut mx, mut bad), xs| {
            if inner == 1 {
                bad += scan_into(xs, &mut mn, &mut mx);
            } else {
                for (c, row) in xs.chunks(inner).enumerate() {
                    let s = scan(row);
                    mn[c] = mn[c].min(s.min);
                    mx[c] = mx[c].max(s.max);
                    bad += s.bad;
                }
            }
            (mn, mx, bad)
        })
        .reduce(empty, |(mut a, mut b, n), (c, d, m)| {
            a.iter_mut().zip(&c).for_each(|(u, v)| *u = u.min(*v));
            b.iter_mut().zip(&d).for_each(|(u, v)| *u = u.max(*v));
            (a, b, n + m)
        });
    r.min = mn;
    r.max = mx;
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::Granularity;

    #[test]
    fn per_channel_ranges_match_naive() {
        let shape = [5, 7, 3];
        let x: Vec<f32> = (0..105).map(|i| ((i * 37 % 101) as f32) - 50.0).collect();
        for axis in 0..3isize {
            let m = ParamMap::new(&shape, Granularity::PerChannel { axis }).unwrap();
            let r = ranges(&x, &m, false).unwrap();
            let mut mn = vec![f32::INFINITY; shape[axis as usize]];
            let mut mx = vec![f32::NEG_INFINITY; shape[axis as usize]];
            for (i, &v) in x.iter().enumerate() {
                let c = [i / 21, (i / 3) % 7, i % 3][axis as usize];
                mn[c] = mn[c].min(v);
                mx[c] = mx[c].max(v);
            }
            assert_eq!(r.min, mn);
            assert_eq!(r.max, mx);
        }
    }

    #[test]
    fn nonfinite_is_counted_and_located() {
        let mut x = vec![1.0f32; 100];
        x[17] = f32::NAN;
        x[40] = f32::INFINITY;
        let m = ParamMap::new(&[100], Granularity::PerTensor).unwrap();
        assert_eq!(ranges(&x, &m, false), Err(Error::NonFinite { count: 2, first_index: 17 }));
        let r = ranges(&x, &m, true).unwrap();
        assert_eq!((r.min[0], r.max[0]), (1.0, 1.0));
    }
}
