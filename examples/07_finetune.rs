//! Chapter 7: fine-tuning a trained run on new text.
//!
//! A fine-tune is a new run that starts from a trained one (its parent,
//! recorded with the hash of its weights) instead of random weights: the
//! same model and tokenizer, a new text, a small learning rate. This
//! chapter trains a small model on Shakespeare, then fine-tunes it twice on
//! a plain-English text: every weight (`lmforge train --init-from base`),
//! and only LoRA adapters (`--lora-rank 8`), whose `W + s·AᵀBᵀ` starts
//! exactly at the parent because `B` starts at zero. The new text may only
//! use characters the first text had (the tokenizer is the parent's).
//!
//! Run: `cargo run --release --example 07_finetune -- --threads 2`. It
//! writes `runs/example-07` (replaced on a re-run): `base`, `full`, `lora`.

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::cpu::Cpu;
use lmforge::model::{LoraConfig, LoraTarget};
use lmforge::train::{
    FineTuneRequest, Observe, Preset, Safeguards, Start, TrainJob, TrainOverrides, TrainSummary,
};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A plain-English text in Shakespeare's alphabet, for the model to adapt to.
const NEW_TEXT: &str = "The river runs down to the sea, and the sea is wide and grey.\n\
    We walked by the water in the morning, and the birds were loud.\n\
    A boat came in with fish; the men were tired, but they sang.\n";

/// A loss with four decimals, or `-` if there was no evaluation.
fn loss(value: Option<f32>) -> String {
    value.map_or("-".into(), |v| format!("{v:.4}"))
}

fn job<'a>(out: &Path, data: Option<&Path>, start: Start, stop: &'a AtomicBool) -> TrainJob<'a> {
    TrainJob {
        data: data.map(Path::to_path_buf),
        out: out.to_path_buf(),
        start,
        progress: true,
        stop,
        guards: Safeguards::default(),
        observe: Observe::default(),
    }
}

/// A fine-tune of `parent` (LoRA adapters of rank 8 if `lora`), with the
/// `finetune` preset's settings made small.
fn fine_tune(parent: &Path, lora: bool, tiny: bool) -> Start {
    let mut config = Preset::Finetune.config();
    config.model.block_size = 32;
    config.batch_size = 8;
    config.max_iters = if tiny { 6 } else { 200 };
    config.eval_interval = config.max_iters / 2;
    config.eval_iters = 4;
    config.warmup_iters = 1;
    config.lr = if lora { 1e-2 } else { 3e-3 };
    Start::FineTune(Box::new(FineTuneRequest {
        config,
        given: TrainOverrides::default(),
        init_from: parent.to_string_lossy().into_owned(),
        freeze_embeddings: false,
        freeze_layers: 0,
        lora: lora.then(|| LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: vec![LoraTarget::CAttn, LoraTarget::CProj, LoraTarget::CFc],
        }),
    }))
}

/// Train briefly on Shakespeare into `dir/base`, then continue on the new
/// text; returns the summaries of both parts.
pub fn run(tiny: bool, dir: &Path) -> lmforge::Result<[TrainSummary; 3]> {
    let stop = AtomicBool::new(false);
    let mut config = Preset::CharCpu.config();
    config.model.n_layer = 1;
    config.model.n_embd = 32;
    config.model.block_size = 32;
    config.batch_size = 8;
    config.max_iters = if tiny { 6 } else { 300 };
    config.eval_interval = config.max_iters / 2;
    config.eval_iters = 4;
    config.lr = 1e-2;
    if tiny {
        config.warmup_iters = 1; // a few steps that visibly learn
    }
    let base_dir = dir.join("base");
    let be = Cpu::new();
    let start = Start::New(Box::new(config));
    let base = lmforge::train::train(&be, job(&base_dir, None, start, &stop))?;
    println!(
        "trained on Shakespeare: {} steps, val loss {}",
        base.step,
        loss(base.val_loss)
    );

    let new_text = dir.join("new_text.txt");
    let text = NEW_TEXT.repeat(40);
    std::fs::write(&new_text, &text).map_err(|e| lmforge::Error::io(&new_text, e))?;
    let mut tuned = Vec::new();
    for (name, lora) in [("full", false), ("lora", true)] {
        let out = dir.join(name);
        let start = fine_tune(&base_dir, lora, tiny);
        let summary = lmforge::train::train(&be, job(&out, Some(&new_text), start, &stop))?;
        println!(
            "fine-tuned ({name}) on the new text: {} steps, val loss on the new text {}",
            summary.step,
            loss(summary.val_loss)
        );
        tuned.push(summary);
    }
    let lora = tuned.pop().expect("two fine-tunes");
    let full = tuned.pop().expect("two fine-tunes");
    Ok([base, full, lora])
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| {
        let dir = Path::new("runs/example-07");
        common::fresh_folder(dir)?;
        run(args.tiny, dir).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trained_run_is_fine_tuned_fully_and_with_lora() {
        let dir = tempfile::tempdir().unwrap();
        let [base, full, lora] = super::run(true, dir.path()).unwrap();
        assert_eq!((base.step, full.step, lora.step), (6, 6, 6));
        assert!(full.val_loss.unwrap() < 65f32.ln());
        assert!(lora.val_loss.unwrap() < 65f32.ln());
        assert!(dir.path().join("lora/adapter_model.safetensors").exists());
    }
}
