//! # lmforge
//!
//! Build, train and talk to your own GPT-style language model, from raw text to
//! samples, on a CPU. The pipeline, one module per stage:
//!
//! text ([`data::text`]) → [`tokenizer`] → token stream ([`data`]) → batches
//! ([`data::sampler`]) → [`model`] (forward, loss, backward; kernels in
//! [`backend`]) → [`optim`] (AdamW, schedules, clipping) → [`train`] (the loop,
//! evaluation, metrics) → [`checkpoint`] → [`sample`] (text generation) → [`chat`] (templates and the
//! terminal chat); [`hf`] and [`gguf`] take models in and out. Beside the pipeline, [`plot`] draws a run's loss curves and [`report`]
//! lists runs and writes a run's HTML report, and [`eval`] measures a model on a text
//! (perplexity, bits per byte) or on multiple-choice questions.
//!
//! A lower stage never imports a higher one.

pub mod backend;
pub mod chat;
pub mod checkpoint;
pub mod data;
pub mod diag;
pub mod dist;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod fsutil;
pub mod gguf;
pub mod hf;
pub mod huge_pages;
pub mod memory;
pub mod model;
pub mod optim;
pub mod plot;
pub mod report;
pub mod rng;
pub mod rundir;
pub mod sample;
pub mod serve;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
