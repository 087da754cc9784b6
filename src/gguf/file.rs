//! The GGUF container (version 3, ggml's `docs/gguf.md`), read and written.
//!
//! ```text
//! magic "GGUF" | version u32 = 3 | tensor_count u64 | metadata_kv_count u64
//! metadata: key (u64 length + UTF-8) | value type u32 | value   (repeated)
//! tensor infos: name | n_dims u32 | ne[n_dims] u64 | ggml type u32 | offset u64   (repeated)
//! padding to `general.alignment` (32) | tensor data, each tensor at its offset, aligned
//! ```
//!
//! All numbers are little-endian. `ne[0]` is the length of a row (the
//! fastest-moving index): a PyTorch `(rows, cols)` matrix has `ne = [cols, rows]`.
//!
//! The reader trusts nothing in the file: every length and count is checked
//! against the bytes that remain before anything is allocated, every tensor
//! must lie inside the data section, and an unknown value or tensor type is an
//! error that names it.

use super::quant::{GgmlType, unknown_type_name};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// `GGUF` as the first four bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version lmforge writes (and the oldest it reads: v2 differs only in
/// using 32-bit counts, which llama.cpp itself no longer writes).
pub const VERSION: u32 = 3;
/// The alignment of tensor data when `general.alignment` does not say.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// At most this many dimensions per tensor (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Every element of one type (nested arrays are not read).
    Array(Vec<Value>),
}

impl Value {
    /// GGUF's number for the value's type.
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, whatever integer type it was written as.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float (from any float or integer type).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::I32(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Value::U8(v) => w.write_all(&[*v]),
            Value::I8(v) => w.write_all(&v.to_le_bytes()),
            Value::U16(v) => w.write_all(&v.to_le_bytes()),
            Value::I16(v) => w.write_all(&v.to_le_bytes()),
            Value::U32(v) => w.write_all(&v.to_le_bytes()),
            Value::I32(v) => w.write_all(&v.to_le_bytes()),
            Value::F32(v) => w.write_all(&v.to_le_bytes()),
            Value::Bool(v) => w.write_all(&[*v as u8]),
            Value::String(s) => write_string(w, s),
            Value::U64(v) => w.write_all(&v.to_le_bytes()),
            Value::I64(v) => w.write_all(&v.to_le_bytes()),
            Value::F64(v) => w.write_all(&v.to_le_bytes()),
            Value::Array(items) => {
                // An empty array is written as an array of u32 (as gguf-py does).
                let ty = items.first().map_or(4, Value::type_id);
                w.write_all(&ty.to_le_bytes())?;
                w.write_all(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|item| item.write(w))
            }
        }
    }
}

fn write_string(w: &mut dyn Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `ne`: the row length first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Start of the data, from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Values in the tensor.
    pub fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The PyTorch shape: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Bytes of the tensor's data.
    pub fn byte_len(&self) -> u64 {
        self.ty.bytes_for(self.len()).unwrap_or(u64::MAX)
    }
}

/// A parsed GGUF file: its metadata, tensor table and the bytes of its data section.
pub struct GgufFile<'a> {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    data: &'a [u8],
}

impl<'a> GgufFile<'a> {
    /// Parse the whole file in `bytes` (`path` names it in errors).
    pub fn parse(bytes: &'a [u8], path: &Path) -> Result<GgufFile<'a>> {
        let mut r = Reader {
            bytes,
            pos: 0,
            path,
        };
        if bytes.len() < 4 || bytes[..4] != MAGIC {
            return Err(Error::format(
                path,
                "not a GGUF file (it does not start with \"GGUF\")",
            ));
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(r.bad(format!("GGUF version {version} is not supported (only 3)")));
        }
        let n_tensors = r.u64("tensor_count")?;
        let n_kv = r.u64("metadata_kv_count")?;
        // Each entry takes at least 12 bytes: a bound that stops huge counts early.
        r.check_count(n_kv, 12, "metadata_kv_count")?;
        let mut metadata = Vec::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata value type")?;
            let value = r.value(ty, &key, true)?;
            metadata.push((key, value));
        }
        r.check_count(n_tensors, 24, "tensor_count")?;
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            tensors.push(r.tensor_info()?);
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| r.bad("general.alignment is not a power of two"))?,
        };
        let start = (r.pos as u64).next_multiple_of(alignment);
        let data = bytes.get(start as usize..).unwrap_or(&[]);
        let file = GgufFile {
            version,
            metadata,
            tensors,
            data,
        };
        file.check_tensors(path, alignment)?;
        Ok(file)
    }

    /// Every tensor inside the data section, at an aligned offset, no name twice.
    fn check_tensors(&self, path: &Path, alignment: u64) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(Error::format(
                    path,
                    format!("tensor {:?} is listed twice", t.name),
                ));
            }
            if t.offset % alignment != 0 {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor {:?} starts at {}, not a multiple of {alignment}",
                        t.name, t.offset
                    ),
                ));
            }
            let end = t.offset.checked_add(t.byte_len());
            if end.is_none_or(|end| end > self.data.len() as u64) {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor {:?} ({} bytes at offset {}) runs past the end of the file \
                         (the data section holds {} bytes): the file is truncated or damaged",
                        t.name,
                        t.byte_len(),
                        t.offset,
                        self.data.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The table entry of the tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (checked to lie in the file at parse time).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &'a [u8] {
        &self.data[t.offset as usize..(t.offset + t.byte_len()) as usize]
    }

    /// A tensor's values as `f32` (dequantized).
    pub fn tensor_f32(&self, t: &TensorInfo) -> Vec<f32> {
        super::quant::dequantize(t.ty, self.tensor_bytes(t))
    }
}

/// A cursor over the file's bytes; each read names what it was reading.
struct Reader<'a, 'p> {
    bytes: &'a [u8],
    pos: usize,
    path: &'p Path,
}

impl Reader<'_, '_> {
    fn bad(&self, message: impl Into<String>) -> Error {
        Error::format(self.path, message.into())
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.bad(format!(
                "truncated: {what} at byte {} needs {n} bytes, {left} remain",
                self.pos
            )));
        }
        let slice = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuse a count of items of at least `min_bytes` each that cannot fit in what remains.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<()> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_bytes) > left {
            return Err(self.bad(format!(
                "{what} = {count} at byte {}, more than the {left} bytes left can hold: \
                 the file is truncated or damaged",
                self.pos
            )));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.bad(format!("{what} at byte {at} is not UTF-8")))
    }

    /// A value of GGUF type `ty` for metadata `key` (arrays only at the top).
    fn value(&mut self, ty: u32, key: &str, top: bool) -> Result<Value> {
        let what = key;
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.bad(format!("{key}: {b} is not a bool"))),
            },
            8 => Value::String(self.string(what)?),
            9 if top => {
                let item_ty = self.u32(what)?;
                let n = self.u64(what)?;
                self.check_count(n, 1, &format!("the length of {key}"))?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(item_ty, key, false)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            9 => return Err(self.bad(format!("{key}: arrays of arrays are not read"))),
            other => return Err(self.bad(format!("{key}: unknown value type {other}"))),
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("n_dims")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.bad(format!(
                "tensor {name:?} has {n_dims} dimensions (1 to 4 allowed)"
            )));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let id = self.u32("tensor type")?;
        let ty = GgmlType::from_id(id).ok_or_else(|| {
            self.bad(format!(
                "tensor {name:?} has {}, which lmforge does not read (it reads F32, F16, BF16, \
                 Q8_0, Q4_0, Q4_K and Q6_K)",
                unknown_type_name(id)
            ))
        })?;
        let offset = self.u64("tensor offset")?;
        let len = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let len = len.ok_or_else(|| self.bad(format!("tensor {name:?}: {dims:?} overflows")))?;
        if dims[0] % ty.block_len() as u64 != 0 || ty.bytes_for(len).is_none() {
            return Err(self.bad(format!(
                "tensor {name:?}: rows of {} values are not whole {} blocks of {}",
                dims[0],
                ty.name(),
                ty.block_len()
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
        })
    }
}

/// A tensor to write: its name, PyTorch shape `(rows, cols)` or `(n)`, and type.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl TensorPlan {
    fn info(&self, offset: u64) -> TensorInfo {
        TensorInfo {
            name: self.name.clone(),
            dims: self.shape.iter().rev().map(|&d| d as u64).collect(),
            ty: self.ty,
            offset,
        }
    }
}

/// Write a GGUF file atomically: `metadata`, then the `tensors`, each
/// tensor's `f32` values given by `values` (called once per tensor, in
/// order) and stored as its type.
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorPlan],
    mut values: impl FnMut(&TensorPlan) -> Vec<f32>,
) -> Result<()> {
    let align = |n: u64| n.next_multiple_of(DEFAULT_ALIGNMENT);
    let mut offset = 0u64;
    let mut infos = Vec::new();
    for t in tensors {
        let info = t.info(offset);
        offset = align(offset + info.byte_len());
        infos.push(info);
    }
    crate::fsutil::write_atomic(path, |w| {
        let mut header = Vec::new();
        header.extend(MAGIC);
        header.extend(VERSION.to_le_bytes());
        header.extend((tensors.len() as u64).to_le_bytes());
        header.extend((metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            write_string(&mut header, key)?;
            header.extend(value.type_id().to_le_bytes());
            value.write(&mut header)?;
        }
        for info in &infos {
            write_string(&mut header, &info.name)?;
            header.extend((info.dims.len() as u32).to_le_bytes());
            info.dims
                .iter()
                .for_each(|d| header.extend(d.to_le_bytes()));
            header.extend(info.ty.id().to_le_bytes());
            header.extend(info.offset.to_le_bytes());
        }
        header.resize(align(header.len() as u64) as usize, 0);
        w.write_all(&header)?;
        let mut bytes = Vec::new();
        for t in tensors {
            bytes.clear();
            super::quant::quantize(t.ty, &values(t), &mut bytes);
            bytes.resize(align(bytes.len() as u64) as usize, 0);
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let metadata = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            (
                "a.list".to_string(),
                Value::Array(vec![Value::I32(1), Value::I32(-2)]),
            ),
            ("a.float".to_string(), Value::F32(0.5)),
        ];
        let tensors = vec![
            TensorPlan {
                name: "w".into(),
                shape: vec![2, 32],
                ty: GgmlType::Q8_0,
            },
            TensorPlan {
                name: "b".into(),
                shape: vec![3],
                ty: GgmlType::F32,
            },
        ];
        write(&path, &metadata, &tensors, |t| {
            (0..t.shape.iter().product::<usize>())
                .map(|i| i as f32)
                .collect()
        })
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = GgufFile::parse(&bytes, &path).unwrap();
        assert_eq!(file.metadata, metadata);
        assert_eq!(file.tensors[0].shape(), vec![2, 32]);
        let b = file.tensor("b").unwrap();
        assert_eq!(file.tensor_f32(b), vec![0.0, 1.0, 2.0]);
        // Cut anywhere before the last tensor's data ends (its padding may go), it is an
        // error naming the file, never a panic.
        for cut in [3, 10, 30, bytes.len() - 32] {
            let err = GgufFile::parse(&bytes[..cut], &path)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("t.gguf"), "{err}");
        }
    }
}
