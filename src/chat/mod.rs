//! Chatting with a model: the chat template that turns a conversation into
//! tokens ([`template`]), used both to train on conversations (SFT) and to
//! talk to the trained model; the conversation kept within the context
//! window ([`conversation`]); the terminal session of `lmforge chat`
//! ([`terminal`]).

pub mod conversation;
pub mod template;
pub mod terminal;

pub use self::conversation::{Conversation, prompt_for};
pub use self::template::{ChatTemplate, Message, Rendered, Role, SPECIAL_TOKENS};
pub use self::terminal::{ChatOptions, run};

use crate::tokenizer::Tokenizer;

/// The tokens that end a reply: the end of text and, for a tokenizer with
/// the chat template, `<|end|>`.
pub fn stop_tokens(tok: &dyn Tokenizer) -> Vec<u32> {
    let end = ChatTemplate::from_tokenizer(tok).map(|t| t.end_token());
    tok.eot_token().into_iter().chain(end).collect()
}
