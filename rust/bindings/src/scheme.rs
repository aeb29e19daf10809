//! The scheme as the Python layer passes it:
//! `(precision, symmetric, full_range, signed_scale, axis, group_size)`.

use crate::errors::to_py;
use pyo3::prelude::*;
use rxquant::{Granularity, Precision, Scheme};

/// The tuple form of `rxquant.Scheme`.
pub type SchemeSpec = (String, bool, bool, bool, Option<isize>, Option<usize>);

/// Parses the tuple form into a core [`Scheme`].
pub fn parse(spec: &SchemeSpec) -> PyResult<Scheme> {
    let (precision, symmetric, full_range, signed_scale, axis, group) = spec;
    let precision = Precision::parse(precision).map_err(to_py)?;
    let granularity = match (axis, group) {
        (None, None) => Granularity::PerTensor,
        (Some(a), None) => Granularity::PerChannel { axis: *a },
        (Some(a), Some(g)) => Granularity::PerGroup { axis: *a, size: *g },
        (None, Some(g)) => Granularity::PerGroup { axis: -1, size: *g },
    };
    let scheme = Scheme {
        precision,
        symmetric: *symmetric,
        full_range: *full_range,
        signed_scale: *signed_scale,
        granularity,
    };
    scheme.check().map_err(to_py)?;
    Ok(scheme)
}
