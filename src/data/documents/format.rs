//! Telling a stream's format from its first bytes, then its name.
//!
//! | format     | recognised by                                               |
//! |------------|-------------------------------------------------------------|
//! | gzip       | `1f 8b`                                                     |
//! | xz         | `fd 37 7a 58 5a 00`                                         |
//! | zstd       | `28 b5 2f fd`                                               |
//! | tar        | `ustar` at byte 257 with a valid header checksum, or `.tar` |
//! | Parquet    | `PAR1`                                                      |
//! | JSON Lines | `.jsonl`/`.ndjson`/`.json`, or (not `.txt`) starting with `{` (after a BOM) |
//! | plain text | anything else                                               |
//!
//! A compressed stream's content is detected again under its name without
//! the compression suffix (`a.jsonl.gz` → `a.jsonl`, `a.tgz` → `a.tar`).

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Gzip,
    Xz,
    Zstd,
    Tar,
    Parquet,
    JsonLines,
    Text,
}

/// The format of a stream starting with `head` (up to 512 bytes) named `name`.
pub fn detect(head: &[u8], name: &str) -> Format {
    let name = name.to_ascii_lowercase();
    let ext = |e: &str| name.ends_with(e);
    if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Format::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else if is_tar_header(head) || ext(".tar") {
        Format::Tar
    } else if head.starts_with(b"PAR1") {
        Format::Parquet
    } else if ext(".jsonl")
        || ext(".ndjson")
        || ext(".json")
        || (!ext(".txt") && first_non_space(super::strip_bom_bytes(head)) == Some(b'{'))
    {
        Format::JsonLines
    } else {
        Format::Text
    }
}

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Is this format a compression (decompressed, then detected again)?
pub fn is_compressed(format: Format) -> bool {
    matches!(format, Format::Gzip | Format::Xz | Format::Zstd)
}

/// A POSIX or GNU tar header: `ustar` magic at byte 257 and a valid checksum
/// (text can hold "mustard" at byte 256, as Tiny Shakespeare does).
fn is_tar_header(head: &[u8]) -> bool {
    let Some(h) = head.get(..512) else {
        return false;
    };
    if &h[257..263] != b"ustar\0" && &h[257..263] != b"ustar " {
        return false;
    }
    // The checksum field (bytes 148..156) holds the octal sum of the header's
    // bytes, counting the field itself as spaces.
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c| c == ' ' || c == '\0'), 8) else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored
}

/// The name of what a compressed file holds: `a.jsonl.gz` → `a.jsonl`, `a.tgz` → `a.tar`.
pub fn strip_compression(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    for (suffix, replacement) in [
        (".tgz", ".tar"),
        (".txz", ".tar"),
        (".tzst", ".tar"),
        (".gz", ""),
        (".xz", ""),
        (".zst", ""),
        (".zstd", ""),
    ] {
        if lower.ends_with(suffix) {
            return format!("{}{replacement}", &name[..name.len() - suffix.len()]);
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_by_magic_then_name() {
        assert_eq!(detect(&[0x1f, 0x8b, 8], "x"), Format::Gzip);
        assert_eq!(detect(b"\xfd7zXZ\x00..", "x.txt"), Format::Xz);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd], "x"), Format::Zstd);
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_cksum();
        builder.append_data(&mut h, "a.txt", &b"x"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        assert_eq!(detect(&tar, "data"), Format::Tar);
        let mut text = vec![b'a'; 600];
        text[256..263].copy_from_slice(b"mustard");
        assert_eq!(detect(&text, "0000014-869.txt"), Format::Text);
        assert_eq!(detect(b"PAR1....", "x"), Format::Parquet);
        assert_eq!(detect(b"{\"text\": 1}", "x.txt"), Format::Text);
        assert_eq!(detect(b" {\"text\": 1}", "x"), Format::JsonLines);
        assert_eq!(detect(b"\xef\xbb\xbf{\"text\": 1}", "x"), Format::JsonLines);
        assert_eq!(detect(b"hello", "x.jsonl"), Format::JsonLines);
        assert_eq!(detect(b"hello", "x"), Format::Text);
    }

    #[test]
    fn compression_suffixes_are_stripped() {
        assert_eq!(strip_compression("a.jsonl.gz"), "a.jsonl");
        assert_eq!(strip_compression("a.TGZ"), "a.tar");
        assert_eq!(
            strip_compression("urlsf_subset00-1_data.xz"),
            "urlsf_subset00-1_data"
        );
        assert_eq!(strip_compression("a.txt"), "a.txt");
    }
}
