//! INT4 packing: two 4-bit codes per byte, element `2i` in the low nibble and `2i + 1` in the
//! high nibble. An odd length is padded with a zero nibble; the caller keeps the element count.

use crate::error::{Error, Result};
use rayon::prelude::*;

const CHUNK_BYTES: usize = 1 << 15;

/// Packs the low nibbles of `codes` into `out` (`codes.len().div_ceil(2)` bytes). No range check.
pub(crate) fn pack_nibbles<C: Copy + Into<i32> + Sync>(codes: &[C], out: &mut [u8]) {
    out.par_chunks_mut(CHUNK_BYTES)
        .zip(codes.par_chunks(2 * CHUNK_BYTES))
        .for_each(|(o, c)| crate::simd::simd!(pack_into(c, o)));
}

/// [`pack_nibbles`] of one slice, on the calling thread (`out` has `ceil(codes / 2)` bytes).
#[inline(always)]
pub(crate) fn pack_into<C: Copy + Into<i32>>(codes: &[C], out: &mut [u8]) {
    let mut pairs = codes.chunks_exact(2);
    for (b, p) in out.iter_mut().zip(&mut pairs) {
        *b = (p[0].into() & 0xF) as u8 | (((p[1].into() & 0xF) as u8) << 4);
    }
    if let [last] = pairs.remainder() {
        out[out.len() - 1] = ((*last).into() & 0xF) as u8;
    }
}

/// Packs code bytes as quantizers return them (two's complement for signed grids; already in
/// range) into `out` (`codes.len().div_ceil(2)` bytes).
pub fn pack_code_bytes(codes: &[u8], out: &mut [u8]) -> Result<()> {
    if out.len() != codes.len().div_ceil(2) {
        return Err(Error::Shape(format!(
            "{} codes need {} packed bytes, got {}",
            codes.len(),
            codes.len().div_ceil(2),
            out.len()
        )));
    }
    pack_nibbles(codes, out);
    Ok(())
}

/// Finds the first value outside `min..=max`.
fn check_range<C: Copy + Into<i32> + Sync>(v: &[C], min: i32, max: i32) -> Result<()> {
    // Whole chunks, each one branch-free pass (it vectorizes); the index only on failure.
    let outside = |x: C| !(min..=max).contains(&x.into());
    let chunk = v
        .par_chunks(CHUNK_BYTES)
        .position_first(|c| crate::simd::simd!(c.iter().fold(false, |bad, &x| bad | outside(x))));
    match chunk
        .and_then(|i| v[i * CHUNK_BYTES..].iter().position(|&x| outside(x)).map(|j| i * CHUNK_BYTES + j))
    {
        None => Ok(()),
        Some(index) => {
            Err(Error::OutOfRange { value: v[index].into() as i64, index, min: min as i64, max: max as i64 })
        }
    }
}

/// Packs signed INT4 values (`-8..=7`); anything else is an [`Error::OutOfRange`].
pub fn pack_int4_signed(v: &[i8]) -> Result<Vec<u8>> {
    check_range(v, -8, 7)?;
    let mut out = vec![0u8; v.len().div_ceil(2)];
    pack_nibbles(v, &mut out);
    Ok(out)
}

/// Packs unsigned INT4 values (`0..=15`); anything else is an [`Error::OutOfRange`].
pub fn pack_int4_unsigned(v: &[u8]) -> Result<Vec<u8>> {
    check_range(v, 0, 15)?;
    let mut out = vec![0u8; v.len().div_ceil(2)];
    pack_nibbles(v, &mut out);
    Ok(out)
}

/// Checks that `packed` holds exactly `n` nibbles.
fn check_packed_len(packed: &[u8], n: usize) -> Result<()> {
    if packed.len() != n.div_ceil(2) {
        return Err(Error::Shape(format!(
            "{n} INT4 values need {} packed bytes, got {}",
            n.div_ceil(2),
            packed.len()
        )));
    }
    Ok(())
}

/// Unpacks `n` values with `f(byte) -> (low, high)`.
fn unpack_with<T: Copy + Default + Send>(
    packed: &[u8],
    n: usize,
    f: impl Fn(u8) -> (T, T) + Sync,
) -> Result<Vec<T>> {
    check_packed_len(packed, n)?;
    let mut out = vec![T::default(); n];
    out.par_chunks_mut(2 * CHUNK_BYTES).zip(packed.par_chunks(CHUNK_BYTES)).for_each(|(o, p)| {
        let mut pairs = o.chunks_exact_mut(2);
        for (pair, &b) in (&mut pairs).zip(p) {
            let (lo, hi) = f(b);
            pair[0] = lo;
            pair[1] = hi;
        }
        if let [last] = pairs.into_remainder() {
            *last = f(p[p.len() - 1]).0;
        }
    });
    Ok(out)
}

/// Unpacks `n` signed INT4 values (sign-extended nibbles).
pub fn unpack_int4_signed(packed: &[u8], n: usize) -> Result<Vec<i8>> {
    unpack_with(packed, n, |b| (((b << 4) as i8) >> 4, (b as i8) >> 4))
}

/// Unpacks `n` unsigned INT4 values.
pub fn unpack_int4_unsigned(packed: &[u8], n: usize) -> Result<Vec<u8>> {
    unpack_with(packed, n, |b| (b & 0xF, b >> 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_low_nibble_first() {
        assert_eq!(pack_int4_signed(&[1, -1, 7]).unwrap(), vec![0xF1, 0x07]);
        assert_eq!(pack_int4_unsigned(&[15, 0, 3]).unwrap(), vec![0x0F, 0x03]);
        assert_eq!(unpack_int4_signed(&[0xF1, 0x07], 3).unwrap(), vec![1, -1, 7]);
    }

    #[test]
    fn out_of_range_is_an_error() {
        assert_eq!(pack_int4_signed(&[0, 8]), Err(Error::OutOfRange { value: 8, index: 1, min: -8, max: 7 }));
        assert!(pack_int4_unsigned(&[16]).is_err());
        assert!(unpack_int4_signed(&[0, 0], 5).is_err());
    }

    #[test]
    fn empty() {
        assert!(pack_int4_signed(&[]).unwrap().is_empty());
        assert!(unpack_int4_unsigned(&[], 0).unwrap().is_empty());
    }
}
