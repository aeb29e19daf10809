//! Runtime CPU dispatch: kernels are written once as plain loops and compiled twice, for the
//! baseline x86-64 target and for AVX2+FMA, chosen per call by a cached CPU check. Wheels stay
//! portable while recent CPUs get 256-bit vectors.

/// True when the CPU has AVX2 and FMA (the check is cached by std).
#[inline]
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Evaluates `$e` in a function compiled with AVX2+FMA when the CPU has them, else as is.
/// `$e` should call `#[inline(always)]` kernels so they are compiled inside that function.
macro_rules! simd {
    ($e:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::simd::avx2() {
                // SAFETY: the CPU was just checked for AVX2 and FMA.
                unsafe { wide(|| $e) }
            } else {
                $e
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $e
        }
    }};
}
pub(crate) use simd;
