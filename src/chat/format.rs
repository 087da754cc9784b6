//! How a run talks: the one chat format that `lmforge chat`, `train --sft`
//! and `lmforge serve` all use.
//!
//! [`ChatFormat::find`] picks it for a run (or a Hugging Face folder):
//! 1. the model's own `chat_template` ([`super::jinja`]), when its
//!    `tokenizer_config.json` (or `chat_template.jinja`) has one;
//! 2. else lmforge's own template ([`super::template`]), when the tokenizer
//!    has its four special tokens (a model fine-tuned on conversations here);
//! 3. else none: a base model, which only continues text.
//!
//! Either way the same three things come out of it: the prompt that asks for
//! a reply ([`ChatFormat::prompt`]), a conversation's tokens with the ones SFT
//! trains ([`ChatFormat::render`]), and the tokens that end a reply
//! ([`ChatFormat::stop_tokens`]).

use super::jinja::JinjaTemplate;
use super::template::{ChatTemplate, Message, Rendered};
use crate::error::Result;
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// A run's chat format (see the module doc).
#[derive(Debug, Clone)]
pub struct ChatFormat {
    template: Template,
    stop_tokens: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Template {
    Own(ChatTemplate),
    Jinja(Arc<JinjaTemplate>),
}

impl ChatFormat {
    /// The chat format of the folder `dir`, whose tokenizer is `tok`; `None`
    /// for a base model. A `tokenizer_config.json` that cannot be read, or
    /// whose template does not compile, is an error naming the file.
    pub fn find(dir: &Path, tok: &dyn Tokenizer) -> Result<Option<ChatFormat>> {
        if let Some(jinja) = JinjaTemplate::load(dir)? {
            return Ok(Some(ChatFormat::jinja(jinja, tok)));
        }
        Ok(ChatTemplate::from_tokenizer(tok).map(|own| ChatFormat::own(own, tok)))
    }

    /// lmforge's own template; a reply ends at `<|end|>` or the end of text.
    pub fn own(template: ChatTemplate, tok: &dyn Tokenizer) -> ChatFormat {
        let stop_tokens = tok.eot_token().into_iter().chain([template.end_token()]);
        ChatFormat {
            template: Template::Own(template),
            stop_tokens: stop_tokens.collect(),
        }
    }

    /// A model's `chat_template`.
    pub fn jinja(template: JinjaTemplate, tok: &dyn Tokenizer) -> ChatFormat {
        ChatFormat {
            stop_tokens: template.stop_tokens(tok),
            template: Template::Jinja(Arc::new(template)),
        }
    }

    /// What it is, for banners: `lmforge's chat template` or `its own chat_template`.
    pub fn describe(&self) -> &'static str {
        match self.template {
            Template::Own(_) => "lmforge's chat template",
            Template::Jinja(_) => "the model's own chat_template",
        }
    }

    /// The tokens asking for the reply to `messages` (the last one the user's).
    pub fn prompt(&self, tok: &dyn Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        match &self.template {
            Template::Own(t) => t.prompt(tok, messages),
            Template::Jinja(t) => t.prompt(tok, messages),
        }
    }

    /// The tokens of `messages`, and which of them SFT trains: each assistant
    /// content and what closes it.
    pub fn render(&self, tok: &dyn Tokenizer, messages: &[Message]) -> Result<Rendered> {
        match &self.template {
            Template::Own(t) => t.render(tok, messages),
            Template::Jinja(t) => t.render(tok, messages),
        }
    }

    /// The tokens that end a reply.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }
}
