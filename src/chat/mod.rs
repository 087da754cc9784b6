//! Chatting with a model: the chat format that turns a conversation into
//! tokens ([`format`]: the model's own Jinja `chat_template` ([`jinja`]) or
//! lmforge's template ([`template`])), used both to train on conversations
//! (SFT) and to talk to the trained model; the conversation kept within the
//! context window ([`conversation`]); the terminal session of `lmforge chat`
//! ([`terminal`]); text without a terminal ([`reply`]).

pub mod conversation;
pub mod format;
pub mod jinja;
pub mod jinja_limits;
pub mod reply;
pub mod template;
pub mod terminal;

pub use self::conversation::{Conversation, prompt_for};
pub use self::format::ChatFormat;
pub use self::reply::{answer, continue_text};
pub use self::template::{ChatTemplate, Message, Rendered, Role, SPECIAL_TOKENS};
pub use self::terminal::{ChatOptions, run};

use crate::tokenizer::Tokenizer;

/// The tokens that end a reply: the chat format's, or for a base model the
/// end of text.
pub fn stop_tokens(format: Option<&ChatFormat>, tok: &dyn Tokenizer) -> Vec<u32> {
    match format {
        Some(format) => format.stop_tokens().to_vec(),
        None => tok.eot_token().into_iter().collect(),
    }
}
