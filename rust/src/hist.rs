//! Histograms for calibration: a fixed bin count, u64 counts, and power-of-two layouts that nest.
//!
//! Bins are `2^e` wide and the first starts at a multiple of that width, `lo = k 2^e`; the range
//! always holds 0 (every grid does), and `e` is the smallest that fits the data into the bins. A
//! value's bin is `floor(v 2^-e) - k`, exact in f32. Any two such layouts nest: a coarser one's
//! bins are aligned runs of `2^d` of a finer one's, so re-binning into it (widening, merging) moves
//! every count exactly. Hence a tensor's counts equal the merged counts of any split of it into
//! batches, in any order, and one pass can count while the range grows (`ranged`: bins double
//! until the data fits, no range pass first). The price: the data fills between half and all of
//! the bins (a bin is under `2 * range / bins` wide).

use crate::elem::{is_finite, Elem};
use crate::range::Scan;
use rayon::prelude::*;

/// Values per parallel histogram task: large, since each task merges a private histogram.
const HIST_CHUNK: usize = 1 << 19;
/// Bin widths run from `2^E_MIN` to `2^E_MAX`: the kernels multiply by `2^-e` in f32, exactly.
const E_MIN: i32 = -126;
const E_MAX: i32 = 128;
/// Most bins a histogram may have: bin indices and starts stay far below 2^24, where f32 holds
/// every integer, so the bin arithmetic is exact.
pub const MAX_BINS: usize = 1 << 20;

/// `2^e`, for `e` within f64's normal exponents.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// What a histogram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistKind {
    /// `|x|` over `[0, amax]` (symmetric schemes, entropy).
    Abs,
    /// `x` over `[min, max]` (asymmetric schemes).
    Signed,
}

/// A histogram of `counts.len()` bins over `[lo, lo + width * bins]` in a power-of-two layout
/// (see the module docs), plus a separate count of exact zeros: every grid represents 0 exactly,
/// so zeros (ReLU outputs, padding, pruned weights) carry no quantization error and would only
/// distort the threshold searches as a spike in one bin. `width == 0`: no layout yet (no counts).
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub lo: f64,
    pub width: f64,
    pub counts: Vec<u64>,
    pub zeros: u64,
}

/// A power-of-two layout: bins `2^e` wide, the first starting at `k 2^e` (`k` an integer).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    e: i32,
    k: f64,
}

impl Layout {
    /// The layout of `bins` bins with the smallest `e >= e_min` that holds `[a, b]` and 0.
    fn covering(a: f64, b: f64, bins: usize, e_min: i32) -> Layout {
        let (a, b, n) = (a.min(0.0), b.max(0.0), bins as f64);
        // Every smaller `e` spreads `[a, b]` over more than `bins` bins.
        let mut e = e_min.max(E_MIN);
        if b > a {
            e = e.max(((b - a) / n).log2().floor() as i32);
        }
        loop {
            let s = pow2(-e);
            let (ka, kb) = ((a * s).floor(), (b * s).floor());
            // At E_MAX every finite f32 range fits in 2 bins.
            if kb - ka < n || e >= E_MAX {
                return Layout { e, k: ka };
            }
            e += 1;
        }
    }
}

impl Hist {
    /// An empty histogram with `bins` bins and no layout.
    pub fn empty(bins: usize) -> Self {
        Hist { lo: 0.0, width: 0.0, counts: vec![0; bins], zeros: 0 }
    }

    /// A histogram from stored fields (an observer's saved state). A layout that is not a
    /// power-of-two one (saved before rxquant used them) is re-binned into one by bin centers.
    pub fn restore(lo: f64, width: f64, counts: Vec<u64>, zeros: u64) -> Result<Self, String> {
        if !(lo.is_finite() && width.is_finite() && width >= 0.0) || counts.len() < 2 {
            return Err(format!(
                "histogram layout lo={lo}, width={width} with {} bins is invalid",
                counts.len()
            ));
        }
        let h = Hist { lo, width, counts, zeros };
        let aligned = h.layout().is_some_and(|Layout { e, k }| {
            (E_MIN..=E_MAX).contains(&e)
                && pow2(e) == width
                && k.fract() == 0.0
                && k <= 0.0
                && -k < h.counts.len() as f64
        });
        if aligned || h.binned() == 0 {
            return Ok(if aligned { h } else { Hist { zeros, ..Hist::empty(h.counts.len()) } });
        }
        let mut out = Hist { zeros, ..Hist::empty(h.counts.len()) };
        let center = |i: usize| h.lo + (i as f64 + 0.5) * h.width;
        let (first, last) = h.occupied().expect("binned > 0");
        out.cover(center(first), center(last));
        for (i, &c) in h.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let b = out.bin_of(center(i));
            out.counts[b] += c;
        }
        Ok(out)
    }

    /// Number of counted values, zeros included.
    pub fn total(&self) -> u64 {
        self.binned() + self.zeros
    }

    /// Number of values in the bins (zeros excluded).
    pub fn binned(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Bins per unit: `2^-e`, or 0 without a layout.
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

    /// Start of the first bin in bin widths: `k`, an integer (0 without a layout).
    pub fn start(&self) -> f64 {
        self.lo * self.inv()
    }

    fn layout(&self) -> Option<Layout> {
        let e = ((self.width.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        (self.width > 0.0).then_some(Layout { e, k: self.start() })
    }

    /// The bin holding `v`, clamped to the ends: `floor(v 2^-e) - k`, exact (f64 holds every
    /// product of an f32 and a width).
    pub fn bin_of(&self, v: f64) -> usize {
        let i = (v * self.inv()).floor() - self.start();
        i.clamp(0.0, (self.counts.len() - 1) as f64) as usize
    }

    /// Start of bin `i`.
    fn edge(&self, i: usize) -> f64 {
        self.lo + i as f64 * self.width
    }

    /// First and last bins with counts.
    pub fn occupied(&self) -> Option<(usize, usize)> {
        Some((self.counts.iter().position(|&c| c > 0)?, self.counts.iter().rposition(|&c| c > 0)?))
    }

    /// Widens the layout to hold `[lo, hi]` (and 0), moving the counts exactly.
    pub fn cover(&mut self, lo: f64, hi: f64) {
        self.cover_from(lo, hi, E_MIN);
    }

    /// [`Hist::cover`] for a batch's range: `|x|` for `Abs`.
    pub fn cover_kind(&mut self, kind: HistKind, lo: f32, hi: f32) {
        match kind {
            HistKind::Abs => self.cover(0.0, lo.abs().max(hi.abs()) as f64),
            HistKind::Signed => self.cover(lo as f64, hi as f64),
        }
    }

    /// [`Hist::cover`] with bins at least `2^e_min` wide. Never narrows the bins: counts cannot
    /// be split.
    fn cover_from(&mut self, lo: f64, hi: f64, e_min: i32) {
        let (mut a, mut b, mut e_min) = (lo, hi, e_min);
        if let Some(l) = self.layout() {
            e_min = e_min.max(l.e);
            if let Some((first, last)) = self.occupied() {
                (a, b) = (a.min(self.edge(first)), b.max(self.edge(last)));
            }
        }
        let l = Layout::covering(a, b, self.counts.len(), e_min);
        if Some(l) == self.layout() {
            return;
        }
        let fresh = Hist {
            lo: l.k * pow2(l.e),
            width: pow2(l.e),
            counts: vec![0; self.counts.len()],
            zeros: self.zeros,
        };
        let old = std::mem::replace(self, fresh);
        self.add_bins(&old);
    }

    /// Adds the bins of `other`, whose layout is at most as coarse (each of its bins lies in one
    /// of ours).
    fn add_bins(&mut self, other: &Hist) {
        if let (Some(ours), Some(theirs)) = (self.layout(), other.layout()) {
            // Bin `i` of theirs starts at `(k' + i) 2^e'`, in our bin `floor((k' + i) / 2^d) - k`
            // with `d = e - e'`: an integer shift, where `bin_of` takes a float floor per bin (a
            // libm call on the baseline target; every parallel task's histogram is merged).
            let d = ours.e - theirs.e;
            if (0..48).contains(&d) {
                let (k, k2) = (ours.k as i64, theirs.k as i64);
                for (i, &c) in other.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
                    self.counts[(((k2 + i as i64) >> d) - k) as usize] += c;
                }
                return;
            }
        }
        for (i, &c) in other.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let b = self.bin_of(other.edge(i));
            self.counts[b] += c;
        }
    }

    /// Adds another histogram with the same bin count, exactly: the layout widens to the coarser
    /// of the two and to both ranges.
    pub fn merge(&mut self, other: &Hist) {
        self.zeros += other.zeros;
        let Some(l) = other.layout() else { return };
        let (a, b) =
            other.occupied().map_or((0.0, 0.0), |(first, last)| (other.edge(first), other.edge(last)));
        self.cover_from(a, b, l.e);
        self.add_bins(other);
    }

    /// Counts the finite values of `x` (range already covering them; others are clamped into the
    /// end bins), in parallel chunks. `Abs` histograms start at 0, as [`Hist::cover_kind`] lays
    /// them out.
    pub fn add<T: Elem>(&mut self, x: &[T], kind: HistKind) {
        debug_assert!(kind == HistKind::Signed || self.lo == 0.0, "an |x| histogram starts at 0");
        let bins = self.counts.len();
        let g = Grid::of(self);
        if x.len() <= HIST_CHUNK {
            self.zeros += count_into(x, kind, g, &mut self.counts);
            return;
        }
        let (sum, zeros) = x
            .par_chunks(HIST_CHUNK)
            .fold(
                || (vec![0u64; bins], 0u64),
                |(mut acc, z), xs| {
                    let nz = count_into(xs, kind, g, &mut acc);
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

/// The range and histogram of `x` in one pass (`bins` bins): parallel chunks each count into a
/// private histogram whose layout widens as their range grows, then merge. NaN/Inf are left out
/// of both and counted in the scan. The layout and counts equal those of a range pass followed by
/// [`Hist::cover_kind`] and [`Hist::add`], without reading `x` twice.
pub(crate) fn ranged<T: Elem>(x: &[T], bins: usize, kind: HistKind) -> (Scan, Hist) {
    let add = |(s, mut h): (Scan, Hist), xs: &[T]| {
        let t = match kind {
            HistKind::Abs => crate::simd::simd!(ranged_impl::<T, true>(xs, &mut h)),
            HistKind::Signed => crate::simd::simd!(ranged_impl::<T, false>(xs, &mut h)),
        };
        (s.merge(t), h)
    };
    let empty = || (Scan::EMPTY, Hist::empty(bins));
    if x.len() <= HIST_CHUNK {
        return add(empty(), x);
    }
    x.par_chunks(HIST_CHUNK).fold(empty, add).reduce(empty, |(s, mut h), (t, g)| {
        h.merge(&g);
        (s.merge(t), h)
    })
}

/// A layout's constants for the counting loops, in f32.
#[derive(Debug, Clone, Copy)]
struct Grid {
    inv: f32,
    k: f32,
    last: f32,
    /// The layout's ends (`lo == hi` without one): exact in f32, as `k` and the bin count are
    /// small integers.
    lo: f32,
    hi: f32,
    /// Bins wider than 1: `v 2^-e` can underflow.
    tiny: bool,
}

impl Grid {
    fn of(h: &Hist) -> Grid {
        // 2^-e is an f32 for every e in E_MIN..=E_MAX (2^-128 a subnormal); k is a small integer.
        Grid {
            inv: h.inv() as f32,
            k: h.start() as f32,
            last: (h.counts.len() - 1) as f32,
            lo: h.lo as f32,
            hi: if h.width > 0.0 { h.hi() as f32 } else { h.lo as f32 },
            tiny: h.width > 1.0,
        }
    }

    /// True when the layout holds `[lo, hi]` (for `ABS`, its magnitudes): every bin
    /// `floor(v 2^-e) - k` lies in `0..bins` exactly when `lo <= v < hi`. False without a layout.
    fn holds<const ABS: bool>(&self, lo: f32, hi: f32) -> bool {
        if ABS {
            lo.abs().max(hi.abs()) < self.hi
        } else {
            lo >= self.lo && hi < self.hi
        }
    }
}

/// Bin of a finite `v` (`|v|` when `ABS`, whose layouts start at 0), clamped to `[0, last]`:
/// `floor(v 2^-e) - k`. The product is exact unless it underflows, which only `TINY` layouts
/// allow; there a negative `v` whose product rounds to -0 takes the bin below 0's, as the exact
/// floor does (a positive one rightly lands in 0's).
#[inline(always)]
fn bin<const ABS: bool, const TINY: bool>(v: f32, g: Grid) -> u32 {
    let f = if ABS {
        v.abs() * g.inv
    } else {
        let y = v * g.inv;
        let f = y.floor() - g.k;
        if TINY && y == 0.0 && v < 0.0 {
            f - 1.0
        } else {
            f
        }
    };
    let f = if f > 0.0 { f } else { 0.0 };
    let f = if f < g.last { f } else { g.last };
    // SAFETY: `f` was clamped to `[0, last]` above (NaN becomes 0), so it fits an i32.
    (unsafe { f.to_int_unchecked::<i32>() }) as u32
}

/// Slot of `v`: its bin, or the spare slots `bins` for exact zeros and `bins + 1` for NaN/Inf.
#[inline(always)]
fn slot<const ABS: bool, const TINY: bool>(v: f32, g: Grid, bins: usize) -> u32 {
    if !is_finite(v) {
        (bins + 1) as u32
    } else if v == 0.0 {
        bins as u32
    } else {
        bin::<ABS, TINY>(v, g)
    }
}

/// Values binned at a time: a vector loop fills a buffer of bins, a scalar loop counts them.
const BUF: usize = 512;
/// Separate count arrays: peaked data puts neighbours in the same bin, and one array would chain
/// each increment to the previous one's store (about 5 cycles a value instead of 1-2).
const WAYS: usize = 4;
/// Values counted into the u32 sub-counts between flushes, so that none can overflow.
const BLOCK: usize = 1 << 30;

/// Counts the finite nonzero values of one slice into `h` (layout `g`); returns the number of
/// exact zeros. `kind` and the layout's underflow case become const parameters.
fn count_into<T: Elem>(x: &[T], kind: HistKind, g: Grid, h: &mut [u64]) -> u64 {
    match (kind, g.tiny) {
        (HistKind::Abs, _) => crate::simd::simd!(count_into_impl::<T, true, false>(x, g, h)),
        (HistKind::Signed, false) => crate::simd::simd!(count_into_impl::<T, false, false>(x, g, h)),
        (HistKind::Signed, true) => crate::simd::simd!(count_into_impl::<T, false, true>(x, g, h)),
    }
}

/// The `WAYS` u32 sub-count arrays of one counting task, `bins + 2` slots each (the spare two for
/// exact zeros and NaN/Inf, see [`slot`]).
pub(crate) struct Counts {
    sub: Vec<u32>,
    stride: usize,
}

impl Counts {
    fn new(bins: usize) -> Self {
        Counts { sub: vec![0; WAYS * (bins + 2)], stride: bins + 2 }
    }

    /// Counts a buffer of slots, each at most `bins + 1` (the callers check a buffer's range, or
    /// take the slot path, before counting it).
    #[inline(always)]
    pub(crate) fn add(&mut self, ix: &[u32]) {
        let (s0, s123) = self.sub.split_at_mut(self.stride);
        let (s1, s23) = s123.split_at_mut(self.stride);
        let (s2, s3) = s23.split_at_mut(self.stride);
        let (eights, rest) = ix.split_at(ix.len() / 8 * 8);
        for q in eights.chunks_exact(8) {
            debug_assert!(q.iter().all(|&i| (i as usize) < s3.len()));
            // SAFETY: slots are at most `bins + 1`, and each way has `bins + 2` counts.
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

    /// Moves the sub-counts into `h`: the spare zero slots and the `hits` exact zeros that the
    /// fast path counted in the bin of 0 go to the zero count.
    fn flush(&mut self, hits: &mut u32, zero_bin: usize, h: &mut [u64]) -> u64 {
        let bins = h.len();
        let mut zeros = *hits as u64;
        for w in self.sub.chunks_exact(self.stride) {
            zeros += w[bins] as u64;
            h.iter_mut().zip(w).for_each(|(a, &b)| *a += b as u64);
        }
        h[zero_bin] -= *hits as u64;
        *hits = 0;
        self.sub.fill(0);
        zeros
    }
}

/// Two buffers of slots: one buffer's slots are counted while the next is binned. The vector
/// binning and the scalar increments use different ports, and as two phases of a buffer each
/// they did not overlap (each is longer than the out-of-order window); interleaved, 16 values at
/// a time, they do (MSE calibration of 16M values, 2 threads: 3.98 ms against 4.30 before).
struct Pipeline {
    bufs: [[u32; BUF]; 2],
    /// The buffer that [`Pipeline::bin`] fills; the other one holds `pending` slots to count.
    next: usize,
    pending: usize,
    counts: Counts,
}

impl Pipeline {
    fn new(bins: usize) -> Self {
        Pipeline { bufs: [[0; BUF]; 2], next: 0, pending: 0, counts: Counts::new(bins) }
    }

    /// Bins `c` into the free buffer, counting the pending slots meanwhile.
    #[inline(always)]
    fn bin<T: Elem, const ABS: bool, const TINY: bool>(&mut self, c: &[T], g: Grid) -> Seen {
        let [a, b] = &mut self.bufs;
        let (free, full) = if self.next == 0 { (a, &*b) } else { (b, &*a) };
        let seen = bins_of::<T, ABS, TINY>(c, g, free, &full[..self.pending], &mut self.counts);
        self.pending = 0;
        seen
    }

    /// Redoes the free buffer's slots for `c` value by value: NaN/Inf, or values outside the
    /// layout (clamped into the end bins).
    fn slots<T: Elem, const ABS: bool, const TINY: bool>(&mut self, c: &[T], g: Grid, bins: usize) {
        for (s, v) in self.bufs[self.next].iter_mut().zip(c) {
            *s = slot::<ABS, TINY>(v.to_f32(), g, bins);
        }
    }

    /// The free buffer's first `len` slots are checked: they are counted with the next buffer.
    fn commit(&mut self, len: usize) {
        (self.next, self.pending) = (1 - self.next, len);
    }

    /// Counts everything committed, then moves the counts into `h` ([`Counts::flush`]).
    fn flush(&mut self, hits: &mut u32, zero_bin: usize, h: &mut [u64]) -> u64 {
        self.counts.add(&self.bufs[1 - self.next][..self.pending]);
        self.pending = 0;
        self.counts.flush(hits, zero_bin, h)
    }
}

/// What the bin loop saw in one buffer.
struct Seen {
    min: f32,
    max: f32,
    zeros: u32,
    finite: bool,
}

/// Bins of one buffer (`c.len() <= BUF`) into `ix`, with its range, exact zeros and whether all
/// of it is finite: the fast path for finite data. Exact zeros go to the bin 0 falls in and are
/// only counted (moved to the zero count at the flush); NaN/Inf only clear `finite`, after which
/// the caller redoes the buffer with the spare slots. The loop's instructions, not memory, bound
/// its speed: lanes keep the range without a select per value.
#[inline(always)]
fn bin_buffer<T: Elem, const ABS: bool, const TINY: bool>(c: &[T], g: Grid, ix: &mut [u32]) -> Seen {
    const L: usize = 8;
    let (mut mn, mut mx) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let (mut z, mut bad) = ([0u32; L], [0u32; L]);
    prefetch(c);
    let n = c.len() / L * L;
    for (q, s) in c[..n].chunks_exact(L).zip(ix.chunks_exact_mut(L)) {
        for j in 0..L {
            let v = q[j].to_f32();
            mn[j] = if v < mn[j] { v } else { mn[j] };
            mx[j] = if v > mx[j] { v } else { mx[j] };
            z[j] += (v == 0.0) as u32;
            bad[j] |= !is_finite(v) as u32;
            s[j] = bin::<ABS, TINY>(v, g);
        }
    }
    for (v, s) in c[n..].iter().zip(&mut ix[n..]) {
        let v = v.to_f32();
        (mn[0], mx[0]) = (if v < mn[0] { v } else { mn[0] }, if v > mx[0] { v } else { mx[0] });
        z[0] += (v == 0.0) as u32;
        bad[0] |= !is_finite(v) as u32;
        *s = bin::<ABS, TINY>(v, g);
    }
    let fold = |a: [f32; L], f: fn(f32, f32) -> f32| a.into_iter().fold(a[0], f);
    Seen {
        min: fold(mn, f32::min),
        max: fold(mx, f32::max),
        zeros: z.iter().sum(),
        finite: bad.iter().all(|&b| b == 0),
    }
}

/// [`bin_buffer`] of `c` into `ix`, counting the checked slots `prev` meanwhile: interleaved in
/// AVX2 intrinsics for f32 where the CPU has them ([`crate::hist_avx2`]), else one after the other.
#[inline(always)]
fn bins_of<T: Elem, const ABS: bool, const TINY: bool>(
    c: &[T],
    g: Grid,
    ix: &mut [u32],
    prev: &[u32],
    counts: &mut Counts,
) -> Seen {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(c)) = (crate::simd::avx2(), crate::elem::as_f32(c)) {
        // SAFETY: the CPU has AVX2, FMA and F16C.
        let (min, max, zeros, finite) =
            unsafe { crate::hist_avx2::bin_buffer::<ABS, TINY>(c, g.inv, g.k, ix, prev, counts) };
        return Seen { min, max, zeros, finite };
    }
    counts.add(prev);
    bin_buffer::<T, ABS, TINY>(c, g, ix)
}

#[inline(always)]
fn count_into_impl<T: Elem, const ABS: bool, const TINY: bool>(x: &[T], g: Grid, h: &mut [u64]) -> u64 {
    let bins = h.len();
    let mut zeros = 0u64;
    if x.len() < 1024 {
        // Short slices (single values from per-channel runs, small groups): count directly,
        // without allocating and flushing a block buffer per call.
        for v in x {
            match slot::<ABS, TINY>(v.to_f32(), g, bins) as usize {
                i if i < bins => h[i] += 1,
                i if i == bins => zeros += 1,
                _ => {}
            }
        }
        return zeros;
    }
    let zero_bin = bin::<ABS, TINY>(0.0, g) as usize;
    let mut p = Pipeline::new(bins);
    for block in x.chunks(BLOCK) {
        let mut hits = 0u32; // exact zeros counted in `zero_bin` of this block
        for c in block.chunks(BUF) {
            let seen = p.bin::<T, ABS, TINY>(c, g);
            if seen.finite && g.holds::<ABS>(seen.min, seen.max) {
                hits += seen.zeros;
            } else {
                p.slots::<T, ABS, TINY>(c, g, bins);
            }
            p.commit(c.len());
        }
        zeros += p.flush(&mut hits, zero_bin, h);
    }
    zeros
}

/// The loop alternates a vector phase with a scalar one, and the hardware prefetcher alone left
/// it waiting on memory (a third of its time on one core).
#[inline(always)]
fn prefetch<T>(c: &[T]) {
    for line in c.chunks(64 / std::mem::size_of::<T>().max(1)) {
        crate::simd::prefetch(line.as_ptr());
    }
}

/// One task of [`ranged`]: counts `x` into `h`, whose layout widens (counts flushed and moved
/// exactly) whenever a buffer's range leaves it, after which the buffer is binned again.
#[inline(always)]
fn ranged_impl<T: Elem, const ABS: bool>(x: &[T], h: &mut Hist) -> Scan {
    let kind = if ABS { HistKind::Abs } else { HistKind::Signed };
    let bins = h.counts.len();
    let mut p = Pipeline::new(bins);
    let mut g = Grid::of(h);
    let (mut scan, mut hits, mut since_flush) = (Scan::EMPTY, 0u32, 0usize);
    for c in x.chunks(BUF) {
        if since_flush + c.len() > BLOCK {
            h.zeros += p.flush(&mut hits, h.bin_of(0.0), &mut h.counts);
            since_flush = 0;
        }
        loop {
            let mut seen = if g.tiny { p.bin::<T, ABS, true>(c, g) } else { p.bin::<T, ABS, false>(c, g) };
            let mut bad = 0;
            if !seen.finite {
                // NaN/Inf: the range of the finite values, then the spare slots.
                let s = crate::range::scan(c);
                (seen.min, seen.max, bad) = (s.min, s.max, s.bad);
            }
            if seen.min <= seen.max && !g.holds::<ABS>(seen.min, seen.max) {
                h.zeros += p.flush(&mut hits, h.bin_of(0.0), &mut h.counts);
                h.cover_kind(kind, seen.min, seen.max);
                g = Grid::of(h);
                continue;
            }
            if seen.finite {
                hits += seen.zeros;
            } else if g.tiny {
                p.slots::<T, ABS, true>(c, g, bins);
            } else {
                p.slots::<T, ABS, false>(c, g, bins);
            }
            p.commit(c.len());
            scan = scan.merge(Scan { min: seen.min, max: seen.max, bad });
            break;
        }
        since_flush += c.len();
    }
    h.zeros += p.flush(&mut hits, h.bin_of(0.0), &mut h.counts);
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heavy-tailed values whose scale grows along the slice (later values widen the range),
    /// with exact zeros, -0.0 and values far below the bin width.
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
                let v = -(1.0 - 2.0 * u.abs()).ln() * u.signum() * (1.0 + i as f64 / 2000.0);
                match i % 97 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => -1e-30,
                    3 => f32::from_bits(1) * if i % 2 == 0 { 1.0 } else { -1.0 },
                    _ => v as f32,
                }
            })
            .collect()
    }

    /// The exact bin of a finite nonzero `v`: `floor(v / width) - lo / width`, in f64.
    fn exact(h: &Hist, v: f32, kind: HistKind) -> usize {
        let v = if kind == HistKind::Abs { v.abs() } else { v } as f64;
        let i = (v / h.width).floor() - h.lo / h.width;
        assert!(i >= 0.0 && i < h.counts.len() as f64, "{v} outside the layout");
        i as usize
    }

    fn naive(h: &Hist, x: &[f32], kind: HistKind) -> (Vec<u64>, u64) {
        let (mut counts, mut zeros) = (vec![0u64; h.counts.len()], 0);
        for &v in x.iter().filter(|v| v.is_finite()) {
            if v == 0.0 {
                zeros += 1;
            } else {
                counts[exact(h, v, kind)] += 1;
            }
        }
        (counts, zeros)
    }

    #[test]
    fn layouts_are_the_finest_power_of_two_that_holds_the_range_and_zero() {
        // [-3, 7] in 64 bins: 1/8 needs 80 bins (-24..56), 1/4 needs 40 (-12..28).
        assert_eq!(Layout::covering(-3.0, 7.0, 64, E_MIN), Layout { e: -2, k: -12.0 });
        // 0 is always held: [5, 6] spans [0, 6], 1/8 needs 49 bins.
        assert_eq!(Layout::covering(5.0, 6.0, 64, E_MIN), Layout { e: -3, k: 0.0 });
        // Never narrower than asked; the widest f32 range fits in 2 bins.
        assert_eq!(Layout::covering(0.0, 1.0, 64, 3), Layout { e: 3, k: 0.0 });
        assert_eq!(Layout::covering(-f32::MAX as f64, f32::MAX as f64, 2, E_MIN), Layout { e: 128, k: -1.0 });
        assert_eq!(Layout::covering(0.0, 0.0, 64, E_MIN), Layout { e: E_MIN, k: 0.0 });
    }

    #[test]
    fn counts_are_the_exact_floor_in_both_passes() {
        // `add` after a range, and `ranged` in one pass, both equal the f64 floor value by value,
        // for both kinds, in narrow layouts and in wide ones (bins over 1, where products of tiny
        // values underflow); the one-pass layout is the one the range alone gives.
        // 1.2M values: several parallel tasks, whose histograms merge.
        for scale in [1.0f32, 1e-3, 5e4] {
            let x: Vec<f32> = data(1_200_000, 7).iter().map(|v| v * scale).collect();
            for kind in [HistKind::Signed, HistKind::Abs] {
                let r = x.iter().fold(Scan::EMPTY, |s, &v| s.merge(Scan { min: v, max: v, bad: 0 }));
                let mut two = Hist::empty(2048);
                two.cover_kind(kind, r.min, r.max);
                two.add(&x, kind);
                assert_eq!((two.counts.clone(), two.zeros), naive(&two, &x, kind), "{kind:?} x{scale}");
                let (s, one) = ranged(&x, 2048, kind);
                assert_eq!((s.min, s.max, s.bad), (r.min, r.max, 0));
                assert_eq!(one, two, "{kind:?} x{scale}");
                assert!(
                    two.width < 2.0 * (r.max.max(0.0) - r.min.min(0.0)) as f64 / 2048.0
                        || kind == HistKind::Abs
                );
            }
        }
    }

    #[test]
    fn any_split_in_any_order_merges_to_the_whole() {
        let x = data(200_000, 3);
        for kind in [HistKind::Signed, HistKind::Abs] {
            let (_, whole) = ranged(&x, 1000, kind);
            for cuts in [[1, 50_000, 50_001, 120_000], [90_000, 90_100, 150_000, 199_999]] {
                let parts = [
                    &x[..cuts[0]],
                    &x[cuts[0]..cuts[1]],
                    &x[cuts[1]..cuts[2]],
                    &x[cuts[2]..cuts[3]],
                    &x[cuts[3]..],
                ];
                for order in [[0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [3, 4, 1, 0, 2]] {
                    let mut h = Hist::empty(1000);
                    for i in order {
                        h.merge(&ranged(parts[i], 1000, kind).1);
                    }
                    assert_eq!(h, whole, "{kind:?} {cuts:?} {order:?}");
                }
            }
        }
    }

    #[test]
    fn zeros_and_nonfinite_match_the_spare_slots() {
        // Zeros everywhere, NaN/Inf in some 256-value buffers only (those take the slot path),
        // a tail shorter than a buffer; both kinds and both passes, against the exact floor.
        let mut x: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 997) as f32 / 50.0 - 9.0).collect();
        for i in (0..5000).step_by(37) {
            x[i] = 0.0;
        }
        x[700] = -0.0;
        (x[1000], x[2600], x[2601], x[4990]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN);
        for kind in [HistKind::Signed, HistKind::Abs] {
            let (s, one) = ranged(&x, 100, kind);
            let finite = x.iter().filter(|v| v.is_finite());
            let (min, max) =
                finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            assert_eq!((s.min, s.max, s.bad), (min, max, 4));
            assert_eq!((one.counts.clone(), one.zeros), naive(&one, &x, kind), "{kind:?}");
            let mut two = Hist::empty(100);
            two.cover_kind(kind, s.min, s.max);
            two.add(&x, kind);
            assert_eq!(two, one, "{kind:?}");
        }
    }

    #[test]
    fn the_portable_loop_counts_as_the_vector_one() {
        // f16 takes the portable loop (bins, then the previous buffer's increments); its values
        // are f32s too, which take the interleaved AVX2 loop where the CPU has it. Both passes,
        // both kinds, a widening range, zeros and NaN/Inf, a tail shorter than a buffer.
        let mut x: Vec<half::f16> = data(300_001, 11).iter().map(|&v| half::f16::from_f32(v)).collect();
        (x[5000], x[77_777], x[300_000]) = (half::f16::NAN, half::f16::INFINITY, half::f16::NEG_INFINITY);
        let y: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        for kind in [HistKind::Signed, HistKind::Abs] {
            let (s, one) = ranged(&x, 1000, kind);
            assert_eq!((ranged(&y, 1000, kind).1, s.bad), (one.clone(), 3), "{kind:?}");
            assert_eq!((one.counts.clone(), one.zeros), naive(&one, &y, kind), "{kind:?}");
            let mut two = Hist::empty(1000);
            two.cover_kind(kind, s.min, s.max);
            two.add(&x, kind);
            assert_eq!(two, one, "{kind:?}");
        }
    }

    #[test]
    fn old_layouts_are_rebinned_by_centers_and_bad_ones_refused() {
        let h = Hist::restore(-1.0, 0.3, vec![1, 0, 2, 0, 0, 5, 0, 0, 0, 1], 4).unwrap();
        // Centers -0.85, -0.25, 0.65, 1.85: 11 bins of 1/4, so bins of 1/2 from -1.
        assert_eq!((h.total(), h.zeros, h.lo, h.width), (13, 4, -1.0, 0.5));
        assert_eq!(h.counts, vec![1, 2, 0, 5, 0, 1, 0, 0, 0, 0]);
        let aligned = Hist::restore(-0.5, 0.25, vec![1, 2, 3, 4], 0).unwrap();
        assert_eq!((aligned.lo, aligned.width, aligned.counts.clone()), (-0.5, 0.25, vec![1, 2, 3, 4]));
        assert!(Hist::restore(f64::NAN, 1.0, vec![0; 4], 0).is_err());
        assert!(Hist::restore(0.0, -1.0, vec![0; 4], 0).is_err());
    }
}
