//! Element types the kernels read and write, so one generic kernel serves every dtype.

use half::{bf16, f16};

/// A floating-point input element. Kernels compute in `f32`.
pub trait Elem: Copy + Send + Sync + 'static {
    /// Name of the type, for error messages.
    const NAME: &'static str;
    /// Converts to `f32` (exact for `f16`/`bf16`, rounded to nearest for `f64`).
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    const NAME: &'static str = "float32";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for f64 {
    const NAME: &'static str = "float64";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Elem for f16 {
    const NAME: &'static str = "float16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Elem for bf16 {
    const NAME: &'static str = "bfloat16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// A stored integer code: `i8` for signed grids, `u8` for unsigned ones.
pub trait QInt: Copy + Send + Sync + Default + 'static {
    /// True for `i8`.
    const SIGNED: bool;
    /// Converts an in-range integer; callers clamp first.
    fn from_i32(v: i32) -> Self;
    /// Widens to `i32`.
    fn to_i32(self) -> i32;
}

impl QInt for i8 {
    const SIGNED: bool = true;
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i8
    }
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
}

impl QInt for u8 {
    const SIGNED: bool = false;
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as u8
    }
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
}

/// `out` as the bytes the SIMD kernels write: `Some` for the one-byte codes (`i8`, `u8`), `None`
/// for any other `QInt` (the trait is public), which then takes the portable loops.
#[inline(always)]
pub(crate) fn code_bytes<Q: QInt>(out: &mut [Q]) -> Option<&mut [u8]> {
    // SAFETY: `Q` is one byte (checked), plain data like every `QInt` (`Copy`, no padding).
    (std::mem::size_of::<Q>() == 1)
        .then(|| unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len()) })
}

/// True for finite values, written so that it vectorizes (`NaN` and `Inf` fail `|v| <= MAX`).
#[inline(always)]
pub fn is_finite(v: f32) -> bool {
    v.abs() <= f32::MAX
}

/// Flat index of the first non-finite element, if any.
pub fn first_nonfinite<T: Elem>(x: &[T]) -> Option<usize> {
    x.iter().position(|v| !is_finite(v.to_f32()))
}

/// `x` as f32: itself when `T` is `f32`, else converted into `buf` (kept by the caller between
/// calls, so repeated conversions reuse one allocation).
pub fn f32_in<'a, T: Elem>(x: &'a [T], buf: &'a mut Vec<f32>) -> &'a [f32] {
    match as_f32(x) {
        Some(v) => v,
        None => {
            buf.clear();
            buf.extend(x.iter().map(|v| v.to_f32()));
            buf
        }
    }
}

/// `x` itself when `T` is `f32` (so callers can skip a conversion copy), else None.
pub fn as_f32<T: Elem>(x: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (same type id), so the slice's layout is that of [f32].
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
    } else {
        None
    }
}
