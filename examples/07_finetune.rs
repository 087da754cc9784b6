//! Chapter 7: fine-tuning a trained run on new text.
//!
//! lmforge's fine-tuning command (start a new run from a trained one,
//! recorded as its parent, with LoRA and chat data) is being built on
//! another branch and is not in this version. Until it lands, this chapter
//! shows the nearest thing the library already does, and says so: it
//! continues a trained run (`--resume`) on a new text, with the run's own
//! character tokenizer, so the model adapts to the new text's style.
//! The new text may only use characters the first text had.
//!
//! Run: `cargo run --release --example 07_finetune`.

use lmforge::backend::cpu::Cpu;
use lmforge::train::{Observe, Preset, Start, TrainJob, TrainOverrides, TrainSummary};
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
        observe: Observe::default(),
    }
}

/// Train briefly on Shakespeare into `dir/base`, then continue on the new
/// text; returns the summaries of both parts.
pub fn run(tiny: bool, dir: &Path) -> lmforge::Result<(TrainSummary, TrainSummary)> {
    println!("NOTE: the fine-tuning feature is being built on another branch; this chapter");
    println!("      continues a trained run on new text with --resume, which works today.");
    let stop = AtomicBool::new(false);
    let mut config = Preset::CharCpu.config();
    config.model.n_layer = 1;
    config.model.n_embd = 32;
    config.model.block_size = 32;
    config.batch_size = 8;
    config.max_iters = if tiny { 6 } else { 300 };
    config.eval_interval = config.max_iters / 2;
    config.eval_iters = 4;
    if tiny {
        // A short warmup and a high rate, so a few steps visibly learn.
        config.warmup_iters = 1;
        config.lr = 1e-2;
    }
    let base_steps = config.max_iters;
    let run_dir = dir.join("base");
    let be = Cpu::new();
    let base = lmforge::train::train(&be, job(&run_dir, None, Start::New(config), &stop))?;
    println!(
        "trained on Shakespeare: {} steps, val loss {}",
        base.step,
        loss(base.val_loss)
    );

    let new_text = dir.join("new_text.txt");
    let text = NEW_TEXT.repeat(40);
    std::fs::write(&new_text, &text).map_err(|e| lmforge::Error::io(&new_text, e))?;
    // Same model and tokenizer; more steps, a small constant learning rate.
    let more = TrainOverrides {
        max_iters: Some(base_steps + if tiny { 6 } else { 200 }),
        lr: Some(if tiny { 1e-2 } else { 3e-4 }),
        ..TrainOverrides::default()
    };
    let tuned = lmforge::train::train(
        &be,
        job(&run_dir, Some(&new_text), Start::Resume(vec![more]), &stop),
    )?;
    println!(
        "continued on the new text: {} steps, val loss on the new text {}",
        tuned.step,
        loss(tuned.val_loss)
    );
    Ok((base, tuned))
}

fn main() -> lmforge::Result<()> {
    lmforge::backend::cpu::init_threads(None)?;
    let tiny = std::env::var_os("LMFORGE_TINY").is_some();
    let dir = Path::new("runs/example-07");
    run(tiny, dir).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trained_run_continues_on_new_text() {
        let dir = tempfile::tempdir().unwrap();
        let (base, tuned) = super::run(true, dir.path()).unwrap();
        assert_eq!((base.step, tuned.step), (6, 12));
        assert!(tuned.val_loss.unwrap() < 65f32.ln());
    }
}
