//! The decoding engine: one thread per served model that generates for every
//! request at once (continuous batching, as vLLM and llama.cpp's server do).
//!
//! ```text
//! loop:
//!   admit waiting jobs while a slot is free:
//!       echo:     score the prompt's own tokens (one batched scoring
//!                 forward per window, as `lmforge eval` does)
//!       start:    a free slot's Decoder takes the prompt (a prefix it
//!                 shares with the slot's last sequence stays cached)
//!   step:         forward_all: one Model::forward_batch over every sequence
//!                 one position after its cache (the weights are read once
//!                 for all of them), a forward of its own for a prompt or a
//!                 slid window; then each Decoder draws its token with its
//!                 request's options and tells the client
//!   a sequence leaves when its decoder ends it (a stop token, a stop
//!   string, max_tokens) or its client has gone (its event channel is closed)
//! ```
//!
//! Every choice about a token is the [`Decoder`]'s, as for `lmforge sample`:
//! the same seed gives the same text, and past the context the window slides.
//! On the CPU, decoding one token is bound by reading the weights from
//! memory, so a step over 8 sequences costs little more than over one.
//! Each slot's decoder (with its KV cache) is allocated once at start; a
//! finished sequence gives its slot to the next job.

use crate::backend::Backend;
use crate::error::Result;
use crate::eval::Scorer;
use crate::model::{Activations, Model, Weights};
use crate::sample::decoder::common_prefix;
use crate::sample::{Decoder, Finish, SampleOptions, TokenLogprob, forward_all};
use crate::tokenizer::Tokenizer;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use tokio::sync::mpsc::UnboundedSender;

/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt's own tokens with their log-probabilities (echo); the
    /// first token, predicted from nothing, has none.
    Prompt(Vec<Option<TokenLogprob>>),
    /// The next token of the reply, the text it completes (may be empty:
    /// held back at a partial stop string or character) and its log-probability.
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// The reply ended; `text` is what was still held back.
    Done { text: String, finish: Finish },
    /// The model failed (e.g. non-finite logits); the reply ends.
    Failed(String),
}

/// One request (or one candidate of a request with `n`/`best_of`) for the engine.
pub struct Job {
    /// At least one token; at most the context unless only scored.
    pub prompt: Vec<u32>,
    /// How to decode: sampling, penalties, stop strings, length, log-probs.
    pub opts: SampleOptions,
    pub stop_tokens: Vec<u32>,
    /// Which candidate of its request this is: its random stream.
    pub candidate: u64,
    /// Score the prompt's tokens first, with this many alternatives each (echo).
    pub score_prompt: Option<usize>,
    /// Where the tokens go; a closed channel means the client has gone.
    pub events: UnboundedSender<Event>,
}

/// Counters the HTTP side reads for `/health`.
#[derive(Debug, Default)]
pub struct Load {
    /// Jobs sent to the engine and not yet admitted.
    pub queued: AtomicUsize,
    /// Sequences decoding now.
    pub active: AtomicUsize,
}

/// A sequence being decoded in a slot, and where its events go.
struct Active<B: Backend> {
    decoder: Decoder<B>,
    events: UnboundedSender<Event>,
}

/// The engine's state: the model, free slots and active sequences.
pub struct Engine<'m, B: Backend> {
    be: &'m B,
    model: &'m Model,
    params: Weights<'m, B>,
    tokenizer: Arc<dyn Tokenizer>,
    batch: Activations<B>,
    free: Vec<Decoder<B>>,
    active: Vec<Active<B>>,
    /// For echo: made at the first request that needs it.
    scorer: Option<Scorer<'m, B>>,
    load: Arc<Load>,
}

impl<'m, B: Backend> Engine<'m, B> {
    /// An engine decoding up to `slots` sequences together.
    pub fn new(
        be: &'m B,
        (model, params, tokenizer): (&'m Model, Weights<'m, B>, Arc<dyn Tokenizer>),
        slots: usize,
        load: Arc<Load>,
    ) -> Result<Self> {
        let free = (0..slots)
            .map(|_| Decoder::new(be, model, 0, 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            be,
            model,
            params,
            tokenizer,
            batch: Activations::decoding(be, &model.config, slots)?,
            free,
            active: Vec::with_capacity(slots),
            scorer: None,
            load,
        })
    }

    /// Serve jobs until every sender of `jobs` is gone and the work is done.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        while open || !self.active.is_empty() {
            if self.active.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => open = false,
                }
            }
            while open && !self.free.is_empty() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.step();
        }
    }

    /// Score the prompt if asked, then give the job a free slot.
    fn admit(&mut self, job: Job) {
        self.load.queued.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            return; // the client left while it waited
        }
        if let Some(top) = job.score_prompt {
            match self.score_prompt(&job.prompt, top) {
                Ok(scored) => drop(job.events.send(Event::Prompt(scored))),
                Err(e) => return drop(job.events.send(Event::Failed(e.to_string()))),
            }
        }
        if job.opts.max_new_tokens == 0 {
            let done = Event::Done {
                text: String::new(),
                finish: Finish::Length,
            };
            return drop(job.events.send(done));
        }
        // The slot whose last sequence shares the most with this prompt.
        let Some(slot) =
            (0..self.free.len()).max_by_key(|&i| common_prefix(self.free[i].tokens(), &job.prompt))
        else {
            unreachable!("admit is called only with a free slot");
        };
        let mut decoder = self.free.swap_remove(slot);
        decoder.reseed(job.opts.seed, job.candidate);
        if let Err(e) = decoder.start(&job.prompt, &job.opts, &job.stop_tokens) {
            let _ = job.events.send(Event::Failed(e.to_string()));
            return self.free.push(decoder);
        }
        self.load.active.fetch_add(1, Ordering::Relaxed);
        self.active.push(Active {
            decoder,
            events: job.events,
        });
    }

    /// The prompt's tokens with their log-probabilities, each after the
    /// tokens before it, read as `lmforge eval` reads a text.
    fn score_prompt(&mut self, prompt: &[u32], top: usize) -> Result<Vec<Option<TokenLogprob>>> {
        let (be, model, params) = (self.be, self.model, self.params);
        let scorer = match &mut self.scorer {
            Some(scorer) => scorer,
            empty => empty.insert(Scorer::new(be, model, params, model.config.block_size)?),
        };
        let stride = crate::eval::text::default_stride(model.config.block_size);
        let (losses, tops) =
            crate::eval::text::score_tokens(scorer, prompt, stride, top, |_, _| {})?;
        let mut tops = tops.into_iter();
        let scored = prompt.iter().skip(1).zip(losses).map(|(&token, loss)| {
            Some(TokenLogprob {
                token,
                logprob: -loss,
                top: tops.next().unwrap_or_default(),
            })
        });
        Ok(std::iter::once(None).chain(scored).collect())
    }

    /// One decoding step over every active sequence.
    fn step(&mut self) {
        for active in std::mem::take(&mut self.active) {
            let client_there = !active.events.is_closed();
            self.settle(active, client_there);
        }
        if self.active.is_empty() {
            return;
        }
        let (be, model, params) = (self.be, self.model, self.params);
        let mut decoders: Vec<&mut Decoder<B>> =
            self.active.iter_mut().map(|a| &mut a.decoder).collect();
        forward_all(be, model, params, &mut self.batch, &mut decoders);
        for mut active in std::mem::take(&mut self.active) {
            let keep = Self::advance(&mut active, &*self.tokenizer);
            self.settle(active, keep);
        }
    }

    /// Let the sequence's decoder draw its next token and tell the client.
    /// Returns whether the sequence goes on.
    fn advance(active: &mut Active<B>, tok: &dyn Tokenizer) -> bool {
        let events = &active.events;
        let step = match active.decoder.advance(Some(tok)) {
            Ok(step) => step,
            Err(e) => {
                let _ = events.send(Event::Failed(e.to_string()));
                return false;
            }
        };
        let Some(id) = step.token else {
            let finish = step.finish.unwrap_or(Finish::Length);
            let _ = events.send(Event::Done {
                text: step.text,
                finish,
            });
            return false;
        };
        let token = Event::Token {
            id,
            text: step.text,
            logprob: step.logprob,
        };
        if events.send(token).is_err() {
            return false;
        }
        match step.finish {
            Some(finish) => {
                let text = String::new();
                let _ = events.send(Event::Done { text, finish });
                false
            }
            None => true,
        }
    }

    /// Keep the sequence decoding, or end it and free its slot.
    fn settle(&mut self, active: Active<B>, keep: bool) {
        if keep {
            self.active.push(active);
        } else {
            self.load.active.fetch_sub(1, Ordering::Relaxed);
            self.free.push(active.decoder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::sample::tests::tiny;
    use crate::sample::{Flow, Generator, Reply};
    use crate::tokenizer::CharTokenizer;

    fn chars() -> Arc<dyn Tokenizer> {
        Arc::new(CharTokenizer::from_text("abcdefghijklmnopqrstuvw").unwrap())
    }

    /// Run `jobs` (prompt, options) through an engine with two slots: each one's events.
    fn serve(block: usize, jobs: &[(&[u32], &SampleOptions)]) -> Vec<Vec<Event>> {
        let (model, params) = tiny(block);
        let be = Cpu::new();
        let (send, queue) = std::sync::mpsc::sync_channel(jobs.len());
        let load = Arc::new(Load::default());
        let mut replies = Vec::new();
        for (prompt, opts) in jobs {
            let (events, reply) = tokio::sync::mpsc::unbounded_channel();
            load.queued.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                prompt: prompt.to_vec(),
                opts: (*opts).clone(),
                stop_tokens: Vec::new(),
                candidate: 0,
                score_prompt: None,
                events,
            };
            send.send(job).unwrap();
            replies.push(reply);
        }
        drop(send);
        let engine =
            Engine::new(&be, (&model, (&params).into(), chars()), 2, load.clone()).unwrap();
        engine.run(queue);
        assert_eq!(load.active.load(Ordering::Relaxed), 0, "every slot freed");
        replies
            .into_iter()
            .map(|mut r| std::iter::from_fn(|| r.try_recv().ok()).collect())
            .collect()
    }

    /// The tokens and text of a reply from its events, and how it ended.
    fn reply(events: &[Event]) -> (Vec<u32>, String, Option<Finish>) {
        let (mut ids, mut text, mut finish) = (Vec::new(), String::new(), None);
        for e in events {
            match e {
                Event::Token { id, text: t, .. } => {
                    ids.push(*id);
                    text.push_str(t);
                }
                Event::Done { text: t, finish: f } => {
                    text.push_str(t);
                    finish = Some(*f);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (ids, text, finish)
    }

    fn generator_reply(block: usize, prompt: &[u32], opts: &SampleOptions) -> Reply {
        let (model, params) = tiny(block);
        let be = Cpu::new();
        let tok = chars();
        let mut g = Generator::new(&be, &model, &params, opts.seed, Vec::new()).unwrap();
        g.generate_text(&*tok, prompt, opts, |_| Ok(Flow::Continue))
            .unwrap()
    }

    /// Two sequences decoded together in the batched engine, each far past
    /// the context of 8, give what a Generator gives alone with the same
    /// seed and options: the engine slides the window as `sample` does.
    #[test]
    fn the_engine_decodes_as_a_generator_does_past_the_context() {
        let opts = SampleOptions {
            max_new_tokens: 30,
            temperature: 1.0,
            top_k: Some(12),
            presence_penalty: 0.4,
            frequency_penalty: 0.2,
            seed: 5,
            ..SampleOptions::default()
        };
        let other = SampleOptions {
            max_new_tokens: 20,
            seed: 9,
            ..opts.clone()
        };
        let (a, b): (&[u32], &[u32]) = (&[1, 2, 3], &[7]);
        let served = serve(8, &[(a, &opts), (b, &other)]);
        for (events, (prompt, opts)) in served.iter().zip([(a, &opts), (b, &other)]) {
            let want = generator_reply(8, prompt, opts);
            let (ids, text, finish) = reply(events);
            assert_eq!(ids.len(), opts.max_new_tokens, "not cut at the context");
            assert_eq!(
                (ids, text, finish),
                (want.tokens, want.text, Some(want.finish))
            );
        }
    }

    /// A stop string ends the sequence inside the engine at the token that
    /// completes it: no token is drawn after it, and its text is cut.
    #[test]
    fn a_stop_string_ends_the_sequence_in_the_engine_at_its_last_token() {
        let opts = SampleOptions {
            max_new_tokens: 30,
            seed: 3,
            ..SampleOptions::default()
        };
        let (_, full, _) = reply(&serve(64, &[(&[0], &opts)])[0]);
        let stop = full[10..12].to_string();
        let at = full.find(&stop).unwrap();
        let stopped = SampleOptions {
            stop: vec![stop],
            ..opts
        };
        let events = &serve(64, &[(&[0], &stopped)])[0];
        let (ids, text, finish) = reply(events);
        assert_eq!(
            ids.len(),
            at + 2,
            "one character per token: the stop's last is the last"
        );
        assert_eq!(
            (text.as_str(), finish),
            (&full[..at], Some(Finish::StopString(0)))
        );
    }

    /// Greedy with log-probs: each token is the likeliest of its position,
    /// reported first among the alternatives.
    #[test]
    fn drawn_tokens_carry_their_log_probabilities() {
        let opts = SampleOptions {
            max_new_tokens: 6,
            temperature: 0.0,
            logprobs: Some(3),
            ..SampleOptions::default()
        };
        for event in &serve(16, &[(&[4, 5], &opts)])[0] {
            if let Event::Token { id, logprob, .. } = event {
                let lp = logprob.as_ref().unwrap();
                assert_eq!(
                    (lp.token, lp.top.len(), lp.top[0]),
                    (*id, 3, (*id, lp.logprob))
                );
                assert!(lp.logprob < 0.0 && lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            }
        }
    }
}
