//! Chapter 3: the bigram model, the course's first language model. It is
//! one `(V, V)` table: row `i` holds the logits of the token that follows
//! token `i`. Training pushes up the logit of the character that actually
//! came next (cross-entropy); sampling draws from `softmax(row)` again and
//! again.
//!
//! ```text
//! logits (B, T, V) = table[tokens (B, T)]     loss = -log softmax(logits)[target]
//! ```
//!
//! This uses the library's `Trainer` (forward, loss, backward, AdamW) with
//! the `bigram` preset, and `sample::generate` to write text.
//!
//! Run: `cargo run --release --example 03_bigram`.

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::cpu::Cpu;
use lmforge::sample::{SampleOptions, generate};
use lmforge::tokenizer::{CharTokenizer, Tokenizer};
use lmforge::train::{Preset, Split, Trainer};

/// Validation loss before and after training, and the sample.
pub struct Outcome {
    pub val_before: f32,
    pub val_after: f32,
    pub sample: String,
}

pub fn run(tiny: bool) -> lmforge::Result<Outcome> {
    let text = lmforge::data::text::demo_corpus();
    let tokenizer = CharTokenizer::from_text(&text)?;
    let ids = tokenizer.encode(&text)?;
    let split = ids.len() * 9 / 10;
    let (train, val) = (ids[..split].to_vec(), ids[split..].to_vec());
    println!(
        "{} tokens: {} to train on, {} to validate",
        ids.len(),
        train.len(),
        val.len()
    );

    let mut config = Preset::Bigram.config();
    config.model.vocab_size = tokenizer.vocab_size();
    config.max_iters = if tiny { 60 } else { 3000 };
    config.eval_iters = if tiny { 4 } else { 50 };
    let v = config.model.vocab_size;
    let (b, t) = (config.batch_size, config.model.block_size);
    println!(
        "the table: ({v}, {v}) = {} parameters; a batch: (B, T) = ({b}, {t})",
        v * v
    );
    println!(
        "a uniform guess scores ln({v}) = {:.3} nats per token",
        (v as f32).ln()
    );

    let be = Cpu::new();
    let mut trainer = Trainer::new(&be, &config, (&train, &val), None, None)?;
    let val_before = trainer.evaluate(Split::Val, 0)?;
    println!("step 0: val loss {val_before:.4}");
    for step in 0..config.max_iters {
        let loss = trainer.step(step)?;
        if (step + 1) % (config.max_iters / 6).max(1) == 0 {
            println!("step {}: train loss {loss:.4}", step + 1);
        }
    }
    let val_after = trainer.evaluate(Split::Val, config.max_iters)?;
    println!("after {} steps: val loss {val_after:.4}", config.max_iters);

    let opts = SampleOptions {
        max_new_tokens: if tiny { 40 } else { 300 },
        temperature: 1.0,
        top_k: None,
        seed: 1,
        ..SampleOptions::default()
    };
    let prompt = tokenizer.encode("\n")?;
    let new = generate(
        &be,
        &trainer.model,
        trainer.params(),
        &prompt,
        &opts,
        |_| Ok(()),
    )?;
    let sample = String::from_utf8_lossy(&tokenizer.decode_bytes(&new)).into_owned();
    println!("--- a sample (each character depends only on the one before) ---\n{sample}");
    Ok(Outcome {
        val_before,
        val_after,
        sample,
    })
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| run(args.tiny).map(|_| ()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn training_lowers_the_loss_and_sampling_writes_text() {
        let o = super::run(true).unwrap();
        // Random initial logits score a little worse than a uniform guess.
        let uniform = 65f32.ln();
        let before = o.val_before;
        assert!(before > uniform - 0.2 && before < uniform + 1.0, "{before}");
        assert!(
            o.val_after < o.val_before - 0.2,
            "{} -> {}",
            o.val_before,
            o.val_after
        );
        assert_eq!(o.sample.chars().count(), 40);
    }
}
