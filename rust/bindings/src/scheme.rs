//! The scheme as the Python layer passes it: `(precision, symmetric, full_range, axis, group_size)`.

use crate::errors::to_py;
use pyo3::prelude::*;
use rxquant::{Granularity, Precision, Scheme};

/// The tuple form of `rxquant.Scheme`.
pub type SchemeSpec = (String, bool, bool, Option<isize>, Option<usize>);

/// Parses the tuple form into a core [`Scheme`].
pub fn parse(spec: &SchemeSpec) -> PyResult<Scheme> {
    let (precision, symmetric, full_range, axis, group) = spec;
    let precision = Precision::parse(precision).map_err(to_py)?;
    let granularity = match (axis, group) {
        (None, None) => Granularity::PerTensor,
        (Some(a), None) => Granularity::PerChannel { axis: *a },
        (Some(a), Some(g)) => Granularity::PerGroup { axis: *a, size: *g },
        (None, Some(g)) => Granularity::PerGroup { axis: -1, size: *g },
    };
    Ok(Scheme { precision, symmetric: *symmetric, full_range: *full_range, granularity })
}
