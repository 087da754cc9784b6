//! GGUF, the file llama.cpp, Ollama and LM Studio run: a run exported as
//! one (`lmforge export-gguf`), and one read back as a run (`lmforge
//! import-gguf`, or a `.gguf` path given to `sample`, `chat` and `serve`).
//!
//! - [`file`]: the container (header, metadata, tensor table, aligned data);
//! - [`quant`]: element types and block layouts (`F32`, `F16`, `BF16`,
//!   `Q8_0`, `Q4_0` written; those and `Q4_K`, `Q6_K` read);
//! - [`family`]: architecture keys, tensor names and layout changes for
//!   `gpt2`, `llama` (also `mistral`) and `qwen2`;
//! - [`vocab`]: the embedded tokenizer.
//!
//! Export lays the file out as llama.cpp's `convert_hf_to_gguf.py` does:
//! the same keys, names and Q/K row order; norms, biases and Llama 3.1's
//! `rope_freqs` stay `f32`, and a matrix whose rows are not whole blocks
//! falls back to `f16`. Import dequantizes every tensor to lmforge's `f32`
//! weights. A `.gguf` given to `sample`, `chat`, `serve` or `eval` becomes a
//! temporary run directory ([`open_run`]) of only its config and tokenizer,
//! and a note ([`SOURCE_FILE`]) that sends the loader to the file: its
//! tensors in f32 ([`load_f32`]) or its blocks packed ([`native`]).

pub mod family;
pub mod file;
pub mod native;
pub mod quant;
pub mod vocab;

use crate::backend::WeightType;
use crate::chat::jinja::{GENERATION_CONFIG_FILE, JinjaTemplate, TOKENIZER_CONFIG_FILE};
use crate::checkpoint::{self, CONFIG_FILE, TOKENIZER_FILE};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::model::{Arch, Model, ModelConfig};
use family::Change;
use file::{GgufFile, TensorPlan, Value};
use quant::GgmlType;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The element type `export-gguf --type` writes the matrices in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportType {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl ExportType {
    pub fn ggml(self) -> GgmlType {
        match self {
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            ExportType::Bf16 => GgmlType::BF16,
            ExportType::Q8_0 => GgmlType::Q8_0,
            ExportType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_ALL_F32`, `MOSTLY_F16`, ...).
    fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q4_0 => 2,
            ExportType::Q8_0 => 7,
            ExportType::Bf16 => 32,
        }
    }
}

/// What one tensor of an exported file is made from.
enum Source {
    /// A model tensor: its range in the parameters, lmforge shape and change.
    Param(std::ops::Range<usize>, Vec<usize>, Change),
    /// Zeros (a GPT-2 bias the model does not have).
    Zeros,
    /// Values computed at export (`rope_freqs`).
    Values(Vec<f32>),
}

/// The type a tensor of `shape` (GGUF order reversed: `(rows, cols)`) is written in.
fn tensor_type(shape: &[usize], ty: ExportType) -> GgmlType {
    let ggml = ty.ggml();
    match shape {
        [_, cols] if cols % ggml.block_len() == 0 => ggml,
        [_, _] => GgmlType::F16,
        _ => GgmlType::F32,
    }
}

/// The shape a tensor has in GGUF after `change`.
pub(crate) fn gguf_shape(shape: &[usize], change: Change) -> Vec<usize> {
    match (change, shape) {
        (Change::Transpose, [r, c]) => vec![*c, *r],
        _ => shape.to_vec(),
    }
}

/// The tensors of the file for `model`: name, GGUF shape and source.
fn export_tensors(model: &Model, arch: &str) -> Result<Vec<(String, Vec<usize>, Source)>> {
    let cfg = &model.config;
    let mut out = Vec::new();
    for t in &model.layout.tensors {
        let (name, change) = family::gguf_name(cfg, arch, &t.name).ok_or_else(|| {
            Error::Config(format!(
                "tensor {:?} has no GGUF name (a LoRA adapter left unmerged?)",
                t.name
            ))
        })?;
        let shape = gguf_shape(&t.shape, change);
        out.push((
            name,
            shape,
            Source::Param(t.range.clone(), t.shape.clone(), change),
        ));
    }
    if arch == "gpt2" {
        // llama.cpp's gpt2 has every bias; the ones lmforge's model lacks are zeros.
        for (hf_name, len) in checkpoint::absent_biases(cfg) {
            let (name, _) =
                family::gguf_name(cfg, arch, &hf_name).expect("a GPT-2 bias has a GGUF name");
            out.push((name, vec![len], Source::Zeros));
        }
        // As convert_hf_to_gguf.py: GPT-2's tied head written out as `output.weight`.
        if cfg.tie_embeddings {
            let wte = model.layout.wte.clone();
            let shape = vec![cfg.vocab_size, cfg.n_embd];
            out.push((
                "output.weight".into(),
                shape.clone(),
                Source::Param(wte, shape, Change::Same),
            ));
        }
    }
    if let Some(factors) = family::rope_freqs(cfg) {
        out.push((
            "rope_freqs.weight".into(),
            vec![factors.len()],
            Source::Values(factors),
        ));
    }
    Ok(out)
}

/// The special ids a run's `config.json` records.
fn special_ids(run: &Path) -> Result<vocab::SpecialIds> {
    let json = crate::chat::jinja::read_json(&run.join(CONFIG_FILE))?;
    let id = |key: &str| json.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
    Ok(vocab::SpecialIds {
        bos: id("bos_token_id"),
        eos: id("eos_token_id"),
    })
}

/// What [`export`] wrote.
pub struct Exported {
    pub arch: &'static str,
    pub tensors: usize,
    pub bytes: u64,
}

/// Write the run in `run` (LoRA adapters merged) as the GGUF file `out`,
/// its matrices in `ty`.
pub fn export(run: &Path, out: &Path, ty: ExportType) -> Result<Exported> {
    let tok_path = run.join(TOKENIZER_FILE);
    let tok_json = crate::chat::jinja::read_json(&tok_path)?;
    let (model, params) = crate::finetune::load_run(run)?;
    let cfg = &model.config;
    let arch = family::architecture(cfg)
        .map_err(|why| Error::format(run, format!("cannot export to GGUF: {why}")))?;
    let tokenizer_keys = vocab::to_gguf(&tok_json, cfg.vocab_size, special_ids(run)?)
        .map_err(|why| Error::format(&tok_path, format!("cannot export to GGUF: {why}")))?;
    let tok = crate::tokenizer::load(&tok_path)?;
    let name = run
        .file_name()
        .map_or("lmforge".into(), |n| n.to_string_lossy().into_owned());
    let s = |v: &str| Value::String(v.to_string());
    let mut metadata = vec![
        ("general.architecture".to_string(), s(arch)),
        ("general.type".to_string(), s("model")),
        ("general.name".to_string(), Value::String(name)),
        ("general.file_type".to_string(), Value::U32(ty.file_type())),
        ("general.quantization_version".to_string(), Value::U32(2)),
    ];
    metadata.extend(family::hparams(cfg, arch));
    metadata.extend(tokenizer_keys);
    let template = match JinjaTemplate::source(run)? {
        Some(source) => Some(source),
        None => crate::chat::ChatTemplate::from_tokenizer(tok.as_ref())
            .map(|_| crate::chat::template::JINJA.to_string()),
    };
    if let Some(template) = template {
        metadata.push((
            "tokenizer.chat_template".to_string(),
            Value::String(template),
        ));
    }
    let tensors = export_tensors(&model, arch)?;
    let plans: Vec<TensorPlan> = tensors
        .iter()
        .map(|(name, shape, source)| TensorPlan {
            name: name.clone(),
            shape: shape.clone(),
            ty: match source {
                Source::Values(_) => GgmlType::F32,
                _ => tensor_type(shape, ty),
            },
        })
        .collect();
    let mut next = tensors.iter();
    file::write(out, &metadata, &plans, |plan| match next.next() {
        Some((_, _, Source::Param(range, shape, change))) => {
            family::apply(*change, &params[range.clone()], shape, true)
        }
        Some((_, _, Source::Values(values))) => values.clone(),
        _ => vec![0.0; plan.shape.iter().product()],
    })?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(Exported {
        arch,
        tensors: plans.len(),
        bytes,
    })
}

/// A GGUF file read as a model.
pub struct Imported {
    pub model: Model,
    pub params: Vec<f32>,
    /// `tokenizer.json` for the embedded tokenizer, and its end-of-text id.
    pub tokenizer: serde_json::Value,
    pub eot: Option<u32>,
    pub chat_template: Option<String>,
    /// `general.architecture` and the types of the tensors read.
    pub arch: String,
    pub types: Vec<&'static str>,
}

/// Read the file `path`, mapped into memory.
fn map(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only while the file is parsed;
    // as everywhere memmap2 is used, the file must not be truncated meanwhile.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))
}

/// Read a GGUF file: the model (dequantized to `f32`), tokenizer and chat template.
pub fn read(path: &Path) -> Result<Imported> {
    let bytes = map(path)?;
    let file = GgufFile::parse(&bytes, path)?;
    let mut imported = describe(&file, path)?;
    let release = |read: &[u8]| release(&bytes, read);
    imported.params = read_params(&file, &imported.model, &imported.arch, path, &release)?;
    Ok(imported)
}

/// Everything of a parsed file but its weights (`params` left empty).
fn describe(file: &GgufFile, path: &Path) -> Result<Imported> {
    let bad = |message: String| Error::format(path, message);
    let cfg = family::config(file).map_err(bad)?;
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    crate::memory::param_count(&cfg).map_err(|e| bad(e.to_string()))?;
    let arch = native::arch_of(file);
    let model = Model::new(cfg)?;
    let (tokenizer, eot) = vocab::from_gguf(|k| file.get(k).cloned()).map_err(bad)?;
    let chat_template = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut types: Vec<&'static str> = file.tensors.iter().map(|t| t.ty.name()).collect();
    types.sort();
    types.dedup();
    Ok(Imported {
        model,
        params: Vec::new(),
        tokenizer,
        eot,
        chat_template,
        arch,
        types,
    })
}

/// Every model tensor from the file, changed back to lmforge's layout; a
/// tensor of the file the model has no place for is an error. `release`
/// gets each tensor's bytes in the file once they are copied.
fn read_params(
    file: &GgufFile,
    model: &Model,
    arch: &str,
    path: &Path,
    release: &dyn Fn(&[u8]),
) -> Result<Vec<f32>> {
    let cfg: &ModelConfig = &model.config;
    let mut params = vec![0f32; model.layout.total];
    crate::huge_pages::advise(&params);
    let mut used = std::collections::HashSet::new();
    for t in &model.layout.tensors {
        let (name, change) =
            family::gguf_name(cfg, arch, &t.name).expect("every model tensor has a GGUF name");
        let info = file
            .tensor(&name)
            .ok_or_else(|| Error::format(path, format!("tensor {name:?} is missing")))?;
        let expected = gguf_shape(&t.shape, change);
        if info.shape() != expected {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, expected {expected:?}",
                    info.shape()
                ),
            ));
        }
        read_tensor_into(
            file,
            info,
            change,
            &t.shape,
            &mut params[t.range.clone()],
            path,
            release,
        )?;
        used.insert(name);
    }
    for info in &file.tensors {
        let tied_copy = info.name == "output.weight" && cfg.tie_embeddings;
        let zero_bias = cfg.arch == Arch::Gpt && info.name.ends_with(".bias");
        let rope_freqs = info.name == "rope_freqs.weight"; // read into the config
        if !used.contains(&info.name) && !tied_copy && !zero_bias && !rope_freqs {
            return Err(Error::format(
                path,
                format!(
                    "tensor {:?} has no place in the {arch} model lmforge runs",
                    info.name
                ),
            ));
        }
    }
    Ok(params)
}

/// Tensor `info` of `file` as lmforge's tensor of `shape` (`change`
/// undone), into `out`, checked finite. The file's pages go to `release` as
/// soon as they are read, so that a large tensor never has its file pages,
/// a converted copy and its place in `out` in memory at once: a tensor kept
/// as it is converts straight into `out`, a few MiB at a time.
pub(crate) fn read_tensor_into(
    file: &GgufFile,
    info: &file::TensorInfo,
    change: Change,
    shape: &[usize],
    out: &mut [f32],
    path: &Path,
    release: &dyn Fn(&[u8]),
) -> Result<()> {
    let bytes = file.tensor_bytes(info);
    if change != Change::Same {
        let values = quant::dequantize(info.ty, bytes);
        release(bytes);
        checkpoint::integrity::check_finite(&values, &info.name, path)?;
        family::apply_into(change, &values, shape, false, out);
        return Ok(());
    }
    const PIECE_BYTES: usize = 4 << 20;
    let block = info.ty.block_bytes();
    let mut at = 0;
    for piece in bytes.chunks(PIECE_BYTES / block * block) {
        let values = quant::dequantize(info.ty, piece);
        checkpoint::integrity::check_finite(&values, &info.name, path)?;
        out[at..at + values.len()].copy_from_slice(&values);
        at += values.len();
        release(piece);
    }
    Ok(())
}

/// Write the GGUF file `path` as the run directory `out`: `model.safetensors`
/// and `config.json`, `tokenizer.json`, and the chat template as
/// `tokenizer_config.json` (with `generation_config.json`'s end-of-text id).
pub fn import(path: &Path, out: &Path) -> Result<Imported> {
    let imported = read(path)?;
    write_run(&imported, path, out, true)?;
    Ok(imported)
}

/// [`import`]'s files in `out`; `model.safetensors` only `with_weights`
/// (else `config.json` alone describes the model).
fn write_run(imported: &Imported, path: &Path, out: &Path, with_weights: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tok_bytes = serde_json::to_vec_pretty(&imported.tokenizer).expect("JSON serialises");
    let tok_path = out.join(TOKENIZER_FILE);
    write_atomic_bytes(&tok_path, &tok_bytes)?;
    let tok = crate::tokenizer::load(&tok_path)?;
    if tok.vocab_size() != imported.model.config.vocab_size {
        return Err(Error::format(
            path,
            format!(
                "the file's tokenizer has {} tokens, its embedding {} rows",
                tok.vocab_size(),
                imported.model.config.vocab_size
            ),
        ));
    }
    if with_weights {
        checkpoint::save_model(out, &imported.model, &imported.params, imported.eot)?;
    } else {
        checkpoint::save_config(out, &imported.model.config, imported.eot)?;
    }
    crate::chat::jinja::sync_chat_files(None, out)?;
    if let Some(template) = &imported.chat_template {
        let eot = imported.eot.map(|id| tok.decode(&[id]));
        let config = json!({"chat_template": template, "bos_token": eot, "eos_token": eot});
        let bytes = serde_json::to_vec_pretty(&config).expect("JSON serialises");
        write_atomic_bytes(&out.join(TOKENIZER_CONFIG_FILE), &bytes)?;
        let generation = json!({"eos_token_id": imported.eot});
        let bytes = serde_json::to_vec_pretty(&generation).expect("JSON serialises");
        write_atomic_bytes(&out.join(GENERATION_CONFIG_FILE), &bytes)?;
        if let Err(e) = crate::chat::ChatFormat::find(out, tok.as_ref()) {
            crate::diag::warn(format!("the model's chat template will not work: {e}"));
        }
    }
    Ok(())
}

/// Whether `path` names a GGUF file (by its extension) rather than a run directory.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && path.is_file()
}

/// A run directory to load: the directory given, or a `.gguf` file
/// converted into a temporary run directory (removed when this is dropped).
pub struct RunDir {
    dir: PathBuf,
    temporary: Option<PathBuf>,
}

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(tmp) = &self.temporary {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

/// The note in a run directory made by [`open_run`]: the GGUF file its
/// weights are read from and the type they are kept in.
pub const SOURCE_FILE: &str = "gguf_source.json";

/// `path` as a run directory, its weights to be kept as `wanted` (`None`: f32
/// for a run directory, [`native::default_type`] for a `.gguf` file). A
/// `.gguf` file becomes a temporary directory named after the file (so
/// `serve` lists the model by that name) holding its config, tokenizer and
/// [`SOURCE_FILE`]; the loader then reads the weights from the file itself
/// ([`load_f32`], [`load_packed`]), with no weight file written.
pub fn open_run(path: &Path, wanted: Option<WeightType>) -> Result<RunDir> {
    if !is_gguf(path) {
        return Ok(RunDir {
            dir: path.to_path_buf(),
            temporary: None,
        });
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("lmforge-gguf-{}-{n}", std::process::id()));
    let stem = path
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let run = RunDir {
        dir: tmp.join(stem),
        temporary: Some(tmp),
    };
    let bytes = map(path)?;
    let file = GgufFile::parse(&bytes, path)?;
    let imported = describe(&file, path)?;
    let ty = match wanted {
        Some(ty) => ty,
        None => native::default_type(&file, &imported.model, &imported.arch)?,
    };
    write_run(&imported, path, run.path(), false)?;
    let full = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let note = json!({"gguf": full, "weights": ty.name()});
    let note = serde_json::to_vec_pretty(&note).expect("JSON serialises");
    write_atomic_bytes(&run.path().join(SOURCE_FILE), &note)?;
    Ok(run)
}

/// The GGUF file and weight type [`open_run`] noted in `dir`, if it did.
pub fn source(dir: &Path) -> Result<Option<(PathBuf, WeightType)>> {
    let note = dir.join(SOURCE_FILE);
    if !note.exists() {
        return Ok(None);
    }
    let json = crate::chat::jinja::read_json(&note)?;
    let gguf = json.get("gguf").and_then(|v| v.as_str()).map(PathBuf::from);
    let ty = (json.get("weights").and_then(|v| v.as_str()))
        .and_then(|name| <WeightType as clap::ValueEnum>::from_str(name, false).ok());
    match (gguf, ty) {
        (Some(gguf), Some(ty)) => Ok(Some((gguf, ty))),
        _ => Err(Error::format(&note, "needs \"gguf\" and \"weights\"")),
    }
}

/// The weights of the GGUF file `path` for `model` in f32, one flat buffer
/// (each tensor's file pages handed back once copied).
pub fn load_f32(path: &Path, model: &Model) -> Result<Vec<f32>> {
    let bytes = map(path)?;
    let file = GgufFile::parse(&bytes, path)?;
    let arch = native::arch_of(&file);
    read_params(&file, model, &arch, path, &|read| release(&bytes, read))
}

/// The weights of the GGUF file `path` for `model`, packed as `ty` (see
/// [`native`]): the f32 buffer of the tensors left unpacked, and the matrices.
pub fn load_packed<B: crate::backend::Backend>(
    be: &B,
    path: &Path,
    model: &Model,
    ty: WeightType,
) -> Result<(Vec<f32>, crate::model::PackedWeights<B>)> {
    let bytes = map(path)?;
    let file = GgufFile::parse(&bytes, path)?;
    native::load(be, &file, path, model, ty, &|read| release(&bytes, read))
}

/// Let the kernel drop the pages of `read` (a part of `map` already copied
/// out): they are the file's, and would otherwise stay in the process's
/// memory beside the packed copy, doubling its peak.
fn release(map: &memmap2::Mmap, read: &[u8]) {
    let offset = read.as_ptr() as usize - map.as_ptr() as usize;
    // SAFETY: a read-only, shared file mapping: dropped pages are re-read
    // from the file on the next access, so no value seen through it changes.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, read.len())
    };
}
