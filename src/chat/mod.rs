//! Chatting with a model: the chat template that turns a conversation into
//! tokens ([`template`]), used both to train on conversations (SFT) and to
//! talk to the trained model.

pub mod template;

pub use self::template::{ChatTemplate, Message, Rendered, Role, SPECIAL_TOKENS};
