//! `lmforge prepare`: tokenize corpora into token shards for `lmforge train --data DIR`.

use lmforge::data::prepare::{OnBad, PrepareOptions, prepare};
use lmforge::tokenizer::TokenizerSpec;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// Input files, directories (read recursively) or glob patterns: plain text,
    /// .gz/.xz/.zst, .tar (also nested, e.g. OpenWebText), JSON Lines, Parquet.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// `char` (vocabulary from a first pass over the inputs), `gpt2`, or a tokenizer.json.
    #[arg(long)]
    tokenizer: TokenizerSpec,
    /// Output directory: shards, manifest.json, tokenizer.json. Re-running resumes.
    #[arg(long)]
    out: PathBuf,
    /// Share of the tokens that go to the validation split: the tail of each
    /// large document, whole small documents picked by a seeded hash.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Seed of the train/validation split.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Tokenizing threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// The JSON Lines field (or Parquet column) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Documents that are not valid UTF-8: stop with an error, or skip and count them.
    #[arg(long, value_enum, default_value = "error")]
    on_bad_utf8: OnBadArg,
    /// Corrupt or truncated archives, and JSON Lines records over 64 MiB: stop
    /// with an error, or skip and list them.
    #[arg(long, value_enum, default_value = "error")]
    on_bad_archive: OnBadArg,
    /// With --tokenizer char: keep only the N most frequent characters, plus <unk>.
    #[arg(long)]
    char_vocab_max: Option<usize>,
    /// Close a shard once it holds this many tokens.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: u64,
    /// No progress output (by default: a bar on a terminal, else a line
    /// every 10 seconds).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnBadArg {
    Error,
    Skip,
}

impl From<OnBadArg> for OnBad {
    fn from(a: OnBadArg) -> Self {
        match a {
            OnBadArg::Error => OnBad::Error,
            OnBadArg::Skip => OnBad::Skip,
        }
    }
}

pub fn run(args: PrepareArgs) -> anyhow::Result<ExitCode> {
    let mut opts = PrepareOptions::new(args.inputs, args.tokenizer, &args.out);
    opts.val_fraction = args.val_fraction;
    opts.seed = args.seed;
    opts.threads = args.threads.unwrap_or(opts.threads);
    opts.text_field = args.text_field;
    opts.on_bad_utf8 = args.on_bad_utf8.into();
    opts.on_bad_archive = args.on_bad_archive.into();
    opts.char_vocab_max = args.char_vocab_max;
    opts.shard_tokens = args.shard_tokens;
    opts.progress = !args.quiet;
    let r = prepare(&opts)?;
    // A closed stdout (`| head`) ends the command quietly (see `is_broken_pipe`).
    let mut out = std::io::stdout().lock();
    let mb = r.bytes_read as f64 / 1e6;
    writeln!(
        out,
        "{}: {} documents, {} train + {} val tokens, vocabulary {} ({} inputs read, {} already done)",
        args.out.display(),
        r.documents,
        r.train_tokens,
        r.val_tokens,
        r.vocab_size,
        r.inputs_read,
        r.inputs_skipped
    )?;
    writeln!(
        out,
        "read {mb:.1} MB in {:.1} s ({:.1} MB/s)",
        r.seconds,
        mb / r.seconds.max(1e-9)
    )?;
    if let Some(warning) = &r.split_warning {
        eprintln!("warning: {warning}");
    }
    if r.skipped_bad_utf8 > 0 {
        writeln!(
            out,
            "skipped {} documents that are not valid UTF-8",
            r.skipped_bad_utf8
        )?;
    }
    if !r.bad_archives.is_empty() {
        writeln!(
            out,
            "skipped {} corrupt or truncated archives:",
            r.bad_archives.len()
        )?;
        for bad in &r.bad_archives {
            writeln!(out, "  {bad}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
