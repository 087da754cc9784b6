//! Hugging Face folders in and out (GPT-2, and the Llama family: `llama`,
//! `qwen2`, `mistral`, see [`crate::checkpoint::hf_llama`]): `import-hf`
//! turns a `save_pretrained` folder (or a model in the local cache, see
//! [`cache`]) into an lmforge run directory; `export-hf` writes a run as a
//! folder that `transformers.AutoModelForCausalLM.from_pretrained`
//! (`GPT2LMHeadModel`, `LlamaForCausalLM` or `Qwen2ForCausalLM`) and
//! `AutoTokenizer` load.
//!
//! What a folder may hold, and what is read:
//! | file | read as |
//! |---|---|
//! | `config.json` | `model_type` `gpt2` (sizes from `n_layer`, `n_head`, `n_embd`, `n_positions`, `vocab_size`), or `llama`, `qwen2`, `mistral` |
//! | `model.safetensors`, or `model.safetensors.index.json` + shards | weights, F32/F16/BF16 (see [`crate::checkpoint::weights`]) |
//! | `tokenizer.json`, or `vocab.json` + `merges.txt` | the tokenizer; a folder with neither (what `model.save_pretrained` alone writes) is given one by `import-hf --tokenizer gpt2\|PATH` ([`read_with`]) |
//! | `tokenizer_config.json`, `chat_template.jinja`, `generation_config.json` | copied into the run: the model's chat template and stop tokens (see [`crate::chat::jinja`]) |
//! | `pytorch_model.bin` alone | refused, with the one-line conversion |
//!
//! No file is ever fetched from the network.

pub mod cache;

use crate::chat::ChatTemplate;
use crate::chat::jinja::{GENERATION_CONFIG_FILE, JinjaTemplate, TOKENIZER_CONFIG_FILE};
use crate::checkpoint::{self, CONFIG_FILE, TOKENIZER_FILE};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::model::Model;
use crate::tokenizer::{self, BpeTokenizer, Tokenizer, TokenizerSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// What was imported.
pub struct Imported {
    pub source: PathBuf,
    pub model: Model,
    pub params: Vec<f32>,
    pub tokenizer: Box<dyn Tokenizer>,
}

/// Read the model, weights and tokenizer of a Hugging Face folder, or of a
/// model name found in the local cache.
pub fn read(name_or_dir: &str) -> Result<Imported> {
    read_with(name_or_dir, None)
}

/// [`read`], with the tokenizer `tokenizer` instead of the folder's own (for
/// a folder that has none). A tokenizer with more tokens than the config's
/// `vocab_size` is refused: its last ids would have no embedding.
pub fn read_with(name_or_dir: &str, tokenizer: Option<&TokenizerSpec>) -> Result<Imported> {
    let source = cache::resolve(name_or_dir)?;
    if !source.join(CONFIG_FILE).exists() {
        return Err(Error::format(
            &source,
            "has no config.json: not a save_pretrained folder",
        ));
    }
    let (model, params) = checkpoint::load_model(&source)?;
    let given = tokenizer;
    let tokenizer = match given {
        Some(spec) => spec.load()?,
        None => read_tokenizer(&source)?,
    };
    let (tokens, vocab) = (tokenizer.vocab_size(), model.config.vocab_size);
    let named = given.map_or("the folder's tokenizer".into(), |s| {
        format!("the tokenizer {s}")
    });
    if tokens > vocab {
        return Err(Error::format(
            &source,
            format!(
                "{named} has {tokens} tokens, more than the model's vocabulary of {vocab} \
                 (config.json's vocab_size): ids from {vocab} on would have no embedding"
            ),
        ));
    }
    if given.is_some() && tokens < vocab {
        crate::diag::warn(format!(
            "{named} has {tokens} tokens, the model's vocabulary {vocab}: ids {tokens}..{vocab} \
             are never produced (fine for a vocabulary padded to a round size)"
        ));
    }
    Ok(Imported {
        source,
        model,
        params,
        tokenizer,
    })
}

/// `tokenizer.json`, or GPT-2's older pair `vocab.json` + `merges.txt`.
pub fn read_tokenizer(dir: &Path) -> Result<Box<dyn Tokenizer>> {
    let file = dir.join(TOKENIZER_FILE);
    if file.exists() {
        return tokenizer::load(&file);
    }
    let (vocab_path, merges_path) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !vocab_path.exists() || !merges_path.exists() {
        return Err(Error::format(
            dir,
            "has no tokenizer.json, nor vocab.json + merges.txt (model.save_pretrained alone \
             writes none): give the tokenizer the model was trained with, with \
             --tokenizer gpt2 or --tokenizer PATH/tokenizer.json",
        ));
    }
    let text = std::fs::read_to_string(&vocab_path).map_err(|e| Error::io(&vocab_path, e))?;
    let vocab: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&vocab_path, format!("not valid JSON: {e}")))?;
    let merges = std::fs::read_to_string(&merges_path).map_err(|e| Error::io(&merges_path, e))?;
    let merges: Vec<&str> = merges
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let specials: Vec<Value> = vocab
        .get("<|endoftext|>")
        .and_then(|id| id.as_u64())
        .map(|id| json!({"id": id, "content": "<|endoftext|>", "special": true}))
        .into_iter()
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let assembled = json!({
        "added_tokens": specials, "normalizer": null, "pre_tokenizer": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": false},
    });
    Ok(Box::new(BpeTokenizer::from_hf_json(
        &assembled,
        &vocab_path,
    )?))
}

/// Write `imported` as a run directory `out` (model, config, tokenizer, and
/// the chat files: the model's chat template): ready for `sample`, `chat`,
/// `serve` and `train --init-from`. A chat template that does not load is
/// copied all the same, with a warning (chatting will say why it fails).
pub fn import(name_or_dir: &str, out: &Path) -> Result<Imported> {
    import_with(name_or_dir, out, None)
}

/// [`import`], with the tokenizer `tokenizer` instead of the folder's own
/// (see [`read_with`]).
pub fn import_with(
    name_or_dir: &str,
    out: &Path,
    tokenizer: Option<&TokenizerSpec>,
) -> Result<Imported> {
    let imported = read_with(name_or_dir, tokenizer)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let eot = imported.tokenizer.eot_token();
    checkpoint::save_model(out, &imported.model, &imported.params, eot)?;
    imported.tokenizer.save(&out.join(TOKENIZER_FILE))?;
    crate::chat::jinja::sync_chat_files(Some(&imported.source), out)?;
    if let Err(e) = crate::chat::ChatFormat::find(out, imported.tokenizer.as_ref()) {
        crate::diag::warn(format!("the model's chat template will not work: {e}"));
    }
    Ok(imported)
}

/// `tokenizer_config.json` for `transformers`' `AutoTokenizer`, with the
/// chat template (as Jinja) when the vocabulary has its tokens.
fn tokenizer_config(tok: &dyn Tokenizer, block_size: usize) -> Value {
    let eot = tok.eot_token().map(|id| tok.decode(&[id]));
    // lmforge's own byte-level BPE is GPT-2's kind; any other file
    // (Llama, Qwen2, Mistral, char) is read by the generic fast class.
    let class = match tok.kind() {
        "gpt2" | "bpe" => "GPT2TokenizerFast",
        _ => "PreTrainedTokenizerFast",
    };
    let mut config = json!({
        "tokenizer_class": class,
        "model_max_length": block_size,
        "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
    });
    if ChatTemplate::from_tokenizer(tok).is_some() {
        config["chat_template"] = crate::chat::template::JINJA.into();
    }
    config
}

/// Write the run in `run` as a Hugging Face folder `out`: `model.safetensors`,
/// `config.json`, `tokenizer.json`, `tokenizer_config.json`,
/// `generation_config.json`. A run that carries its model's chat files
/// (imported, or fine-tuned from such a model) gives them as they are, with
/// lmforge's template added when it was fine-tuned on conversations through it.
pub fn export(run: &Path, out: &Path) -> Result<()> {
    let (model, params) = crate::finetune::load_run(run)?;
    let tok = tokenizer::load(&run.join(TOKENIZER_FILE))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    checkpoint::save_model(out, &model, &params, tok.eot_token())?;
    tok.save(&out.join(TOKENIZER_FILE))?;
    let write_json = |name: &str, value: Value| {
        let bytes = serde_json::to_vec_pretty(&value).expect("JSON serialises");
        write_atomic_bytes(&out.join(name), &bytes)
    };
    crate::chat::jinja::sync_chat_files(Some(run), out)?;
    let config_path = out.join(TOKENIZER_CONFIG_FILE);
    if !config_path.exists() {
        let config = tokenizer_config(tok.as_ref(), model.config.block_size);
        write_json(TOKENIZER_CONFIG_FILE, config)?;
    } else if JinjaTemplate::load(out)?.is_none() && ChatTemplate::from_tokenizer(&*tok).is_some() {
        let mut config = crate::chat::jinja::read_json(&config_path)?;
        let Some(fields) = config.as_object_mut() else {
            return Err(Error::format(&config_path, "not a JSON object"));
        };
        fields.insert("chat_template".into(), crate::chat::template::JINJA.into());
        write_json(TOKENIZER_CONFIG_FILE, config)?;
    }
    if !out.join(GENERATION_CONFIG_FILE).exists() {
        let eot = tok.eot_token();
        write_json(
            GENERATION_CONFIG_FILE,
            json!({"bos_token_id": eot, "eos_token_id": eot}),
        )?;
    }
    Ok(())
}
