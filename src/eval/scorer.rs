//! Scoring token sequences with one batched forward pass: the loss (negative
//! log-likelihood, in nats) of every position of several sequences at once.
//!
//! Sequence `b` has inputs `x[b, 0..t_b]` and targets `y[b, 0..t_b]`
//! (normally `y[b, t] = x[b, t + 1]`, the next token). One forward over the
//! window `B x T` (`T` = the longest `t_b`, the shorter sequences padded)
//! gives every position's logits, and
//!
//! ```text
//! loss[b, t] = -log softmax(logits[b, t])[y[b, t]]      (0 where y = IGNORE_TARGET)
//! ```
//!
//! This is the training forward without anything kept for backward
//! ([`Activations::scoring`]): a window costs one pass, not one per token as
//! decoding does.

use crate::backend::{Backend, IGNORE_TARGET};
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Weights, Window};

/// One sequence to score: the tokens fed in, and what each position should
/// predict ([`IGNORE_TARGET`] for positions that are context only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Sequence {
    /// The inputs `tokens[..n-1]` predicting `tokens[1..]`, the first `context`
    /// predictions ignored (they predict tokens that are given, not scored).
    pub fn continuation(tokens: &[u32], context: usize) -> Self {
        let n = tokens.len();
        let mut targets = tokens[1..].to_vec();
        for t in targets.iter_mut().take(context.min(n - 1)) {
            *t = IGNORE_TARGET;
        }
        Sequence {
            inputs: tokens[..n - 1].to_vec(),
            targets,
        }
    }
}

/// Floats of logits a scorer may hold at once (256 MiB): with GPT-2's
/// vocabulary, about 1,300 positions per forward.
const LOGITS_BUDGET: usize = 1 << 26;
/// The most positions per forward whatever the vocabulary.
const MAX_ROWS: usize = 8192;

/// Positions scored per forward for `model`: a whole context window at
/// least, more while the logits stay within [`LOGITS_BUDGET`].
pub fn default_rows(model: &Model) -> usize {
    let cfg = &model.config;
    (LOGITS_BUDGET / cfg.vocab_size.max(1)).clamp(cfg.block_size, MAX_ROWS.max(cfg.block_size))
}

/// Scores batches of sequences on one model, reusing its activations.
pub struct Scorer<'m, B: Backend> {
    be: &'m B,
    model: &'m Model,
    params: Weights<'m, B>,
    acts: Activations<B>,
    rows: usize,
    losses: Vec<f32>,
    /// Positions per sequence in the last [`Scorer::score`] (its rows are `b * width + t`).
    width: usize,
    /// One row of logits on the host, and scratch ids ([`Scorer::top_logprobs`]).
    row: Vec<f32>,
    ids: Vec<u32>,
}

impl<'m, B: Backend> Scorer<'m, B> {
    /// A scorer computing up to `rows` positions per forward (at least
    /// `block_size`, so that a full window fits).
    pub fn new(
        be: &'m B,
        model: &'m Model,
        params: impl Into<Weights<'m, B>>,
        rows: usize,
    ) -> Result<Self> {
        let rows = rows.max(model.config.block_size);
        Ok(Scorer {
            be,
            model,
            params: params.into(),
            acts: Activations::scoring(be, &model.config, rows)?,
            rows,
            losses: vec![0.0; rows],
            width: 0,
            row: Vec::new(),
            ids: Vec::new(),
        })
    }

    /// Positions computed per forward.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The model's context length: the longest sequence it scores.
    pub fn block_size(&self) -> usize {
        self.model.config.block_size
    }

    /// How many sequences of up to `t` positions fit in one forward.
    pub fn sequences_per_batch(&self, t: usize) -> usize {
        (self.rows / t.max(1)).max(1)
    }

    /// The per-position losses of each sequence (as long as its inputs), all
    /// in one forward. The sequences must fit: at most `block_size`
    /// positions each, and `count * longest <= rows()`.
    pub fn score(&mut self, seqs: &[Sequence]) -> Result<Vec<Vec<f32>>> {
        let v = self.model.config.vocab_size;
        let t = seqs.iter().map(|s| s.inputs.len()).max().unwrap_or(0);
        let fits = t >= 1 && t <= self.block_size() && seqs.len() * t <= self.rows;
        if !fits || seqs.iter().any(|s| s.inputs.len() != s.targets.len()) {
            return Err(Error::Data(format!(
                "cannot score {} sequences of up to {t} positions in {} rows (context {})",
                seqs.len(),
                self.rows,
                self.block_size()
            )));
        }
        let (mut inputs, mut targets) = (
            vec![0u32; seqs.len() * t],
            vec![IGNORE_TARGET; seqs.len() * t],
        );
        for (b, s) in seqs.iter().enumerate() {
            let at = b * t;
            inputs[at..at + s.inputs.len()].copy_from_slice(&s.inputs);
            targets[at..at + s.targets.len()].copy_from_slice(&s.targets);
        }
        if let Some(&bad) = inputs
            .iter()
            .chain(&targets)
            .find(|&&id| id != IGNORE_TARGET && id as usize >= v)
        {
            return Err(Error::Data(format!(
                "token id {bad} is outside the model's vocabulary of {v}"
            )));
        }
        let window = Window::batch(seqs.len(), t);
        let (be, model, params, acts) = (self.be, self.model, self.params, &mut self.acts);
        be.run(|| {
            model.forward_with(be, params, acts, &inputs, window, Mode::Eval);
            model.loss(be, acts, &targets, window);
        });
        let n = window.n();
        self.width = t;
        be.download(self.acts.losses(0..n), &mut self.losses[..n]);
        let losses = &self.losses[..n];
        if let Some(bad) = losses.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "the model gives a loss of {bad}: its weights give no usable probabilities (a run that diverged?)"
            )));
        }
        Ok(seqs
            .iter()
            .enumerate()
            .map(|(b, s)| losses[b * t..b * t + s.inputs.len()].to_vec())
            .collect())
    }

    /// After [`Scorer::score`]: the `k` likeliest next tokens at position `t`
    /// of sequence `b`, with their log-probabilities (largest first).
    pub fn top_logprobs(&mut self, b: usize, t: usize, k: usize) -> Vec<(u32, f32)> {
        self.row.resize(self.model.config.vocab_size, 0.0);
        let logits = self.acts.logits_row(b * self.width + t);
        self.be.download(logits, &mut self.row);
        crate::sample::logprobs::top_logprobs(&self.row, k, &mut self.ids)
    }
}
