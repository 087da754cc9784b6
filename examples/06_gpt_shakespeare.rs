//! Chapter 6: the whole GPT (token and position embeddings, blocks of
//! attention and MLP, a final layer norm and the LM head), trained on Tiny
//! Shakespeare for a minute with the `char-cpu` preset, then sampled.
//!
//! This is what `lmforge train` does, called as a library: `train::train`
//! runs the loop (forward, loss, backward, AdamW, evaluations, checkpoints)
//! and leaves a run directory with `loss.png`, `metrics.jsonl` and the
//! model. A timer asks it to stop after 60 seconds, as Ctrl-C would.
//!
//! Run: `cargo run --release --example 06_gpt_shakespeare` (the run goes
//! to `runs/example-06`; look at `runs/example-06/loss.png` afterwards).

use lmforge::backend::cpu::Cpu;
use lmforge::checkpoint;
use lmforge::sample::{SampleOptions, generate};
use lmforge::train::{Observe, Preset, Start, TrainJob, TrainSummary};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Train into `out` for at most `seconds`, then sample; returns the summary and the sample.
pub fn run(tiny: bool, out: &Path, seconds: u64) -> lmforge::Result<(TrainSummary, String)> {
    let mut config = Preset::CharCpu.config();
    if tiny {
        // A model and a run small enough for the test suite; a short warmup
        // and a high rate, so eight steps visibly learn.
        config.model.n_layer = 1;
        config.model.n_embd = 32;
        config.model.block_size = 16;
        config.batch_size = 4;
        config.max_iters = 8;
        config.eval_interval = 4;
        config.eval_iters = 2;
        config.warmup_iters = 1;
        config.lr = 1e-2;
    }
    let m = &config.model;
    println!(
        "GPT: {} layers, {} heads, C = {}, block T = {}, batch B = {}",
        m.n_layer, m.n_head, m.n_embd, m.block_size, config.batch_size
    );
    println!(
        "training for up to {} steps or {seconds} s into {}",
        config.max_iters,
        out.display()
    );

    let stop = AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        let timer = scope.spawn(|| {
            // Sleep in short naps so the timer ends soon after training does.
            for _ in 0..seconds * 10 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::SeqCst);
        });
        let job = TrainJob {
            data: None, // the built-in Tiny Shakespeare
            out: out.to_path_buf(),
            start: Start::New(Box::new(config)),
            progress: true,
            stop: &stop,
            guards: lmforge::train::Safeguards::default(),
            observe: Observe::default(),
        };
        let summary = lmforge::train::train(&Cpu::new(), job);
        stop.store(true, Ordering::SeqCst);
        let _ = timer.join();
        summary
    })?;
    let val = summary
        .val_loss
        .map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "stopped at step {}: last validation loss {val}, {:.0} tokens/s",
        summary.step, summary.tokens_per_sec
    );
    println!("loss plot: {}", out.join("loss.png").display());

    let text = sample(out, if tiny { 30 } else { 400 })?;
    Ok((summary, text))
}

/// Load the run's model and tokenizer, as `lmforge sample` does, and
/// write `tokens` characters after "ROMEO:".
fn sample(out: &Path, tokens: usize) -> lmforge::Result<String> {
    let (model, params) = checkpoint::load_model(out)?;
    let tokenizer = lmforge::tokenizer::load(&out.join(checkpoint::TOKENIZER_FILE))?;
    let be = Cpu::new();
    let params = lmforge::backend::Backend::upload(&be, params)?;
    let opts = SampleOptions {
        max_new_tokens: tokens,
        temperature: 0.8,
        top_k: Some(40),
        seed: 1,
        ..SampleOptions::default()
    };
    let prompt = tokenizer.encode("ROMEO:")?;
    let new = generate(&be, &model, &params, &prompt, &opts, |_| Ok(()))?;
    let text = String::from_utf8_lossy(&tokenizer.decode_bytes(&new)).into_owned();
    println!("--- sample ---\nROMEO:{text}");
    Ok(text)
}

fn main() -> lmforge::Result<()> {
    lmforge::backend::cpu::init_threads(None)?;
    let tiny = std::env::var_os("LMFORGE_TINY").is_some();
    run(tiny, Path::new("runs/example-06"), 60).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn trains_writes_the_plot_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (summary, text) = super::run(true, dir.path(), 120).unwrap();
        assert_eq!(summary.step, 8);
        assert!(summary.val_loss.unwrap() < 65f32.ln(), "learned something");
        assert!(dir.path().join("loss.png").is_file());
        assert_eq!(text.chars().count(), 30);
    }
}
