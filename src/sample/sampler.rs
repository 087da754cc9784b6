//! Choosing the next token from the model's logits `z` (one per vocabulary
//! entry), in this order (Hugging Face's and llama.cpp's usual pipeline):
//!
//! ```text
//! 1. repetition penalty r, for each distinct token i in the context window:
//!        z_i = z_i / r   if z_i > 0        (r > 1 makes a repeat less likely)
//!        z_i = z_i * r   otherwise
//!    presence and frequency penalties (OpenAI's), for each token i drawn
//!    c_i times so far in the reply:
//!        z_i = z_i - c_i * frequency_penalty - (c_i > 0) * presence_penalty
//! 2. temperature T:      greedy (the argmax of z) if T = 0, else
//!        w_i = exp((z_i - max_j z_j) / T)  (unnormalised probabilities, w_max = 1)
//! 3. top-k:  keep the k tokens with the largest z (ties: the lower id)
//! 4. top-p:  sort the kept tokens by w, largest first, and keep the shortest
//!            prefix whose mass reaches p:  sum_{kept} w >= p * sum_{all kept before} w
//! 5. min-p:  keep the tokens with  w_i >= min_p * w_max = min_p
//!            (probability at least min_p times the likeliest token's)
//! 6. draw:   next ~ w_i / sum_{kept} w      (u uniform in [0, 1), walk the kept
//!            tokens until the running sum of w passes u * sum w)
//! ```
//!
//! The likeliest token survives every filter, so something is always drawn.
//! The scratch (the list of kept ids, the repeat marks) is allocated once per
//! [`Sampler`] and reused for every token.

use super::SampleOptions;
use crate::backend::cpu::math;
use crate::backend::cpu::simd::vectorised;
use crate::rng::Rng;

/// Scratch space for choosing tokens from a vocabulary of a fixed size.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// The ids still in the running (steps 3-6).
    kept: Vec<u32>,
    /// `seen[i]`: token `i` occurs in the context window (step 1).
    seen: Vec<bool>,
    /// `counts[i]`: how often token `i` was drawn (step 1; zero between calls).
    counts: Vec<u32>,
}

impl Sampler {
    pub fn new(vocab_size: usize) -> Self {
        Sampler {
            kept: Vec::with_capacity(vocab_size),
            seen: vec![false; vocab_size],
            counts: vec![0; vocab_size],
        }
    }

    /// The next token after a context whose window is `recent` and whose
    /// reply so far is `generated`, from its `logits` (changed in place:
    /// scratch afterwards).
    pub fn choose(
        &mut self,
        logits: &mut [f32],
        recent: &[u32],
        generated: &[u32],
        opts: &SampleOptions,
        rng: &mut Rng,
    ) -> u32 {
        if opts.repetition_penalty != 1.0 {
            penalize(logits, recent, opts.repetition_penalty, &mut self.seen);
        }
        if opts.presence_penalty != 0.0 || opts.frequency_penalty != 0.0 {
            let (presence, frequency) = (opts.presence_penalty, opts.frequency_penalty);
            penalize_counts(logits, generated, presence, frequency, &mut self.counts);
        }
        if opts.temperature == 0.0 {
            return argmax(logits);
        }
        let kept = &mut self.kept;
        kept.clear();
        kept.extend(0..logits.len() as u32);
        // Larger logit first; equal logits by id, so the order is always the same.
        let by_logit = |&a: &u32, &b: &u32| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        };
        if let Some(k) = opts.top_k.filter(|&k| k < kept.len()) {
            kept.select_nth_unstable_by(k - 1, by_logit);
            kept.truncate(k);
        }
        // top_p 1 keeps every token (what clients such as Open WebUI send by
        // default): no sort of the whole vocabulary for it.
        let top_p = opts.top_p.filter(|&p| p < 1.0);
        if top_p.is_some() {
            kept.sort_unstable_by(by_logit);
        }
        to_weights(logits, kept, opts.temperature);
        if let Some(p) = top_p {
            keep_nucleus(logits, kept, p);
        }
        if let Some(min_p) = opts.min_p {
            kept.retain(|&i| logits[i as usize] >= min_p);
        }
        draw(logits, kept, rng)
    }
}

/// Step 1: divide the positive logits, multiply the others, of each distinct
/// token of `recent` by `penalty` (`seen` is all false before and after).
pub fn penalize(logits: &mut [f32], recent: &[u32], penalty: f32, seen: &mut [bool]) {
    for &id in recent {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let z = &mut logits[i];
            *z = if *z > 0.0 { *z / penalty } else { *z * penalty };
        }
    }
    for &id in recent {
        if let Some(s) = seen.get_mut(id as usize) {
            *s = false;
        }
    }
}

/// Step 1, OpenAI's penalties: subtract `frequency` per earlier draw and
/// `presence` once from each token of `generated` (`counts` is all zero
/// before and after).
pub fn penalize_counts(
    logits: &mut [f32],
    generated: &[u32],
    presence: f32,
    frequency: f32,
    counts: &mut [u32],
) {
    for &id in generated {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1;
        }
    }
    for &id in generated {
        let i = id as usize;
        if i < logits.len() && counts[i] > 0 {
            logits[i] -= counts[i] as f32 * frequency + presence;
            counts[i] = 0;
        }
    }
}

/// The id of the largest logit (the first of equal ones).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &z) in logits.iter().enumerate() {
        if z > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Step 2 on the kept ids, in place: `z_i` becomes `w_i = exp((z_i - max) / T)`,
/// with the vectorised `exp` of the CPU kernels (about 1 ulp). When every id
/// is kept (no top-k), the whole vocabulary goes through one SIMD loop instead
/// of one scalar `expf` call per id (8 streams of a 50,257-token vocabulary
/// spent 8% of a decoding step there); each weight is the same either way.
fn to_weights(logits: &mut [f32], kept: &[u32], temperature: f32) {
    if kept.len() == logits.len() {
        let max = math::max(logits);
        vectorised!({
            for z in logits.iter_mut() {
                *z = weight(*z, max, temperature);
            }
        });
        return;
    }
    let max = kept
        .iter()
        .map(|&i| logits[i as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    for &i in kept {
        let z = &mut logits[i as usize];
        *z = weight(*z, max, temperature);
    }
}

/// `exp((z - max) / T)`, and exactly 0 for a logit of minus infinity (a token
/// ruled out stays out: the fast `exp` gives about 1e-38 below -87).
#[inline(always)]
fn weight(z: f32, max: f32, temperature: f32) -> f32 {
    let w = math::exp((z - max) / temperature);
    if z == f32::NEG_INFINITY { 0.0 } else { w }
}

/// Step 4: `kept` is sorted by weight, largest first; keep the shortest
/// prefix holding at least `p` of the mass.
fn keep_nucleus(weights: &[f32], kept: &mut Vec<u32>, p: f32) {
    let total: f64 = kept.iter().map(|&i| weights[i as usize] as f64).sum();
    let mut mass = 0.0f64;
    for (n, &i) in kept.iter().enumerate() {
        mass += weights[i as usize] as f64;
        if mass >= p as f64 * total {
            kept.truncate(n + 1);
            return;
        }
    }
}

/// Step 6: one draw from the kept ids in proportion to their weights.
fn draw(weights: &[f32], kept: &[u32], rng: &mut Rng) -> u32 {
    let total: f64 = kept.iter().map(|&i| weights[i as usize] as f64).sum();
    let mut target = rng.next_f32() as f64 * total;
    for &i in kept {
        let w = weights[i as usize] as f64;
        target -= w;
        if target < 0.0 && w > 0.0 {
            return i;
        }
    }
    // Rounding left a sliver of mass: the last kept token with any weight.
    kept.iter()
        .rev()
        .find(|&&i| weights[i as usize] > 0.0)
        .or(kept.first())
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-vocabulary loop and the loop over kept ids give the same
    /// weights, within the fast `exp`'s error of libm's, and a logit of
    /// minus infinity weighs exactly nothing.
    #[test]
    fn weights_agree_on_both_paths_and_ruled_out_tokens_weigh_nothing() {
        let mut every: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin() * 30.0).collect();
        every[7] = f32::NEG_INFINITY;
        every[99] = -50.0;
        let (z, mut some) = (every.clone(), every.clone());
        to_weights(&mut every, &(0..100).collect::<Vec<u32>>(), 0.8);
        to_weights(&mut some, &(0..99).collect::<Vec<u32>>(), 0.8);
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((every[7], some[7]), (0.0, 0.0));
        for i in 0..99 {
            assert_eq!(every[i].to_bits(), some[i].to_bits(), "id {i}");
            let exact = ((z[i] - max) / 0.8).exp();
            assert!(
                (every[i] - exact).abs() <= 4e-7 * exact.max(1e-30),
                "id {i}"
            );
        }
    }

    fn opts() -> SampleOptions {
        SampleOptions {
            temperature: 1.0,
            ..SampleOptions::default()
        }
    }

    /// How often each of the ids is drawn in `n` draws from `logits`.
    fn counts(logits: &[f32], recent: &[u32], opts: &SampleOptions, n: usize) -> Vec<usize> {
        let mut sampler = Sampler::new(logits.len());
        let mut rng = Rng::new(3, 0);
        let mut counts = vec![0; logits.len()];
        let mut row = logits.to_vec();
        for _ in 0..n {
            row.copy_from_slice(logits);
            counts[sampler.choose(&mut row, recent, &[], opts, &mut rng) as usize] += 1;
        }
        counts
    }

    /// Logits whose softmax is `p`.
    fn logits_of(p: &[f32]) -> Vec<f32> {
        p.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let o = SampleOptions {
            temperature: 0.0,
            ..opts()
        };
        let c = counts(&[0.1, 3.0, -1.0, 3.0], &[], &o, 5);
        assert_eq!(c, [0, 5, 0, 0], "the first of equal maxima, every time");
    }

    #[test]
    fn plain_sampling_follows_the_softmax() {
        let c = counts(&logits_of(&[0.5, 0.3, 0.2]), &[], &opts(), 4000);
        // 4000 draws: standard deviations about 32, 29, 25.
        assert!((1850..2150).contains(&c[0]), "{c:?}");
        assert!((1080..1320).contains(&c[1]), "{c:?}");
        assert!((680..920).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn temperature_sharpens_the_distribution() {
        // p ∝ exp(z / 0.5): [1, 2] becomes [1, 4], 80% for the second.
        let o = SampleOptions {
            temperature: 0.5,
            ..opts()
        };
        let c = counts(&logits_of(&[1.0 / 3.0, 2.0 / 3.0]), &[], &o, 2000);
        assert!((1530..1670).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn top_k_never_draws_outside_the_k_best() {
        let o = SampleOptions {
            top_k: Some(2),
            ..opts()
        };
        let c = counts(&[1.0, 0.5, 0.9, 0.0], &[], &o, 2000);
        assert_eq!(c[1] + c[3], 0, "{c:?}");
        // exp(1.0) : exp(0.9) is about 52.5% : 47.5%.
        assert!((950..1150).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_holding_p() {
        // Sorted: 0.5, 0.3 (cumulative 0.8 >= 0.75): the other two are cut,
        // and the kept pair is drawn 5 : 3.
        let o = SampleOptions {
            top_p: Some(0.75),
            ..opts()
        };
        let c = counts(&logits_of(&[0.05, 0.3, 0.15, 0.5]), &[], &o, 2000);
        assert_eq!(c[0] + c[2], 0, "{c:?}");
        assert!((1170..1330).contains(&c[3]), "{c:?}");
        let o = SampleOptions {
            top_p: Some(0.45),
            ..opts()
        };
        let c = counts(&logits_of(&[0.05, 0.3, 0.15, 0.5]), &[], &o, 100);
        assert_eq!(c, [0, 0, 0, 100], "one token already holds 0.45");
    }

    /// top_p 1 is no cut at all: the very draws of no top_p.
    #[test]
    fn top_p_of_one_draws_as_no_top_p() {
        let logits = logits_of(&[0.05, 0.3, 0.15, 0.5]);
        let all = SampleOptions {
            top_p: Some(1.0),
            ..opts()
        };
        let draws = |o: &SampleOptions| {
            let (mut sampler, mut rng) = (Sampler::new(4), Rng::new(5, 0));
            (0..200)
                .map(|_| sampler.choose(&mut logits.clone(), &[], &[], o, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(&all), draws(&opts()));
    }

    #[test]
    fn min_p_cuts_tokens_far_below_the_best() {
        // min_p 0.2 of the best 0.5 is 0.1: 0.05 goes, 0.15 stays.
        let o = SampleOptions {
            min_p: Some(0.2),
            ..opts()
        };
        let c = counts(&logits_of(&[0.05, 0.3, 0.15, 0.5]), &[], &o, 2000);
        assert_eq!(c[0], 0, "{c:?}");
        // 0.15 / 0.95 of 2000 is about 316.
        assert!((250..390).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut z = [2.0, 2.0, -1.0, -1.0, 0.5];
        let mut seen = vec![false; 5];
        penalize(&mut z, &[0, 2, 0, 0, 2, 9], 2.0, &mut seen);
        assert_eq!(z, [1.0, 2.0, -2.0, -1.0, 0.5], "each distinct token once");
        assert!(seen.iter().all(|s| !s), "scratch left clean");
        let o = SampleOptions {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..opts()
        };
        assert_eq!(counts(&[2.0, 1.5], &[0], &o, 1), [0, 1], "the repeat loses");
        let o = SampleOptions {
            repetition_penalty: 1.0,
            ..o
        };
        assert_eq!(counts(&[2.0, 1.5], &[0], &o, 1), [1, 0], "1.0 is off");
    }

    #[test]
    fn presence_and_frequency_penalties_subtract_per_token_and_per_draw() {
        let mut z = [1.0, 1.0, 1.0, 1.0];
        let mut counts = vec![0; 4];
        penalize_counts(&mut z, &[0, 2, 0, 0, 9], 0.5, 0.25, &mut counts);
        assert_eq!(z, [1.0 - 0.75 - 0.5, 1.0, 1.0 - 0.25 - 0.5, 1.0]);
        assert!(counts.iter().all(|&c| c == 0), "scratch left clean");
        let greedy = SampleOptions {
            temperature: 0.0,
            presence_penalty: 0.6,
            ..opts()
        };
        let mut sampler = Sampler::new(2);
        let mut rng = Rng::new(1, 0);
        let pick = |s: &mut Sampler, o: &SampleOptions, r: &mut Rng| {
            s.choose(&mut [2.0, 1.5], &[], &[0], o, r)
        };
        assert_eq!(
            pick(&mut sampler, &greedy, &mut rng),
            1,
            "the drawn token loses"
        );
        let off = SampleOptions {
            presence_penalty: 0.0,
            ..greedy
        };
        assert_eq!(pick(&mut sampler, &off, &mut rng), 0);
    }

    #[test]
    fn filters_combine_and_the_draws_repeat_with_the_seed() {
        let o = SampleOptions {
            top_k: Some(3),
            top_p: Some(0.9),
            min_p: Some(0.05),
            temperature: 0.8,
            repetition_penalty: 1.3,
            ..opts()
        };
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let a = counts(&logits, &[3, 4, 5], &o, 500);
        assert_eq!(a, counts(&logits, &[3, 4, 5], &o, 500));
        assert_eq!(a.iter().filter(|&&n| n > 0).count(), 3, "{a:?}");
    }
}
