//! Integrity of the checkpoint files: a checksum inside each safetensors
//! file, finite values only, and the files of a run checked against each other.
//!
//! The checksum is a CRC-32 (`crc32fast`, gigabytes a second) of every
//! tensor (name, shape, bytes; in name order, so it does not depend on how
//! the file lays them out) and of the metadata, stored in the file's own
//! metadata under [`CHECKSUM_KEY`]. Kept inside the file it covers, it is
//! written in the same atomic rename: a crash can never leave a file and a
//! checksum from two different saves. `model.safetensors` also records the
//! CRC-32 of the model config and of `tokenizer.json`, so that a
//! `config.json` or a tokenizer from elsewhere is caught at load.
//! Files written before checksums existed have none and load as before.

use crate::error::{Error, Result};
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Metadata key of the checksum of a safetensors file's contents.
pub const CHECKSUM_KEY: &str = "lmforge.crc32";
/// Metadata key (in `model.safetensors`) of the CRC-32 of the model config's JSON.
pub const CONFIG_KEY: &str = "lmforge.config_crc32";
/// Metadata key (in `model.safetensors`) of the CRC-32 of `tokenizer.json`.
pub const TOKENIZER_KEY: &str = "lmforge.tokenizer_crc32";

/// CRC-32 of `bytes`, as the 8 hex digits stored in metadata.
pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// The checksum of `tensors` (name, shape, little-endian f32 bytes) and of
/// `metadata` (every key but the checksum's own).
fn digest<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_unstable_by_key(|(name, _, _)| *name);
    let mut h = crc32fast::Hasher::new();
    for (name, shape, data) in tensors {
        h.update(name.as_bytes());
        shape
            .iter()
            .for_each(|&d| h.update(&(d as u64).to_le_bytes()));
        h.update(data);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort_unstable();
    for key in keys {
        h.update(key.as_bytes());
        h.update(b"=");
        h.update(metadata[key].as_bytes());
    }
    format!("{:08x}", h.finalize())
}

/// Add the checksum of `tensors` and `metadata` to `metadata`, before writing.
pub fn seal(tensors: &[(String, Vec<u8>, Vec<usize>)], metadata: &mut HashMap<String, String>) {
    let sum = digest(
        tensors
            .iter()
            .map(|(n, b, s)| (n.as_str(), s.as_slice(), b.as_slice())),
        metadata,
    );
    metadata.insert(CHECKSUM_KEY.into(), sum);
}

/// Check the checksum of a file read from `path`, if it has one.
pub fn verify(st: &SafeTensors, metadata: &HashMap<String, String>, path: &Path) -> Result<()> {
    let Some(recorded) = metadata.get(CHECKSUM_KEY) else {
        return Ok(()); // written before checksums existed
    };
    let tensors = st.tensors();
    let actual = digest(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape(), t.data())),
        metadata,
    );
    if &actual == recorded {
        return Ok(());
    }
    Err(Error::format(
        path,
        format!(
            "checksum mismatch (recorded {recorded}, contents give {actual}): the file is \
             damaged (a disk error, an incomplete copy, an edit); restore it from a copy or \
             train again"
        ),
    ))
}

/// Refuse values that are NaN or infinite, naming the tensor and index.
pub fn check_finite(values: &[f32], tensor: &str, path: &Path) -> Result<()> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            path,
            format!(
                "tensor {tensor:?} holds {} at index {i}: the weights are not usable (a \
                 training run that diverged, or a damaged file)",
                values[i]
            ),
        )),
    }
}

/// Check a file that `model.safetensors` recorded the CRC-32 of (under
/// `key`) against `bytes`, its contents now.
pub fn verify_companion(
    metadata: &HashMap<String, String>,
    key: &str,
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> Result<()> {
    match metadata.get(key) {
        Some(recorded) if *recorded != crc32_hex(bytes) => Err(Error::format(
            path,
            format!(
                "does not match the {what} the model was saved with (CRC-32 {} now, {recorded} \
                 recorded in model.safetensors): a file from another run, an edit, or damage",
                crc32_hex(bytes)
            ),
        )),
        _ => Ok(()),
    }
}

/// The metadata of the safetensors file at `path`, read from its header
/// alone (the weights are not read); empty when the file is missing or has
/// none. A header that is not a safetensors header is an error.
pub fn header_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(HashMap::new());
    };
    let bad = |why: String| Error::format(path, format!("not a valid safetensors file: {why}"));
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| bad(format!("no header ({e})")))?;
    let len = u64::from_le_bytes(len);
    // safetensors' own limit on a header.
    if len > 100_000_000 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("header cut short ({e})")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let meta = json["__metadata__"].as_object().into_iter().flatten();
    Ok(meta
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<(String, Vec<u8>, Vec<usize>)> {
        vec![
            ("b".into(), vec![1, 2, 3, 4], vec![1]),
            ("a".into(), vec![0; 8], vec![2]),
        ]
    }

    #[test]
    fn the_checksum_covers_data_shapes_names_and_metadata() {
        let meta = HashMap::from([("step".to_string(), "3".to_string())]);
        let mut sealed = meta.clone();
        seal(&tensors(), &mut sealed);
        let sum = sealed[CHECKSUM_KEY].clone();
        let again = |t: Vec<(String, Vec<u8>, Vec<usize>)>, m: &HashMap<String, String>| {
            let mut m = m.clone();
            seal(&t, &mut m);
            m[CHECKSUM_KEY].clone()
        };
        let mut reordered = tensors();
        reordered.reverse();
        assert_eq!(again(reordered, &meta), sum, "order does not matter");
        assert_eq!(again(tensors(), &sealed), sum, "its own key is left out");
        let mut flipped = tensors();
        flipped[0].1[2] ^= 1;
        assert_ne!(again(flipped, &meta), sum);
        let mut reshaped = tensors();
        reshaped[1].2 = vec![1, 2];
        assert_ne!(again(reshaped, &meta), sum);
        let other = HashMap::from([("step".to_string(), "4".to_string())]);
        assert_ne!(again(tensors(), &other), sum);
    }

    #[test]
    fn non_finite_values_are_named() {
        check_finite(&[1.0, -2.0], "w", Path::new("m")).unwrap();
        let err = check_finite(&[1.0, f32::NAN], "w", Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"w\" holds NaN at index 1"), "{err}");
    }
}
