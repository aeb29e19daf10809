//! Calibration: choosing each parameter's clipping range with min-max, percentile, entropy (KL)
//! or MSE, per tensor, channel or group, in one call or streamed over batches by an [`Observer`].
//!
//! Streaming keeps per-parameter min/max and histograms (see [`crate::hist`]), never the data, so
//! memory does not grow with the number of batches.

use crate::elem::{is_finite, Elem};
use crate::error::{Error, Result};
use crate::hist::{Hist, HistKind, MAX_BINS};
use crate::layout::{ParamMap, Run};
use crate::qparams::QParams;
use crate::range::{ranges, Ranges};
use crate::scheme::Scheme;
use rayon::prelude::*;

/// A calibration method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The data's range (optionally a moving average over batches).
    MinMax,
    /// A percentile of `|x|` (symmetric) or both tails of `x` (asymmetric).
    Percentile,
    /// TensorRT's KL-divergence threshold search on the `|x|` histogram.
    Entropy,
    /// The clip that minimizes the expected squared quantization error.
    Mse,
}

impl Method {
    /// Parses `minmax`, `percentile`, `entropy` (or `kl`), `mse`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "minmax" | "min_max" => Ok(Method::MinMax),
            "percentile" => Ok(Method::Percentile),
            "entropy" | "kl" | "kl_divergence" => Ok(Method::Entropy),
            "mse" => Ok(Method::Mse),
            other => Err(Error::Invalid(format!(
                "unknown calibration method {other:?}; expected minmax, percentile, entropy or mse"
            ))),
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
            Method::Mse => "mse",
        }
    }
}

/// Options of every method (each uses the ones that concern it).
#[derive(Debug, Clone, PartialEq)]
pub struct CalibOptions {
    /// Histogram bins (default 2048).
    pub bins: usize,
    /// Percentile in `(0, 100]` (default 99.99).
    pub percentile: f64,
    /// Min-max moving-average constant `c` in `(0, 1]`: `min += c * (batch_min - min)`.
    pub averaging: Option<f64>,
    /// Percentile: exact order statistics; MSE: search on the data. `None`: percentile is exact
    /// up to `exact_limit` values per parameter, MSE uses the histogram.
    pub exact: Option<bool>,
    /// Largest input (values per call) for automatic exact percentiles (default 2^20).
    pub exact_limit: usize,
    /// Leave NaN/Inf out instead of raising.
    pub ignore_nonfinite: bool,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            bins: 2048,
            percentile: 99.99,
            averaging: None,
            exact: None,
            exact_limit: 1 << 20,
            ignore_nonfinite: false,
        }
    }
}

impl CalibOptions {
    fn check(&self) -> Result<()> {
        if !(2..=MAX_BINS).contains(&self.bins) {
            return Err(Error::Invalid(format!("bins must be in 2..={MAX_BINS}, got {}", self.bins)));
        }
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return Err(Error::Invalid(format!("percentile must be in (0, 100], got {}", self.percentile)));
        }
        if let Some(c) = self.averaging {
            if !(c > 0.0 && c <= 1.0) {
                return Err(Error::Invalid(format!("averaging constant must be in (0, 1], got {c}")));
            }
        }
        Ok(())
    }
}

/// Largest cell (values per scale) that one-shot MSE calibration searches on the data by default.
pub const MSE_EXACT_CELL: usize = 16_384;

/// Most bytes an observer spends on histograms; with many parameter cells (small groups) each
/// gets fewer bins. Entropy needs more bins than target levels, else it keeps the full range.
const HIST_MEMORY: usize = 256 << 20;

/// Where calibration's passes over the data run: [`Cpu`] (rayon), or a device such as
/// [`crate::gpu::cl::ClBackend`]. Every implementation gives the same ranges and counts.
pub trait Reducer<T: Elem> {
    /// Per-parameter ranges of the finite values; NaN/Inf are an error unless `ignore_nonfinite`.
    fn ranges(&self, x: &[T], map: &ParamMap, ignore_nonfinite: bool) -> Result<Ranges>;
    /// Adds the finite values of `x` to per-parameter histograms whose ranges already cover them:
    /// all of the counts, or none when it fails.
    fn histograms(&self, x: &[T], map: &ParamMap, hists: &mut [Hist], kind: HistKind) -> Result<()>;
    /// A batch's ranges and, with `hist = Some((bins, kind))`, its per-parameter histograms, each
    /// in the layout its range gives ([`Hist::cover_kind`]). By default a range pass, then a
    /// counting pass.
    fn observe(
        &self,
        x: &[T],
        map: &ParamMap,
        hist: Option<(usize, HistKind)>,
        ignore_nonfinite: bool,
    ) -> Result<(Ranges, Vec<Hist>)> {
        two_passes(self, x, map, hist, ignore_nonfinite)
    }
}

/// [`Reducer::observe`] as a range pass, then a counting pass into histograms in the layouts
/// that the ranges give.
fn two_passes<T: Elem, R: Reducer<T> + ?Sized>(
    dev: &R,
    x: &[T],
    map: &ParamMap,
    hist: Option<(usize, HistKind)>,
    ignore_nonfinite: bool,
) -> Result<(Ranges, Vec<Hist>)> {
    let r = dev.ranges(x, map, ignore_nonfinite)?;
    let Some((bins, kind)) = hist else { return Ok((r, vec![])) };
    let mut hists: Vec<Hist> = (0..r.min.len())
        .map(|p| {
            let mut h = Hist::empty(bins);
            if r.min[p] <= r.max[p] {
                h.cover_kind(kind, r.min[p], r.max[p]);
            }
            h
        })
        .collect();
    dev.histograms(x, map, &mut hists, kind)?;
    Ok((r, hists))
}

/// The CPU: SIMD kernels on rayon threads.
pub struct Cpu;

impl<T: Elem> Reducer<T> for Cpu {
    fn ranges(&self, x: &[T], map: &ParamMap, ignore_nonfinite: bool) -> Result<Ranges> {
        ranges(x, map, ignore_nonfinite)
    }

    fn histograms(&self, x: &[T], map: &ParamMap, hists: &mut [Hist], kind: HistKind) -> Result<()> {
        add_to_hists(x, map, hists, kind);
        Ok(())
    }

    /// One parameter (per tensor): range and histogram in one pass over the data
    /// (`crate::hist::ranged`), with the same result as the two.
    fn observe(
        &self,
        x: &[T],
        map: &ParamMap,
        hist: Option<(usize, HistKind)>,
        ignore_nonfinite: bool,
    ) -> Result<(Ranges, Vec<Hist>)> {
        let (Some((bins, kind)), 1) = (hist, map.n_params()) else {
            return two_passes(self, x, map, hist, ignore_nonfinite);
        };
        if x.len() != map.len {
            return Err(Error::Shape(format!("data has {} elements, shape has {}", x.len(), map.len)));
        }
        let (s, h) = crate::hist::ranged(x, bins, kind);
        if s.bad > 0 && !ignore_nonfinite {
            let first_index = crate::elem::first_nonfinite(x).unwrap_or(0);
            return Err(Error::NonFinite { count: s.bad, first_index });
        }
        Ok((Ranges { min: vec![s.min], max: vec![s.max] }, vec![h]))
    }
}

/// One batch, observed ([`Observer::observe`]) and ready to be absorbed.
#[derive(Debug, Clone)]
pub struct Batch {
    pub map: ParamMap,
    pub ranges: Ranges,
    pub hists: Vec<Hist>,
}

/// Streaming calibration state: per-parameter running min/max and histograms.
#[derive(Debug, Clone, PartialEq)]
pub struct Observer {
    pub scheme: Scheme,
    pub method: Method,
    pub opts: CalibOptions,
    /// Parameter grid, fixed by the first batch.
    pub grid: Option<Vec<usize>>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub hists: Vec<Hist>,
    pub batches: u64,
}

impl Observer {
    /// A new, empty observer.
    pub fn new(scheme: Scheme, method: Method, opts: CalibOptions) -> Result<Self> {
        opts.check()?;
        if !scheme.precision.is_integer() {
            return Err(Error::Invalid(format!("{} needs no calibration", scheme.precision.name())));
        }
        Ok(Observer { scheme, method, opts, grid: None, min: vec![], max: vec![], hists: vec![], batches: 0 })
    }

    /// The observer's scheme, method, options, grid and batch count, without its statistics.
    pub fn clone_settings(&self) -> Observer {
        Observer {
            scheme: self.scheme,
            method: self.method,
            opts: self.opts.clone(),
            grid: self.grid.clone(),
            min: vec![],
            max: vec![],
            hists: vec![],
            batches: self.batches,
        }
    }

    /// What the histograms count: `|x|` for symmetric schemes and entropy, `x` otherwise.
    pub fn kind(&self) -> HistKind {
        if self.scheme.symmetric || self.method == Method::Entropy {
            HistKind::Abs
        } else {
            HistKind::Signed
        }
    }

    fn uses_hist(&self) -> bool {
        self.method != Method::MinMax
    }

    /// Folds one batch in. Its parameter grid (the channel count, per channel) must match earlier batches.
    pub fn update<T: Elem>(&mut self, x: &[T], shape: &[usize]) -> Result<()> {
        self.update_on(&Cpu, x, shape)
    }

    /// [`Observer::update`] with the passes over the data run by `dev`: [`Observer::observe`],
    /// then [`Observer::absorb`].
    pub fn update_on<T: Elem>(&mut self, dev: &impl Reducer<T>, x: &[T], shape: &[usize]) -> Result<()> {
        let batch = self.observe(dev, x, shape)?;
        self.absorb(&batch)
    }

    /// The passes over a batch: its parameter map (checked against the grid of earlier batches),
    /// ranges and histograms. Reads the observer's settings only.
    ///
    /// Several threads can feed one observer: `observe` needs no lock, `absorb` (short) does.
    /// Each batch is counted in its own power-of-two layout, which merges exactly into any other
    /// ([`crate::hist`]), so the histograms do not depend on how the data was split into batches
    /// or on the order they were absorbed in.
    pub fn observe<T: Elem>(&self, dev: &impl Reducer<T>, x: &[T], shape: &[usize]) -> Result<Batch> {
        let map = ParamMap::new(shape, self.scheme.granularity)?;
        self.check_grid(&map)?;
        let hist = self.uses_hist().then(|| (self.hist_bins(map.n_params()), self.kind()));
        let (ranges, hists) = dev.observe(x, &map, hist, self.opts.ignore_nonfinite)?;
        Ok(Batch { map, ranges, hists })
    }

    fn check_grid(&self, map: &ParamMap) -> Result<()> {
        if let Some(g) = self.grid.as_ref().filter(|g| **g != map.grid) {
            return Err(Error::Shape(format!(
                "batch needs a parameter grid {:?} but the observer has {:?} (channel count or group layout differs)",
                map.grid, g
            )));
        }
        Ok(())
    }

    /// Bins per histogram for `n` parameters: the `bins` option, fixed by the first batch, which
    /// caps histogram memory at HIST_MEMORY bytes when there are many small cells (groups).
    pub fn hist_bins(&self, n: usize) -> usize {
        match &self.grid {
            Some(_) => self.opts.bins,
            None => self.opts.bins.min((HIST_MEMORY / (8 * n).max(1)).max(16)),
        }
    }

    /// Adds an observed batch: its histograms (exactly, see [`Observer::observe`]) and its
    /// ranges; the first batch fixes the grid. With `averaging`, the batches' ranges are averaged
    /// in the order they are absorbed.
    pub fn absorb(&mut self, batch: &Batch) -> Result<()> {
        let (map, r, hists) = (&batch.map, &batch.ranges, &batch.hists);
        self.check_grid(map)?;
        let n = map.n_params();
        let bins = self.hist_bins(n);
        let want = if self.uses_hist() { n } else { 0 };
        if r.min.len() != n || hists.len() != want || hists.iter().any(|h| h.counts.len() != bins) {
            return Err(Error::Shape("a batch observed for another observer layout".into()));
        }
        if self.grid.is_none() {
            self.grid = Some(map.grid.clone());
            self.min = vec![f32::INFINITY; n];
            self.max = vec![f32::NEG_INFINITY; n];
            self.opts.bins = bins;
            self.hists = vec![Hist::empty(bins); want];
        }
        for (h, o) in self.hists.iter_mut().zip(hists) {
            h.merge(o);
        }
        for p in (0..r.min.len()).filter(|&p| r.min[p] <= r.max[p]) {
            let (lo, hi) = (r.min[p], r.max[p]);
            match self.opts.averaging {
                Some(c) if self.min[p] <= self.max[p] => {
                    self.min[p] += (c * (lo - self.min[p]) as f64) as f32;
                    self.max[p] += (c * (hi - self.max[p]) as f64) as f32;
                }
                _ => {
                    self.min[p] = self.min[p].min(lo);
                    self.max[p] = self.max[p].max(hi);
                }
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Combines an observer filled in parallel (same scheme, method and grid).
    pub fn merge(&mut self, other: &Observer) -> Result<()> {
        if self.scheme != other.scheme || self.method != other.method || self.opts.bins != other.opts.bins {
            return Err(Error::Invalid("observers differ in scheme, method or bins".into()));
        }
        match (&self.grid, &other.grid) {
            (_, None) => return Ok(()),
            (None, Some(_)) => {
                *self = other.clone();
                return Ok(());
            }
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Shape(format!("observers have parameter grids {a:?} and {b:?}")))
            }
            _ => {}
        }
        for p in 0..self.min.len() {
            self.min[p] = self.min[p].min(other.min[p]);
            self.max[p] = self.max[p].max(other.max[p]);
        }
        for (h, o) in self.hists.iter_mut().zip(&other.hists) {
            h.merge(o);
        }
        self.batches += other.batches;
        Ok(())
    }

    /// The calibrated quantization parameters.
    pub fn qparams(&self) -> Result<QParams> {
        let grid = self.grid.clone().ok_or_else(|| Error::Invalid("the observer has seen no data".into()))?;
        let ranges: Vec<(f32, f32)> =
            (0..self.min.len()).into_par_iter().map(|p| self.param_range(p)).collect();
        Ok(from_param_ranges(self.scheme, grid, &ranges))
    }

    /// The clipping range of parameter `p`.
    fn param_range(&self, p: usize) -> (f32, f32) {
        let (mn, mx) = (self.min[p], self.max[p]);
        if mn > mx {
            return (mn, mx);
        }
        let h = self.hists.get(p);
        let (lo, hi) = match (self.method, h) {
            (Method::MinMax, _) | (_, None) => (mn as f64, mx as f64),
            (Method::Percentile, Some(h)) => percentile_range(h, self.kind(), self.opts.percentile),
            (Method::Entropy, Some(h)) => {
                let t = entropy_threshold(h, levels(&self.scheme));
                (-t, t)
            }
            (Method::Mse, Some(h)) => mse_range(h, self.kind(), &self.scheme),
        };
        clip_to_data(lo, hi, mn, mx)
    }
}

/// Intersects a method's range with the data's range (widened to contain 0, as the grid will be),
/// so no method extends past the data; constant data keeps its exact range.
fn clip_to_data(lo: f64, hi: f64, mn: f32, mx: f32) -> (f32, f32) {
    if mn == mx {
        return (mn, mx); // a constant: keep it exact
    }
    let lo = (lo as f32).max(mn.min(0.0));
    let hi = (hi as f32).min(mx.max(0.0));
    (lo.min(hi), hi.max(lo))
}

/// Target levels of the entropy search: 128 for INT8, 8 for INT4 (the positive half of the grid).
fn levels(s: &Scheme) -> usize {
    1 << (s.precision.bits() - 1)
}

fn from_param_ranges(scheme: Scheme, grid: Vec<usize>, r: &[(f32, f32)]) -> QParams {
    let (scale, zero_point) = r.iter().map(|&(lo, hi)| scheme.params(lo, hi)).unzip();
    QParams { scheme, grid, scale, zero_point }
}

/// Adds `x` to per-parameter histograms. One parameter: parallel chunks. Several: parameters are
/// split into disjoint parts, one task each, so no histogram is shared or copied.
fn add_to_hists<T: Elem>(x: &[T], map: &ParamMap, hists: &mut [Hist], kind: HistKind) {
    if hists.is_empty() {
        return; // no parameters: a zero-size quantized axis
    }
    if hists.len() == 1 {
        hists[0].add(x, kind);
        return;
    }
    let parts = (rayon::current_num_threads() * 4).min(hists.len()).max(1);
    let per = hists.len().div_ceil(parts);
    hists.par_chunks_mut(per).enumerate().for_each(|(i, hs)| {
        let (p0, p1) = (i * per, i * per + hs.len());
        map.for_runs(0, x.len(), |off, len, run| match run {
            Run::Const(p) if (p0..p1).contains(&p) => hs[p - p0].add(&x[off..off + len], kind),
            Run::Const(_) => {}
            Run::Seq(p) => {
                for q in p.max(p0)..(p + len).min(p1) {
                    hs[q - p0].add(std::slice::from_ref(&x[off + q - p]), kind);
                }
            }
        });
    });
}

/// Value below which a fraction `q` of the histogram's mass lies (linear within a bin).
pub fn quantile(h: &Hist, q: f64) -> f64 {
    let total = h.total() as f64;
    let target = q.clamp(0.0, 1.0) * total;
    let zero_bin = h.bin_of(0.0);
    let mut cum = 0.0;
    for (b, &c) in h.counts.iter().enumerate() {
        let c = c + if b == zero_bin { h.zeros } else { 0 };
        let next = cum + c as f64;
        if c > 0 && next >= target {
            let frac = ((target - cum) / c as f64).clamp(0.0, 1.0);
            return h.lo + (b as f64 + frac) * h.width;
        }
        cum = next;
    }
    h.hi()
}

/// Percentile range: `[-T, T]` with `T` the `pct` percentile of `|x|`, or both tails of `x`
/// (each `(100 - pct) / 2` percent). Histogram error: at most one bin width.
pub fn percentile_range(h: &Hist, kind: HistKind, pct: f64) -> (f64, f64) {
    match kind {
        HistKind::Abs => {
            let t = quantile(h, pct / 100.0);
            (-t, t)
        }
        HistKind::Signed => {
            let tail = (1.0 - pct / 100.0) / 2.0;
            (quantile(h, tail), quantile(h, 1.0 - tail))
        }
    }
}

/// TensorRT's entropy calibration on an `|x|` histogram (exact zeros left out; see
/// `docs/calibration.md`): for each
/// candidate `i` from `levels` to `bins`, `P` = the first `i` bins with the tail mass added to the
/// last one, `Q` = those bins merged into `levels` groups and spread back evenly over the nonzero
/// bins of each group (in floating point: no integer truncation), both smoothed with `eps = 1e-4`;
/// returns the upper edge `i * width` of the candidate with the least `KL(P || Q)`.
pub fn entropy_threshold(h: &Hist, levels: usize) -> f64 {
    let bins = h.counts.len();
    if h.width == 0.0 || h.binned() == 0 || bins <= levels || levels > MAX_LEVELS {
        return h.hi().max(h.lo);
    }
    let e = Entropy::new(&h.counts);
    let (best, _) = (levels..=bins)
        .into_par_iter()
        .map(|i| (i, e.kl(i, levels)))
        .reduce(|| (bins, f64::INFINITY), |a, b| if b.1 < a.1 || (b.1 == a.1 && b.0 < a.0) { b } else { a });
    h.lo + best as f64 * h.width
}

/// Prefix sums that make each candidate's `KL(P || Q)` cost O(levels + nonzero bins), with no
/// allocation: the smoothed distributions are never materialized.
struct Entropy {
    c: Vec<f64>,
    /// `sum[k]`: counts of bins `0..k`; `nz[k]`: nonzero bins among them.
    sum: Vec<f64>,
    nz: Vec<usize>,
    nonzero: Vec<usize>,
    total: f64,
}

/// Smoothing: zero bins get `1e-4` counts, taken evenly from the nonzero bins (as in MXNet and
/// TensorRT: only to keep logarithms finite).
const KL_EPS: f64 = 1e-4;
/// Most target levels (INT8's 128).
const MAX_LEVELS: usize = 128;

impl Entropy {
    fn new(counts: &[u64]) -> Self {
        let c: Vec<f64> = counts.iter().map(|&v| v as f64).collect();
        let (mut sum, mut nz) = (vec![0.0; c.len() + 1], vec![0usize; c.len() + 1]);
        for (k, &v) in c.iter().enumerate() {
            sum[k + 1] = sum[k] + v;
            nz[k + 1] = nz[k] + (v > 0.0) as usize;
        }
        let nonzero = (0..c.len()).filter(|&k| c[k] > 0.0).collect();
        let total = sum[c.len()];
        Entropy { c, sum, nz, nonzero, total }
    }

    /// `KL(P || Q)` for candidate `i` (see [`entropy_threshold`]): `P` = bins `0..i` with the tail
    /// folded into bin `i - 1`, `Q` = those bins merged into `levels` groups and spread over `P`'s
    /// nonzero bins; both smoothed as counts, then normalized.
    fn kl(&self, i: usize, levels: usize) -> f64 {
        let g = i / levels;
        let tail = self.total - self.sum[i];
        // Bin i - 1 is nonzero in P if it has counts or receives the tail.
        let extra = (self.c[i - 1] == 0.0 && tail > 0.0) as usize;
        // Per group: Q's value on P's nonzero bins, and the count of those bins.
        let mut qv = [0f64; MAX_LEVELS];
        let mut nzq = 0usize;
        for (j, q) in qv.iter_mut().enumerate().take(levels) {
            let (a, b) = (j * g, if j == levels - 1 { i } else { (j + 1) * g });
            let n = self.nz[b] - self.nz[a] + if j == levels - 1 { extra } else { 0 };
            let sum = self.sum[b] - self.sum[a];
            if n > 0 && sum > 0.0 {
                *q = sum / n as f64;
                nzq += n;
            }
        }
        let nzp = self.nz[i] + extra;
        if nzp == 0 || nzq == 0 {
            return f64::INFINITY;
        }
        let (p_tot, q_tot) = (self.total, self.sum[i]);
        let take_p = KL_EPS * (i - nzp) as f64 / nzp as f64;
        let take_q = KL_EPS * (i - nzq) as f64 / nzq as f64;
        let term = |p: f64, q: f64| (p / p_tot) * ((p / p_tot) / (q / q_tot)).ln();
        let q_at = |j: usize| if qv[j] > 0.0 { qv[j] - take_q } else { KL_EPS };
        // Zero bins of P: p' = eps and q' = eps (Q is zero wherever P is).
        let mut kl = (i - nzp) as f64 * term(KL_EPS, KL_EPS);
        let (mut j, mut group_end) = (0usize, g);
        let end = self.nonzero.partition_point(|&k| k < i);
        for &k in &self.nonzero[..end] {
            while k >= group_end && j < levels - 1 {
                j += 1;
                group_end = if j == levels - 1 { i } else { group_end + g };
            }
            let p = self.c[k] + if k == i - 1 { tail } else { 0.0 };
            kl += term(p - take_p, q_at(j));
        }
        if extra == 1 {
            kl += term(tail - take_p, q_at(levels - 1));
        }
        kl
    }
}

/// Prefix moments of a histogram whose values are spread evenly over their bins: `F_p(x)`, the
/// integral of `t^p` against that density from the histogram's start to `x` (`p` = 0, 1), in O(1)
/// at any `x`. A quantizer's squared error is then a sum over its steps, not its bins: for step
/// `k` over `[a, b]`, `F_2 - 2ks F_1 + (ks)^2 F_0` between `a` and `b`. The steps tile the range,
/// so their `F_2` terms add up to the whole second moment, which is kept instead of `F_2` itself.
struct Moments {
    lo: f64,
    width: f64,
    /// `1 / width`, exact: widths are powers of two ([`crate::hist`]).
    inv: f64,
    /// Values per unit length in each bin (`count / width`).
    density: Vec<f64>,
    /// `prefix[i]`: `F_0` and `F_1` at the start of bin `i`.
    prefix: Vec<[f64; 2]>,
    /// `F_2` at the end: the sum of the squares.
    square: f64,
}

impl Moments {
    fn new(h: &Hist) -> Self {
        let density: Vec<f64> = h.counts.iter().map(|&c| c as f64 / h.width).collect();
        let mut prefix = Vec::with_capacity(density.len() + 1);
        let (mut acc, mut square) = ([0.0; 2], 0.0);
        prefix.push(acc);
        for (i, &d) in density.iter().enumerate() {
            let (a, b) = (h.lo + i as f64 * h.width, h.lo + (i + 1) as f64 * h.width);
            let m = Self::span(d, a, b);
            (acc[0], acc[1]) = (acc[0] + m[0], acc[1] + m[1]);
            square += d * (b * b * b - a * a * a) / 3.0;
            prefix.push(acc);
        }
        Moments { lo: h.lo, width: h.width, inv: h.inv(), density, prefix, square }
    }

    /// `F_0` and `F_1` of density `d` over `[a, b]`.
    #[inline(always)]
    fn span(d: f64, a: f64, b: f64) -> [f64; 2] {
        [d * (b - a), d * (b * b - a * a) / 2.0]
    }

    /// `F_0(x)` and `F_1(x)`, with `x` clamped to the histogram's range.
    #[inline(always)]
    fn at(&self, x: f64) -> [f64; 2] {
        let bins = self.density.len();
        let f = (x - self.lo) * self.inv;
        if f >= bins as f64 {
            return self.prefix[bins];
        }
        if f.is_nan() || f < 0.0 {
            return [0.0; 2];
        }
        // The floor by truncation (`f` is not negative): `f64::floor` is a libm call on the
        // baseline x86-64 target, and this runs once per quantizer step per candidate.
        let i = f as usize;
        let m = Self::span(self.density[i], self.lo + i as f64 * self.width, x);
        let p = self.prefix[i];
        [p[0] + m[0], p[1] + m[1]]
    }

    /// Squared error of the histogram's values (spread evenly over their bins) under a quantizer
    /// with step `s` whose code offsets `q - z` run over `kmin..=kmax`, rounding to nearest and
    /// saturating at the end codes. Infinite for a step that is not positive and finite.
    fn sq_error(&self, s: f64, kmin: f64, kmax: f64) -> f64 {
        if !(s > 0.0 && s.is_finite()) {
            return f64::INFINITY;
        }
        let hi = self.lo + self.width * self.density.len() as f64;
        let code = |v: f64| (v / s).round().clamp(kmin, kmax);
        let (first, last) = (code(self.lo), code(hi));
        let mut below = [0.0; 2];
        let mut err = self.square;
        let mut k = first;
        while k <= last {
            let above = if k < last { self.at((k + 0.5) * s) } else { self.prefix[self.density.len()] };
            let c = k * s;
            err += c * (c * (above[0] - below[0]) - 2.0 * (above[1] - below[1]));
            below = above;
            k += 1.0;
        }
        err
    }
}

/// Candidate edge indices in `lo..=hi`: at most 256 evenly spaced ones.
fn coarse(lo: usize, hi: usize) -> Vec<usize> {
    let n = hi.saturating_sub(lo) + 1;
    let step = n.div_ceil(256).max(1);
    (lo..=hi).step_by(step).chain(std::iter::once(hi)).collect()
}

/// The clip range that minimizes the expected squared error on the histogram.
///
/// The error of a candidate is the squared error of the histogram's values spread evenly over
/// their bins, integrated exactly over the quantizer's steps (`Moments`; exact zeros add
/// nothing). Candidates are bin edges: 256 spread over the range, then every edge around the best.
/// Symmetric (`|x|` histograms): one search over `T`. Asymmetric: alternating searches over the
/// lower and the upper bound. Cost: O(bins + steps x candidates), independent of the value count.
pub fn mse_range(h: &Hist, kind: HistKind, scheme: &Scheme) -> (f64, f64) {
    let (qmin, qmax) = scheme.qrange();
    let bins = h.counts.len();
    if h.width == 0.0 || h.binned() == 0 {
        return (h.lo.min(0.0), h.lo.max(0.0));
    }
    let moments = Moments::new(h);
    let edge = |i: usize| h.lo + i as f64 * h.width;
    let symmetric = kind == HistKind::Abs;
    let cost = |lo: f64, hi: f64| -> f64 {
        let (s, z) = scheme.params(lo as f32, hi as f32);
        moments.sq_error(s as f64, (qmin - z) as f64, (qmax - z) as f64)
    };
    // Best index in `lo..=hi` for `f`: a coarse pass, then every index around the best. The
    // candidates' costs are computed in parallel, then compared in order, so the pick is that of
    // a serial scan.
    let search = |lo: usize, hi: usize, f: &(dyn Fn(usize) -> f64 + Sync)| -> usize {
        let best = |c: Vec<usize>| {
            let costs: Vec<f64> = c.par_iter().map(|&i| f(i)).collect();
            c.into_iter().zip(costs).fold((hi, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a }).0
        };
        let b = best(coarse(lo, hi));
        // Two coarse steps each side: the error curve ripples (steps against bin edges), and one
        // step missed the best edge by 10 bins in a test.
        let r = 2 * (hi - lo).div_ceil(256);
        best((b.saturating_sub(r).max(lo)..=(b + r).min(hi)).collect())
    };
    // Candidates end at the data: past its last bin a clip only coarsens the step (a layout can
    // leave up to half of its bins empty above the data).
    let (first, top) = h.occupied().map_or((0, bins), |(first, last)| (first, last + 1));
    if symmetric {
        let k = search(1, top, &|k| cost(-edge(k), edge(k)));
        return (-edge(k), edge(k));
    }
    // Asymmetric: bounds keep 0 inside; `z` is the first edge at or above 0.
    let z = (((-h.lo) / h.width).ceil().max(0.0) as usize).min(bins);
    let (top, mut a) = (top.max(z), first.min(z));
    let mut b = top;
    for _ in 0..4 {
        let nb = search(z.max(a + 1), top, &|j| cost(edge(a).min(0.0), edge(j).max(0.0)));
        let na = search(first.min(z), z.min(nb - 1), &|i| cost(edge(i).min(0.0), edge(nb).max(0.0)));
        if (na, nb) == (a, b) {
            break;
        }
        (a, b) = (na, nb);
    }
    (edge(a).min(0.0), edge(b).max(0.0))
}

/// Calibrates `x` in one call. Percentile (small inputs, per group, or `exact`) and MSE (cells of
/// at most [`MSE_EXACT_CELL`] values, or `exact`) work on the data itself; everything else goes
/// through an [`Observer`] fed one batch.
pub fn calibrate<T: Elem>(
    x: &[T],
    shape: &[usize],
    scheme: Scheme,
    method: Method,
    opts: &CalibOptions,
) -> Result<QParams> {
    calibrate_on(&Cpu, x, shape, scheme, method, opts)
}

/// [`calibrate`] with the range and histogram passes run by `dev` (the searches on the data of
/// small cells stay on the CPU: they sort or scan a few thousand values per cell).
pub fn calibrate_on<T: Elem>(
    dev: &impl Reducer<T>,
    x: &[T],
    shape: &[usize],
    scheme: Scheme,
    method: Method,
    opts: &CalibOptions,
) -> Result<QParams> {
    // Small cells (groups, short channels) are searched on their own values: cheaper than a
    // 2048-bin histogram per cell, and exact.
    let groups = scheme.granularity_is_group();
    let cell = x.len() / ParamMap::new(shape, scheme.granularity)?.n_params().max(1);
    let exact = match method {
        Method::Percentile => opts.exact.unwrap_or(x.len() <= opts.exact_limit || groups),
        Method::Mse => opts.exact.unwrap_or(groups || cell <= MSE_EXACT_CELL),
        _ => false,
    };
    let mut obs = Observer::new(scheme, method, opts.clone())?;
    if method == Method::MinMax {
        // The observer's min-max result without its bookkeeping: ranges, then parameters.
        let map = ParamMap::new(shape, scheme.granularity)?;
        return Ok(QParams::from_ranges(scheme, &map, &dev.ranges(x, &map, opts.ignore_nonfinite)?));
    }
    if !exact {
        obs.update_on(dev, x, shape)?;
        return obs.qparams();
    }
    let map = ParamMap::new(shape, scheme.granularity)?;
    search_on_data(x, &map, scheme, method, opts, None)
}

/// The MSE clip search on the data with each element's squared error weighted by the importance
/// of its input: it minimizes `sum_j importance_j (w_j - w'_j)^2` per cell, where `j` is the
/// position along the flattened input dimension (`shape[1..]`; the whole vector for 1-D data).
/// With `importance = E[x_j^2]` of the layer's inputs (llama.cpp's importance matrix), this is the
/// expected output error of each output row. Cells must be contiguous: per tensor, per channel
/// along axis 0, or groups along the last axis.
pub fn calibrate_weighted<T: Elem>(
    x: &[T],
    shape: &[usize],
    scheme: Scheme,
    importance: &[f32],
    opts: &CalibOptions,
) -> Result<QParams> {
    let map = ParamMap::new(shape, scheme.granularity)?;
    let row: usize = if shape.len() >= 2 { shape[1..].iter().product() } else { map.len };
    if importance.len() != row {
        return Err(Error::Shape(format!(
            "importance has {} values, but the tensor of shape {shape:?} has {row} inputs per output",
            importance.len()
        )));
    }
    if let Some((i, v)) = importance.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
        return Err(Error::Invalid(format!(
            "importance {v} at index {i} is not a finite non-negative number"
        )));
    }
    if !crate::mse::contiguous(&map) {
        return Err(Error::Invalid(
            "importance-weighted search needs per-tensor, per-channel along axis 0 or groups along the last axis"
                .into(),
        ));
    }
    search_on_data(x, &map, scheme, Method::Mse, opts, Some(importance))
}

/// Percentile or MSE (optionally weighted) searched on each cell's own values.
fn search_on_data<T: Elem>(
    x: &[T],
    map: &ParamMap,
    scheme: Scheme,
    method: Method,
    opts: &CalibOptions,
    importance: crate::mse::Importance,
) -> Result<QParams> {
    let data = ranges(x, map, opts.ignore_nonfinite)?; // validates shape and finiteness
    let found: Vec<(f64, f64)> = if method == Method::Mse {
        crate::mse::mse_ranges(x, map, scheme, importance)
            .into_iter()
            .map(|(a, b)| (a as f64, b as f64))
            .collect()
    } else {
        gather(x, map)
            .into_par_iter()
            .map(|mut v| {
                if v.is_empty() {
                    (0.0, 0.0)
                } else {
                    exact_percentile(&mut v, scheme.symmetric, opts.percentile)
                }
            })
            .collect()
    };
    let r: Vec<(f32, f32)> = found
        .iter()
        .enumerate()
        .map(|(p, &(lo, hi))| {
            let (mn, mx) = (data.min[p], data.max[p]);
            if mn > mx {
                (f32::INFINITY, f32::NEG_INFINITY) // no finite value in this cell
            } else {
                clip_to_data(lo, hi, mn, mx)
            }
        })
        .collect();
    Ok(from_param_ranges(scheme, map.grid.clone(), &r))
}

/// The finite values of each parameter cell, in one pass.
fn gather<T: Elem>(x: &[T], map: &ParamMap) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new(); map.n_params()];
    map.for_runs(0, x.len(), |off, len, run| {
        for k in 0..len {
            let v = x[off + k].to_f32();
            if is_finite(v) {
                let p = match run {
                    Run::Const(p) => p,
                    Run::Seq(p) => p + k,
                };
                out[p].push(v);
            }
        }
    });
    out
}

/// `numpy.percentile` (linear interpolation) of `v`, by selection.
fn order_stat(v: &mut [f32], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let (_, a, rest) = v.select_nth_unstable_by(i, |x, y| x.total_cmp(y));
    let a = *a as f64;
    let frac = pos - i as f64;
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    a + frac * (b - a)
}

fn exact_percentile(v: &mut [f32], symmetric: bool, pct: f64) -> (f64, f64) {
    if symmetric {
        v.iter_mut().for_each(|x| *x = x.abs());
        let t = order_stat(v, pct / 100.0);
        (-t, t)
    } else {
        let tail = (1.0 - pct / 100.0) / 2.0;
        (order_stat(v, tail), order_stat(v, 1.0 - tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{Granularity, Precision};

    fn laplace(n: usize) -> Vec<f32> {
        let mut s = 12345u64;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
                (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()) as f32
            })
            .collect()
    }

    #[test]
    fn a_batch_observed_for_another_layout_is_refused_and_adds_nothing() {
        let s = Scheme::new(Precision::Int8).with_granularity(crate::Granularity::PerChannel { axis: 0 });
        let opts = CalibOptions::default();
        let mut obs = Observer::new(s, Method::Mse, opts.clone()).unwrap();
        obs.update(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let before = obs.clone();
        let other = Observer::new(s, Method::Mse, opts.clone()).unwrap();
        let three = other.observe(&Cpu, &[1.0f32; 6], &[3, 2]).unwrap();
        let e = obs.absorb(&three).unwrap_err().to_string();
        assert!(e.contains("parameter grid [3] but the observer has [2]"), "{e}");
        let fewer_bins = Observer::new(s, Method::Mse, CalibOptions { bins: 64, ..opts }).unwrap();
        let batch = fewer_bins.observe(&Cpu, &[1.0f32; 4], &[2, 2]).unwrap();
        let e = obs.absorb(&batch).unwrap_err().to_string();
        assert!(e.contains("a batch observed for another observer layout"), "{e}");
        assert_eq!(obs, before);
    }

    #[test]
    fn methods_clip_heavy_tails() {
        let x = laplace(200_000);
        let s = Scheme::new(Precision::Int8);
        let opts = CalibOptions::default();
        let mm = calibrate(&x, &[x.len()], s, Method::MinMax, &opts).unwrap().scale[0];
        for m in [Method::Percentile, Method::Entropy, Method::Mse] {
            let sc = calibrate(&x, &[x.len()], s, m, &opts).unwrap().scale[0];
            assert!(sc < mm, "{m:?}: {sc} vs minmax {mm}");
        }
    }

    #[test]
    fn streaming_equals_one_shot_for_minmax_and_merge_is_order_free() {
        let x = laplace(10_000);
        let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 1 });
        let opts = CalibOptions::default();
        let mut a = Observer::new(s, Method::Entropy, opts.clone()).unwrap();
        a.update(&x[..4000], &[400, 10]).unwrap();
        let mut b = Observer::new(s, Method::Entropy, opts.clone()).unwrap();
        b.update(&x[4000..], &[600, 10]).unwrap();
        let mut ab = a.clone();
        ab.merge(&b).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        assert_eq!(ab.min, ba.min);
        assert_eq!(ab.hists.iter().map(Hist::total).sum::<u64>(), 10_000);
        assert!(b.update(&x[..30], &[3, 10]).is_ok());
        assert!(matches!(b.update(&x[..30], &[10, 3]), Err(Error::Shape(_))));
    }

    /// The squared error of values spread evenly over `[a, b]`: each step's share integrated on
    /// its own (the per-bin integration [`Moments`] replaces, written for clarity).
    fn bin_sq_error(a: f64, b: f64, s: f64, kmin: f64, kmax: f64) -> f64 {
        let mut acc = 0.0;
        let mut k = kmin;
        while k <= kmax {
            let lo = if k == kmin { a } else { a.max((k - 0.5) * s) };
            let hi = if k == kmax { b } else { b.min((k + 0.5) * s) };
            if hi > lo {
                acc += ((hi - k * s).powi(3) - (lo - k * s).powi(3)) / 3.0;
            }
            k += 1.0;
        }
        acc / (b - a)
    }

    #[test]
    fn moments_equal_the_per_bin_integration() {
        let x = laplace(50_000);
        for (kind, lo, shift) in [(HistKind::Abs, 0.0, 0.0), (HistKind::Signed, -9.0, 0.7)] {
            let mut h = Hist::empty(300);
            let top = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            h.cover(lo, top + shift);
            let v: Vec<f32> = x.iter().map(|&v| v + shift as f32).collect();
            h.add(&v, kind);
            let m = Moments::new(&h);
            for (s, kmin, kmax) in
                [(0.05, -128.0, 127.0), (0.9, -8.0, 7.0), (0.013, -3.0, 60.0), (2.5, 0.0, 15.0)]
            {
                let slow: f64 = (0..300)
                    .map(|i| {
                        let (a, b) = (h.lo + i as f64 * h.width, h.lo + (i + 1) as f64 * h.width);
                        h.counts[i] as f64 * bin_sq_error(a, b, s, kmin, kmax)
                    })
                    .sum();
                let fast = m.sq_error(s, kmin, kmax);
                assert!((fast - slow).abs() <= 1e-9 * slow, "{kind:?} s={s}: {fast} vs {slow}");
            }
            assert_eq!(m.sq_error(0.0, -8.0, 7.0), f64::INFINITY);
        }
    }

    #[test]
    fn exact_percentile_matches_numpy_definition() {
        let mut v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(order_stat(&mut v, 0.5), 50.0);
        assert_eq!(order_stat(&mut v, 0.995), 99.5);
    }
}
