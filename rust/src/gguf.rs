//! GGUF's header (llama.cpp's container): where each key-value pair and each tensor record lies.
//! Values are located, not decoded: a caller keeps a pair's bytes and decodes it when asked (the
//! Python front does), so opening a file with a 30,522-token vocabulary walks its strings once
//! instead of building an object per token. Little-endian GGUF versions 2 and 3.

use crate::error::{Error, Result};

/// One key-value pair: its key, value type, and the byte range of the value *with* its type tag
/// (`start` is the tag's offset); `sub` is an array's item type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSpan {
    pub key: String,
    pub vtype: u32,
    pub start: usize,
    pub end: usize,
    pub sub: Option<u32>,
}

/// One tensor record: name, dimensions as GGUF lists them (fastest-varying first), ggml type id
/// and offset from the start of the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRecord {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

/// The header of a GGUF file; `end` is the offset just past the tensor records (the data section
/// starts at the next multiple of the file's alignment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    pub kv: Vec<KvSpan>,
    pub tensors: Vec<TensorRecord>,
    pub end: usize,
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// Bytes of a fixed-size value type (`gguf.GGUFValueType`), None for strings and arrays.
const fn scalar_size(vtype: u32) -> Option<usize> {
    match vtype {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).ok();
        let end = n.and_then(|n| self.pos.checked_add(n)).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(Error::Format(format!(
                "the header runs past the end of the file at byte {}",
                self.pos
            )));
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Steps over a value of type `vtype` (arrays of strings walk each length, nothing else).
    fn skip(&mut self, vtype: u32) -> Result<()> {
        if let Some(size) = scalar_size(vtype) {
            self.take(size as u64)?;
            return Ok(());
        }
        match vtype {
            STRING => {
                let n = self.u64()?;
                self.take(n)?;
            }
            ARRAY => {
                let (sub, n) = (self.u32()?, self.u64()?);
                if let Some(size) = scalar_size(sub) {
                    self.take(n.saturating_mul(size as u64))?;
                } else {
                    for _ in 0..n {
                        self.skip(sub)?;
                    }
                }
            }
            _ => {
                return Err(Error::Format(format!(
                    "unknown GGUF value type {vtype} at byte {}",
                    self.pos - 4
                )))
            }
        }
        Ok(())
    }
}

/// The layout of the GGUF header in `b` (the file's bytes, or at least its header).
pub fn layout(b: &[u8]) -> Result<Layout> {
    if b.get(..4) != Some(b"GGUF".as_slice()) {
        return Err(Error::Format("it does not start with the GGUF magic".into()));
    }
    let mut r = Reader { b, pos: 4 };
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::Format(format!(
            "GGUF version {version} (this reads 2 and 3; big-endian files are not read)"
        )));
    }
    let (n_tensors, n_kv) = (r.u64()?, r.u64()?);
    let mut kv = Vec::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let start = r.pos;
        let vtype = r.u32()?;
        let sub = if vtype == ARRAY {
            b.get(r.pos..r.pos + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        } else {
            None
        };
        r.skip(vtype)?;
        kv.push(KvSpan { key, vtype, start, end: r.pos, sub });
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string()?;
        let nd = r.u32()?;
        if nd > 8 {
            return Err(Error::Format(format!("tensor {name} has {nd} dimensions (ggml has at most 4)")));
        }
        let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        let (ggml_type, offset) = (r.u32()?, r.u64()?);
        tensors.push(TensorRecord { name, dims, ggml_type, offset });
    }
    Ok(Layout { version, kv, tensors, end: r.pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn sample() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&2u64.to_le_bytes()); // pairs
        b.extend(string("general.alignment"));
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&64u32.to_le_bytes());
        b.extend(string("tokenizer.ggml.tokens"));
        b.extend_from_slice(&ARRAY.to_le_bytes());
        b.extend_from_slice(&STRING.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend(string("[CLS]"));
        b.extend(string("hello"));
        b.extend(string("w"));
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&32u64.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes()); // Q4_0
        b.extend_from_slice(&0u64.to_le_bytes());
        b
    }

    #[test]
    fn locates_pairs_and_records() {
        let b = sample();
        let l = layout(&b).unwrap();
        assert_eq!(l.version, 3);
        assert_eq!(l.kv.len(), 2);
        assert_eq!(
            (l.kv[0].key.as_str(), l.kv[0].vtype, l.kv[0].end - l.kv[0].start),
            ("general.alignment", 4, 8)
        );
        assert_eq!((l.kv[1].vtype, l.kv[1].sub), (ARRAY, Some(STRING)));
        assert_eq!(l.kv[1].end - l.kv[1].start, 4 + 4 + 8 + 13 + 13);
        assert_eq!(
            l.tensors,
            vec![TensorRecord { name: "w".into(), dims: vec![32, 4], ggml_type: 2, offset: 0 }]
        );
        assert_eq!(l.end, b.len());
    }

    #[test]
    fn truncation_and_bad_headers_are_refused() {
        let b = sample();
        for cut in [3, 10, 30, 60, b.len() - 1] {
            let e = layout(&b[..cut]).unwrap_err().to_string();
            assert!(e.contains("GGUF magic") || e.contains("past the end"), "{cut}: {e}");
        }
        let mut v2 = b.clone();
        v2[4] = 7;
        assert!(layout(&v2).unwrap_err().to_string().contains("version 7"));
        let mut bad = b.clone();
        let tag = 24 + 8 + "general.alignment".len();
        bad[tag] = 99;
        assert!(layout(&bad).unwrap_err().to_string().contains("unknown GGUF value type 99"));
        let mut huge = b.clone();
        let count = 24 + 8 + 17 + 8 + 8 + 21 + 4 + 4;
        huge[count..count + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(layout(&huge).unwrap_err().to_string().contains("past the end"));
    }
}
