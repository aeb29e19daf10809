//! The MSE clip search on the data (for weights): for each parameter cell, the clip range whose
//! fake-quantization error is smallest. Coarse fractions of the cell's range (0.02 to 1), then 21
//! around the best (steps of 0.002); asymmetric schemes shrink both ends together first, then
//! refine each end twice.
//!
//! Cells are searched eight at a time: their values are interleaved (`value k of lane l` at
//! `8k + l`) so that every step of a candidate's error is one vector operation over eight cells,
//! and the per-candidate work (scale, zero point) is spread over the eight. A group of 32 values
//! costs about as much per value as a channel of 4096.

use crate::elem::{is_finite, Elem};
use crate::layout::{ParamMap, Run};
use crate::scheme::Scheme;
use rayon::prelude::*;

const LANES: usize = 8;
/// `1.5 * 2^23`: adding and subtracting it rounds half to even for `|v| < 2^22`.
const MAGIC: f32 = 12_582_912.0;
/// Lane blocks handed to one rayon task.
const BLOCKS_PER_TASK: usize = 16;

type Lanes = [f32; LANES];

/// Cells at least this large, when there are fewer than eight, are each spread over all lanes.
const SPREAD_CELL: usize = 1024;

/// Per-element weights of the squared error: element `i` of the tensor weighs
/// `weights[i % weights.len()]` (one weight per position along the last, input, dimension:
/// llama.cpp's importance `E[x_j^2]`).
pub type Importance<'a> = Option<&'a [f32]>;

/// The search's clip range `(lo, hi)` for every parameter of `map` (cells in parameter order),
/// minimizing the squared error, or with `importance` the weighted squared error. Non-finite
/// values are left out (the caller has already refused them unless they are ignored).
/// Importance needs cells that are contiguous runs (groups along the last axis, channels along
/// the first, a whole tensor); the caller checks this with [`contiguous`].
pub fn mse_ranges<T: Elem>(
    x: &[T],
    map: &ParamMap,
    scheme: Scheme,
    importance: Importance,
) -> Vec<(f32, f32)> {
    let n = map.n_params();
    if n == 0 || x.is_empty() {
        return vec![(0.0, 0.0); n];
    }
    let cell = x.len() / n;
    let weight = |start: usize, len: usize| -> Vec<f32> {
        let w = importance.unwrap_or(&[]);
        (0..len).map(|k| w[(start + k) % w.len()]).collect()
    };
    if n < LANES && cell >= SPREAD_CELL {
        // Few large cells: each cell's values spread over all eight lanes, errors summed.
        let cells: Vec<Vec<f32>> = if contiguous(map) {
            (0..n).map(|p| x[p * cell..(p + 1) * cell].iter().map(|v| v.to_f32()).collect()).collect()
        } else {
            gather(x, map)
        };
        return cells
            .iter()
            .enumerate()
            .map(|(p, c)| {
                let round = c.len().div_ceil(LANES) * LANES;
                let mut buf: Vec<f32> = c.iter().map(|&v| if is_finite(v) { v } else { 0.0 }).collect();
                buf.resize(round, 0.0);
                let wbuf = importance.map(|_| {
                    let mut w = weight(p * cell, c.len());
                    w.resize(round, 0.0);
                    w
                });
                let mut out = [(0.0, 0.0)];
                crate::simd::simd!(search_block(
                    &buf,
                    wbuf.as_deref(),
                    round / LANES,
                    scheme,
                    true,
                    &mut out
                ));
                out[0]
            })
            .collect();
    }
    if contiguous(map) {
        let mut out = vec![(0.0, 0.0); n];
        out.par_chunks_mut(LANES * BLOCKS_PER_TASK).enumerate().for_each(|(t, o)| {
            let (mut buf, mut wbuf) = (Vec::new(), Vec::new());
            for (b, ob) in o.chunks_mut(LANES).enumerate() {
                let p0 = (t * BLOCKS_PER_TASK + b) * LANES;
                interleave(&mut buf, cell, ob.len(), |l| &x[(p0 + l) * cell..(p0 + l + 1) * cell]);
                let wb = importance.map(|_| {
                    let cells: Vec<Vec<f32>> = (0..ob.len()).map(|l| weight((p0 + l) * cell, cell)).collect();
                    interleave(&mut wbuf, cell, ob.len(), |l| &cells[l][..]);
                    &wbuf[..]
                });
                crate::simd::simd!(search_block(&buf, wb, cell, scheme, false, ob))
            }
        });
        return out;
    }
    let cells = gather(x, map);
    let mut out = vec![(0.0, 0.0); n];
    out.par_chunks_mut(LANES).zip(cells.par_chunks(LANES)).for_each(|(ob, cs)| {
        let len = cs.iter().map(Vec::len).max().unwrap_or(0);
        let mut buf = Vec::new();
        interleave(&mut buf, len, cs.len(), |l| &cs[l][..]);
        crate::simd::simd!(search_block(&buf, None, len, scheme, false, ob))
    });
    out
}

/// True when every parameter cell of `map` is one contiguous run of the data: groups along the
/// last axis, channels along the first axis, or a whole tensor.
pub fn contiguous(map: &ParamMap) -> bool {
    (map.per_group && map.inner == 1) || (!map.per_group && map.outer == 1)
}

/// The values of each parameter cell (finite ones), for layouts whose cells are not contiguous.
fn gather<T: Elem>(x: &[T], map: &ParamMap) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new(); map.n_params()];
    map.for_runs(0, x.len(), |off, len, run| {
        for k in 0..len {
            let p = match run {
                Run::Const(p) => p,
                Run::Seq(p) => p + k,
            };
            out[p].push(x[off + k].to_f32());
        }
    });
    out
}

/// Interleaves `used` cells of length at most `len` into `buf` (`8 * len` values). Missing values,
/// unused lanes and non-finite values become 0, which every candidate grid holds exactly (its
/// range always contains 0), so they add no error and do not move the range. (Weights are
/// interleaved the same way; a missing weight is 0.)
fn interleave<'a, T: Elem>(buf: &mut Vec<f32>, len: usize, used: usize, cell: impl Fn(usize) -> &'a [T]) {
    buf.clear();
    buf.resize(len * LANES, 0.0);
    for l in 0..used {
        for (k, v) in cell(l).iter().enumerate() {
            let v = v.to_f32();
            buf[k * LANES + l] = if is_finite(v) { v } else { 0.0 };
        }
    }
}

/// Per-lane scale, its reciprocal and the code bounds `qmin - z`, `qmax - z` for clip ranges
/// `(lo, hi)`: the rules of [`Scheme::params`] in f32 without branches, so that the eight lanes
/// take a few vector operations. (The search only ranks candidates; the parameters of the chosen
/// range come from [`Scheme::params`] itself.)
#[inline(always)]
fn lane_params(scheme: Scheme, lo: &Lanes, hi: &Lanes) -> (Lanes, Lanes, Lanes, Lanes) {
    let (qmin, qmax) = scheme.qrange();
    let (fmin, fmax, span) = (qmin as f32, qmax as f32, (qmax - qmin) as f32);
    let (mut s, mut inv, mut a, mut b) = ([1f32; LANES], [1f32; LANES], [fmin; LANES], [fmax; LANES]);
    for l in 0..LANES {
        let (rlo, rhi) = (lo[l].min(0.0), hi[l].max(0.0));
        let (sl, z) = if scheme.signed_scale {
            ((if rhi > -rlo { rhi } else { rlo }) / fmin, 0.0)
        } else if scheme.symmetric {
            (2.0 * rhi.max(-rlo) / span, 0.0)
        } else {
            let sl = (rhi - rlo) / span;
            let z = ((fmin - rlo / sl) + MAGIC) - MAGIC;
            (sl, z.clamp(fmin, fmax))
        };
        // A zero range (an all-zero cell): any scale gives no error; keep 1 and z = 0.
        let ok = sl.abs() >= f32::MIN_POSITIVE;
        s[l] = if ok { sl } else { 1.0 };
        let z = if ok { z } else { 0.0 };
        inv[l] = 1.0 / s[l];
        (a[l], b[l]) = (fmin - z, fmax - z);
    }
    (s, inv, a, b)
}

/// Squared error per lane of fake-quantizing the block with per-lane clip ranges `(lo, hi)`,
/// each element's error weighted by `wbuf` (interleaved like `buf`) when given.
#[inline(always)]
fn errors(buf: &[f32], wbuf: Option<&[f32]>, scheme: Scheme, lo: &Lanes, hi: &Lanes) -> Lanes {
    let (s, inv, a, b) = lane_params(scheme, lo, hi);
    let err = |v: f32, l: usize| {
        let r = v * inv[l];
        let r = if r > a[l] { r } else { a[l] };
        let r = if r < b[l] { r } else { b[l] };
        let e = v - ((r + MAGIC) - MAGIC) * s[l];
        e * e
    };
    let mut acc = [0f32; LANES];
    match wbuf {
        None => {
            for v in buf.chunks_exact(LANES) {
                for l in 0..LANES {
                    acc[l] += err(v[l], l);
                }
            }
        }
        Some(w) => {
            for (v, w) in buf.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
                for l in 0..LANES {
                    acc[l] += w[l] * err(v[l], l);
                }
            }
        }
    }
    acc
}

/// Per lane, the candidate `cand(lane, j)` (`j < count`) with the least error, given the clip
/// range each candidate implies. `shared`: the lanes hold one cell, so their errors are summed.
#[inline(always)]
fn best(
    buf: &[f32],
    wbuf: Option<&[f32]>,
    scheme: Scheme,
    shared: bool,
    count: usize,
    cand: impl Fn(usize, usize) -> f32,
    range: impl Fn(usize, f32) -> (f32, f32),
) -> Lanes {
    let (mut best, mut err) = ([1f32; LANES], [f32::INFINITY; LANES]);
    for j in 0..count {
        let (mut lo, mut hi, mut c) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for l in 0..LANES {
            c[l] = cand(l, j);
            (lo[l], hi[l]) = range(l, c[l]);
        }
        let mut e = errors(buf, wbuf, scheme, &lo, &hi);
        if shared {
            e = [e.iter().sum(); LANES];
        }
        for l in 0..LANES {
            if e[l] < err[l] {
                (err[l], best[l]) = (e[l], c[l]);
            }
        }
    }
    best
}

/// Searches one block of eight interleaved cells of `len` values (with `shared`, one cell spread
/// over the lanes); writes the first `out.len()` lanes' clip ranges.
#[inline(always)]
fn search_block(
    buf: &[f32],
    wbuf: Option<&[f32]>,
    len: usize,
    scheme: Scheme,
    shared: bool,
    out: &mut [(f32, f32)],
) {
    let (mut mn, mut mx) = ([0f32; LANES], [0f32; LANES]);
    for v in buf[..len * LANES].chunks_exact(LANES) {
        for l in 0..LANES {
            mn[l] = mn[l].min(v[l]);
            mx[l] = mx[l].max(v[l]);
        }
    }
    if shared {
        (mn, mx) = (
            [mn.iter().copied().fold(0.0, f32::min); LANES],
            [mx.iter().copied().fold(0.0, f32::max); LANES],
        );
    }
    let coarse = |_: usize, j: usize| (j + 1) as f32 * 0.02;
    let fine = |c: Lanes| move |l: usize, j: usize| (c[l] - 0.02 + j as f32 * 0.002).clamp(1e-3, 1.0);
    let mut res = [(0f32, 0f32); LANES];
    if scheme.signed_scale {
        // The signed extreme keeps its sign: scale the data's range.
        let range = |l: usize, a: f32| (mn[l] * a, mx[l] * a);
        let c = best(buf, wbuf, scheme, shared, 50, coarse, range);
        let f = best(buf, wbuf, scheme, shared, 21, fine(c), range);
        for l in 0..LANES {
            res[l] = (mn[l] * f[l], mx[l] * f[l]);
        }
    } else if scheme.symmetric {
        let amax: Lanes = std::array::from_fn(|l| mn[l].abs().max(mx[l]));
        let range = |l: usize, a: f32| (-amax[l] * a, amax[l] * a);
        let c = best(buf, wbuf, scheme, shared, 50, coarse, range);
        let f = best(buf, wbuf, scheme, shared, 21, fine(c), range);
        for l in 0..LANES {
            res[l] = (-amax[l] * f[l], amax[l] * f[l]);
        }
    } else {
        let c = best(buf, wbuf, scheme, shared, 50, coarse, |l, a| (mn[l] * a, mx[l] * a));
        let (mut lo, mut hi): (Lanes, Lanes) =
            (std::array::from_fn(|l| mn[l] * c[l]), std::array::from_fn(|l| mx[l] * c[l]));
        for _ in 0..2 {
            let ch: Lanes = std::array::from_fn(|l| hi[l] / mx[l].max(f32::MIN_POSITIVE));
            let b = best(buf, wbuf, scheme, shared, 21, fine(ch), |l, b| (lo[l], mx[l] * b));
            hi = std::array::from_fn(|l| mx[l] * b[l]);
            let cl: Lanes = std::array::from_fn(|l| lo[l] / mn[l].min(-f32::MIN_POSITIVE));
            let c = best(buf, wbuf, scheme, shared, 21, fine(cl), |l, c| (mn[l] * c, hi[l]));
            lo = std::array::from_fn(|l| mn[l] * c[l]);
        }
        for l in 0..LANES {
            res[l] = (lo[l], hi[l]);
        }
    }
    out.copy_from_slice(&res[..out.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{Granularity, Precision};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                // Heavy tails: some values far out.
                if s % 97 == 0 {
                    u * 40.0
                } else {
                    u
                }
            })
            .collect()
    }

    fn sq_error(v: &[f32], scheme: Scheme, lo: f32, hi: f32) -> f64 {
        let (qmin, qmax) = scheme.qrange();
        let (s, z) = scheme.params(lo, hi);
        v.iter()
            .map(|&x| {
                let q = ((x / s).round_ties_even() as i32 + z).clamp(qmin, qmax);
                let e = (x - (q - z) as f32 * s) as f64;
                e * e
            })
            .sum()
    }

    fn schemes() -> Vec<Scheme> {
        let s = Scheme::new(Precision::Int4);
        vec![s, s.asymmetric(true), s.with_signed_scale(), Scheme::new(Precision::Int8).asymmetric(true)]
    }

    #[test]
    fn layouts_agree_and_the_clip_is_never_worse_than_the_full_range() {
        let (rows, cols, g) = (12, 64, 32);
        let x = data(rows * cols, 7);
        // The same cells, transposed: groups along axis 0 of the transpose are gathered.
        let t: Vec<f32> = (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect();
        for scheme in schemes() {
            let by_row = scheme.with_granularity(Granularity::PerGroup { axis: -1, size: g });
            let a = mse_ranges(&x, &ParamMap::new(&[rows, cols], by_row.granularity).unwrap(), by_row, None);
            let by_col = scheme.with_granularity(Granularity::PerGroup { axis: 0, size: g });
            let b = mse_ranges(&t, &ParamMap::new(&[cols, rows], by_col.granularity).unwrap(), by_col, None);
            // Parameter p of the row layout is (row r, group j); of the column layout (group j, row r).
            for r in 0..rows {
                for j in 0..cols / g {
                    assert_eq!(a[r * (cols / g) + j], b[j * rows + r], "{scheme:?}");
                }
            }
            for (p, cell) in x.chunks(g).enumerate() {
                let (mn, mx) = cell.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
                let (lo, hi) = a[p];
                assert!(sq_error(cell, scheme, lo, hi) <= sq_error(cell, scheme, mn, mx) * (1.0 + 1e-6));
            }
        }
    }

    #[test]
    fn one_large_cell_spreads_over_the_lanes() {
        let x = data(1000, 3);
        for scheme in schemes() {
            let m = ParamMap::new(&[1000], scheme.granularity).unwrap();
            let [(lo, hi)] = mse_ranges(&x, &m, scheme, None)[..] else { panic!() };
            let (mn, mx) = x.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            let best = sq_error(&x, scheme, lo, hi);
            assert!(best <= sq_error(&x, scheme, mn, mx) * (1.0 + 1e-6), "{scheme:?}");
            // Brute force over 400 fractions of the range: the search is within 2% of it.
            let brute = (1..=400)
                .map(|k| k as f32 / 400.0)
                .map(|a| {
                    if scheme.symmetric && !scheme.signed_scale {
                        let t = mn.abs().max(mx) * a;
                        sq_error(&x, scheme, -t, t)
                    } else {
                        sq_error(&x, scheme, mn * a, mx * a)
                    }
                })
                .fold(f64::INFINITY, f64::min);
            assert!(best <= brute * 1.02, "{scheme:?}: {best} vs brute force {brute}");
        }
    }
}
