//! Runtime CPU dispatch: kernels are written once as plain loops and compiled twice, for the
//! baseline x86-64 target and for AVX2+FMA+F16C, chosen per call by a cached CPU check. Wheels stay
//! portable while recent CPUs get 256-bit vectors.

/// True when the CPU has AVX2, FMA and F16C (every AVX2 CPU has F16C; with it the `half`
/// crate's conversions inline into the kernels). The check is cached by std.
#[inline]
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Evaluates `$e` in a function compiled with AVX2+FMA+F16C when the CPU has them, else as is.
/// `$e` should call `#[inline(always)]` kernels so they are compiled inside that function.
macro_rules! simd {
    ($e:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::simd::avx2() {
                // SAFETY: the CPU was just checked for AVX2, FMA and F16C.
                // The closure is inlined into `wide` so that `$e` is compiled with its features
                // (left to the inliner, a large kernel stays a baseline function).
                unsafe {
                    wide(
                        #[inline(always)]
                        || $e,
                    )
                }
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

/// How far ahead of a streaming loop [`prefetch`] reaches: 8 KiB, tuned on a Xeon whose 480 MiB
/// L3 the hardware prefetcher alone left loads waiting on (the per-tensor quantize kernel went
/// from 8.2 to 3.8 ms on 64 MiB; 4-16 KiB all did about as well).
pub(crate) const PREFETCH_AHEAD: usize = 8192;

/// Asks for the cache line [`PREFETCH_AHEAD`] bytes past `p` (a hint: never faults, even past the
/// end of an allocation). Streaming loops call it once per 64 bytes they read.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect; the address need not be valid.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(PREFETCH_AHEAD))
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `Σ f(i)` over `0..n`, term `i` added into lane `i % 8` and the lanes then added in a fixed
/// tree. Searches that compare such sums thousands of times a block wait one add latency a term
/// when they add in sequence; in lanes they vectorize, in an order that is the same on every CPU,
/// so a search chooses alike everywhere.
#[inline(always)]
pub(crate) fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut a = [0f32; 8];
    let whole = n / 8 * 8;
    for c in 0..n / 8 {
        for (l, a) in a.iter_mut().enumerate() {
            *a += f(8 * c + l);
        }
    }
    for i in whole..n {
        a[i - whole] += f(i);
    }
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}
