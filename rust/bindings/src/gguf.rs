//! GGUF header layout (wrapped by `rxquant.formats.gguf_file`).

use crate::errors::detach;
use pyo3::prelude::*;

type KvRow = (String, u32, usize, usize, Option<u32>);
type TensorRow = (String, Vec<u64>, u32, u64);

/// `(version, pairs, tensors, end)` of the GGUF file at `path`: each pair as `(key, value type,
/// start, end, item type)` with `start` at its type tag, each tensor as `(name, dims as GGUF lists
/// them, ggml type id, data offset)`, and the offset just past the tensor records. The file is
/// memory-mapped and walked without the GIL.
#[pyfunction]
pub fn gguf_layout(
    py: Python<'_>,
    path: std::path::PathBuf,
) -> PyResult<(u32, Vec<KvRow>, Vec<TensorRow>, usize)> {
    let map = crate::files::map(&path, 0, None)?;
    let l = detach(py, || rxquant::gguf::layout(&map))?;
    let kv = l.kv.into_iter().map(|k| (k.key, k.vtype, k.start, k.end, k.sub)).collect();
    let tensors = l.tensors.into_iter().map(|t| (t.name, t.dims, t.ggml_type, t.offset)).collect();
    Ok((l.version, kv, tensors, l.end))
}
