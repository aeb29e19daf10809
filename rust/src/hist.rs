//! Histograms for calibration: fixed bin count, u64 counts, merged across batches by widening the
//! range and re-binning (never by keeping data).
//!
//! Re-binning assigns each old bin's count to the new bin holding the old bin's center. The new
//! range is chosen so that new bins are whole multiples of old bins, aligned to old edges, which
//! makes this exact whenever the old range fits (always, for `|x|` histograms starting at 0).

use crate::elem::{is_finite, Elem};
use rayon::prelude::*;

/// Values per parallel histogram task: large, since each task merges a private histogram.
const HIST_CHUNK: usize = 1 << 19;

/// What a histogram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistKind {
    /// `|x|` over `[0, amax]` (symmetric schemes, entropy).
    Abs,
    /// `x` over `[min, max]` (asymmetric schemes).
    Signed,
}

/// A histogram of `counts.len()` bins over `[lo, lo + width * bins]`, plus a separate count of
/// exact zeros: every grid represents 0 exactly, so zeros (ReLU outputs, padding, pruned weights)
/// carry no quantization error and would only distort the threshold searches as a spike in one bin.
/// `width == 0` means all binned mass sits at `lo` (a constant so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub lo: f64,
    pub width: f64,
    pub counts: Vec<u64>,
    pub zeros: u64,
}

impl Hist {
    /// An empty histogram with `bins` bins.
    pub fn empty(bins: usize) -> Self {
        Hist { lo: 0.0, width: 0.0, counts: vec![0; bins], zeros: 0 }
    }

    /// Number of counted values, zeros included.
    pub fn total(&self) -> u64 {
        self.binned() + self.zeros
    }

    /// Number of values in the bins (zeros excluded).
    pub fn binned(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bin holding `v` (clamped to the ends).
    pub fn bin_of(&self, v: f64) -> usize {
        self.index(v, self.inv())
    }

    /// Bins per unit: `1 / width`, or 0 for a point mass (everything lands in bin 0).
    pub fn inv(&self) -> f64 {
        if self.width > 0.0 {
            1.0 / self.width
        } else {
            0.0
        }
    }

    /// Upper end of the range.
    pub fn hi(&self) -> f64 {
        self.lo + self.width * self.counts.len() as f64
    }

    /// Bin index of `v` (clamped to the ends).
    #[inline(always)]
    fn index(&self, v: f64, inv: f64) -> usize {
        let i = ((v - self.lo) * inv) as isize;
        i.clamp(0, self.counts.len() as isize - 1) as usize
    }

    /// Widens the range to cover `[lo, hi]`, re-binning the counts (see the module docs).
    pub fn cover(&mut self, lo: f64, hi: f64) {
        let bins = self.counts.len() as f64;
        if self.binned() == 0 {
            self.lo = lo;
            self.width = (hi - lo) / bins;
            return;
        }
        if lo >= self.lo && hi <= self.hi() && (self.width > 0.0 || hi == lo) {
            return;
        }
        let (new_lo, new_w) = if self.width == 0.0 {
            let (l, h) = (lo.min(self.lo), hi.max(self.lo));
            (l, (h - l) / bins)
        } else {
            // New bins: k old bins each, starting j old bins below the old start.
            let w = self.width;
            let j = ((self.lo - lo.min(self.lo)) / w).ceil();
            let start = self.lo - j * w;
            let k = ((hi.max(self.hi()) - start) / (w * bins)).ceil().max(1.0);
            (start, k * w)
        };
        let fresh = Hist { lo: new_lo, width: new_w, counts: vec![0; self.counts.len()], zeros: self.zeros };
        let old = std::mem::replace(self, fresh);
        let inv = self.inv();
        for (i, &c) in old.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let center = old.lo + (i as f64 + 0.5) * old.width;
            let b = self.index(center, inv);
            self.counts[b] += c;
        }
    }

    /// Adds another histogram (possibly over another range).
    pub fn merge(&mut self, other: &Hist) {
        self.zeros += other.zeros;
        if other.binned() == 0 {
            return;
        }
        self.cover(other.lo, other.hi());
        let inv = self.inv();
        for (i, &c) in other.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let b = self.index(other.lo + (i as f64 + 0.5) * other.width, inv);
            self.counts[b] += c;
        }
    }

    /// Counts the finite values of `x` (range already covering them), in parallel chunks.
    pub fn add<T: Elem>(&mut self, x: &[T], kind: HistKind) {
        let bins = self.counts.len();
        let (lo, inv) = (self.lo, self.inv());
        if x.len() <= HIST_CHUNK {
            self.zeros += count_into(x, kind, lo, inv, &mut self.counts);
            return;
        }
        let (sum, zeros) = x
            .par_chunks(HIST_CHUNK)
            .fold(
                || (vec![0u64; bins], 0u64),
                |(mut acc, z), xs| {
                    let nz = count_into(xs, kind, lo, inv, &mut acc);
                    (acc, z + nz)
                },
            )
            .reduce(
                || (vec![0u64; bins], 0u64),
                |(mut a, za), (b, zb)| {
                    a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                    (a, za + zb)
                },
            );
        self.counts.iter_mut().zip(&sum).for_each(|(a, b)| *a += b);
        self.zeros += zeros;
    }
}

/// Counts the finite nonzero values of one slice into `h`; returns the number of exact zeros.
/// `kind` becomes a const parameter, so the per-value test folds away.
fn count_into<T: Elem>(x: &[T], kind: HistKind, lo: f64, inv: f64, h: &mut [u64]) -> u64 {
    match kind {
        HistKind::Abs => crate::simd::simd!(count_into_impl::<T, true>(x, lo, inv, h)),
        HistKind::Signed => crate::simd::simd!(count_into_impl::<T, false>(x, lo, inv, h)),
    }
}

/// Bin of a finite `v` (`|v|` when `ABS`), clamped to `[0, last]`: the arithmetic of [`slot`]
/// without its spare slots.
#[inline(always)]
fn bin<const ABS: bool>(v: f32, lo: f32, inv: f32, last: f32) -> u32 {
    let v = if ABS { v.abs() } else { v };
    let f = (v - lo) * inv;
    let f = if f > 0.0 { f } else { 0.0 };
    let f = if f < last { f } else { last };
    // SAFETY: `f` was clamped to `[0, last]` above (NaN becomes 0), so it fits an i32.
    (unsafe { f.to_int_unchecked::<i32>() }) as u32
}

/// Slot of `v`: its bin, or the spare slots `bins` for exact zeros and `bins + 1` for NaN/Inf.
#[inline(always)]
fn slot<const ABS: bool>(v: f32, lo: f32, inv: f32, last: f32, bins: usize) -> u32 {
    if !is_finite(v) {
        (bins + 1) as u32
    } else if v == 0.0 {
        bins as u32
    } else {
        bin::<ABS>(v, lo, inv, last)
    }
}

#[inline(always)]
fn count_into_impl<T: Elem, const ABS: bool>(x: &[T], lo: f64, inv: f64, h: &mut [u64]) -> u64 {
    const BUF: usize = 256;
    const BLOCK: usize = 1 << 30; // u32 sub-counts are flushed before they could overflow
    let bins = h.len();
    let (lo, inv, last) = (lo as f32, inv as f32, (bins - 1) as f32);
    let mut zeros = 0u64;
    if x.len() < 1024 {
        // Short slices (single values from per-channel runs, small groups): count directly,
        // without allocating and flushing a block buffer per call.
        for v in x {
            match slot::<ABS>(v.to_f32(), lo, inv, last, bins) as usize {
                i if i < bins => h[i] += 1,
                i if i == bins => zeros += 1,
                _ => {}
            }
        }
        return zeros;
    }
    // Bins of BUF values first (a vector loop), then their increments (a scalar loop), into u32
    // counts with the two spare slots. Consecutive values go to four separate count arrays: peaked
    // data puts neighbours in the same bin, and one array would chain each increment to the
    // previous one's store (about 5 cycles a value instead of 1-2).
    //
    // The vector loop is the fast path for finite data: exact zeros go to the bin 0 falls in and
    // are only counted, then moved to `zeros` at the flush, and NaN/Inf only raise a flag, after
    // which the buffer is redone with the spare slots. Two selects a vector fewer than slotting
    // every value: the loop's instructions, not memory, bound its speed.
    const WAYS: usize = 4;
    let stride = bins + 2;
    let zero_bin = bin::<ABS>(0.0, lo, inv, last) as usize;
    let mut sub = vec![0u32; WAYS * stride];
    let mut ix = [0u32; BUF];
    for block in x.chunks(BLOCK) {
        let mut hits = 0u32; // exact zeros counted in `zero_bin` of this block
        for c in block.chunks(BUF) {
            // The loop alternates a vector phase with a scalar one, and the hardware prefetcher
            // alone left it waiting on memory (a third of its time on one core).
            for line in c.chunks(64 / std::mem::size_of::<T>().max(1)) {
                crate::simd::prefetch(line.as_ptr());
            }
            let (mut z, mut bad) = (0u32, 0u32);
            for (s, v) in ix.iter_mut().zip(c) {
                let v = v.to_f32();
                *s = bin::<ABS>(v, lo, inv, last);
                z += (v == 0.0) as u32;
                bad |= !is_finite(v) as u32;
            }
            if bad == 0 {
                hits += z;
            } else {
                for (s, v) in ix.iter_mut().zip(c) {
                    *s = slot::<ABS>(v.to_f32(), lo, inv, last, bins);
                }
            }
            let (s0, s123) = sub.split_at_mut(stride);
            let (s1, s23) = s123.split_at_mut(stride);
            let (s2, s3) = s23.split_at_mut(stride);
            let (eights, rest) = ix[..c.len()].split_at(c.len() / 8 * 8);
            for q in eights.chunks_exact(8) {
                // SAFETY: `bin` and `slot` return at most `bins + 1`, and each way has `bins + 2`
                // counts.
                unsafe {
                    *s0.get_unchecked_mut(q[0] as usize) += 1;
                    *s1.get_unchecked_mut(q[1] as usize) += 1;
                    *s2.get_unchecked_mut(q[2] as usize) += 1;
                    *s3.get_unchecked_mut(q[3] as usize) += 1;
                    *s0.get_unchecked_mut(q[4] as usize) += 1;
                    *s1.get_unchecked_mut(q[5] as usize) += 1;
                    *s2.get_unchecked_mut(q[6] as usize) += 1;
                    *s3.get_unchecked_mut(q[7] as usize) += 1;
                }
            }
            for &i in rest {
                s0[i as usize] += 1;
            }
        }
        for w in sub.chunks_exact(stride) {
            zeros += w[bins] as u64;
            h.iter_mut().zip(w).for_each(|(a, &b)| *a += b as u64);
        }
        h[zero_bin] -= hits as u64;
        zeros += hits as u64;
        sub.fill(0);
    }
    zeros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_naive() {
        let x: Vec<f32> = (0..200_000).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 3.0).collect();
        let mut h = Hist::empty(64);
        h.cover(-3.0, 7.0);
        h.add(&x, HistKind::Signed);
        let mut naive = [0u64; 64];
        for &v in &x {
            if v != 0.0 {
                let b = (((v as f64 + 3.0) / (10.0 / 64.0)) as usize).min(63);
                naive[b] += 1;
            }
        }
        assert_eq!(h.total(), 200_000);
        let diff: u64 = h.counts.iter().zip(&naive).map(|(a, b)| a.abs_diff(*b)).sum();
        assert!(diff < 10, "only float rounding at bin edges may differ: {diff}");
    }

    #[test]
    fn zeros_and_nonfinite_match_the_spare_slots() {
        // Zeros everywhere, NaN/Inf in some 256-value buffers only (those take the slot path),
        // a tail shorter than a buffer; both kinds, compared with `slot` value by value.
        let mut x: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 997) as f32 / 50.0 - 9.0).collect();
        for i in (0..5000).step_by(37) {
            x[i] = 0.0;
        }
        x[700] = -0.0;
        (x[1000], x[2600], x[2601], x[4990]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN);
        for (kind, lo, hi) in [(HistKind::Signed, -9.0, 11.0), (HistKind::Abs, 0.0, 11.0)] {
            let mut h = Hist::empty(100);
            h.cover(lo, hi);
            let zeros = count_into(&x, kind, h.lo, h.inv(), &mut h.counts);
            let (mut naive, mut nz) = (vec![0u64; 100], 0);
            let (lo, inv) = (h.lo as f32, h.inv() as f32);
            for &v in &x {
                let s = match kind {
                    HistKind::Abs => slot::<true>(v, lo, inv, 99.0, 100),
                    HistKind::Signed => slot::<false>(v, lo, inv, 99.0, 100),
                } as usize;
                match s {
                    100 => nz += 1,
                    101 => {}
                    b => naive[b] += 1,
                }
            }
            assert_eq!((h.counts.clone(), zeros), (naive, nz), "{kind:?}");
        }
    }

    #[test]
    fn widening_is_exact_for_abs_histograms() {
        let mut h = Hist::empty(8);
        h.cover(0.0, 8.0);
        h.add(&[0.5f32, 1.5, 7.5, 7.9], HistKind::Abs);
        h.cover(0.0, 20.0);
        assert_eq!(h.width, 3.0);
        assert_eq!(h.total(), 4);
        assert_eq!(h.counts[0], 2); // 0.5 and 1.5 in [0, 3)
        assert_eq!(h.counts[2], 2); // 7.5 and 7.9 in [6, 9)
    }

    #[test]
    fn point_mass_then_spread() {
        let mut h = Hist::empty(4);
        h.cover(0.5, 0.5);
        h.add(&[0.5f32; 10], HistKind::Abs);
        h.add(&[0.0f32; 3], HistKind::Abs);
        assert_eq!((h.counts[0], h.zeros), (10, 3));
        h.cover(0.0, 4.0);
        assert_eq!((h.counts[0], h.width, h.total()), (10, 1.0, 13));
    }
}
