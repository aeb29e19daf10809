//! Input statistics of a linear layer for data-aware rounding: `H = 2 XᵀX / N` (GPTQ's Hessian of
//! the layer's output error) and its diagonal `E[x_j²]` (llama.cpp's importance), accumulated over
//! batches of inputs `X` (`N` rows of `in` features).
//!
//! Each batch's `XᵀX` is a float32 matrix product (faer, lower triangle only) over at most
//! [`F32_ROWS`] rows at a time; the sums across those blocks and across batches are float64 (a
//! packed lower triangle), so long calibration runs lose no precision.
//! A batch is reduced on its own first ([`HessianObserver::partial`]) and then added
//! ([`HessianObserver::add`]): several threads can reduce batches at once and add them under a lock.

use crate::elem::{f32_in, first_nonfinite, Elem};
use crate::error::{Error, Result};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};

/// Rows whose products are summed in f32 before the sum is added to the f64 total.
pub const F32_ROWS: usize = 4096;
/// Values of `X` converted to f32 at a time (the rows per product are this over the features).
const CONVERT: usize = 1 << 23;

/// Scratch kept per thread between batches, at most (f32 values): 64 MiB, 4096 features.
const KEEP_SCRATCH: usize = 1 << 24;

thread_local! {
    /// Per-thread product block and conversion buffer, kept between batches so that feeding many
    /// batches does not fault in fresh pages for each.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Index of `(i, j)`, `j <= i`, in a packed lower triangle.
#[inline(always)]
pub fn tri_index(i: usize, j: usize) -> usize {
    i * (i + 1) / 2 + j
}

/// Running `XᵀX` (f64, lower triangle kept) and the row count of a layer's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct HessianObserver {
    /// Input features (`in`); fixed by the first batch.
    pub features: Option<usize>,
    /// `sum XᵀX`: its lower triangle, packed by rows (`(i, j)` at `i (i + 1) / 2 + j`).
    pub sum: Vec<f64>,
    /// Rows seen (`N`).
    pub count: u64,
}

/// One batch's contribution: `XᵀX` (packed lower triangle) and its row count.
#[derive(Debug, Clone)]
pub struct Partial {
    pub features: usize,
    pub sum: Vec<f64>,
    pub count: u64,
}

impl Default for HessianObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl HessianObserver {
    /// An empty observer; the first batch fixes the number of features.
    pub fn new() -> Self {
        HessianObserver { features: None, sum: vec![], count: 0 }
    }

    /// Checks a batch `x` of shape `(..., in)` against this observer: `(rows, in)`, or why not
    /// (NaN/Inf, a wrong feature count, a scalar).
    pub fn check_batch<T: Elem>(&self, x: &[T], shape: &[usize]) -> Result<(usize, usize)> {
        let Some(&f) = shape.last() else {
            return Err(Error::Shape("inputs need at least one axis (the features)".into()));
        };
        if x.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!(
                "data has {} values but shape {shape:?} has more or fewer",
                x.len()
            )));
        }
        if let Some(have) = self.features.filter(|&h| h != f) {
            return Err(Error::Shape(format!("inputs have {f} features, the observer has {have}")));
        }
        if let Some(first_index) = first_nonfinite(x) {
            let count = x.iter().filter(|v| !v.to_f32().is_finite()).count();
            return Err(Error::NonFinite { count, first_index });
        }
        Ok((x.len().checked_div(f).unwrap_or(0), f))
    }

    /// Reduces a batch `x` of shape `(..., in)` (the last axis is the features; every other axis
    /// counts rows) without touching the observer. NaN/Inf, a wrong feature count or a scalar
    /// are errors.
    pub fn partial<T: Elem>(&self, x: &[T], shape: &[usize]) -> Result<Partial> {
        let (rows, f) = self.check_batch(x, shape)?;
        let mut acc = vec![0f64; f * (f + 1) / 2];
        if rows == 0 {
            return Ok(Partial { features: f, sum: acc, count: 0 });
        }
        let step = (CONVERT / f.max(1)).clamp(64, F32_ROWS);
        SCRATCH.with(|scratch| {
            let (block, xb) = &mut *scratch.borrow_mut();
            block.resize(f * f, 0.0);
            let mut pending = 0;
            for start in (0..rows).step_by(step) {
                let n = step.min(rows - start);
                let part = &x[start * f..(start + n) * f];
                let xs = f32_in(part, xb);
                let xm = MatRef::from_row_major_slice(xs, n, f);
                tri_matmul(
                    MatMut::from_row_major_slice_mut(&mut block[..], f, f),
                    BlockStructure::TriangularLower,
                    if pending == 0 { Accum::Replace } else { Accum::Add },
                    xm.transpose(),
                    BlockStructure::Rectangular,
                    xm,
                    BlockStructure::Rectangular,
                    1.0f32,
                    Par::rayon(0),
                );
                pending += n;
                if pending >= F32_ROWS || start + n == rows {
                    for i in 0..f {
                        let (a, b) = (&mut acc[tri_index(i, 0)..=tri_index(i, i)], &block[i * f..=i * f + i]);
                        a.iter_mut().zip(b).for_each(|(s, &v)| *s += v as f64);
                    }
                    pending = 0;
                }
            }
            if block.len() > KEEP_SCRATCH {
                // Wide layers: do not hold hundreds of megabytes per thread between batches.
                *block = Vec::new();
                *xb = Vec::new();
            }
        });
        Ok(Partial { features: f, sum: acc, count: rows as u64 })
    }

    /// Adds a batch reduced by [`HessianObserver::partial`].
    pub fn add(&mut self, p: &Partial) -> Result<()> {
        match self.features {
            Some(f) if f != p.features => {
                return Err(Error::Shape(format!(
                    "inputs have {} features, the observer has {f}",
                    p.features
                )))
            }
            None => {
                self.features = Some(p.features);
                self.sum = p.sum.clone();
                self.count = p.count;
                return Ok(());
            }
            _ => {}
        }
        self.sum.iter_mut().zip(&p.sum).for_each(|(s, &v)| *s += v);
        self.count += p.count;
        Ok(())
    }

    /// Like [`HessianObserver::add`], taking the partial's storage when the observer is empty.
    pub fn add_owned(&mut self, p: Partial) -> Result<()> {
        if self.features.is_none() {
            (self.features, self.sum, self.count) = (Some(p.features), p.sum, p.count);
            return Ok(());
        }
        self.add(&p)
    }

    /// Folds one batch in: [`HessianObserver::partial`] then [`HessianObserver::add`].
    pub fn update<T: Elem>(&mut self, x: &[T], shape: &[usize]) -> Result<()> {
        let p = self.partial(x, shape)?;
        self.add_owned(p)
    }

    /// Adds another observer's statistics (same features).
    pub fn merge(&mut self, other: &HessianObserver) -> Result<()> {
        match other.features {
            None => Ok(()),
            Some(f) => self.add(&Partial { features: f, sum: other.sum.clone(), count: other.count }),
        }
    }

    fn need_data(&self) -> Result<usize> {
        match self.features {
            Some(f) if self.count > 0 => Ok(f),
            _ => Err(Error::Invalid("the observer has seen no inputs".into())),
        }
    }

    /// `H = 2 XᵀX / N`, full and symmetric, row-major `in × in`.
    pub fn hessian(&self) -> Result<Vec<f64>> {
        let f = self.need_data()?;
        let k = 2.0 / self.count as f64;
        let mut h = vec![0f64; f * f];
        for i in 0..f {
            for j in 0..=i {
                let v = self.sum[tri_index(i, j)] * k;
                h[i * f + j] = v;
                h[j * f + i] = v;
            }
        }
        Ok(h)
    }

    /// `E[x_j²]` per feature: the Hessian's diagonal over 2 (llama.cpp's importance).
    pub fn importance(&self) -> Result<Vec<f64>> {
        let f = self.need_data()?;
        Ok((0..f).map(|i| self.sum[tri_index(i, i)] / self.count as f64).collect())
    }
}
