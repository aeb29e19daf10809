//! Reading safetensors checkpoints, memory-mapped: tensors are converted one at a time, so memory
//! stays bounded by the largest tensor, not the file. Parsing is the `safetensors` crate's.

use crate::error::{Error, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

impl SafetensorsFile {
    /// Opens and validates `path` (header, offsets and file size).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display();
        if path.is_dir() {
            return Err(Error::Io(format!("{shown} is a directory, not a safetensors file")));
        }
        let file = File::open(&path).map_err(|e| Error::Io(format!("cannot open {shown}: {e}")))?;
        // SAFETY: the map is read-only; like every mmap reader we rely on the file not being
        // truncated by another process while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::Io(format!("cannot map {shown}: {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            Error::Format(format!("{shown} is not a valid safetensors file: {}", describe(&e)))
        })?;
        Ok(SafetensorsFile { path, mmap, header_len, meta })
    }

    /// Tensor names in file order.
    pub fn names(&self) -> Vec<String> {
        self.meta.offset_keys()
    }

    /// The `__metadata__` map, if any.
    pub fn user_metadata(&self) -> HashMap<String, String> {
        self.meta.metadata().clone().unwrap_or_default()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.meta
            .info(name)
            .ok_or_else(|| Error::Invalid(format!("no tensor named {name:?} in {}", self.path.display())))
    }

    /// Dtype name (`F32`, `BF16`, `I64`, ...) and shape of a tensor.
    pub fn dtype_shape(&self, name: &str) -> Result<(String, Vec<usize>)> {
        let i = self.info(name)?;
        Ok((i.dtype.to_string(), i.shape.clone()))
    }

    /// The tensor's bytes, as stored (little-endian).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let i = self.info(name)?;
        let start = 8 + self.header_len;
        Ok(&self.mmap[start + i.data_offsets.0..start + i.data_offsets.1])
    }

    /// Drops the tensor's pages from this process's mapping once it has been copied, so that
    /// streaming through a large file does not keep it all resident (the kernel reloads the pages
    /// from the file if they are read again).
    pub fn release(&self, name: &str) {
        if let Ok(i) = self.info(name) {
            let start = 8 + self.header_len + i.data_offsets.0;
            let len = i.data_offsets.1 - i.data_offsets.0;
            // SAFETY: a read-only file mapping: DONTNEED only discards clean pages, which read
            // back unchanged from the file; no reference into them outlives this call's callers.
            #[cfg(unix)]
            let _ =
                unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
    }

    /// A floating tensor (F32, F16, BF16, F64) converted to f32; other dtypes are an error.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let out = self.convert(name);
        self.release(name);
        out
    }

    fn convert(&self, name: &str) -> Result<Vec<f32>> {
        let dtype = self.info(name)?.dtype;
        let b = self.raw(name)?;
        let words = |w: usize| b.chunks_exact(w);
        Ok(match dtype {
            Dtype::F32 => words(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => words(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => words(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => {
                words(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
            }
            other => {
                return Err(Error::Invalid(format!("tensor {name:?} has dtype {other}, not a floating type")))
            }
        })
    }
}

/// True for the dtypes rxquant quantizes.
pub fn is_float(dtype: &str) -> bool {
    matches!(dtype, "F32" | "F16" | "BF16" | "F64")
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError::*;
    match e {
        HeaderTooSmall => "the file is shorter than the 8-byte header length".into(),
        HeaderTooLarge | InvalidHeaderLength => "the header length points beyond the end of the file".into(),
        MetadataIncompleteBuffer => {
            "the data is truncated or has extra bytes (size does not match the header)".into()
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(bytes)
    }

    mod tempfile_path {
        use std::io::Write;
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(bytes: &[u8]) -> Self {
                let p = std::env::temp_dir().join(format!("rxq-test-{}-{}", std::process::id(), rand()));
                std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        fn rand() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            N.fetch_add(1, Ordering::Relaxed)
        }
    }

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_f32_bf16_and_rejects_corruption() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}"#;
        let mut data = 1.5f32.to_le_bytes().to_vec();
        data.extend_from_slice(&(-2.0f32).to_le_bytes());
        data.extend_from_slice(&bf16::from_f32(3.0).to_le_bytes());
        let p = write(&file(h, &data));
        let f = SafetensorsFile::open(&p.0).unwrap();
        assert_eq!(f.names(), vec!["a", "b"]);
        assert_eq!(f.to_f32("a").unwrap(), vec![1.5, -2.0]);
        assert_eq!(f.to_f32("b").unwrap(), vec![3.0]);
        assert_eq!(f.dtype_shape("b").unwrap(), ("BF16".to_string(), vec![1]));
        let truncated = write(&file(h, &data[..6]));
        assert!(
            matches!(SafetensorsFile::open(&truncated.0), Err(Error::Format(m)) if m.contains("truncated"))
        );
        let mut beyond = file(h, &data);
        beyond[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
        let beyond = write(&beyond);
        assert!(matches!(SafetensorsFile::open(&beyond.0), Err(Error::Format(m)) if m.contains("beyond")));
        assert!(
            matches!(SafetensorsFile::open(std::env::temp_dir()), Err(Error::Io(m)) if m.contains("directory"))
        );
        assert!(matches!(SafetensorsFile::open("/no/such/file"), Err(Error::Io(_))));
    }
}
