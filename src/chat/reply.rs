//! Text from a loaded run without a terminal: continue a prompt (what
//! `lmforge sample` prints), or answer a whole conversation at once (what
//! the Python package's `Run.chat` returns). Both end a reply where `chat`
//! and `serve` do: at the chat format's stop tokens, or for a base model at
//! the end of text (and, answering a conversation, at a blank line).

use super::conversation::BASE_STOP;
use super::{ChatFormat, Message};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::{Model, Weights};
use crate::sample::{Flow, Generator, Reply, SampleOptions};
use crate::tokenizer::Tokenizer;

/// Continue the token ids `prompt` with the model of a run whose chat
/// format (if any) is `format`, calling `on_text` with each piece of text.
pub fn continue_text<B: Backend>(
    be: &B,
    (model, params, tok): (&Model, Weights<'_, B>, &dyn Tokenizer),
    format: Option<&ChatFormat>,
    prompt: &[u32],
    opts: &SampleOptions,
    on_text: impl FnMut(&str) -> Result<Flow>,
) -> Result<Reply> {
    crate::sample::check_prompt(model, prompt)?;
    let stops = super::stop_tokens(format, tok);
    let mut generator = Generator::new(be, model, params, opts.seed, stops)?;
    generator.generate_text(tok, prompt, opts, on_text)
}

/// The assistant's reply to `messages` (the last one the user's), through
/// the chat format if there is one, else as the continue form.
pub fn answer<B: Backend>(
    be: &B,
    loaded: (&Model, Weights<'_, B>, &dyn Tokenizer),
    format: Option<&ChatFormat>,
    messages: &[Message],
    opts: &SampleOptions,
) -> Result<Reply> {
    let prompt = super::prompt_for(format, loaded.2, messages)?;
    let mut opts = opts.clone();
    if format.is_none() {
        opts.stop.push(BASE_STOP.to_string());
    }
    continue_text(be, loaded, format, &prompt, &opts, |_| Ok(Flow::Continue))
}
