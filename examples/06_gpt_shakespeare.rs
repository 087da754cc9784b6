//! Chapter 6: the whole GPT (token and position embeddings, blocks of
//! attention and MLP, a final layer norm and the LM head), trained on Tiny
//! Shakespeare with the `char-cpu` preset, then saved and sampled.
//!
//! The training loop is written out here, step by step, as in the course's
//! notebook; `lmforge train` runs this same loop (with checkpoints, plots
//! and Ctrl-C on top):
//!
//! ```text
//! course (PyTorch)                 here
//! xb, yb = get_batch('train')      batches.fill(..)                    xb, yb: (B, T) token ids
//! logits = model(xb)               model.forward(..)                   logits: (B, T, V)
//! optimizer.zero_grad()            be.fill(grads, 0.0)
//! loss = F.cross_entropy(..)       model.backward(..) starts with the loss, then
//! loss.backward()                    walks the layers in reverse, adding into grads
//! optimizer.step()                 adamw.update(..)                    clip, then AdamW
//! ```
//!
//! Memory is decided before the loop: parameters, gradients, the two AdamW
//! moments and the activations are a few flat buffers sized from the
//! config, and the loop allocates nothing.
//!
//! Run: `cargo run --release --example 06_gpt_shakespeare -- --threads 2`.
//! It writes `runs/example-06` (replaced on a re-run), a run that
//! `lmforge sample runs/example-06` and `lmforge chat runs/example-06` read.

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::Backend;
use lmforge::backend::cpu::Cpu;
use lmforge::checkpoint;
use lmforge::data::sampler::BatchSampler;
use lmforge::model::{Activations, Grads, Mode, Model, Window};
use lmforge::optim::AdamW;
use lmforge::sample::{SampleOptions, generate};
use lmforge::tokenizer::{CharTokenizer, Tokenizer};
use lmforge::train::{Preset, TrainConfig};
use std::path::Path;

/// The validation loss before and after training, and the sample.
pub struct Outcome {
    pub val_before: f32,
    pub val_after: f32,
    pub sample: String,
}

/// The `char-cpu` preset for a vocabulary of `vocab_size` characters (made
/// test-sized when `tiny`).
fn config(vocab_size: usize, tiny: bool) -> TrainConfig {
    let mut config = Preset::CharCpu.config();
    config.model.vocab_size = vocab_size;
    if tiny {
        // Small enough for the test suite; a short warmup and a high rate,
        // so a few steps visibly learn.
        config.model.n_layer = 1;
        config.model.n_embd = 32;
        config.model.block_size = 16;
        config.batch_size = 4;
        config.max_iters = 30;
        config.eval_interval = 10;
        config.eval_iters = 2;
        config.warmup_iters = 1;
        config.lr = 1e-2;
    }
    config
}

/// Mean loss over `config.eval_iters` validation batches, without dropout.
fn estimate_loss(
    be: &Cpu,
    (model, params, acts): (&Model, &Vec<f32>, &mut Activations<Cpu>),
    batches: &BatchSampler,
    config: &TrainConfig,
) -> f32 {
    let (b, t) = (config.batch_size, config.model.block_size);
    let (mut xb, mut yb) = (vec![0u32; b * t], vec![0u32; b * t]);
    let mut sum = 0.0;
    for i in 0..config.eval_iters {
        batches.fill(1, i, &mut xb, &mut yb);
        model.forward(be, params, acts, &xb, Window::batch(b, t), Mode::Eval);
        sum += model.loss(be, acts, &yb, Window::batch(b, t));
    }
    sum / config.eval_iters as f32
}

/// Train on the built-in text, save the run into `out`, and sample from it.
pub fn run(tiny: bool, out: &Path) -> lmforge::Result<Outcome> {
    let text = lmforge::data::text::demo_corpus();
    let tokenizer = CharTokenizer::from_text(&text)?;
    let ids = tokenizer.encode(&text)?;
    let split = ids.len() * 9 / 10; // the first 90% trains, the rest validates
    let (train, val) = (ids[..split].to_vec(), ids[split..].to_vec());
    let config = config(tokenizer.vocab_size(), tiny);
    let m = &config.model;
    let (b, t) = (config.batch_size, m.block_size);
    println!(
        "GPT: {} layers, {} heads, C = {}, block T = {}, batch B = {}, V = {}",
        m.n_layer, m.n_head, m.n_embd, t, b, m.vocab_size
    );

    // Every buffer, sized once from the config.
    let be = Cpu::new();
    let model = Model::new(config.model.clone())?;
    let n = model.num_params();
    println!("{n} parameters");
    let mut params = be.upload(model.init_params(config.seed))?;
    let mut grads = Grads::new(&be, 0, n)?;
    let mut acts = Activations::training(&be, &model.config, b, t)?;
    let mut adamw = AdamW::sharded(&be, config.adamw(), &model.layout.tensors, 0, 0..n)?;
    let batches = BatchSampler::new(&train, b, t, config.seed, "training")?;
    let val_batches = BatchSampler::new(&val, b, t, config.seed, "validation")?;
    let (mut xb, mut yb) = (vec![0u32; b * t], vec![0u32; b * t]);
    let (window, schedule) = (Window::batch(b, t), config.schedule());

    let val_before = estimate_loss(&be, (&model, &params, &mut acts), &val_batches, &config);
    println!(
        "step 0: val loss {val_before:.4} (a uniform guess: ln V = {:.4})",
        (m.vocab_size as f32).ln()
    );
    for step in 0..config.max_iters {
        batches.fill(0, step, &mut xb, &mut yb);
        let mode = Mode::Train {
            seed: config.seed,
            step_key: step,
        };
        be.fill(Cpu::view_mut(&mut grads.buf, 0..n), 0.0);
        model.forward(&be, &params, &mut acts, &xb, window, mode);
        // d(mean loss)/d(each position's loss) = 1 / (B * T)
        let loss = model.backward(
            &be,
            &params,
            &mut grads,
            &mut acts,
            &yb,
            window,
            mode,
            1.0 / (b * t) as f32,
        );
        let norm = adamw.update(
            &be,
            &mut params,
            &grads.buf,
            schedule.at(step),
            config.grad_clip,
        );
        if (step + 1) % config.eval_interval == 0 {
            let val = estimate_loss(&be, (&model, &params, &mut acts), &val_batches, &config);
            println!(
                "step {}: train loss {loss:.4}, val loss {val:.4}, gradient norm {norm:.3}",
                step + 1
            );
        }
    }
    let val_after = estimate_loss(&be, (&model, &params, &mut acts), &val_batches, &config);

    // A run folder that `lmforge sample` reads: tokenizer first (the model
    // file records its checksum), then weights and config.
    common::fresh_folder(out)?;
    tokenizer.save(&out.join(checkpoint::TOKENIZER_FILE))?;
    checkpoint::save_model(out, &model, &params, tokenizer.eot_token())?;
    let sample = sample(out, if tiny { 30 } else { 400 })?;
    Ok(Outcome {
        val_before,
        val_after,
        sample,
    })
}

/// Load the run back, as `lmforge sample` does, and write `tokens`
/// characters after "ROMEO:".
fn sample(out: &Path, tokens: usize) -> lmforge::Result<String> {
    let (model, params) = checkpoint::load_model(out)?;
    let tokenizer = checkpoint::load_tokenizer(out, &model)?;
    let be = Cpu::new();
    let params = be.upload(params)?;
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

fn main() -> std::process::ExitCode {
    common::main_with(|args| run(args.tiny, Path::new("runs/example-06")).map(|_| ()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_written_out_loop_learns_saves_a_run_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("example-06");
        let first = super::run(true, &out).unwrap();
        assert!(
            first.val_after < first.val_before - 0.3,
            "{} -> {}",
            first.val_before,
            first.val_after
        );
        assert_eq!(first.sample.chars().count(), 30);
        // A second run replaces the first and, given the same seed, repeats it.
        let second = super::run(true, &out).unwrap();
        assert_eq!(first.val_after, second.val_after);
        assert_eq!(first.sample, second.sample);
    }
}
