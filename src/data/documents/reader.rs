//! Streaming documents out of one input: format dispatch, plain text, and
//! what reading found ([`InputStats`]). Tar archives are in
//! [`super::archive`], JSON Lines in [`super::jsonl`], Parquet in
//! [`super::parquet`].

use super::format::{Format, detect, is_compressed, strip_compression};
use super::pieces::{Cutter, normalize_piece, split_text, tail_cut};
use super::{InputFile, OnBad, PIECE_BYTES, ReadOptions, Split, TAIL_SHARE};
use crate::error::{Error, Result};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Archives inside archives deeper than this are refused (a zip-bomb guard).
const MAX_DEPTH: usize = 8;

/// Compressed tar members up to this size are handed on whole, as a [`Blob`],
/// for prepare's workers to expand in parallel; larger ones are streamed by
/// the reader. Memory per member in flight is about its decompressed size
/// times the token width.
pub const MAX_BLOB: u64 = 8 << 20;

/// Text handed on: a whole document or a piece of one, normalised.
pub struct Piece {
    pub text: String,
    /// The document's first piece: the end-of-text token goes before it.
    pub first: bool,
    /// The first piece of a document's validation tail (see
    /// [`ReadOptions::corpus_bytes`]): an end-of-text token goes before it
    /// too, so the validation stream never runs two documents together.
    pub starts_tail: bool,
    pub split: Split,
    /// Where it came from, for errors (e.g. `owt.tar:a.xz:b.txt`).
    pub source: Arc<str>,
}

/// What reading one input found.
#[derive(Debug, Default, Clone)]
pub struct InputStats {
    pub documents: u64,
    /// Documents split at their tail rather than assigned whole.
    pub tail_split: u64,
    pub skipped_bad_utf8: u64,
    /// Corrupt or truncated archives (or members), and JSON Lines records
    /// over the size bound, skipped: `name: reason`.
    pub bad_archives: Vec<String>,
}

impl InputStats {
    /// Add what another part of the same input found.
    pub fn add(&mut self, other: InputStats) {
        self.documents += other.documents;
        self.tail_split += other.tail_split;
        self.skipped_bad_utf8 += other.skipped_bad_utf8;
        self.bad_archives.extend(other.bad_archives);
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
    pub(super) bytes: Vec<u8>,
    pub(super) display: String,
    pub(super) name: String,
    /// Its documents are split by (seed, this, their index in the blob).
    pub(super) key: String,
    pub(super) depth: usize,
}

/// Why reading stopped early.
pub(super) enum Stop {
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

/// Stream every document of `input` to `emit`, adding the bytes read to
/// `bytes_read`. Small compressed tar members come as [`Unit::Blob`]s, to be
/// expanded with [`expand_blob`].
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
    reader.text_len = measure_compressed_text(input, &name, opts);
    let mut magic = Vec::with_capacity(4);
    fill(&mut file, &mut magic, 4).map_err(|e| Error::io(&input.path, e))?;
    let result = if magic == b"PAR1" {
        // Parquet keeps its index at the end: it is read from the file, not streamed.
        let result = reader.read_parquet(&input.path, &display);
        bytes_read.fetch_add(input.bytes.saturating_sub(4), Ordering::Relaxed);
        result
    } else {
        let len = Some(input.bytes);
        reader.stream(&mut magic.as_slice().chain(file), &display, &name, 0, len)
    };
    conclude(result, reader.stats, opts)
}

/// The length of the plain text inside `input` when it is one compressed
/// text (`.txt.xz`, `.gz`, `.zst`) big enough to have its tail split off (see
/// [`TAIL_SHARE`]); `None` otherwise, or when it cannot be read through
/// (reading it proper then reports why).
///
/// Found by a first pass that only decompresses and counts, in constant
/// memory: the text may be tens of gigabytes, and its validation tail
/// (`--val-fraction` of it) must start at a known offset, as a plain
/// file's does. The alternative, a buffer holding the tail until the end is
/// seen, would have to hold a tenth of the text. The pass costs one more
/// decompression of the file (zstd and gzip run many times faster than
/// tokenizing; xz at a few times its speed).
fn measure_compressed_text(input: &InputFile, name: &str, opts: &ReadOptions) -> Option<u64> {
    let big = input.bytes.saturating_mul(TAIL_SHARE) >= opts.corpus_bytes;
    if opts.val_fraction <= 0.0 || !big {
        return None;
    }
    let mut file = std::io::BufReader::new(std::fs::File::open(&input.path).ok()?);
    let mut head = Vec::with_capacity(512);
    fill(&mut file, &mut head, 512).ok()?;
    let format = detect(&head, name);
    if !is_compressed(format) {
        return None;
    }
    let mut text = decoder(format, head.as_slice().chain(file)).ok()?;
    let mut inner = Vec::with_capacity(512);
    fill(&mut text, &mut inner, 512).ok()?;
    if detect(&inner, &strip_compression(name)) != Format::Text {
        return None;
    }
    let rest = std::io::copy(&mut text, &mut std::io::sink()).ok()?;
    Some(inner.len() as u64 + rest)
}

/// A reader of the decompressed bytes of a `format` stream (any other
/// format: the bytes as they are).
fn decoder<'r>(format: Format, r: impl Read + 'r) -> std::io::Result<Box<dyn Read + 'r>> {
    Ok(match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        _ => Box::new(r),
    })
}

/// Stream the documents of a [`Blob`] to `emit` (in one of prepare's workers).
pub fn expand_blob(
    blob: Blob,
    opts: &ReadOptions,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<InputStats> {
    without_blobs(opts, &blob.key, emit, |reader| {
        reader.stream(
            &mut blob.bytes.as_slice(),
            &blob.display,
            &blob.name,
            blob.depth,
            None,
        )
    })
}

/// Read with a reader that makes no blobs (it reads small compressed tar
/// members itself), so every unit it hands on is a piece.
fn without_blobs(
    opts: &ReadOptions,
    key: &str,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
    read: impl FnOnce(&mut DocReader) -> Result<(), Stop>,
) -> Result<InputStats> {
    let mut emit_piece = |unit| match unit {
        Unit::Piece(p) => emit(p),
        Unit::Blob(_) => unreachable!("a reader made without blobs makes none"),
    };
    let mut reader = DocReader::new(opts, key, false, &mut emit_piece);
    let result = read(&mut reader);
    conclude(result, reader.stats, opts)
}

/// Stream every piece of `inputs`, in order, to `emit` on this thread
/// (compressed tar members are expanded in place, numbered as `prepare`
/// numbers them).
pub fn read_all(
    inputs: &[InputFile],
    opts: &ReadOptions,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<InputStats> {
    let bytes_read = AtomicU64::new(0);
    let mut total = InputStats::default();
    for input in inputs {
        let mut members = InputStats::default();
        let stats = read_input(input, opts, &bytes_read, &mut |unit| match unit {
            Unit::Piece(p) => emit(p),
            Unit::Blob(blob) => {
                members.add(expand_blob(blob, opts, emit)?);
                Ok(())
            }
        })?;
        total.add(stats);
        total.add(members);
    }
    Ok(total)
}

/// Stream every piece of one unnamed stream (stdin) to `emit`; `name`
/// stands for it in messages. Parquet cannot be read this way.
pub fn read_stream(
    r: &mut dyn Read,
    name: &str,
    opts: &ReadOptions,
    emit: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<InputStats> {
    without_blobs(opts, name, emit, |reader| {
        reader.stream(r, name, name, 0, None)
    })
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

/// Read into `buf` until it holds `target` bytes or the stream ends; true at the end.
pub(super) fn fill(r: &mut dyn Read, buf: &mut Vec<u8>, target: usize) -> std::io::Result<bool> {
    while buf.len() < target {
        let want = (target - buf.len()) as u64;
        if r.take(want).read_to_end(buf)? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An I/O error while reading: the file itself (`depth` 0) is fatal; inside a
/// decoder or tar it means the archive is corrupt or truncated.
pub(super) fn io_stop(display: &str, depth: usize, e: std::io::Error) -> Stop {
    if depth == 0 {
        Stop::Fatal(Error::io(display, e))
    } else {
        Stop::Archive(display.into(), e.to_string())
    }
}

/// The document being handed on.
pub(super) struct Document {
    split: Split,
    /// Where (in bytes of normalised text) the validation tail starts, for a
    /// document split at its tail.
    tail_from: Option<u64>,
    /// Bytes of normalised text handed on so far.
    offset: u64,
    /// The next piece starts the document (a byte-order mark there goes).
    at_start: bool,
    /// No piece has been handed on yet.
    first: bool,
}

/// Reads the streams of one input (or blob) and hands on their pieces.
pub(super) struct DocReader<'a> {
    pub(super) opts: &'a ReadOptions,
    /// The input's file name, or a blob's key: names members for blob keys.
    pub(super) key: String,
    /// Hash of `key`: documents are split by (seed, this, index).
    split_key: u64,
    doc_index: u64,
    /// Hand compressed tar members on as blobs instead of reading them here.
    pub(super) blobs: bool,
    /// The length of the text inside the input's compression, when
    /// [`measure_compressed_text`] measured it.
    text_len: Option<u64>,
    pub(super) stats: InputStats,
    pub(super) emit: &'a mut dyn FnMut(Unit) -> Result<()>,
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
            split_key: crate::data::fnv1a64(key.as_bytes()),
            doc_index: 0,
            blobs,
            text_len: None,
            stats: InputStats::default(),
            emit,
        }
    }

    /// Read one stream. `display` names it in messages; `name` is what its
    /// format is detected from; `depth` is how many decoders/tars it sits in;
    /// `len` is its length in bytes where known ahead (a file, a tar member),
    /// which a plain-text document needs to have its tail split off.
    pub(super) fn stream(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        name: &str,
        depth: usize,
        len: Option<u64>,
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
        match detect(&head, name) {
            format @ (Format::Gzip | Format::Xz | Format::Zstd) => {
                let mut d = decoder(format, stream).map_err(io_err)?;
                // The text's length, where a first pass measured it.
                let len = self.text_len.take();
                self.stream(&mut d, display, &strip_compression(name), depth + 1, len)
            }
            Format::Tar => self.read_tar(&mut stream, display, depth),
            Format::Parquet => Err(Stop::Fatal(Error::format(
                display,
                "Parquet is only read from a file named as an input (not inside an archive, \
                 a compressed file or stdin); extract it",
            ))),
            Format::JsonLines => self.read_jsonl(&mut stream, display, depth),
            Format::Text => self.read_text(&mut stream, display, depth, len),
        }
    }

    /// A plain-text document, streamed in pieces of at most [`PIECE_BYTES`]:
    /// memory stays flat however long it is, with or without newlines.
    fn read_text(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        depth: usize,
        len: Option<u64>,
    ) -> Result<(), Stop> {
        let mut doc = self.begin_document(len);
        let mut cutter = Cutter::new(PIECE_BYTES);
        let mut buf = Vec::with_capacity(cutter.wanted());
        let mut offset = 0u64;
        loop {
            let end = fill(r, &mut buf, cutter.wanted()).map_err(|e| io_stop(display, depth, e))?;
            if end && buf.is_empty() {
                return Ok(());
            }
            let cut = cutter.cut(&buf, end);
            let piece = buf[..cut].to_vec();
            buf.drain(..cut);
            let text = match String::from_utf8(piece) {
                Ok(text) => text,
                Err(e) => {
                    // Skipped: the rest of this document goes with it.
                    return self.bad_utf8(display, offset, e.utf8_error());
                }
            };
            offset += cut as u64;
            self.emit_piece(&mut doc, text, display)?;
        }
    }

    /// A document held in memory (a JSON Lines record, a Parquet row), handed
    /// on in pieces.
    pub(super) fn emit_document(&mut self, text: &str, display: &str) -> Result<(), Stop> {
        let mut doc = self.begin_document(Some(text.len() as u64));
        for piece in split_text(text, PIECE_BYTES) {
            self.emit_piece(&mut doc, piece.to_string(), display)?;
        }
        Ok(())
    }

    /// Invalid UTF-8 at `offset + e.valid_up_to()`: an error, or counted when
    /// bad documents are skipped.
    pub(super) fn bad_utf8(
        &mut self,
        display: &str,
        offset: u64,
        e: std::str::Utf8Error,
    ) -> Result<(), Stop> {
        if self.opts.on_bad_utf8 == OnBad::Skip {
            self.stats.skipped_bad_utf8 += 1;
            return Ok(());
        }
        Err(Stop::Fatal(Error::NotUtf8 {
            path: display.into(),
            offset: offset + e.valid_up_to() as u64,
        }))
    }

    /// Number the next document and decide its split: a document of
    /// `len` bytes that holds at least 1/[`TAIL_SHARE`] of the corpus keeps
    /// its head in train and gives its last `val_fraction` to validation;
    /// any other (or one of unknown length: compressed, and not measured) goes
    /// whole to one split by a hash of (seed, input, index). Every document
    /// is numbered, even one that turns out empty, so the split of the
    /// others does not depend on it.
    fn begin_document(&mut self, len: Option<u64>) -> Document {
        let bits = crate::rng::hash3(self.opts.seed, self.split_key, self.doc_index);
        self.doc_index += 1;
        let fraction = self.opts.val_fraction;
        let big = len.filter(|&n| n > 0 && n.saturating_mul(TAIL_SHARE) >= self.opts.corpus_bytes);
        if let Some(n) = big.filter(|_| fraction > 0.0) {
            self.stats.tail_split += 1;
            return Document {
                split: Split::Train,
                tail_from: Some((n as f64 * (1.0 - fraction)).round() as u64),
                offset: 0,
                at_start: true,
                first: true,
            };
        }
        let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
        let split = if unit < fraction {
            Split::Val
        } else {
            Split::Train
        };
        Document {
            split,
            tail_from: None,
            offset: 0,
            at_start: true,
            first: true,
        }
    }

    /// Normalise a piece of `doc` and hand it on (unless it is empty); the
    /// piece holding the start of the document's validation tail is handed
    /// on as two.
    fn emit_piece(&mut self, doc: &mut Document, text: String, display: &str) -> Result<(), Stop> {
        let mut text = normalize_piece(text, doc.at_start);
        doc.at_start = false;
        let start = doc.offset;
        doc.offset += text.len() as u64;
        let Some(from) = doc.tail_from.filter(|&from| from < doc.offset) else {
            return self.hand_on(doc, text, false, display);
        };
        doc.tail_from = None;
        let cut = tail_cut(&text, from.saturating_sub(start) as usize);
        let tail = text.split_off(cut);
        self.hand_on(doc, text, false, display)?;
        doc.split = Split::Val;
        self.hand_on(doc, tail, true, display)
    }

    fn hand_on(
        &mut self,
        doc: &mut Document,
        text: String,
        starts_tail: bool,
        display: &str,
    ) -> Result<(), Stop> {
        if text.is_empty() {
            return Ok(());
        }
        let first = std::mem::replace(&mut doc.first, false);
        if first {
            self.stats.documents += 1;
        }
        (self.emit)(Unit::Piece(Piece {
            text,
            first,
            starts_tail: starts_tail && !first,
            split: doc.split,
            source: display.into(),
        }))
        .map_err(Stop::Fatal)
    }
}
