//! Reading GGUF files (llama.cpp's model format): the metadata, the tensor
//! table and the tensors, dequantized to `f32`. Pure: bytes in, values out.
//!
//! The file is untrusted: every count and offset is checked against the
//! bytes there are before anything is allocated for it.

use std::collections::HashMap;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (it does not start with `GGUF`)")]
    NotGguf,
    #[error("GGUF version {0} is not supported (1 to 3 are)")]
    Version(u32),
    #[error("the file ends early, reading {0}")]
    Truncated(&'static str),
    #[error("{0}")]
    Bad(String),
    #[error("metadata `{0}` is missing")]
    Missing(String),
    #[error(
        "tensor `{name}` is stored as {kind}, which this backend does not read (it reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1; convert the model with llama.cpp's `llama-quantize` to Q8_0, or give a safetensors folder)"
    )]
    Unsupported { name: String, kind: String },
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

impl Meta {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Meta::Int(v) => Some(*v),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Meta::Float(v) => Some(*v),
            Meta::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Meta]> {
        match self {
            Meta::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's entry in the table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Dimensions as GGUF gives them: the first varies fastest (a linear
    /// layer's weight is `[in, out]` here, `[out, in]` in PyTorch).
    pub dims: Vec<u64>,
    pub kind: u32,
    /// Start of its data, from the start of the file.
    pub start: usize,
    pub bytes: usize,
}

/// A parsed GGUF file over its bytes.
pub struct Gguf {
    pub meta: HashMap<String, Meta>,
    pub tensors: HashMap<String, TensorInfo>,
    data: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(GgufError::Truncated(what))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of at least `min_size` bytes each: never more than
    /// the bytes left could hold.
    fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) / min_size.max(1);
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= left)
            .ok_or(GgufError::Truncated(what))
    }
    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let n = self.count(1, what)?;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, kind: u32, depth: u32) -> Result<Meta, GgufError> {
        let what = "a metadata value";
        Ok(match kind {
            0 => Meta::Int(i64::from(self.take(1, what)?[0])),
            1 => Meta::Int(i64::from(self.take(1, what)?[0] as i8)),
            2 => {
                let b = self.take(2, what)?;
                Meta::Int(i64::from(u16::from_le_bytes([b[0], b[1]])))
            }
            3 => {
                let b = self.take(2, what)?;
                Meta::Int(i64::from(i16::from_le_bytes([b[0], b[1]])))
            }
            4 => Meta::Int(i64::from(self.u32(what)?)),
            5 => Meta::Int(i64::from(self.u32(what)? as i32)),
            6 => Meta::Float(f64::from(f32::from_bits(self.u32(what)?))),
            7 => Meta::Bool(self.take(1, what)?[0] != 0),
            8 => Meta::Str(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(GgufError::Bad("metadata arrays nested too deep".into()));
                }
                let inner = self.u32(what)?;
                let n = self.count(1, what)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Meta::Array(items)
            }
            10 => Meta::Int(self.u64(what)? as i64),
            11 => Meta::Int(self.u64(what)? as i64),
            12 => Meta::Float(f64::from_bits(self.u64(what)?)),
            other => return Err(GgufError::Bad(format!("unknown metadata type {other}"))),
        })
    }
}

/// GGML tensor types this reader knows: (name, elements per block, bytes per block).
fn kind_layout(kind: u32) -> Option<(&'static str, usize, usize)> {
    Some(match kind {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        8 => ("Q8_0", 32, 34),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

fn kind_name(kind: u32) -> String {
    match kind_layout(kind) {
        Some((n, ..)) => n.to_string(),
        None => match kind {
            6 => "Q5_0".into(),
            7 => "Q5_1".into(),
            10..=15 => format!("a K-quant (type {kind})"),
            _ => format!("type {kind}"),
        },
    }
}

impl Gguf {
    /// Parses the header and the tensor table; the tensors stay as bytes
    /// until asked for.
    pub fn parse(data: Vec<u8>) -> Result<Gguf, GgufError> {
        let mut r = Reader {
            bytes: &data,
            at: 0,
        };
        if r.take(4, "the magic").ok() != Some(b"GGUF".as_slice()) {
            return Err(GgufError::NotGguf);
        }
        let version = r.u32("the version")?;
        if !(1..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensor_count = r.count(24, "the tensor count")?;
        let kv_count = r.count(12, "the metadata count")?;
        let mut meta = HashMap::new();
        for _ in 0..kv_count {
            let key = r.string("a metadata key")?;
            let kind = r.u32("a metadata type")?;
            let value = r.value(kind, 0)?;
            meta.insert(key, value);
        }
        let mut infos = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = r.string("a tensor name")?;
            let n_dims = r.u32("a tensor's dimensions")?;
            if n_dims == 0 || n_dims > 4 {
                return Err(GgufError::Bad(format!(
                    "tensor `{name}` has {n_dims} dimensions"
                )));
            }
            let mut dims = Vec::new();
            for _ in 0..n_dims {
                dims.push(r.u64("a tensor's dimensions")?);
            }
            let kind = r.u32("a tensor's type")?;
            let offset = r.u64("a tensor's offset")?;
            infos.push((name, dims, kind, offset));
        }
        let alignment = meta
            .get("general.alignment")
            .and_then(Meta::as_i64)
            .unwrap_or(32)
            .clamp(1, 1 << 16) as usize;
        let base = r.at.div_ceil(alignment) * alignment;
        let mut tensors = HashMap::new();
        for (name, dims, kind, offset) in infos {
            let elements = dims
                .iter()
                .try_fold(1u64, |a, d| a.checked_mul(*d))
                .and_then(|n| usize::try_from(n).ok());
            let bytes = match (elements, kind_layout(kind)) {
                (Some(n), Some((_, block, size))) if n % block == 0 => {
                    (n / block).checked_mul(size)
                }
                (Some(_), Some(_)) => {
                    return Err(GgufError::Bad(format!(
                        "tensor `{name}` does not fill whole blocks"
                    )));
                }
                (_, None) => Some(0),
                (None, _) => None,
            };
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| base.checked_add(o));
            let fits = match (start, bytes) {
                (Some(s), Some(b)) => s.checked_add(b).is_some_and(|e| e <= data.len()),
                _ => false,
            };
            if !fits {
                return Err(GgufError::Bad(format!(
                    "tensor `{name}` lies outside the file (damaged or cut short?)"
                )));
            }
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    kind,
                    start: start.unwrap_or(0),
                    bytes: bytes.unwrap_or(0),
                },
            );
        }
        Ok(Gguf {
            meta,
            tensors,
            data,
        })
    }

    pub fn get(&self, key: &str) -> Result<&Meta, GgufError> {
        self.meta
            .get(key)
            .ok_or_else(|| GgufError::Missing(key.to_string()))
    }

    pub fn int(&self, key: &str) -> Result<i64, GgufError> {
        self.get(key)?
            .as_i64()
            .ok_or_else(|| GgufError::Bad(format!("metadata `{key}` is not a whole number")))
    }

    pub fn float(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| GgufError::Bad(format!("metadata `{key}` is not a number")))
    }

    pub fn string(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| GgufError::Bad(format!("metadata `{key}` is not text")))
    }

    /// A tensor dequantized to `f32`, with its PyTorch shape (GGUF's
    /// dimensions reversed).
    pub fn tensor(&self, name: &str) -> Result<(Vec<f32>, Vec<i64>), GgufError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::Missing(format!("tensor {name}")))?;
        let raw = &self.data[info.start..info.start + info.bytes];
        let values = dequantize(info.kind, raw).ok_or_else(|| GgufError::Unsupported {
            name: name.to_string(),
            kind: kind_name(info.kind),
        })?;
        let shape = info.dims.iter().rev().map(|d| *d as i64).collect();
        Ok((values, shape))
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// GGML's blocks to `f32`s: `None` for a type this reader does not know.
pub fn dequantize(kind: u32, raw: &[u8]) -> Option<Vec<f32>> {
    let (_, block, size) = kind_layout(kind)?;
    let mut out = Vec::with_capacity(raw.len() / size * block);
    for b in raw.chunks_exact(size) {
        match kind {
            0 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            1 => out.push(f16(b)),
            30 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            // 32 weights: a scale, then 16 bytes whose low nibbles are the
            // first 16 weights and high nibbles the last 16, offset by 8.
            2 => {
                let d = f16(&b[0..2]);
                let q = &b[2..18];
                out.extend(q.iter().map(|x| (f32::from(x & 0x0F) - 8.0) * d));
                out.extend(q.iter().map(|x| (f32::from(x >> 4) - 8.0) * d));
            }
            // As Q4_0 with a minimum instead of the offset.
            3 => {
                let (d, m) = (f16(&b[0..2]), f16(&b[2..4]));
                let q = &b[4..20];
                out.extend(q.iter().map(|x| f32::from(x & 0x0F) * d + m));
                out.extend(q.iter().map(|x| f32::from(x >> 4) * d + m));
            }
            // A scale and 32 signed bytes.
            8 => {
                let d = f16(&b[0..2]);
                out.extend(b[2..34].iter().map(|x| f32::from(*x as i8) * d));
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file put together by hand: metadata of every kind, one tensor of
    /// each quantized layout, read back exactly.
    #[test]
    fn reads_what_it_is_given() {
        let mut f = Vec::new();
        f.extend_from_slice(b"GGUF");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes()); // tensors
        f.extend_from_slice(&2u64.to_le_bytes()); // metadata
        let s = |f: &mut Vec<u8>, t: &str| {
            f.extend_from_slice(&(t.len() as u64).to_le_bytes());
            f.extend_from_slice(t.as_bytes());
        };
        s(&mut f, "a.name");
        f.extend_from_slice(&8u32.to_le_bytes());
        s(&mut f, "tiny");
        s(&mut f, "a.list");
        f.extend_from_slice(&9u32.to_le_bytes());
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&9u32.to_le_bytes());
        // Tensor table: a Q8_0 [32] at 0 and a Q4_1 [32, 1] at 64.
        s(&mut f, "q8");
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&32u64.to_le_bytes());
        f.extend_from_slice(&8u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        s(&mut f, "q41");
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&32u64.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&64u64.to_le_bytes());
        while f.len() % 32 != 0 {
            f.push(0);
        }
        let base = f.len();
        // Q8_0: scale 0.5, values -16..16.
        f.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        f.extend((0..32).map(|i| (i as i8 - 16) as u8));
        f.resize(base + 64, 0);
        // Q4_1: scale 2, min -1; nibbles i and 15 - i.
        f.extend_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
        f.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        f.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let g = Gguf::parse(f).expect("parses");
        assert_eq!(g.string("a.name").unwrap(), "tiny");
        assert_eq!(
            g.get("a.list").unwrap(),
            &Meta::Array(vec![Meta::Int(7), Meta::Int(9)])
        );
        let (q8, shape) = g.tensor("q8").unwrap();
        assert_eq!(shape, vec![32]);
        assert_eq!(
            q8,
            (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect::<Vec<_>>()
        );
        let (q41, shape) = g.tensor("q41").unwrap();
        assert_eq!(shape, vec![1, 32]);
        let want: Vec<f32> = (0..16)
            .map(|i| i as f32 * 2.0 - 1.0)
            .chain((0..16).map(|i| (15 - i) as f32 * 2.0 - 1.0))
            .collect();
        assert_eq!(q41, want);
    }

    /// Damaged files are errors, whatever their counts claim.
    #[test]
    fn damaged_files_are_errors() {
        assert!(matches!(
            Gguf::parse(b"GGML".to_vec()),
            Err(GgufError::NotGguf)
        ));
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        assert!(matches!(Gguf::parse(f), Err(GgufError::Truncated(_))));
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(Gguf::parse(f), Err(GgufError::Truncated(_))));
    }
}
