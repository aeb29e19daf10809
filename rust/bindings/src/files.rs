//! Memory maps of files the bindings read by path (GGUF headers and tensors), with the file named
//! in every error.

use crate::errors::to_py;
use pyo3::prelude::*;

/// A read-only map of `len` bytes at `offset` of `path` (the whole file when `len` is None). A
/// range past the end of the file is refused, naming it.
pub fn map(path: &std::path::Path, offset: u64, len: Option<u64>) -> PyResult<memmap2::Mmap> {
    let shown = path.display().to_string();
    let io = |what: &str, e: std::io::Error| to_py(rxquant::Error::Io(format!("cannot {what} {shown}: {e}")));
    let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
    let size = file.metadata().map_err(|e| io("read", e))?.len();
    let len = len.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(to_py(rxquant::Error::Format(format!(
            "{shown}: {len} bytes at byte {offset} run past the end of the file ({size} bytes)"
        ))));
    }
    // SAFETY: the map is read-only and read while the caller holds it; a file truncated meanwhile
    // by another process is outside what any memory-mapped reader (numpy's, the gguf package's)
    // can guard against.
    let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len as usize).map(&file) }
        .map_err(|e| io("map", e))?;
    Ok(map)
}
