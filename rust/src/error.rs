//! One typed error for the whole crate. The Python bindings map each variant to one exception type.

/// Everything that can go wrong in rxquant. No function in this crate panics on bad input;
/// it returns one of these instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// NaN or Inf found where finite values are required. (No remedy in the message: only some
    /// callers can skip them, e.g. Python's `ignore_nonfinite=True`, and they document it.)
    #[error("input has {count} non-finite value(s) (NaN or Inf); the first is at flat index {first_index}")]
    NonFinite { count: usize, first_index: usize },

    /// An axis outside `-ndim..ndim`.
    #[error("axis {axis} is out of range for a tensor with {ndim} dimension(s)")]
    Axis { axis: isize, ndim: usize },

    /// A group size that does not divide the dimension it groups.
    #[error("group size {group} does not divide dimension {axis} of size {size}")]
    GroupSize { group: usize, axis: usize, size: usize },

    /// Arrays whose shapes or lengths do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An integer outside the range of the target type (for example INT4 packing).
    #[error("value {value} at flat index {index} is outside the range {min}..={max}")]
    OutOfRange { value: i64, index: usize, min: i64, max: i64 },

    /// A parameter that makes no sense (zero scale, unknown name, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// A file that cannot be opened or read (missing, a directory, no permission).
    #[error("{0}")]
    Io(String),

    /// A file whose content is not what its format promises (corrupt or truncated).
    #[error("{0}")]
    Format(String),

    /// A GPU runtime failed: no platform or device, a build failure, out of device memory, a
    /// failed launch. Callers that chose the device automatically fall back to the CPU on it.
    #[error("{0}")]
    Device(String),
}

/// Crate-wide result type.
pub type Result<T> = std::result::Result<T, Error>;
