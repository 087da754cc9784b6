//! Opening prepare's output directory: a new one gets a tokenizer and an
//! empty manifest; an existing one is checked (same settings, same
//! tokenizer), cleared of what an interrupted run left unlisted, and its
//! finished inputs are skipped.

use super::{PrepareOptions, tokenizer_for};
use crate::data::documents::InputFile;
use crate::data::shards::{
    Dtype, MANIFEST_FILE, MANIFEST_VERSION, Manifest, PrepareSettings, TOKENIZER_FILE, fnv1a64,
};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// The manifest and tokenizer of `opts.out`, created (and saved) if new.
pub fn open_output(
    opts: &PrepareOptions,
    inputs: &[InputFile],
) -> Result<(Manifest, Box<dyn Tokenizer>)> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::fsutil::remove_stale_temps(out, &[MANIFEST_FILE, TOKENIZER_FILE])?;
    let manifest_path = out.join(MANIFEST_FILE);
    let tokenizer_path = out.join(TOKENIZER_FILE);
    let (manifest, tokenizer) = if manifest_path.exists() {
        let manifest = Manifest::load(&manifest_path)?;
        check_same_settings(&manifest_path, &manifest.settings, &opts.settings())?;
        let bytes = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        if fnv1a64(&bytes) != manifest.tokenizer_id {
            return Err(Error::format(
                &tokenizer_path,
                "does not match manifest.json's tokenizer id; prepare into a new --out directory",
            ));
        }
        (manifest, crate::tokenizer::load(&tokenizer_path)?)
    } else {
        check_fresh_dir(out)?;
        let tokenizer = tokenizer_for(opts, inputs)?;
        let bytes = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        let manifest = Manifest {
            format: Manifest::FORMAT.into(),
            version: MANIFEST_VERSION,
            tokenizer_kind: tokenizer.kind().into(),
            tokenizer_id: fnv1a64(&bytes),
            vocab_size: tokenizer.vocab_size(),
            eot_token: tokenizer.eot_token(),
            dtype: Dtype::for_vocab(tokenizer.vocab_size()),
            settings: opts.settings(),
            train: Vec::new(),
            val: Vec::new(),
            finished_inputs: Vec::new(),
            inputs: Some(inputs.len()),
            complete: false,
        };
        manifest.save(&manifest_path)?;
        (manifest, tokenizer)
    };
    remove_unlisted_shards(out, &manifest)?;
    Ok((manifest, tokenizer))
}

/// The inputs the manifest does not list as finished. An input it lists
/// that has changed since (another size or modification time) is an error:
/// its earlier tokens are in the shards, and reading it again would count
/// it twice.
pub fn unfinished(manifest: &Manifest, inputs: &[InputFile], out: &Path) -> Result<Vec<InputFile>> {
    let mut todo = Vec::new();
    for input in inputs {
        let path = input.path.to_string_lossy();
        let Some(done) = manifest.finished_inputs.iter().find(|f| f.path == path) else {
            todo.push(input.clone());
            continue;
        };
        let same_time = match (done.modified_ns, input.modified_ns) {
            (Some(then), Some(now)) => then == now,
            _ => true, // not recorded (an earlier version), or not known here
        };
        if done.bytes != input.bytes || !same_time {
            return Err(Error::Data(format!(
                "{path} changed since it was prepared into {} ({} bytes then, {} now{}): its \
                 earlier tokens are in the shards already, and reading it again would count it \
                 twice; put the file back as it was, or prepare into a new --out directory",
                out.display(),
                done.bytes,
                input.bytes,
                if same_time { "" } else { ", modified since" }
            )));
        }
    }
    Ok(todo)
}

/// A new output directory may only hold what an interrupted first run leaves.
fn check_fresh_dir(out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let name = entry.map_err(|e| Error::io(out, e))?.file_name();
        let name = name.to_string_lossy();
        if name != TOKENIZER_FILE && name != crate::rundir::LOCK_FILE && !name.contains(".tmp") {
            return Err(Error::format(
                out,
                format!(
                    "--out directory holds {name:?} but no manifest.json: not a prepare \
                     directory; use a new or empty directory"
                ),
            ));
        }
    }
    Ok(())
}

fn check_same_settings(path: &Path, old: &PrepareSettings, new: &PrepareSettings) -> Result<()> {
    let limit = |v: Option<usize>| v.map_or("none".to_string(), |n| n.to_string());
    let pairs = [
        ("--tokenizer", old.tokenizer.clone(), new.tokenizer.clone()),
        (
            "--char-vocab-max",
            limit(old.char_vocab_max),
            limit(new.char_vocab_max),
        ),
        (
            "--val-fraction",
            old.val_fraction.to_string(),
            new.val_fraction.to_string(),
        ),
        ("--seed", old.seed.to_string(), new.seed.to_string()),
        (
            "--text-field",
            old.text_field.clone(),
            new.text_field.clone(),
        ),
        ("the split rule", old.split.clone(), new.split.clone()),
    ];
    let differ: Vec<String> = pairs
        .iter()
        .filter(|(_, then, now)| then != now)
        .map(|(flag, then, now)| format!("{flag} {then} (now {now})"))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::format(
        path,
        format!(
            "this directory was prepared with other settings: {}; resume with the same \
             settings, or prepare into a new --out",
            differ.join(", ")
        ),
    ))
}

/// Delete shard files (and temporary files) an interrupted run left unlisted.
fn remove_unlisted_shards(out: &Path, manifest: &Manifest) -> Result<()> {
    let listed: std::collections::HashSet<&str> = manifest
        .train
        .iter()
        .chain(&manifest.val)
        .map(|s| s.file.as_str())
        .collect();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let path = entry.map_err(|e| Error::io(out, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let ours = (name.starts_with("train_") || name.starts_with("val_"))
            && (name.ends_with(".bin") || name.ends_with(".bin.tmp"));
        if ours && !listed.contains(name.as_ref()) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
