//! GGUF header layout (wrapped by `rxquant.formats.gguf_file`).

use crate::errors::{detach, to_py};
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
    let shown = path.display().to_string();
    let file = std::fs::File::open(&path)
        .map_err(|e| to_py(rxquant::Error::Io(format!("cannot open {shown}: {e}"))))?;
    // SAFETY: read while held here; see `ggml_quantize_file` on files truncated meanwhile.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| to_py(rxquant::Error::Io(format!("cannot map {shown}: {e}"))))?;
    let l = detach(py, || rxquant::gguf::layout(&map))?;
    let kv = l.kv.into_iter().map(|k| (k.key, k.vtype, k.start, k.end, k.sub)).collect();
    let tensors = l.tensors.into_iter().map(|t| (t.name, t.dims, t.ggml_type, t.offset)).collect();
    Ok((l.version, kv, tensors, l.end))
}
