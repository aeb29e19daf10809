//! # rxquant
//!
//! Quantization math for neural-network weights and activations, with no Python required:
//! scale/zero-point computation (ONNX Runtime conventions), INT8/INT4 quantize, dequantize and
//! fake-quantize per tensor, channel or group, FP16 conversion with counted saturation, INT4
//! packing, and error metrics. Kernels run in parallel with rayon and never panic on bad input:
//! every failure is an [`Error`].
//!
//! ```
//! use rxquant::{minmax_qparams, quantize, dequantize, metrics, Granularity, Precision, Scheme};
//! let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).sin()).collect();
//! let scheme = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
//! let qp = minmax_qparams(&x, &[8, 8], scheme, false).unwrap();
//! let mut q = vec![0i8; 64];
//! quantize(&x, &[8, 8], &qp, false, &mut q).unwrap();
//! let mut y = vec![0f32; 64];
//! dequantize(&q, &[8, 8], &qp, &mut y).unwrap();
//! assert!(metrics(&x, &y).unwrap().sqnr_db > 35.0);
//! ```

pub mod affine;
pub mod calib;
pub mod checkpoint;
pub mod elem;
pub mod error;
pub mod fp16;
pub mod ggml;
mod ggml_avx2;
pub mod gguf;
pub mod gptq;
pub mod gpu;
pub mod hessian;
pub mod hist;
mod hist_avx2;
pub mod layout;
pub mod metrics;
pub mod mse;
pub mod pack;
pub mod qparams;
pub mod quant;
mod quant_avx2;
pub mod range;
mod range_avx2;
pub mod scheme;
mod simd;

pub use calib::{calibrate, calibrate_on, calibrate_weighted, CalibOptions, Cpu, Method, Observer, Reducer};
pub use elem::{Elem, QInt};
pub use error::{Error, Result};
pub use fp16::to_fp16;
pub use gptq::{gptq, Gptq, GptqOptions};
pub use hessian::HessianObserver;
pub use layout::{transpose, ParamMap};
pub use metrics::{metrics, Metrics};
pub use pack::{pack_int4_signed, pack_int4_unsigned, unpack_int4_signed, unpack_int4_unsigned};
pub use qparams::{scale_zero_point, QParams};
pub use quant::{dequantize, fake_quantize, minmax_qparams, quantize, quantize_minmax, quantize_packed};
pub use scheme::{Granularity, Precision, Scheme};

/// Number of worker threads the kernels use (rayon's pool; `RAYON_NUM_THREADS` sets it).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
