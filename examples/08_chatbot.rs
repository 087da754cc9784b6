//! Chapter 8: a chatbot from scratch, as the course's `chatbot.py` does,
//! in four steps, each one `lmforge` command (the book's chapter "A chatbot
//! from scratch" gives them in full; these make the same run):
//!
//! ```text
//! 1. a BPE with the chat tokens   lmforge tokenizer train --vocab-size 1024 --special '<|endoftext|>'
//!                                   --special '<|system|>' --special '<|user|>' --special '<|assistant|>'
//!                                   --special '<|end|>' --out tokenizer.json
//!                                   data/tinyshakespeare.txt.gz chats.txt
//! 2. pretrain on the built-in     lmforge train --tokenizer tokenizer.json --n-layer 2 --n-embd 128
//!    Tiny Shakespeare               --block 128 --batch 16 --max-iters 300 --lr 3e-3 ... --out base
//! 3. SFT on conversations         lmforge train --init-from base --sft data/conversations.jsonl
//!                                   --batch 16 --max-iters 400 --lr 6e-3 ... --out chatbot
//! 4. chat                         lmforge chat chatbot
//! ```
//!
//! `chats.txt` is the conversations' words as plain text, so that the
//! tokenizer learns them too. Pretraining teaches the model English words
//! and how text goes on; the supervised fine-tune (SFT) teaches it the chat
//! format `<|user|>question<|end|><|assistant|>answer<|end|>` and the facts
//! of `data/conversations.jsonl` (a persona, greetings, capitals,
//! Shakespeare's plays, opposites, colours, animals, counting; made by
//! `tools/make_conversations.py`). Its loss counts only the assistant's words
//! and the `<|end|>` that closes them, so the model learns to answer and
//! then to stop. The tokenizer has the chat tokens from the start, so the
//! fine-tune adds none.
//!
//! Run: `cargo run --release --example 08_chatbot -- --threads 2` (a few
//! minutes on two cores). It writes `runs/example-08` (replaced on a re-run):
//! `chats.txt`, `tokenizer.json`, `base`, `chatbot`; then answers a few
//! questions and, at a terminal, lets you chat (`lmforge chat
//! runs/example-08/chatbot` does the same later).

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::Backend;
use lmforge::backend::cpu::Cpu;
use lmforge::chat::{self, ChatFormat, ChatOptions, Message, Role, SPECIAL_TOKENS};
use lmforge::sample::{Finish, SampleOptions};
use lmforge::tokenizer::train::{TrainConfig, train_files};
use lmforge::tokenizer::{Pattern, Tokenizer, TokenizerSpec};
use lmforge::train::{
    FineTuneOptions, Observe, Safeguards, TrainJob, TrainOverrides, TrainRequest, TrainSummary,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The conversations the chatbot is fine-tuned on, shipped in the repository.
const CONVERSATIONS: &str = "data/conversations.jsonl";
/// The built-in text (`lmforge::data::text::demo_corpus`), as a file.
const BUILT_IN_TEXT: &str = "data/tinyshakespeare.txt.gz";

/// A file of the repository, wherever the example is run from.
fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The questions asked once training is done; the last is outside what
/// the conversations teach.
const QUESTIONS: [&str; 10] = [
    "Hello!",
    "Who are you?",
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "Where is Macbeth set?",
    "What is the opposite of hot?",
    "What does a cow say?",
    "What number comes after 7?",
    "What is the price of gold today?",
    "Can you sing?",
];

/// The sizes of one run: the full one, or the test suite's `--tiny`.
struct Sizes {
    vocab_size: usize,
    n_layer: usize,
    n_embd: usize,
    block_size: usize,
    pretrain_iters: u64,
    sft_iters: u64,
}

impl Sizes {
    fn new(tiny: bool) -> Self {
        match tiny {
            true => Sizes {
                vocab_size: 1024,
                n_layer: 1,
                n_embd: 64,
                block_size: 64,
                pretrain_iters: 20,
                sft_iters: 150,
            },
            false => Sizes {
                vocab_size: 1024,
                n_layer: 2,
                n_embd: 128,
                block_size: 128,
                pretrain_iters: 300,
                sft_iters: 400,
            },
        }
    }
}

/// One answered question.
pub struct Answer {
    pub question: String,
    pub reply: String,
    /// The reply ended with the `<|end|>` token (not at the length limit).
    pub ended_at_end_token: bool,
}

/// What the four steps produced.
pub struct Outcome {
    pub pretrain: TrainSummary,
    pub sft: TrainSummary,
    /// The validation loss of the untrained model (step 0 of pretraining).
    pub pretrain_start_val: f32,
    /// The SFT run's validation loss before its first update.
    pub sft_start_val: f32,
    pub answers: Vec<Answer>,
}

/// The words of the conversations as plain text (each message's content on
/// a line, a blank line after each chat), so that the tokenizer learns them
/// too: what `python3 tools/make_conversations.py --text FILE` writes.
fn conversations_text(jsonl: &Path, out: &Path) -> lmforge::Result<()> {
    let bad = |line: usize, why: &str| {
        lmforge::Error::Data(format!("{}: line {line}: {why}", jsonl.display()))
    };
    let data = std::fs::read_to_string(jsonl).map_err(|e| lmforge::Error::io(jsonl, e))?;
    let mut text = String::new();
    for (i, line) in data.lines().enumerate() {
        let chat: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, &e.to_string()))?;
        let messages = chat["messages"]
            .as_array()
            .ok_or_else(|| bad(i + 1, "no messages"))?;
        for message in messages {
            let content = message["content"].as_str();
            text += content.ok_or_else(|| bad(i + 1, "a message without content"))?;
            text += "\n";
        }
        text += "\n";
    }
    std::fs::write(out, text).map_err(|e| lmforge::Error::io(out, e))
}

/// Step 1: `lmforge tokenizer train`: a byte-level BPE trained on the
/// built-in text and the conversations' words, with `<|endoftext|>` and the
/// chat template's four tokens as specials.
fn train_tokenizer(sizes: &Sizes, dir: &Path) -> lmforge::Result<PathBuf> {
    let chats = dir.join("chats.txt");
    conversations_text(&repo_file(CONVERSATIONS), &chats)?;
    let mut specials = vec!["<|endoftext|>".to_string()];
    specials.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
    let config = TrainConfig {
        vocab_size: sizes.vocab_size,
        pattern: Pattern::Gpt2,
        specials,
        skip_invalid_utf8: false,
    };
    let files = [repo_file(BUILT_IN_TEXT), chats];
    let (tokenizer, report) = train_files(&files, &config)?;
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path)?;
    println!(
        "BPE: {} merges on {} bytes; {} tokens, the last five {:?}",
        report.merges,
        report.corpus_bytes,
        tokenizer.vocab_size(),
        config.specials
    );
    Ok(path)
}

/// Steps 2 and 3 go through the same request `lmforge train` makes from its flags.
fn train(request: TrainRequest, tiny: bool) -> lmforge::Result<TrainSummary> {
    let (out, data, start) = request.start()?;
    let stop = AtomicBool::new(false);
    let job = TrainJob {
        data,
        out,
        start,
        progress: !tiny,
        stop: &stop,
        guards: Safeguards::default(),
        observe: Observe {
            plot: None,
            ..Observe::default()
        },
    };
    lmforge::train::train(&Cpu::new(), job)
}

/// Step 2: `lmforge train --tokenizer TOKENIZER --n-layer .. --out base`.
fn pretrain(
    sizes: &Sizes,
    tokenizer: &Path,
    out: &Path,
    tiny: bool,
) -> lmforge::Result<TrainSummary> {
    let overrides = TrainOverrides {
        tokenizer: Some(TokenizerSpec::File(tokenizer.to_path_buf())),
        n_layer: Some(sizes.n_layer),
        n_head: Some(4),
        n_embd: Some(sizes.n_embd),
        block_size: Some(sizes.block_size),
        batch_size: Some(16),
        max_iters: Some(sizes.pretrain_iters),
        lr: Some(3e-3),
        warmup_iters: Some(if tiny { 2 } else { 20 }),
        eval_interval: Some(sizes.pretrain_iters / 3),
        eval_iters: Some(5),
        ..TrainOverrides::default()
    };
    let request = TrainRequest {
        out: Some(out.to_path_buf()),
        overrides,
        ..TrainRequest::default()
    };
    train(request, tiny)
}

/// Step 3: `lmforge train --init-from base --sft data/conversations.jsonl --out chatbot`.
fn fine_tune(sizes: &Sizes, base: &Path, out: &Path, tiny: bool) -> lmforge::Result<TrainSummary> {
    let overrides = TrainOverrides {
        batch_size: Some(16),
        max_iters: Some(sizes.sft_iters),
        lr: Some(6e-3),
        min_lr: Some(3e-4),
        warmup_iters: Some(if tiny { 2 } else { 20 }),
        eval_interval: Some(sizes.sft_iters / 4),
        eval_iters: Some(5),
        ..TrainOverrides::default()
    };
    let request = TrainRequest {
        out: Some(out.to_path_buf()),
        overrides,
        finetune: FineTuneOptions {
            init_from: Some(base.to_string_lossy().into_owned()),
            sft: Some(repo_file(CONVERSATIONS)),
            ..FineTuneOptions::default()
        },
        ..TrainRequest::default()
    };
    train(request, tiny)
}

/// Step 4: load the chatbot as `lmforge chat` does and answer each question
/// on its own, greedily (temperature 0), so the answers are repeatable.
fn ask(run: &Path, questions: &[&str]) -> lmforge::Result<Vec<Answer>> {
    let (model, params, tok) = lmforge::sample::load_run(run)?;
    let format = ChatFormat::find(run, tok.as_ref())?;
    let be = Cpu::new();
    let params = be.upload(params)?;
    let opts = SampleOptions {
        max_new_tokens: 40,
        temperature: 0.0,
        ..SampleOptions::default()
    };
    let end = tok.special_token("<|end|>");
    let mut answers = Vec::new();
    for question in questions {
        let messages = [Message::new(Role::User, *question)];
        let reply = chat::answer(
            &be,
            (&model, (&params).into(), tok.as_ref()),
            format.as_ref(),
            &messages,
            &opts,
        )?;
        println!("you: {question}\nbot: {}\n", reply.text);
        answers.push(Answer {
            question: question.to_string(),
            reply: reply.text,
            ended_at_end_token: end.is_some_and(|end| reply.finish == Finish::Token(end)),
        });
    }
    let ended = answers.iter().filter(|a| a.ended_at_end_token).count();
    println!("{ended} of {} replies ended with <|end|>", answers.len());
    Ok(answers)
}

/// The validation loss of a run's first evaluation (step 0, before any
/// update), from its `metrics.jsonl`.
fn first_val_loss(run: &Path) -> lmforge::Result<f32> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| lmforge::Error::io(&path, e))?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|record| record.get("val_loss")?.as_f64())
        .map(|loss| loss as f32)
        .ok_or_else(|| lmforge::Error::Data(format!("{}: no validation loss", path.display())))
}

/// The four steps, into `dir` (emptied first), with the time each took.
pub fn run(tiny: bool, dir: &Path) -> lmforge::Result<Outcome> {
    let sizes = Sizes::new(tiny);
    common::fresh_folder(dir)?;
    let clock = Instant::now();
    let tokenizer = train_tokenizer(&sizes, dir)?;
    let t1 = clock.elapsed().as_secs_f32();
    println!("step 1, the tokenizer: {t1:.1} s\n");

    let base = dir.join("base");
    let pretrain = pretrain(&sizes, &tokenizer, &base, tiny)?;
    let t2 = clock.elapsed().as_secs_f32();
    println!(
        "step 2, pretraining on Tiny Shakespeare: {} steps, val loss {:.3}, {:.0} s\n",
        pretrain.step,
        pretrain.val_loss.unwrap_or(f32::NAN),
        t2 - t1
    );

    let chatbot = dir.join("chatbot");
    let sft = fine_tune(&sizes, &base, &chatbot, tiny)?;
    let t3 = clock.elapsed().as_secs_f32();
    println!(
        "step 3, SFT on {CONVERSATIONS}: {} steps, val loss {:.3}, {:.0} s\n",
        sft.step,
        sft.val_loss.unwrap_or(f32::NAN),
        t3 - t2
    );

    let answers = ask(&chatbot, &QUESTIONS)?;
    let t4 = clock.elapsed().as_secs_f32();
    println!(
        "step 4, {} answers: {:.1} s; all four steps: {t4:.0} s",
        answers.len(),
        t4 - t3
    );
    Ok(Outcome {
        pretrain_start_val: first_val_loss(&base)?,
        sft_start_val: first_val_loss(&chatbot)?,
        pretrain,
        sft,
        answers,
    })
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| {
        let dir = Path::new("runs/example-08");
        run(args.tiny, dir)?;
        let chatbot = dir.join("chatbot");
        if !std::io::stdin().is_terminal() {
            println!("chat with it: lmforge chat {}", chatbot.display());
            return Ok(());
        }
        println!("\nYour turn (/quit or Ctrl-D to leave, /help for commands):");
        let opts = ChatOptions {
            sampling: SampleOptions {
                max_new_tokens: 60,
                temperature: 0.0,
                ..SampleOptions::default()
            },
            system: None,
            history: None,
            stats: false,
            verbose: false,
            weights: None,
        };
        chat::run(&Cpu::new(), &chatbot, opts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chatbot_is_pretrained_fine_tuned_and_answers_in_the_chat_format() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("example-08");
        let first = run(true, &out).unwrap();
        assert_eq!((first.pretrain.step, first.sft.step), (20, 150));
        // Fine-tuning learned: the chats' loss fell well below the untrained model's.
        let sft_val = first.sft.val_loss.unwrap();
        assert!(
            sft_val < first.sft_start_val - 0.5 && sft_val < first.pretrain_start_val - 1.0,
            "SFT val loss {sft_val}: at its start {}, untrained {}",
            first.sft_start_val,
            first.pretrain_start_val
        );
        // The chat tokens were in the vocabulary from step 1: SFT added none,
        // and the chatbot talks through lmforge's chat template.
        let chatbot = out.join("chatbot");
        let (_, _, tok) = lmforge::sample::load_run(&chatbot).unwrap();
        assert_eq!(tok.vocab_size(), Sizes::new(true).vocab_size);
        let format = ChatFormat::find(&chatbot, tok.as_ref()).unwrap().unwrap();
        let end = tok.special_token("<|end|>").unwrap();
        assert_eq!(format.describe(), "lmforge's chat template");
        assert!(format.stop_tokens().contains(&end));
        assert!(
            first
                .answers
                .iter()
                .map(|a| a.question.as_str())
                .eq(QUESTIONS)
        );
        // The replies have the assistant's form: SFT taught the model to stop
        // with <|end|> (at this size, "The." and stop), never to write a turn of its own.
        let ended = first
            .answers
            .iter()
            .filter(|a| a.ended_at_end_token)
            .count();
        assert!(
            ended * 2 >= QUESTIONS.len(),
            "only {ended} replies ended with <|end|>"
        );
        assert!(first.answers.iter().all(|a| !a.reply.contains("<|")));
        // A re-run replaces the folder (a stray file goes) and, seeded, repeats the answers.
        std::fs::write(out.join("stray.txt"), "old").unwrap();
        let second = run(true, &out).unwrap();
        assert!(!out.join("stray.txt").exists());
        let replies = |o: &Outcome| {
            o.answers
                .iter()
                .map(|a| a.reply.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(replies(&first), replies(&second));
    }
}
