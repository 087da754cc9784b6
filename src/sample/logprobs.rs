//! Log-probabilities of tokens, as the OpenAI API reports them: the chosen
//! token's and the `k` likeliest alternatives', from the model's own
//! distribution (the raw logits `z`, before penalties and temperature, as
//! vLLM's default and `lmforge eval` report them):
//!
//! ```text
//! logprob(i) = z_i - logsumexp(z) = z_i - (max z + ln sum_j exp(z_j - max z))
//! ```

/// A token with its log-probability and the likeliest alternatives at its
/// position (largest first; ties by the lower id).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)` of the `k` likeliest tokens at this position.
    pub top: Vec<(u32, f32)>,
}

/// `ln sum_j exp(z_j)`, computed stably.
pub fn logsumexp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| ((z - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

/// The log-probability of `token` under `logits`, and the `k` likeliest
/// tokens' (`ids` is scratch, reused between calls).
pub fn token_logprob(logits: &[f32], token: u32, k: usize, ids: &mut Vec<u32>) -> TokenLogprob {
    TokenLogprob {
        token,
        logprob: logits[token as usize] - logsumexp(logits),
        top: top_logprobs(logits, k, ids),
    }
}

/// `(token, logprob)` of the `k` likeliest tokens under `logits`, largest first.
pub fn top_logprobs(logits: &[f32], k: usize, ids: &mut Vec<u32>) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let lse = logsumexp(logits);
    top_k(logits, k, ids)
        .iter()
        .map(|&i| (i, logits[i as usize] - lse))
        .collect()
}

/// The ids of the `k` largest logits, largest first (ties: the lower id).
fn top_k<'a>(logits: &[f32], k: usize, ids: &'a mut Vec<u32>) -> &'a [u32] {
    let k = k.min(logits.len());
    ids.clear();
    if k == 0 {
        return ids;
    }
    ids.extend(0..logits.len() as u32);
    let by_logit = |&a: &u32, &b: &u32| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    };
    ids.select_nth_unstable_by(k - 1, by_logit);
    ids.truncate(k);
    ids.sort_unstable_by(by_logit);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_the_log_softmax_and_the_top_is_sorted() {
        let p = [0.1f32, 0.4, 0.2, 0.3];
        let logits: Vec<f32> = p.iter().map(|p| p.ln() + 7.0).collect();
        let mut ids = Vec::new();
        let got = token_logprob(&logits, 2, 3, &mut ids);
        assert!((got.logprob - 0.2f32.ln()).abs() < 1e-6, "{got:?}");
        let top: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(top, [1, 3, 2]);
        assert!((got.top[0].1 - 0.4f32.ln()).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0, &mut ids).top.is_empty());
        assert_eq!(token_logprob(&logits, 0, 9, &mut ids).top.len(), 4);
    }
}
