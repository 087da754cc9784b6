//! Perplexity and bits per byte of a text.
//!
//! The text's `N` tokens give `N - 1` predictions: token `i` (for `i >= 1`)
//! is predicted from the tokens before it. A model sees at most `T =
//! block_size` of them, so a long text is read in windows, as in Hugging
//! Face's perplexity guide: window `k` feeds the inputs `start_k .. end_k`
//! (`start_k = k * stride`, `end_k = min(start_k + T, N - 1)`) and scores only
//! the predictions no earlier window made (inputs `end_{k-1} .. end_k`).
//! Each token is scored once, with as much context as the window allows:
//! `stride = T` is fastest (no overlap), a smaller stride gives every token
//! at least `T - stride` tokens of context.
//!
//! With `loss_i = -ln p(token_i | context)` (nats) summed over the scored tokens:
//!
//! ```text
//! mean loss       = sum loss_i / (N - 1)
//! perplexity      = exp(mean loss)
//! bits per byte   = sum loss_i / (ln 2 * bytes)
//! ```
//!
//! where `bytes` counts the UTF-8 bytes of the scored tokens (the text's
//! bytes less those of its first token, which is given). Loss and perplexity
//! are per token, so they depend on the tokenizer; bits per byte is the
//! number of bits the model needs to encode the text, and compares models
//! whatever their tokenizers.

use super::scorer::{Scorer, Sequence};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// One window: inputs `start..end` of the text's tokens, predicting
/// `start + 1..end + 1`, of which those from input `scored_from` on count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub scored_from: usize,
}

/// The windows over `inputs` input positions (`N - 1` for `N` tokens) with
/// at most `context` positions each, `stride` apart (`1 <= stride <= context`).
pub fn windows(inputs: usize, context: usize, stride: usize) -> Vec<Span> {
    assert!(stride >= 1 && stride <= context, "stride in 1..=context");
    let (mut spans, mut start, mut done) = (Vec::new(), 0, 0);
    while done < inputs {
        let end = (start + context).min(inputs);
        spans.push(Span {
            start,
            end,
            scored_from: done,
        });
        done = end;
        start += stride;
    }
    spans
}

/// What scoring a text gives.
#[derive(Debug, Clone, PartialEq)]
pub struct TextScore {
    /// Tokens in the text, and those scored (all but the first).
    pub tokens: usize,
    pub scored_tokens: usize,
    /// UTF-8 bytes of the text, and of the scored tokens.
    pub text_bytes: usize,
    pub scored_bytes: usize,
    /// Sum of the scored tokens' losses, in nats.
    pub total_loss: f64,
    pub mean_loss: f64,
    pub perplexity: f64,
    pub bits_per_byte: f64,
    pub context: usize,
    pub stride: usize,
    pub windows: usize,
    /// The text's token ids; `losses[i]` is the loss of `token_ids[i + 1]`, in nats.
    pub token_ids: Vec<u32>,
    pub losses: Vec<f32>,
}

/// Score `text` with windows `stride` apart (default: half the context), calling
/// `progress(windows done, windows)` after each forward.
pub fn score_text<B: Backend>(
    scorer: &mut Scorer<B>,
    tokenizer: &dyn Tokenizer,
    text: &str,
    stride: Option<usize>,
    progress: impl FnMut(usize, usize),
) -> Result<TextScore> {
    let context = scorer.block_size();
    let stride = stride.unwrap_or_else(|| default_stride(context));
    if stride == 0 || stride > context {
        return Err(Error::Config(format!(
            "--stride must be between 1 and the model's context ({context}), got {stride}"
        )));
    }
    let tokens = tokenizer.encode(text)?;
    if tokens.len() < 2 {
        return Err(Error::Data(format!(
            "the text encodes to {} token(s): scoring needs at least two",
            tokens.len()
        )));
    }
    let spans = windows(tokens.len() - 1, context, stride);
    let (losses, _) = score_tokens(scorer, &tokens, stride, 0, progress)?;
    let first_bytes = tokenizer.decode_bytes(&tokens[..1]).len();
    let scored_bytes = text.len().saturating_sub(first_bytes).max(1);
    let total_loss: f64 = losses.iter().map(|&l| l as f64).sum();
    let mean_loss = total_loss / losses.len() as f64;
    Ok(TextScore {
        tokens: tokens.len(),
        scored_tokens: losses.len(),
        text_bytes: text.len(),
        scored_bytes,
        total_loss,
        mean_loss,
        perplexity: mean_loss.exp(),
        bits_per_byte: total_loss / (std::f64::consts::LN_2 * scored_bytes as f64),
        context,
        stride,
        windows: spans.len(),
        token_ids: tokens,
        losses,
    })
}

/// The stride when none is given: half the context.
pub fn default_stride(context: usize) -> usize {
    (context / 2).max(1)
}

/// The likeliest tokens at a position, `(token, logprob)`, likeliest first.
pub type TopLogprobs = Vec<(u32, f32)>;

/// The losses of `tokens[1..]` (in nats), each after the tokens before it,
/// read in windows `stride` apart (`1..=block_size`) as [`score_text`]
/// reads a text; with `top > 0` also the `top` likeliest tokens at each of
/// those positions, with their log-probabilities (else no lists). Calls
/// `progress(windows done, windows)` after each forward.
pub fn score_tokens<B: Backend>(
    scorer: &mut Scorer<B>,
    tokens: &[u32],
    stride: usize,
    top: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<f32>, Vec<TopLogprobs>)> {
    let context = scorer.block_size();
    if tokens.len() < 2 {
        return Ok((Vec::new(), Vec::new()));
    }
    let spans = windows(tokens.len() - 1, context, stride);
    let mut losses = Vec::with_capacity(tokens.len() - 1);
    let mut tops = Vec::new();
    let per_batch = scorer.sequences_per_batch(context);
    for (k, batch) in spans.chunks(per_batch).enumerate() {
        let seqs: Vec<Sequence> = batch
            .iter()
            .map(|s| Sequence::continuation(&tokens[s.start..s.end + 1], s.scored_from - s.start))
            .collect();
        for (b, (span, got)) in batch.iter().zip(scorer.score(&seqs)?).enumerate() {
            let from = span.scored_from - span.start;
            losses.extend_from_slice(&got[from..]);
            if top > 0 {
                tops.extend((from..got.len()).map(|t| scorer.top_logprobs(b, t, top)));
            }
        }
        progress((k * per_batch + batch.len()).min(spans.len()), spans.len());
    }
    Ok((losses, tops))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows cover every input once, each scoring after the last one's
    /// end, with at most `context` positions and `stride` between starts.
    #[test]
    fn windows_score_every_position_once() {
        assert_eq!(
            windows(10, 4, 2),
            vec![
                Span {
                    start: 0,
                    end: 4,
                    scored_from: 0
                },
                Span {
                    start: 2,
                    end: 6,
                    scored_from: 4
                },
                Span {
                    start: 4,
                    end: 8,
                    scored_from: 6
                },
                Span {
                    start: 6,
                    end: 10,
                    scored_from: 8
                },
            ]
        );
        assert_eq!(
            windows(3, 8, 8),
            vec![Span {
                start: 0,
                end: 3,
                scored_from: 0
            }]
        );
        for (n, context, stride) in [(1, 1, 1), (17, 5, 1), (17, 5, 3), (17, 5, 5), (100, 16, 7)] {
            let spans = windows(n, context, stride);
            let mut next = 0;
            for s in &spans {
                assert_eq!(s.scored_from, next, "{n} {context} {stride}");
                assert!(s.end - s.start <= context && s.scored_from < s.end);
                // Every scored prediction has the most context a window of this stride gives.
                assert!(s.scored_from - s.start >= (context - stride).min(s.scored_from));
                next = s.end;
            }
            assert_eq!(next, n);
        }
    }
}
