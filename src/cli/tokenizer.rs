//! `lmforge tokenizer encode|decode|train`.
//!
//! `encode` prints token ids separated by spaces and reports the token count
//! and bytes per token on stderr; `decode` reads such ids back into text;
//! `train` learns a byte-level BPE vocabulary from text files.

use anyhow::{Context, Result, bail};
use lmforge::tokenizer::{self, Pattern, Tokenizer, TokenizerSpec, train};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct TokenizerCommand {
    #[command(subcommand)]
    command: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Encode a text file to token ids (printed to stdout).
    Encode {
        /// `gpt2`, `char` (vocabulary built from FILE itself) or a tokenizer.json.
        #[arg(long, default_value = "gpt2")]
        tokenizer: TokenizerSpec,
        /// Threads to encode with (1 = no parallelism).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// With `--tokenizer char`: write the vocabulary here, for `decode`.
        #[arg(long)]
        save_tokenizer: Option<PathBuf>,
        /// UTF-8 text file; `-` reads stdin.
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
            train_command(&config, &files, &out)
        }
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
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

fn encode(spec: &TokenizerSpec, threads: usize, save: Option<&Path>, file: &Path) -> Result<()> {
    let bytes = read_input(file)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| lmforge::Error::NotUtf8 {
        path: file.to_path_buf(),
        offset: e.valid_up_to() as u64,
    })?;
    let tok: Box<dyn Tokenizer> = if *spec == TokenizerSpec::Char {
        let tok = tokenizer::CharTokenizer::from_text(text)?;
        match save {
            Some(path) => tok.save(path)?,
            None => eprintln!(
                "note: the char vocabulary comes from this file; --save-tokenizer keeps it for decode"
            ),
        }
        Box::new(tok)
    } else {
        if save.is_some() {
            bail!("--save-tokenizer only applies to --tokenizer char");
        }
        spec.load()
            .with_context(|| format!("loading tokenizer {spec}"))?
    };
    let start = Instant::now();
    let ids = if threads > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        pool.install(|| tok.encode_parallel(text, threads * 4))?
    } else {
        tok.encode(text)?
    };
    let seconds = start.elapsed().as_secs_f64();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = String::new();
    for chunk in ids.chunks(4096) {
        line.clear();
        for &id in chunk {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&id.to_string());
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    eprintln!(
        "{} tokens, {} bytes, {:.3} bytes/token ({} tokenizer, vocabulary {}), {:.1} MB/s",
        ids.len(),
        text.len(),
        text.len() as f64 / ids.len().max(1) as f64,
        tok.kind(),
        tok.vocab_size(),
        text.len() as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}

fn decode(spec: &TokenizerSpec, file: &Path) -> Result<()> {
    let tok = spec
        .load()
        .with_context(|| format!("loading tokenizer {spec}"))?;
    let bytes = read_input(file)?;
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

fn train_command(config: &train::TrainConfig, files: &[PathBuf], out: &Path) -> Result<()> {
    let start = Instant::now();
    let (tok, report) = train::train_files(files, config)?;
    tok.save(out)?;
    let ranks = out.with_extension("tiktoken");
    tok.save_tiktoken(&ranks)?;
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
