//! Finding input files and streaming documents out of them.
//!
//! An input argument is a file, a directory (every file under it, recursively,
//! sorted; names starting with `.` are skipped) or a glob pattern.
//!
//! Each stream's format is detected from its first bytes, then its name:
//! gzip (`1f 8b`), xz (`fd 37 7a 58 5a 00`) and zstd (`28 b5 2f fd`) are
//! decompressed and detected again (so `.tar.xz`, `.jsonl.gz`, OpenWebText's tar
//! of `.xz` files each holding a tar of `.txt` are read); a tar (`ustar` at byte
//! 257 with a valid header checksum, or a `.tar` name) yields its regular files,
//! each detected again (compressed members up to [`MAX_BLOB`] are handed to the
//! workers whole, so several decompress at once);
//! `.jsonl`/`.ndjson`/`.json` names, or content starting with `{`, are JSON
//! Lines; a file starting with `PAR1` is Parquet (FineWeb's layout: one
//! document per row of the `--text-field` column; top-level files only, as
//! Parquet is read from its end); everything else is plain text. Nothing is
//! extracted to disk.
//!
//! A document is a plain-text file (or tar member), one JSON Lines record or
//! one Parquet row. Documents longer than [`PIECE_BYTES`] are handed on in pieces cut after a
//! newline that is followed by a non-space character: GPT-2's pre-tokenizer also
//! cuts there, so the ids equal those of the whole text, and memory stays
//! bounded. Every piece is normalised (BOM removed from the first, CRLF → LF).

use super::{OnBad, Split};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Documents are cut into pieces of about this many bytes.
pub const PIECE_BYTES: usize = 1 << 20;
/// Archives inside archives deeper than this are refused (a zip-bomb guard).
const MAX_DEPTH: usize = 8;

/// One input file found from the command-line arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    /// Absolute path.
    pub path: PathBuf,
    pub bytes: u64,
}

/// Expand files, directories and globs into input files, in argument order
/// (sorted within each argument), without duplicates and without anything
/// under `exclude` (the output directory).
pub fn expand_inputs(args: &[String], exclude: &Path) -> Result<Vec<InputFile>> {
    let exclude = std::path::absolute(exclude).map_err(|e| Error::io(exclude, e))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        let mut found = if path.exists() {
            if path.is_dir() {
                walk(path)?
            } else {
                vec![path.to_path_buf()]
            }
        } else {
            let pattern = glob::glob(arg).map_err(|e| {
                Error::Config(format!("input {arg:?}: no such file, and not a glob: {e}"))
            })?;
            let mut files = Vec::new();
            for entry in pattern {
                let p = entry.map_err(|e| Error::io(e.path().to_path_buf(), e.into()))?;
                if p.is_dir() {
                    files.extend(walk(&p)?);
                } else {
                    files.push(p);
                }
            }
            if files.is_empty() {
                return Err(Error::Config(format!(
                    "input {arg:?}: no such file, and no file matches it as a pattern"
                )));
            }
            files
        };
        found.sort();
        for p in found {
            let abs = std::path::absolute(&p).map_err(|e| Error::io(&p, e))?;
            if abs.starts_with(&exclude) || !seen.insert(abs.clone()) {
                continue;
            }
            let bytes = std::fs::metadata(&abs)
                .map_err(|e| Error::io(&abs, e))?
                .len();
            out.push(InputFile { path: abs, bytes });
        }
    }
    Ok(out)
}

/// Every file under `dir`, recursively, skipping hidden names.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Text handed to the tokenizer: a whole document or a piece of one.
pub struct Piece {
    pub text: String,
    /// The document's first piece: the end-of-text token goes before it.
    pub first: bool,
    pub split: Split,
    /// Where it came from, for errors (e.g. `owt.tar:a.xz:b.txt`).
    pub source: Arc<str>,
}

/// How to read inputs and split their documents.
pub struct ReadOptions {
    pub text_field: String,
    pub on_bad_utf8: OnBad,
    pub on_bad_archive: OnBad,
    pub val_fraction: f64,
    pub seed: u64,
}

/// What reading one input found.
#[derive(Debug, Default, Clone)]
pub struct InputStats {
    pub documents: u64,
    pub skipped_bad_utf8: u64,
    /// Corrupt or truncated archives (or members) skipped: `name: reason`.
    pub bad_archives: Vec<String>,
}

/// Why reading stopped early.
enum Stop {
    /// A compressed stream or tar is corrupt or truncated: `(name, reason)`.
    Archive(String, String),
    Fatal(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fatal(e)
    }
}

/// Counts the bytes read from an input file (for the progress bar).
struct Counting<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Watches the stream under a tar: an error, or its end, while a member is
/// being read means the tar is broken, not the member.
struct Watch<'a> {
    inner: &'a mut dyn Read,
    broken: &'a Cell<bool>,
}

impl Read for Watch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.inner.read(buf);
        // A whole tar ends with zero blocks, which tar reads before its end.
        if matches!(result, Err(_) | Ok(0)) && !buf.is_empty() {
            self.broken.set(true);
        }
        result
    }
}

/// What the reader hands on: text, or a compressed tar member for a worker to
/// expand (decompressing on several cores at once).
pub enum Unit {
    Piece(Piece),
    Blob(Blob),
}

/// A compressed member of a tar (e.g. one of OpenWebText's `.xz` files), read
/// whole: at most [`MAX_BLOB`] bytes.
pub struct Blob {
    bytes: Vec<u8>,
    display: String,
    name: String,
    /// Its documents are split by (seed, this, their index in the blob).
    key: String,
    depth: usize,
}

/// Compressed tar members up to this size are expanded by workers in parallel;
/// larger ones are streamed by the reader. Memory per member in flight is about
/// its decompressed size times the token width.
pub const MAX_BLOB: u64 = 8 << 20;

/// Stream every document of `input` to `emit`, adding the bytes read to `bytes_read`.
pub fn read_input(
    input: &InputFile,
    opts: &ReadOptions,
    bytes_read: &AtomicU64,
    emit: &mut dyn FnMut(Unit) -> Result<()>,
) -> Result<InputStats> {
    let file = std::fs::File::open(&input.path).map_err(|e| Error::io(&input.path, e))?;
    let mut file = Counting {
        inner: file,
        count: bytes_read,
    };
    let display = input.path.display().to_string();
    let name = input
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut reader = DocReader::new(opts, &name, true, emit);
    let mut magic = Vec::with_capacity(4);
    fill(&mut file, &mut magic, 4).map_err(|e| Error::io(&input.path, e))?;
    let result = if magic == b"PAR1" {
        // Parquet keeps its index at the end: it is read from the file, not streamed.
        let result = reader.read_parquet(&input.path, &display);
        bytes_read.fetch_add(input.bytes - 4, Ordering::Relaxed);
        result
    } else {
        reader.read_stream(&mut magic.as_slice().chain(file), &display, &name, 0)
    };
    conclude(result, reader.stats, opts)
}

/// Stream the documents of a [`Blob`] (in a worker) to `emit`.
pub fn expand_blob(
    blob: Blob,
    opts: &ReadOptions,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<InputStats> {
    let mut emit_piece = |unit| match unit {
        Unit::Piece(p) => emit(p),
        Unit::Blob(_) => unreachable!("blobs are off when expanding one"),
    };
    let mut reader = DocReader::new(opts, &blob.key, false, &mut emit_piece);
    let result = reader.read_stream(
        &mut blob.bytes.as_slice(),
        &blob.display,
        &blob.name,
        blob.depth,
    );
    conclude(result, reader.stats, opts)
}

/// Turn how reading ended into the stats, or the error to stop with.
fn conclude(
    result: Result<(), Stop>,
    mut stats: InputStats,
    opts: &ReadOptions,
) -> Result<InputStats> {
    match result {
        Ok(()) => Ok(stats),
        Err(Stop::Archive(n, m)) if opts.on_bad_archive == OnBad::Skip => {
            stats.bad_archives.push(format!("{n}: {m}"));
            Ok(stats)
        }
        Err(Stop::Archive(n, m)) => Err(Error::format(
            n,
            format!("corrupt or truncated archive: {m} (use --on-bad-archive skip to go on)"),
        )),
        Err(Stop::Fatal(e)) => Err(e),
    }
}

impl InputStats {
    /// Add what another part of the same input found.
    pub fn add(&mut self, other: InputStats) {
        self.documents += other.documents;
        self.skipped_bad_utf8 += other.skipped_bad_utf8;
        self.bad_archives.extend(other.bad_archives);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Gzip,
    Xz,
    Zstd,
    Tar,
    Parquet,
    JsonLines,
    Text,
}

fn detect(head: &[u8], name: &str) -> Format {
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
        || (!ext(".txt") && head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
    {
        Format::JsonLines
    } else {
        Format::Text
    }
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
fn strip_compression(name: &str) -> String {
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

/// Read into `buf` until it holds `target` bytes or the stream ends; true at the end.
fn fill(r: &mut dyn Read, buf: &mut Vec<u8>, target: usize) -> std::io::Result<bool> {
    while buf.len() < target {
        let want = (target - buf.len()) as u64;
        if r.take(want).read_to_end(buf)? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

struct DocReader<'a> {
    opts: &'a ReadOptions,
    /// The input's file name, or a blob's key: names members for blob keys.
    key: String,
    /// Hash of `key`: documents are split by (seed, this, index).
    split_key: u64,
    doc_index: u64,
    /// Hand compressed tar members on as blobs instead of reading them here.
    blobs: bool,
    stats: InputStats,
    emit: &'a mut dyn FnMut(Unit) -> Result<()>,
}

impl<'a> DocReader<'a> {
    fn new(
        opts: &'a ReadOptions,
        key: &str,
        blobs: bool,
        emit: &'a mut dyn FnMut(Unit) -> Result<()>,
    ) -> Self {
        DocReader {
            opts,
            key: key.to_string(),
            split_key: crate::data::shards::fnv1a64(key.as_bytes()),
            doc_index: 0,
            blobs,
            stats: InputStats::default(),
            emit,
        }
    }

    /// Read one stream. `display` names it in messages; `name` is what its
    /// format is detected from; `depth` is how many decoders/tars it sits in.
    fn read_stream(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        name: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::Archive(
                display.into(),
                format!("archives nested more than {MAX_DEPTH} deep"),
            ));
        }
        let io_err = |e: std::io::Error| io_stop(display, depth, e);
        let mut head = Vec::with_capacity(512);
        fill(r, &mut head, 512).map_err(io_err)?;
        let mut stream = head.as_slice().chain(r);
        let inner = strip_compression(name);
        match detect(&head, name) {
            Format::Gzip => {
                let mut d = flate2::read::MultiGzDecoder::new(stream);
                self.read_stream(&mut d, display, &inner, depth + 1)
            }
            Format::Xz => {
                let mut d = liblzma::read::XzDecoder::new_multi_decoder(stream);
                self.read_stream(&mut d, display, &inner, depth + 1)
            }
            Format::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(stream).map_err(io_err)?;
                self.read_stream(&mut d, display, &inner, depth + 1)
            }
            Format::Tar => self.read_tar(&mut stream, display, depth),
            Format::Parquet => Err(Stop::Fatal(Error::format(
                display,
                "Parquet inside an archive or compressed file is not supported; extract it",
            ))),
            Format::JsonLines => self.read_jsonl(&mut stream, display, depth),
            Format::Text => self.read_text(&mut stream, display, depth),
        }
    }

    fn read_tar(&mut self, r: &mut dyn Read, display: &str, depth: usize) -> Result<(), Stop> {
        let outer_broken = Cell::new(false);
        let mut archive = tar::Archive::new(Watch {
            inner: r,
            broken: &outer_broken,
        });
        let entries = archive
            .entries()
            .map_err(|e| io_stop(display, depth + 1, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| io_stop(display, depth + 1, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry
                .path()
                .map_err(|e| io_stop(display, depth + 1, e))?
                .to_string_lossy()
                .into_owned();
            let member_display = format!("{display}:{member}");
            let result = if self.blobs && entry.size() <= MAX_BLOB {
                self.read_member(&mut entry, &member_display, &member, depth + 1)
            } else {
                self.read_stream(&mut entry, &member_display, &member, depth + 1)
            };
            match result {
                // The tar itself is cut or corrupt: not this member's fault.
                Err(Stop::Archive(_, m)) if outer_broken.get() => {
                    return Err(Stop::Archive(display.into(), m));
                }
                Err(Stop::Archive(n, m)) if self.opts.on_bad_archive == OnBad::Skip => {
                    self.stats.bad_archives.push(format!("{n}: {m}"));
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// One document per row of the `--text-field` column of a Parquet file
    /// (FineWeb's layout); only that column is decoded.
    fn read_parquet(&mut self, path: &Path, display: &str) -> Result<(), Stop> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::Field;
        let bad = |e: parquet::errors::ParquetError| Stop::Archive(display.into(), e.to_string());
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = SerializedFileReader::new(file).map_err(bad)?;
        let field = self.opts.text_field.as_str();
        let schema = reader.metadata().file_metadata().schema_descr();
        let Some(column) = schema.columns().iter().find(|c| c.path().string() == field) else {
            return Err(Stop::Fatal(Error::format(
                display,
                format!("no column {field:?} (see --text-field)"),
            )));
        };
        let projection = parquet::schema::types::Type::group_type_builder("schema")
            .with_fields(vec![column.self_type_ptr()])
            .build()
            .map_err(bad)?;
        for (i, row) in reader
            .get_row_iter(Some(projection))
            .map_err(bad)?
            .enumerate()
        {
            let row = row.map_err(bad)?;
            let text = match row.get_column_iter().next() {
                Some((_, Field::Str(text))) => text,
                Some((_, Field::Null)) => continue,
                _ => {
                    return Err(Stop::Fatal(Error::format(
                        display,
                        format!("row {i}: column {field:?} is not a string"),
                    )));
                }
            };
            let split = self.next_document();
            self.emit_piece(crate::data::text::normalize(text), true, split, display)?;
        }
        Ok(())
    }

    /// Read a small tar member whole; hand it on as a [`Blob`] if compressed.
    fn read_member(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        name: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .map_err(|e| io_stop(display, depth, e))?;
        if !matches!(
            detect(&bytes, name),
            Format::Gzip | Format::Xz | Format::Zstd
        ) {
            return self.read_stream(&mut bytes.as_slice(), display, name, depth);
        }
        let blob = Blob {
            bytes,
            display: display.into(),
            name: name.into(),
            key: format!("{}:{name}", self.key),
            depth,
        };
        (self.emit)(Unit::Blob(blob)).map_err(Stop::Fatal)
    }

    fn read_jsonl(&mut self, r: &mut dyn Read, display: &str, depth: usize) -> Result<(), Stop> {
        let mut r = std::io::BufReader::with_capacity(1 << 16, r);
        let mut line = Vec::new();
        let (mut line_no, mut offset) = (0u64, 0u64);
        let field = self.opts.text_field.as_str();
        loop {
            line.clear();
            let n = r
                .read_until(b'\n', &mut line)
                .map_err(|e| io_stop(display, depth, e))?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            let start = offset;
            offset += n as u64;
            let Some(text) = self.check_utf8(&line, display, start)? else {
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Error::format(display, format!("line {line_no}: not a JSON record: {e}"))
            })?;
            let Some(doc) = value.get(field).and_then(|v| v.as_str()) else {
                return Err(Stop::Fatal(Error::format(
                    display,
                    format!("line {line_no}: no string field {field:?} (see --text-field)"),
                )));
            };
            let doc = crate::data::text::normalize(doc);
            let split = self.next_document();
            self.emit_piece(doc, true, split, display)?;
        }
    }

    /// A plain-text document, handed on in pieces of about [`PIECE_BYTES`].
    fn read_text(&mut self, r: &mut dyn Read, display: &str, depth: usize) -> Result<(), Stop> {
        let split = self.next_document();
        let mut buf = Vec::new();
        let (mut offset, mut first) = (0u64, true);
        loop {
            let target = buf.len().max(PIECE_BYTES / 2) + PIECE_BYTES / 2;
            let eof = fill(r, &mut buf, target).map_err(|e| io_stop(display, depth, e))?;
            let cut = if eof {
                buf.len()
            } else {
                match buf
                    .windows(2)
                    .rposition(|w| w[0] == b'\n' && !w[1].is_ascii_whitespace())
                {
                    Some(i) => i + 1,
                    None => continue, // no safe place to cut yet: read more
                }
            };
            let rest = buf.split_off(cut);
            let piece = std::mem::replace(&mut buf, rest);
            let Some(text) = self.check_utf8(&piece, display, offset)? else {
                return Ok(()); // skip the rest of this document
            };
            let text = if first {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            let text = crate::data::text::normalize(text);
            if !text.is_empty() {
                self.emit_piece(text, first, split, display)?;
                first = false;
            }
            offset += cut as u64;
            if eof {
                return Ok(());
            }
        }
    }

    /// `bytes` as text; `None` (counted) if it is not UTF-8 and bad documents are skipped.
    fn check_utf8<'b>(
        &mut self,
        bytes: &'b [u8],
        display: &str,
        offset: u64,
    ) -> Result<Option<&'b str>, Stop> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Some(text)),
            Err(_) if self.opts.on_bad_utf8 == OnBad::Skip => {
                self.stats.skipped_bad_utf8 += 1;
                Ok(None)
            }
            Err(e) => Err(Stop::Fatal(Error::NotUtf8 {
                path: display.into(),
                offset: offset + e.valid_up_to() as u64,
            })),
        }
    }

    /// Number the next document and decide its split from (seed, input, index).
    fn next_document(&mut self) -> Split {
        let bits = crate::rng::hash3(self.opts.seed, self.split_key, self.doc_index);
        self.doc_index += 1;
        let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
        if unit < self.opts.val_fraction {
            Split::Val
        } else {
            Split::Train
        }
    }

    fn emit_piece(
        &mut self,
        text: String,
        first: bool,
        split: Split,
        display: &str,
    ) -> Result<(), Stop> {
        if text.is_empty() {
            return Ok(());
        }
        if first {
            self.stats.documents += 1;
        }
        (self.emit)(Unit::Piece(Piece {
            text,
            first,
            split,
            source: display.into(),
        }))
        .map_err(Stop::Fatal)
    }
}

/// An I/O error while reading: the file itself (`depth` 0) is fatal; inside a
/// decoder or tar it means the archive is corrupt or truncated.
fn io_stop(display: &str, depth: usize, e: std::io::Error) -> Stop {
    if depth == 0 {
        Stop::Fatal(Error::io(display, e))
    } else {
        Stop::Archive(display.into(), e.to_string())
    }
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

    /// Long documents come in pieces cut only after "\n" + non-space, and the
    /// pieces join back to the whole text.
    #[test]
    fn long_text_is_cut_at_safe_newlines() {
        let line = "word word\n\n  indented\nNext line here.\n";
        let text = line.repeat(3 * PIECE_BYTES / line.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, &text).unwrap();
        let input = InputFile {
            path: path.clone(),
            bytes: text.len() as u64,
        };
        let opts = ReadOptions {
            text_field: "text".into(),
            on_bad_utf8: OnBad::Error,
            on_bad_archive: OnBad::Error,
            val_fraction: 0.0,
            seed: 0,
        };
        let mut pieces = Vec::new();
        let counter = AtomicU64::new(0);
        let stats = read_input(&input, &opts, &counter, &mut |unit| {
            let Unit::Piece(p) = unit else {
                panic!("a text file has no blobs")
            };
            pieces.push((p.first, p.text));
            Ok(())
        })
        .unwrap();
        assert_eq!(stats.documents, 1);
        assert_eq!(counter.load(Ordering::Relaxed), text.len() as u64);
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        assert!(pieces[0].0 && pieces[1..].iter().all(|p| !p.0));
        for (_, p) in &pieces[..pieces.len() - 1] {
            assert!(p.ends_with('\n') && p.len() <= PIECE_BYTES + line.len());
        }
        for (_, p) in &pieces[1..] {
            assert!(!p.starts_with(char::is_whitespace), "cut before whitespace");
        }
        let joined: String = pieces.into_iter().map(|p| p.1).collect();
        assert_eq!(joined, text);
    }
}
