//! Maps every element of a C-ordered tensor to the index of its quantization parameters.
//!
//! The tensor is viewed as `(outer, dim, inner)` around the quantized axis. Parameters form a grid:
//! per tensor `()`, per channel `(dim,)`, per group the tensor's shape with `dim` replaced by
//! `dim / group`. Groups along the last axis of a tensor with 3+ dimensions (a convolution weight
//! `(out, in, kh, kw)`) run over its flattened input dimension `in * kh * kw`, as runtimes store
//! conv weights: the grid is `(out, in * kh * kw / group)`. Kernels walk the flat data in *runs*: stretches that share one parameter
//! ([`Run::Const`]) or step through consecutive parameters ([`Run::Seq`]), so that the inner loops
//! are plain slices that the compiler vectorizes.

use crate::error::{Error, Result};
use crate::scheme::Granularity;
use rayon::prelude::*;

/// A stretch of elements and the parameters it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Every element uses parameter `p`.
    Const(usize),
    /// Element `k` of the run uses parameter `p + k`.
    Seq(usize),
}

/// The resolved element-to-parameter map of one tensor under one granularity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMap {
    pub outer: usize,
    pub dim: usize,
    pub inner: usize,
    /// Elements of `dim` sharing a parameter (1 per channel).
    pub group: usize,
    /// Parameters vary with `outer` and `inner` (per group and per tensor); per channel they do not.
    pub per_group: bool,
    /// Shape of the parameter grid.
    pub grid: Vec<usize>,
    /// Number of elements.
    pub len: usize,
}

/// Resolves a possibly negative axis against `ndim`.
pub fn normalize_axis(axis: isize, ndim: usize) -> Result<usize> {
    let n = ndim as isize;
    if axis < -n || axis >= n {
        return Err(Error::Axis { axis, ndim });
    }
    Ok(if axis < 0 { (axis + n) as usize } else { axis as usize })
}

impl ParamMap {
    /// Builds the map for `shape` under `granularity`, checking the axis and the group size.
    pub fn new(shape: &[usize], granularity: Granularity) -> Result<Self> {
        let len: usize = shape.iter().product();
        match granularity {
            Granularity::PerTensor => Ok(Self::whole(len, Vec::new())),
            Granularity::PerChannel { axis } => {
                let a = normalize_axis(axis, shape.len())?;
                let (outer, dim, inner) = split(shape, a);
                if dim == 1 {
                    // A single channel is a single parameter: walk it as one run.
                    return Ok(Self::whole(len, vec![1]));
                }
                Ok(ParamMap { outer, dim, inner, group: 1, per_group: false, grid: vec![dim], len })
            }
            Granularity::PerGroup { axis, size } => {
                let a = normalize_axis(axis, shape.len())?;
                let view = flat_groups_view(shape, a);
                let (shape, a) = view.as_ref().map(|v| (&v[..], 1)).unwrap_or((shape, a));
                let (outer, dim, inner) = split(shape, a);
                if size == 0 || dim % size != 0 {
                    return Err(Error::GroupSize { group: size, axis: a, size: dim });
                }
                let mut grid = shape.to_vec();
                grid[a] = dim / size;
                Ok(ParamMap { outer, dim, inner, group: size, per_group: true, grid, len })
            }
        }
    }

    /// One parameter for all `len` elements.
    fn whole(len: usize, grid: Vec<usize>) -> Self {
        ParamMap { outer: 1, dim: len.max(1), inner: 1, group: len.max(1), per_group: true, grid, len }
    }

    /// Number of parameters (the product of the grid shape).
    pub fn n_params(&self) -> usize {
        self.grid.iter().product()
    }

    /// Calls `f(offset, len, run)` for the maximal runs covering `start..end`.
    #[inline(always)]
    pub fn for_runs(&self, start: usize, end: usize, mut f: impl FnMut(usize, usize, Run)) {
        for (off, len, run) in self.runs(start, end) {
            f(off, len, run);
        }
    }

    /// The maximal runs covering `start..end`, as `(offset, len, run)`. An iterator rather than a
    /// callback so that kernels loop over it inline (and inside their SIMD-dispatched function).
    #[inline(always)]
    pub fn runs(&self, start: usize, end: usize) -> Runs<'_> {
        if start >= end {
            // Nothing to walk; a zero-size dimension must not reach the divisions below.
            return Runs { map: self, i: end, end, d: 0, ii: 0, p: 0, r: 0 };
        }
        let (dim, inner, group) = (self.dim, self.inner, self.group);
        let (d, ii, od) = if inner == 1 {
            (start % dim, 0, 0)
        } else {
            ((start / inner) % dim, start % inner, start / inner)
        };
        let (p, r) = if inner == 1 {
            ((start / dim) * (dim / group) + d / group, d % group)
        } else {
            ((od / dim) * (dim / group) + d / group, d % group)
        };
        Runs { map: self, i: start, end, d, ii, p, r }
    }
}

/// Iterator over the runs of a [`ParamMap`]: divisions happen once at the start; the walk only
/// adds and compares (runs can be as short as a group).
pub struct Runs<'a> {
    map: &'a ParamMap,
    i: usize,
    end: usize,
    /// Index along `dim`, and the position within `inner`.
    d: usize,
    ii: usize,
    /// Per group: the current group's parameter (inner == 1) or group row (inner > 1), and the
    /// position inside the group.
    p: usize,
    r: usize,
}

impl Iterator for Runs<'_> {
    type Item = (usize, usize, Run);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.end {
            return None;
        }
        let m = self.map;
        let (i, rem) = (self.i, self.end - self.i);
        let item = if m.inner == 1 {
            if m.per_group {
                let len = (m.group - self.r).min(rem);
                let out = (i, len, Run::Const(self.p));
                self.r += len;
                if self.r == m.group {
                    self.r = 0;
                    self.p += 1;
                }
                out
            } else {
                let len = (m.dim - self.d).min(rem);
                let out = (i, len, Run::Seq(self.d));
                self.d = 0;
                out
            }
        } else {
            let len = (m.inner - self.ii).min(rem);
            let out = if m.per_group {
                (i, len, Run::Seq(self.p * m.inner + self.ii))
            } else {
                (i, len, Run::Const(self.d))
            };
            self.ii = 0;
            self.d = if self.d + 1 == m.dim { 0 } else { self.d + 1 };
            self.r += 1;
            if self.r == m.group {
                self.r = 0;
                self.p += 1;
            }
            out
        };
        self.i += item.1;
        Some(item)
    }
}

/// The 2-D view `(out, in * kh * kw)` in which last-axis groups of a tensor with 3+ dimensions
/// are taken (see the module docs); `None` when the tensor is grouped as it is.
pub fn flat_groups_view(shape: &[usize], axis: usize) -> Option<[usize; 2]> {
    (shape.len() >= 3 && axis + 1 == shape.len()).then(|| [shape[0], shape[1..].iter().product()])
}

/// Splits `shape` around axis `a` into `(outer, dim, inner)` element counts.
fn split(shape: &[usize], a: usize) -> (usize, usize, usize) {
    let outer = shape[..a].iter().product();
    let inner = shape[a + 1..].iter().product();
    (outer, shape[a], inner)
}

/// `src` (`rows x cols`, row-major) transposed into `dst` (`cols x rows`). Rows of 32-column
/// strips: each read is a contiguous run, and the 32 output rows it writes stay in cache (numpy's
/// copy of `a.T` walks the input down its columns, a new cache line per value). Strips of
/// output rows run in parallel.
pub fn transpose<T: Copy + Send + Sync>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) -> Result<()> {
    if src.len() != rows * cols || dst.len() != src.len() {
        return Err(Error::Shape(format!(
            "transposing {rows}x{cols} needs {} values in and out, got {} and {}",
            rows * cols,
            src.len(),
            dst.len()
        )));
    }
    if src.is_empty() {
        return Ok(());
    }
    const STRIP: usize = 32;
    const TILE: usize = 8;
    dst.par_chunks_mut(STRIP * rows).enumerate().for_each(|(b, strip)| {
        let (c0, nc) = (b * STRIP, strip.len() / rows);
        let (r8, c8) = (rows / TILE * TILE, nc / TILE * TILE);
        #[cfg(target_arch = "x86_64")]
        if std::mem::size_of::<T>() == 4 && crate::simd::avx2() {
            for r0 in (0..r8).step_by(TILE) {
                for cc in (0..c8).step_by(TILE) {
                    // SAFETY: AVX2 was checked; rows r0..r0 + 8 and columns c0 + cc..+8 lie inside
                    // `src` (r0 + 8 <= rows, cc + 8 <= nc), rows r0..+8 of output rows cc..+8
                    // inside `strip`; 4-byte values move as bits.
                    unsafe {
                        tile8_avx2(
                            src.as_ptr().add(r0 * cols + c0 + cc).cast(),
                            cols,
                            strip.as_mut_ptr().add(cc * rows + r0).cast(),
                            rows,
                        )
                    };
                }
            }
        } else {
            tiles(src, cols, c0, strip, rows, r8, c8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        tiles(src, cols, c0, strip, rows, r8, c8);
        // The edges (rows or columns past the last whole tile), value by value.
        for r in 0..rows {
            let from = if r < r8 { c8 } else { 0 };
            for c in from..nc {
                strip[c * rows + r] = src[r * cols + c0 + c];
            }
        }
    });
    Ok(())
}

/// The whole 8x8 tiles of one output strip (`r8` rows, `c8` columns), through a local buffer:
/// eight contiguous reads, eight contiguous writes.
fn tiles<T: Copy>(src: &[T], cols: usize, c0: usize, strip: &mut [T], rows: usize, r8: usize, c8: usize) {
    const TILE: usize = 8;
    for r0 in (0..r8).step_by(TILE) {
        for cc in (0..c8).step_by(TILE) {
            let mut tile = [[src[0]; TILE]; TILE];
            for (i, row) in src[r0 * cols + c0 + cc..].chunks(cols).take(TILE).enumerate() {
                for (j, t) in tile.iter_mut().enumerate() {
                    t[i] = row[j];
                }
            }
            for (j, t) in tile.iter().enumerate() {
                strip[(cc + j) * rows + r0..(cc + j) * rows + r0 + TILE].copy_from_slice(t);
            }
        }
    }
}

/// An 8x8 tile of 4-byte values in registers: eight rows at `src` (a row every `ld` values)
/// to eight rows at `dst` (every `ldd`), by the unpack / shuffle / lane-swap network; the tile
/// loop in [`tiles`] compiled to scalar moves at a third of the memory's speed.
///
/// # Safety
/// The CPU must have AVX2; the eight rows of eight values at both ends must be valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile8_avx2(src: *const f32, ld: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ld)));
    // Pairs of rows interleaved, then quads: u[j] holds columns j and j + 4 of rows 0-3 / 4-7.
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    let u: [__m256; 8] = std::array::from_fn(|i| {
        // i = 0..3 from rows 0-3 (t[0..4]), 4..7 from rows 4-7 (t[4..8]).
        let (h, j) = (i / 4 * 4, i % 4);
        let (a, b) = (t[h + j / 2], t[h + 2 + j / 2]);
        if j % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xee>(a, b)
        }
    });
    for j in 0..4 {
        _mm256_storeu_ps(dst.add(j * ldd), _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]));
        _mm256_storeu_ps(dst.add((j + 4) * ldd), _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_equals_the_index_swap() {
        fn check<T: Copy + Send + Sync + PartialEq + std::fmt::Debug>(f: impl Fn(usize) -> T) {
            for (rows, cols) in [(1, 1), (3, 70), (64, 32), (33, 65), (1, 100), (100, 1), (40, 96), (17, 23)]
            {
                let src: Vec<T> = (0..rows * cols).map(&f).collect();
                let mut dst = vec![src[0]; src.len()];
                transpose(&src, rows, cols, &mut dst).unwrap();
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                    }
                }
            }
        }
        // 4-byte values take the AVX2 tiles where the CPU has them (moved as bits).
        check(|i| i as u32);
        check(|i| i as u8);
        check(|i| i as f64);
        let e = transpose(&[1u8, 2, 3], 2, 2, &mut [0u8; 3]).unwrap_err().to_string();
        assert!(e.contains("transposing 2x2 needs 4 values in and out, got 3 and 3"), "{e}");
        assert!(transpose::<f32>(&[], 0, 5, &mut []).is_ok());
    }

    /// Slow reference: the parameter index of flat element `i`.
    fn param_of(m: &ParamMap, shape: &[usize], g: Granularity, i: usize) -> usize {
        let mut idx = vec![0; shape.len()];
        let mut r = i;
        for k in (0..shape.len()).rev() {
            idx[k] = r % shape[k];
            r /= shape[k];
        }
        match g {
            Granularity::PerTensor => 0,
            Granularity::PerChannel { axis } => idx[normalize_axis(axis, shape.len()).unwrap()],
            Granularity::PerGroup { axis, size } => {
                let a = normalize_axis(axis, shape.len()).unwrap();
                if flat_groups_view(shape, a).is_some() {
                    // (out, in * kh * kw): the row, then the group within the flattened row.
                    let row: usize = shape[1..].iter().product();
                    return (i / row) * (row / size) + (i % row) / size;
                }
                idx[a] /= size;
                idx.iter().zip(&m.grid).fold(0, |acc, (&v, &n)| acc * n + v)
            }
        }
    }

    #[test]
    fn runs_match_slow_reference() {
        let shape = [3, 4, 6];
        for g in [
            Granularity::PerTensor,
            Granularity::PerChannel { axis: 0 },
            Granularity::PerChannel { axis: 1 },
            Granularity::PerChannel { axis: -1 },
            Granularity::PerGroup { axis: -1, size: 3 },
            Granularity::PerGroup { axis: 1, size: 2 },
            Granularity::PerGroup { axis: 0, size: 3 },
        ] {
            let m = ParamMap::new(&shape, g).unwrap();
            for (start, end) in [(0, 72), (5, 41), (13, 14)] {
                let mut seen = start;
                m.for_runs(start, end, |off, len, run| {
                    assert_eq!(off, seen);
                    seen += len;
                    for k in 0..len {
                        let p = match run {
                            Run::Const(p) => p,
                            Run::Seq(p) => p + k,
                        };
                        assert_eq!(p, param_of(&m, &shape, g, off + k), "{g:?} at {}", off + k);
                    }
                });
                assert_eq!(seen, end);
            }
        }
    }

    #[test]
    fn conv_weights_group_over_the_flattened_input_dimension() {
        // (out, in, kh, kw) = (4, 8, 3, 3): 72 inputs per output channel, groups of 24.
        let shape = [4, 8, 3, 3];
        let g = Granularity::PerGroup { axis: -1, size: 24 };
        let m = ParamMap::new(&shape, g).unwrap();
        assert_eq!(m.grid, vec![4, 3]);
        m.for_runs(0, 288, |off, len, run| {
            for k in 0..len {
                let p = match run {
                    Run::Const(p) => p,
                    Run::Seq(p) => p + k,
                };
                assert_eq!(p, param_of(&m, &shape, g, off + k));
                assert_eq!(p, (off + k) / 24);
            }
        });
        // 72 is not a multiple of 32: the error names the flattened dimension.
        assert_eq!(
            ParamMap::new(&shape, Granularity::PerGroup { axis: -1, size: 32 }),
            Err(Error::GroupSize { group: 32, axis: 1, size: 72 })
        );
        // Other axes of a 4-D tensor are grouped as they are.
        assert_eq!(
            ParamMap::new(&shape, Granularity::PerGroup { axis: 1, size: 4 }).unwrap().grid,
            vec![4, 2, 3, 3]
        );
    }

    #[test]
    fn bad_axis_and_group() {
        assert_eq!(
            ParamMap::new(&[2, 3], Granularity::PerChannel { axis: 2 }),
            Err(Error::Axis { axis: 2, ndim: 2 })
        );
        assert!(ParamMap::new(&[2, 3], Granularity::PerChannel { axis: -3 }).is_err());
        assert_eq!(
            ParamMap::new(&[2, 6], Granularity::PerGroup { axis: 1, size: 4 }),
            Err(Error::GroupSize { group: 4, axis: 1, size: 6 })
        );
    }
}
