//! What to quantize to (precision, symmetry) and how finely (per tensor, channel or group).

use crate::error::{Error, Result};

/// Target number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    Int8,
    Int4,
    Fp16,
    Fp32,
}

impl Precision {
    /// Bits per stored value.
    pub fn bits(self) -> u32 {
        match self {
            Precision::Int8 => 8,
            Precision::Int4 => 4,
            Precision::Fp16 => 16,
            Precision::Fp32 => 32,
        }
    }

    /// True for the integer formats, which need a scale and a zero point.
    pub fn is_integer(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Int4)
    }

    /// Parses `int8`, `int4`, `fp16`/`float16`, `fp32`/`float32` (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "int8" => Ok(Precision::Int8),
            "int4" => Ok(Precision::Int4),
            "fp16" | "float16" => Ok(Precision::Fp16),
            "fp32" | "float32" => Ok(Precision::Fp32),
            other => {
                Err(Error::Invalid(format!("unknown precision {other:?}; expected int8, int4, fp16 or fp32")))
            }
        }
    }

    /// Canonical lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// Which elements share one scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per index along `axis` (negative axes count from the end).
    PerChannel { axis: isize },
    /// One scale per run of `size` consecutive indices along `axis`.
    PerGroup { axis: isize, size: usize },
}

/// A complete quantization scheme.
///
/// Integer grids (see [`Scheme::qrange`]):
/// - symmetric: signed, zero point 0; INT8 `-127..=127` and INT4 `-7..=7` by default (the
///   restricted range used by ONNX Runtime, TensorRT and ModelOpt), or `-128..=127` / `-8..=7`
///   with `full_range`;
/// - asymmetric: unsigned with a zero point, INT8 `0..=255`, INT4 `0..=15`.
///
/// `signed_scale` (symmetric, full range): the scale is the signed value of largest magnitude
/// divided by `qmin`, so that value lands exactly on `qmin` and all `2^bits` codes are used; the
/// scale is negative when that value is positive. This is llama.cpp's Q4_0/Q5_0 rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheme {
    pub precision: Precision,
    pub symmetric: bool,
    pub full_range: bool,
    pub signed_scale: bool,
    pub granularity: Granularity,
}

impl Scheme {
    /// Symmetric per-tensor scheme at the given precision.
    pub fn new(precision: Precision) -> Self {
        Scheme {
            precision,
            symmetric: true,
            full_range: false,
            signed_scale: false,
            granularity: Granularity::PerTensor,
        }
    }

    /// Same scheme with another granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// Same scheme, asymmetric (unsigned grid with a zero point) when `asymmetric` is true.
    pub fn asymmetric(mut self, asymmetric: bool) -> Self {
        self.symmetric = !asymmetric;
        self
    }

    /// Same scheme with llama.cpp's signed scale (symmetric, full range; see the type's docs).
    pub fn with_signed_scale(mut self) -> Self {
        self.symmetric = true;
        self.full_range = true;
        self.signed_scale = true;
        self
    }

    /// Checks that the flags fit together: a signed scale needs a symmetric full-range grid.
    pub fn check(&self) -> Result<()> {
        if self.signed_scale && !(self.symmetric && self.full_range) {
            return Err(Error::Invalid("signed_scale needs a symmetric full-range grid".into()));
        }
        Ok(())
    }

    /// Scale and zero point for the clip range `[rmin, rmax]` under this scheme: ONNX Runtime's
    /// rule ([`crate::qparams::scale_zero_point`]), or with `signed_scale`
    /// [`crate::qparams::signed_scale`].
    #[inline(always)]
    pub fn params(&self, rmin: f32, rmax: f32) -> (f32, i32) {
        let (qmin, qmax) = self.qrange();
        if self.signed_scale {
            crate::qparams::signed_scale(rmin, rmax, qmin)
        } else {
            crate::qparams::scale_zero_point(rmin, rmax, qmin, qmax, self.symmetric)
        }
    }

    /// The integer range `(qmin, qmax)`; `(0, 0)` for float precisions.
    pub fn qrange(&self) -> (i32, i32) {
        let bits = match self.precision {
            Precision::Int8 => 8,
            Precision::Int4 => 4,
            _ => return (0, 0),
        };
        let half = 1i32 << (bits - 1);
        match (self.symmetric, self.full_range) {
            (true, false) => (-(half - 1), half - 1),
            (true, true) => (-half, half - 1),
            (false, _) => (0, 2 * half - 1),
        }
    }

    /// True for per-group granularity.
    pub fn granularity_is_group(&self) -> bool {
        matches!(self.granularity, Granularity::PerGroup { .. })
    }

    /// True when quantized values are stored signed (`i8`), false for unsigned (`u8`).
    pub fn signed(&self) -> bool {
        self.symmetric
    }
}
