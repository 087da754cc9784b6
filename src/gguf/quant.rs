//! The tensor element types of GGUF files (ggml's `ggml_type`) and their
//! block layouts: how `f32` values become bytes and back.
//!
//! Quantized types store a row in blocks; each block holds a scale (an `f16`
//! `d`) and small integers `q`, and stands for `x = d * q` (or `d * q - m`):
//!
//! | type | values per block | bytes per block | layout |
//! |---|---|---|---|
//! | `Q8_0` | 32 | 34 | `d: f16`, `qs: [i8; 32]`; `x[j] = d * qs[j]` |
//! | `Q4_0` | 32 | 18 | `d: f16`, `qs: [u8; 16]`; `x[j] = d * ((qs[j] & 15) - 8)`, `x[j + 16] = d * ((qs[j] >> 4) - 8)` |
//! | `Q4_K` | 256 | 144 | `d, dmin: f16`, `scales: [u8; 12]` (eight 6-bit scales and mins), `qs: [u8; 128]` |
//! | `Q6_K` | 256 | 210 | `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16` |
//!
//! Writing (`Q8_0`, `Q4_0`) rounds as ggml's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`) and gguf-py's
//! `quants.py` do; reading the K-quants follows `dequantize_row_q4_K` and
//! `dequantize_row_q6_K`. The fixtures in `tests/fixtures/gguf/` (made by
//! `tools/make_gguf_fixtures.py` with gguf-py) check both against gguf-py.

use crate::backend::WeightType;
use half::{bf16, f16};

/// A tensor element type lmforge reads (and, for some, writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4K,
    Q6K,
}

/// The values of one super-block of the K-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml's number `id`, if lmforge reads it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// ggml's number for the type (`GGML_TYPE_*`).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// ggml's name for the type (`Q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Values per block (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 | GgmlType::Q4_0 => 32,
            GgmlType::Q4K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4K => 144,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes of `n` values (`n` a multiple of the block length), `None` on overflow.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        (n / self.block_len() as u64).checked_mul(self.block_bytes() as u64)
    }
}

/// The names of ggml types lmforge does not read, for error messages.
pub fn unknown_type_name(id: u32) -> String {
    let name = match id {
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        13 => "Q5_K",
        15 => "Q8_K",
        16..=23 | 29 => "an IQ type",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    };
    format!("type {id} ({name})")
}

/// Append the bytes of `values` stored as `ty` (a writable type: the float
/// types, `Q8_0`, `Q4_0`; `values.len()` a multiple of the block length).
pub fn quantize(ty: GgmlType, values: &[f32], out: &mut Vec<u8>) {
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => values
            .chunks_exact(32)
            .for_each(|b| quantize_block(WeightType::Q8_0, b, out)),
        GgmlType::Q4_0 => values
            .chunks_exact(32)
            .for_each(|b| quantize_block(WeightType::Q4_0, b, out)),
        GgmlType::Q4K | GgmlType::Q6K => unreachable!("lmforge does not write {}", ty.name()),
    }
}

/// One `Q8_0` or `Q4_0` block, by the quantizer the CPU backend packs
/// weights with (ggml's reference rounding).
fn quantize_block(ty: WeightType, block: &[f32], out: &mut Vec<u8>) {
    let values: &[f32; 32] = block.try_into().expect("blocks of 32");
    let at = out.len();
    out.resize(at + ty.block_bytes(), 0);
    crate::backend::cpu::quant::quantize_block(ty, values, &mut out[at..]);
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The values of `bytes` stored as `ty` (`bytes.len()` a whole number of blocks).
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let blocks = bytes.chunks_exact(ty.block_bytes());
    let mut out = Vec::with_capacity(blocks.len() * ty.block_len());
    for b in blocks {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(half_at(b, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half_at(b, 0);
                out.extend(b[2..].iter().map(|&q| d * q as i8 as f32));
            }
            GgmlType::Q4_0 => {
                let d = half_at(b, 0);
                let qs = &b[2..];
                out.extend(qs.iter().map(|&q| d * ((q & 15) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
            GgmlType::Q4K => dequantize_q4_k(b, &mut out),
            GgmlType::Q6K => dequantize_q6_k(b, &mut out),
        }
    }
    out
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a `Q4_K` block
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

/// One `Q4_K` super-block: eight sub-blocks of 32, each `x = d * sc * q - dmin * m`.
fn dequantize_q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1, d2, min2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        out.extend(q.iter().map(|&v| d1 * (v & 0xF) as f32 - min1));
        out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - min2));
    }
}

/// One `Q6_K` super-block: sixteen sub-blocks of 16, `x = d * scale * (q - 32)`
/// with `q` six bits, its low four in `ql` and high two in `qh`.
fn dequantize_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let scale = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = scale(0) * q1 as f32;
            y[l + 32] = scale(2) * q2 as f32;
            y[l + 64] = scale(4) * q3 as f32;
            y[l + 96] = scale(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_and_q4_0_round_trip_within_a_step() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) / 7.0)
            .collect();
        for (ty, steps) in [(GgmlType::Q8_0, 127.0), (GgmlType::Q4_0, 8.0)] {
            let mut bytes = Vec::new();
            quantize(ty, &values, &mut bytes);
            assert_eq!(bytes.len(), 2 * ty.block_bytes());
            let back = dequantize(ty, &bytes);
            for (block, back) in values.chunks(32).zip(back.chunks(32)) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (x, y) in block.iter().zip(back) {
                    assert!(
                        (x - y).abs() <= amax / steps * 0.51 + 1e-3,
                        "{ty:?} {x} {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_block_gives_zeros() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            let mut bytes = Vec::new();
            quantize(ty, &[0.0; 32], &mut bytes);
            assert_eq!(dequantize(ty, &bytes), vec![0.0; 32]);
        }
    }

    #[test]
    fn type_ids_round_trip() {
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        }
        assert!(unknown_type_name(13).contains("Q5_K"));
    }
}
