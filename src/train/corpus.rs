//! What training reads: the text of `--data` (or the built-in demo corpus),
//! encoded in memory and split head/tail, or token shards memory-mapped
//! from a prepared directory.

use super::TrainConfig;
use crate::data::TokenSource;
use crate::data::shards::{Layout, ShardSet};
use crate::data::text;
use crate::error::{Error, Result};
use crate::tokenizer::{self, CharTokenizer, Tokenizer, TokenizerSpec};
use std::path::Path;

/// What `--data` points at, before tokenization.
pub enum Source {
    /// A text file, a directory of text, or the demo corpus.
    Text(String),
    /// Token shards from `lmforge prepare`, nanoGPT or llm.c, memory-mapped.
    Shards(ShardSet),
}

/// The training and validation tokens.
pub enum Corpus {
    /// Encoded text in memory: the head trains, the tail validates.
    Text {
        train: Vec<u32>,
        val: Vec<u32>,
    },
    Shards(ShardSet),
}

impl Corpus {
    /// `(training split, validation split)`.
    pub fn splits(&self) -> (&dyn TokenSource, &dyn TokenSource) {
        match self {
            Corpus::Text { train, val } => (train, val),
            Corpus::Shards(set) => (set.train(), set.val()),
        }
    }
}

/// Read or map `data` (`None`: the demo corpus).
pub fn open(data: Option<&Path>) -> Result<Source> {
    match data {
        Some(path) if Layout::detect(path)?.is_some() => Ok(Source::Shards(ShardSet::open(path)?)),
        Some(path) => Ok(Source::Text(text::read_corpus(path)?)),
        None => Ok(Source::Text(text::demo_corpus())),
    }
}

/// The tokenizer of a new run: the shards' own, a character vocabulary of the
/// text, or the one `config.tokenizer` names. With shards that carry a
/// tokenizer, `config.tokenizer` is set to what they hold, so the run
/// records the tokenizer it really trained with.
pub fn new_tokenizer(
    source: &Source,
    config: &mut TrainConfig,
    data: Option<&Path>,
) -> Result<Box<dyn Tokenizer>> {
    let spec = &config.tokenizer;
    let shown = || data.map(|d| d.display().to_string()).unwrap_or_default();
    match source {
        Source::Shards(set) => match set.tokenizer_path() {
            Some(path) => {
                let (tokenizer, spec) = shard_tokenizer(path, config, &shown())?;
                config.tokenizer = spec;
                Ok(tokenizer)
            }
            None if *spec == TokenizerSpec::Char => Err(Error::Config(format!(
                "{}: these shards carry no tokenizer.json (nanoGPT or llm.c layout); \
                 pass --tokenizer gpt2 or --tokenizer PATH to say which made them",
                shown()
            ))),
            None => spec.load(),
        },
        Source::Text(text) if *spec == TokenizerSpec::Char => {
            Ok(Box::new(CharTokenizer::from_text(text)?))
        }
        Source::Text(_) => spec.load(),
    }
}

/// Whether two tokenizers are the same vocabulary: the same size, the
/// same bytes for every id.
fn same_vocabulary(a: &dyn Tokenizer, b: &dyn Tokenizer) -> bool {
    a.vocab_size() == b.vocab_size()
        && (0..a.vocab_size() as u32).all(|id| a.decode_bytes(&[id]) == b.decode_bytes(&[id]))
}

/// The tokenizer of prepared shards (at `path`) and the spec to record for
/// it. A `--tokenizer` naming another vocabulary is an error; the preset's
/// default `char` gives way to the shards' own tokenizer with a warning.
fn shard_tokenizer(
    path: &Path,
    config: &TrainConfig,
    data: &str,
) -> Result<(Box<dyn Tokenizer>, TokenizerSpec)> {
    let tokenizer = tokenizer::load(path)?;
    let (spec, kind, n) = (&config.tokenizer, tokenizer.kind(), tokenizer.vocab_size());
    if *spec == TokenizerSpec::Char && kind == "char" {
        return Ok((tokenizer, TokenizerSpec::Char));
    }
    let gpt2 = TokenizerSpec::Gpt2.load()?;
    let recorded = if same_vocabulary(tokenizer.as_ref(), gpt2.as_ref()) {
        TokenizerSpec::Gpt2
    } else {
        TokenizerSpec::File(std::fs::canonicalize(path).unwrap_or_else(|_| path.into()))
    };
    if *spec == TokenizerSpec::Char {
        if config.preset.config().tokenizer != TokenizerSpec::Char {
            return Err(Error::Config(format!(
                "{data}: these shards were made with a {kind} tokenizer of {n} tokens, not \
                 --tokenizer char; leave --tokenizer out to train with theirs"
            )));
        }
        crate::diag::warn(format!(
            "{data}: these shards were made with a {kind} tokenizer of {n} tokens ({recorded}); \
             training with it (the preset's char tokenizer does not apply to shards)"
        ));
        return Ok((tokenizer, recorded));
    }
    let asked = spec.load()?;
    if !same_vocabulary(tokenizer.as_ref(), asked.as_ref()) {
        return Err(Error::Config(format!(
            "{data}: these shards were made with a {kind} tokenizer of {n} tokens, not with \
             --tokenizer {spec} ({} tokens); leave --tokenizer out to train with theirs",
            asked.vocab_size()
        )));
    }
    Ok((tokenizer, spec.clone()))
}

/// Read and encode the corpus (conversations with `config.sft`, in the chat
/// format of `chat_dir`), with the given tokenizer or one made for it; sets
/// a new run's vocabulary size.
pub fn read(
    config: &mut TrainConfig,
    data: Option<&Path>,
    tokenizer: Option<Box<dyn Tokenizer>>,
    chat_dir: &Path,
    (resumed, allow_partial): (bool, bool),
) -> Result<(Corpus, Box<dyn Tokenizer>)> {
    if config.sft {
        let path = data.ok_or_else(|| Error::Config("--sft needs a JSON Lines file".into()))?;
        let tokenizer = tokenizer.ok_or_else(|| {
            Error::Config("--sft fine-tunes a trained model: give --init-from".into())
        })?;
        let block = config.model.block_size;
        let corpus = conversations(
            path,
            tokenizer.as_ref(),
            chat_dir,
            config.val_fraction,
            block,
        )?;
        return Ok((corpus, tokenizer));
    }
    let source = open(data)?;
    super::guard::check_finished(&source, data, allow_partial)?;
    let fixed_vocab = tokenizer.is_some();
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => new_tokenizer(&source, config, data)?,
    };
    let (corpus, vocab_size) = tokenize(source, tokenizer.as_ref(), config.val_fraction)?;
    if (resumed || fixed_vocab) && vocab_size > config.model.vocab_size {
        return Err(Error::Config(format!(
            "the data needs a vocabulary of {vocab_size} tokens, the model has {}",
            config.model.vocab_size
        )));
    }
    if !fixed_vocab {
        config.model.vocab_size = vocab_size;
    }
    Ok((corpus, tokenizer))
}

/// Encode the text (shards are already tokens) and split it. Returns the
/// corpus and the vocabulary size the model needs: the tokenizer's, or more
/// when the shards say their ids go higher.
pub fn tokenize(
    source: Source,
    tokenizer: &dyn Tokenizer,
    val_fraction: f64,
) -> Result<(Corpus, usize)> {
    match source {
        Source::Text(text) => {
            let tokens = tokenizer.encode_parallel(&text, rayon::current_num_threads())?;
            let (train, val) = split(tokens, val_fraction);
            Ok((Corpus::Text { train, val }, tokenizer.vocab_size()))
        }
        Source::Shards(set) => {
            let vocab = tokenizer.vocab_size().max(set.vocab_size().unwrap_or(0));
            Ok((Corpus::Shards(set), vocab))
        }
    }
}

/// Split tokens into the head (train) and the tail (validation).
fn split(tokens: Vec<u32>, val_fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let n_val = ((tokens.len() as f64) * val_fraction).round() as usize;
    let mut train = tokens;
    let val = train.split_off(train.len() - n_val.min(train.len()));
    (train, val)
}

/// Conversations for supervised fine-tuning (`--sft`), rendered with the
/// chat format of the folder `chat_dir` (the parent's, or the resumed run's)
/// and packed (see [`crate::finetune::sft`]).
pub fn conversations(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    chat_dir: &Path,
    val_fraction: f64,
    block_size: usize,
) -> Result<Corpus> {
    let format = crate::chat::ChatFormat::find(chat_dir, tokenizer)?.ok_or_else(|| {
        Error::Config(format!(
            "{}: no chat_template in tokenizer_config.json and no lmforge chat tokens \
             (<|user|>, ...) in the tokenizer",
            chat_dir.display()
        ))
    })?;
    let examples = crate::finetune::sft::read(path, tokenizer, &format)?;
    let (train, val) = crate::finetune::sft::pack(examples, val_fraction, block_size + 2);
    Ok(Corpus::Text { train, val })
}
