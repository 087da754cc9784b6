//! `lmforge tokenizer encode|decode|train`.
//!
//! `encode` prints token ids separated by spaces (a line every 4096 ids) and
//! reports the token count and bytes per token on stderr; `decode` reads such
//! ids back into text; `train` learns a byte-level BPE vocabulary.
//!
//! `encode` and `train` read their input with the document reader
//! (`lmforge::data::documents`), as `prepare` and `train --data` do: any
//! format it reads, a leading BOM removed, CRLF → LF. `encode` joins the
//! documents as `train --data FILE` does (a `\n` between two when the first
//! does not end with one) and encodes them piece by piece, so its memory does
//! not grow with the input; for one plain-text file the ids are those of its
//! normalised text (except next to a hard cut, see the reader's docs).

use anyhow::{Context, Result, bail};
use lmforge::data::documents::{self, InputFile, ReadOptions};
use lmforge::tokenizer::{self, Pattern, Tokenizer, TokenizerSpec, train};
use rayon::prelude::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct TokenizerCommand {
    #[command(subcommand)]
    command: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Encode a text file to token ids (printed to stdout).
    Encode {
        /// `gpt2`, `char` (vocabulary built from FILE's normalised text) or a tokenizer.json.
        #[arg(long, default_value = "gpt2")]
        tokenizer: TokenizerSpec,
        /// Threads to encode with (1 = no parallelism).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// With `--tokenizer char`: write the vocabulary here, for `decode`.
        #[arg(long)]
        save_tokenizer: Option<PathBuf>,
        /// A file (or directory) in any format `prepare` reads; `-` reads stdin.
        file: PathBuf,
    },
    /// Decode whitespace-separated token ids to text (written to stdout).
    Decode {
        /// `gpt2` or a tokenizer.json.
        #[arg(long, default_value = "gpt2")]
        tokenizer: TokenizerSpec,
        /// File of ids; `-` reads stdin.
        file: PathBuf,
    },
    /// Train a byte-level BPE tokenizer on text files.
    Train {
        /// Vocabulary size, including the 256 byte tokens and the specials.
        #[arg(long)]
        vocab_size: usize,
        /// The tokenizer.json to write; the tiktoken ranks go beside it (`.tiktoken`).
        #[arg(long)]
        out: PathBuf,
        /// Replace --out (and its `.tiktoken`) if they exist; the new files
        /// replace them only once complete.
        #[arg(long)]
        overwrite: bool,
        /// Pre-tokenization split: `gpt2` or `gpt4` (cl100k).
        #[arg(long, default_value = "gpt2")]
        pattern: String,
        /// A special token (repeatable), e.g. `<|endoftext|>`.
        #[arg(long = "special")]
        specials: Vec<String>,
        /// Skip documents that are not valid UTF-8 (and report how many) instead
        /// of failing, as `prepare --on-bad-utf8 skip` does.
        #[arg(long)]
        skip_invalid_utf8: bool,
        /// The corpus: files, directories (read recursively) or glob patterns,
        /// in any format `prepare` reads.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(cmd: TokenizerCommand) -> Result<()> {
    match cmd.command {
        Action::Encode {
            tokenizer,
            threads,
            save_tokenizer,
            file,
        } => encode(&tokenizer, threads, save_tokenizer.as_deref(), &file),
        Action::Decode { tokenizer, file } => decode(&tokenizer, &file),
        Action::Train {
            vocab_size,
            out,
            overwrite,
            pattern,
            specials,
            skip_invalid_utf8,
            files,
        } => {
            let pattern = Pattern::from_name(&pattern)
                .with_context(|| format!("unknown --pattern {pattern:?}; use gpt2 or gpt4"))?;
            let config = train::TrainConfig {
                vocab_size,
                pattern,
                specials,
                skip_invalid_utf8,
            };
            train_command(&config, &files, &out, overwrite)
        }
    }
}

/// All of a file, or of stdin for `-`.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(bytes)
}

/// What `encode` reads: stdin (held in memory, as it is read twice for a
/// `char` vocabulary) or the files an argument names.
enum EncodeInput {
    Stdin(Vec<u8>),
    Files(Vec<InputFile>),
}

impl EncodeInput {
    fn open(path: &Path) -> Result<Self> {
        if path == Path::new("-") {
            return Ok(EncodeInput::Stdin(read_bytes(path)?));
        }
        Ok(EncodeInput::Files(documents::expand_inputs(&[path], None)?))
    }

    /// Hand each piece to `f`, joined as `train --data` joins documents: a
    /// document's first piece gets a `\n` in front when the text before it
    /// does not end with one.
    fn for_each_piece(&self, f: &mut dyn FnMut(String) -> Result<()>) -> Result<()> {
        let mut ends_with_newline = None;
        let mut join = |piece: documents::Piece| {
            let mut text = piece.text;
            if piece.first && ends_with_newline == Some(false) {
                text.insert(0, '\n');
            }
            ends_with_newline = Some(text.ends_with('\n'));
            f(text).map_err(|e| lmforge::Error::Data(format!("{e:#}")))
        };
        let opts = ReadOptions::default();
        match self {
            EncodeInput::Stdin(bytes) => {
                documents::read_stream(&mut bytes.as_slice(), "<stdin>", &opts, &mut join)?
            }
            EncodeInput::Files(files) => documents::read_all(files, &opts, &mut join)?,
        };
        Ok(())
    }
}

/// The tokenizer `encode` uses; a `char` one is built from the input's text.
fn encode_tokenizer(
    spec: &TokenizerSpec,
    save: Option<&Path>,
    input: &EncodeInput,
) -> Result<Box<dyn Tokenizer>> {
    if *spec != TokenizerSpec::Char {
        if save.is_some() {
            bail!("--save-tokenizer only applies to --tokenizer char");
        }
        return spec
            .load()
            .with_context(|| format!("loading tokenizer {spec}"));
    }
    let mut chars = std::collections::BTreeSet::new();
    input.for_each_piece(&mut |text| {
        chars.extend(text.chars());
        Ok(())
    })?;
    let tok = tokenizer::CharTokenizer::from_chars(chars.into_iter().collect())?;
    match save {
        Some(path) => tok.save(path)?,
        None => eprintln!(
            "note: the char vocabulary comes from this file; --save-tokenizer keeps it for decode"
        ),
    }
    Ok(Box::new(tok))
}

/// Writes ids as the old all-at-once `encode` did: separated by spaces, a
/// line break after every 4096 ids and at the end.
struct IdWriter<W: Write> {
    out: W,
    count: usize,
    line: String,
}

impl<W: Write> IdWriter<W> {
    const PER_LINE: usize = 4096;

    fn write(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            if !self.count.is_multiple_of(Self::PER_LINE) {
                self.line.push(' ');
            }
            self.line.push_str(&id.to_string());
            self.count += 1;
            if self.count.is_multiple_of(Self::PER_LINE) {
                self.line.push('\n');
                self.out.write_all(self.line.as_bytes())?;
                self.line.clear();
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<usize> {
        if !self.line.is_empty() {
            self.line.push('\n');
            self.out.write_all(self.line.as_bytes())?;
        }
        self.out.flush()?;
        Ok(self.count)
    }
}

/// Encode pieces in batches of about this many bytes (in parallel with `--threads`).
const ENCODE_BATCH_BYTES: usize = 8 << 20;

fn encode(spec: &TokenizerSpec, threads: usize, save: Option<&Path>, file: &Path) -> Result<()> {
    let input = EncodeInput::open(file)?;
    let tok = encode_tokenizer(spec, save, &input)?;
    // With one thread, no pool: pieces are encoded here, one after another.
    let pool = (threads > 1)
        .then(|| rayon::ThreadPoolBuilder::new().num_threads(threads).build())
        .transpose()?;
    let mut out = IdWriter {
        out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
        count: 0,
        line: String::new(),
    };
    let (mut bytes, mut encoding) = (0usize, Duration::ZERO);
    let (mut batch, mut batch_bytes) = (Vec::<String>::new(), 0usize);
    let mut encode_batch = |batch: &mut Vec<String>, out: &mut IdWriter<_>| -> Result<()> {
        let start = Instant::now();
        let ids: Vec<Vec<u32>> = match &pool {
            Some(pool) => pool.install(|| {
                batch
                    .par_iter()
                    .map(|text| tok.encode_parallel(text, threads))
                    .collect::<lmforge::Result<_>>()
            })?,
            None => batch
                .iter()
                .map(|text| tok.encode(text))
                .collect::<lmforge::Result<_>>()?,
        };
        encoding += start.elapsed();
        batch.clear();
        ids.iter().try_for_each(|ids| out.write(ids))
    };
    input.for_each_piece(&mut |text| {
        bytes += text.len();
        batch_bytes += text.len();
        batch.push(text);
        if batch_bytes >= ENCODE_BATCH_BYTES {
            batch_bytes = 0;
            encode_batch(&mut batch, &mut out)?;
        }
        Ok(())
    })?;
    encode_batch(&mut batch, &mut out)?;
    let count = out.finish()?;
    eprintln!(
        "{} tokens, {} bytes, {:.3} bytes/token ({} tokenizer, vocabulary {}), {:.1} MB/s",
        count,
        bytes,
        bytes as f64 / count.max(1) as f64,
        tok.kind(),
        tok.vocab_size(),
        bytes as f64 / 1e6 / encoding.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn decode(spec: &TokenizerSpec, file: &Path) -> Result<()> {
    let tok = spec
        .load()
        .with_context(|| format!("loading tokenizer {spec}"))?;
    let bytes = read_bytes(file)?;
    let text = std::str::from_utf8(&bytes).context("the ids are not text")?;
    let mut ids = Vec::new();
    for word in text.split_ascii_whitespace() {
        let id: u32 = word
            .parse()
            .with_context(|| format!("{word:?} is not a token id"))?;
        if id as usize >= tok.vocab_size() {
            bail!(
                "token id {id} is outside the vocabulary (size {})",
                tok.vocab_size()
            );
        }
        ids.push(id);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&tok.decode_bytes(&ids))?;
    out.flush()?;
    Ok(())
}

fn train_command(
    config: &train::TrainConfig,
    files: &[PathBuf],
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    let start = Instant::now();
    let ranks = out.with_extension("tiktoken");
    if ranks == out {
        bail!(
            "--out {}: the tiktoken ranks would be written over it; name the tokenizer.json file",
            out.display()
        );
    }
    config.check()?; // a wrong argument is reported first
    for path in [out, ranks.as_path()] {
        lmforge::rundir::claim_output_file(path, overwrite)?;
    }
    let (tok, report) = train::train_files(files, config)?;
    tok.save(out)?;
    tok.save_tiktoken(&ranks)?;
    if tok.vocab_size() < config.vocab_size {
        lmforge::diag::warn(format!(
            "the vocabulary has {} tokens, not the {} of --vocab-size: after {} merges every \
             word of this corpus is a single token, so nothing is left to merge (a larger \
             corpus gives more)",
            tok.vocab_size(),
            config.vocab_size,
            report.merges
        ));
    }
    if report.skipped_documents > 0 {
        eprintln!(
            "skipped {} documents that are not valid UTF-8",
            report.skipped_documents
        );
    }
    eprintln!(
        "trained {} merges on {} bytes ({} distinct words) in {:.1} s; wrote {} and {}",
        report.merges,
        report.corpus_bytes,
        report.distinct_words,
        start.elapsed().as_secs_f64(),
        out.display(),
        ranks.display()
    );
    Ok(())
}
