//! The conversation so far, and the prompt it makes within the context window.
//!
//! Two ways to talk, chosen by the run ([`ChatFormat::find`]):
//! - **template** (a model with a chat format: its own `chat_template`, or
//!   lmforge's template): the system message, the turns and the new user
//!   message are rendered by it with the generation prompt (`<|assistant|>`
//!   in lmforge's); the reply ends at one of its stop tokens.
//! - **continue** (a base model): a running transcript. The system text, if
//!   any, opens it on a line of its own; each turn is the user's line, a
//!   newline, then the model's continuation, which ends at a blank line
//!   ([`BASE_STOP`], a paragraph break: for the built-in Shakespeare one
//!   speech) or at `max_new_tokens`; turns are separated by that blank line:
//!
//! ```text
//! ROMEO:                      <- what the user typed
//! But soft, what light ...    <- the model's continuation
//!                             <- the blank line that ended it
//! JULIET:                     <- the next line typed ...
//! ```
//!
//! When the prompt (plus room for the reply) no longer fits in the context
//! window, the oldest turns are dropped for good; the system message stays.

use super::format::ChatFormat;
use super::template::{Message, Role};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Where a base model's reply ends: the first blank line.
pub const BASE_STOP: &str = "\n\n";

/// A prompt that fits the context window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub ids: Vec<u32>,
    /// How many of the oldest turns had to be dropped for it to fit.
    pub dropped: usize,
    /// Even alone the new message does not fit: the model sees only its end.
    pub too_long: bool,
}

/// The system message and the finished turns of one chat.
#[derive(Debug, Clone)]
pub struct Conversation {
    format: Option<ChatFormat>,
    system: Option<String>,
    /// (what the user said, what the model replied), oldest first.
    turns: Vec<(String, String)>,
}

impl Conversation {
    /// A new conversation, through `format` if there is one, else continuing text.
    pub fn new(format: Option<ChatFormat>) -> Self {
        Conversation {
            format,
            system: None,
            turns: Vec::new(),
        }
    }

    pub fn format(&self) -> Option<&ChatFormat> {
        self.format.as_ref()
    }

    /// Set (or with an empty text, clear) the system message.
    pub fn set_system(&mut self, text: &str) {
        self.system = (!text.is_empty()).then(|| text.to_string());
    }

    /// Forget every turn (the system message stays).
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    pub fn turns(&self) -> usize {
        self.turns.len()
    }

    /// Record a finished turn.
    pub fn push(&mut self, user: &str, reply: &str) {
        self.turns.push((user.to_string(), reply.to_string()));
    }

    /// The prompt asking for the reply to `user`, at most `budget` tokens:
    /// the oldest turns are dropped (for good) until it fits.
    pub fn prompt(&mut self, tok: &dyn Tokenizer, user: &str, budget: usize) -> Result<Fitted> {
        let mut dropped = 0;
        loop {
            let ids = self.render(tok, user)?;
            if ids.len() <= budget || self.turns.is_empty() {
                let too_long = ids.len() > budget;
                return Ok(Fitted {
                    ids,
                    dropped,
                    too_long,
                });
            }
            self.turns.remove(0);
            dropped += 1;
        }
    }

    /// The whole prompt, turns and all.
    fn render(&self, tok: &dyn Tokenizer, user: &str) -> Result<Vec<u32>> {
        prompt_for(self.format.as_ref(), tok, &self.messages(user))
    }

    /// The messages of the template form.
    fn messages(&self, user: &str) -> Vec<Message> {
        let system = self.system.iter().map(|s| Message::new(Role::System, s));
        let turns = self.turns.iter().flat_map(|(u, a)| {
            [
                Message::new(Role::User, u.as_str()),
                Message::new(Role::Assistant, a.as_str()),
            ]
        });
        system
            .chain(turns)
            .chain([Message::new(Role::User, user)])
            .collect()
    }
}

/// The prompt asking for the reply to `messages` (the last one the user's):
/// through the chat format if there is one, else as the continue form's
/// transcript (what `lmforge chat` and `lmforge serve` both send the model).
pub fn prompt_for(
    format: Option<&ChatFormat>,
    tok: &dyn Tokenizer,
    messages: &[Message],
) -> Result<Vec<u32>> {
    match format {
        Some(format) => format.prompt(tok, messages),
        None => tok.encode(&transcript(messages)),
    }
}

/// The text of the continue form: the system text and each user message on
/// a line of its own, each reply followed by a blank line.
fn transcript(messages: &[Message]) -> String {
    let mut text = String::new();
    for message in messages {
        text.push_str(&message.content);
        text.push_str(match message.role {
            Role::System | Role::User => "\n",
            Role::Assistant => BASE_STOP,
        });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatTemplate, SPECIAL_TOKENS};
    use crate::tokenizer::{CharTokenizer, gpt2};

    #[test]
    fn template_prompt_is_the_templates_rendering_of_the_whole_chat() {
        let tok = gpt2()
            .unwrap()
            .with_added_specials(&SPECIAL_TOKENS)
            .unwrap();
        let template = ChatTemplate::from_tokenizer(&tok).unwrap();
        let mut chat = Conversation::new(Some(ChatFormat::own(template, &tok)));
        chat.set_system("Be kind.");
        chat.push("Hi", "Hello!");
        let fitted = chat.prompt(&tok, "How are you?", 1000).unwrap();
        assert_eq!(
            tok.decode(&fitted.ids),
            "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>\
             <|user|>How are you?<|end|><|assistant|>"
        );
        assert_eq!((fitted.dropped, fitted.too_long), (0, false));
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_system_message_stays() {
        let tok = CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz:\n ").unwrap();
        let mut chat = Conversation::new(None);
        chat.set_system("sys:");
        for (u, a) in [("one", "uno"), ("two", "dos"), ("three", "tres")] {
            chat.push(u, a);
        }
        let all = "sys:\none\nuno\n\ntwo\ndos\n\nthree\ntres\n\nfour\n";
        assert_eq!(
            tok.decode(&chat.prompt(&tok, "four", 100).unwrap().ids),
            all
        );
        // Without "one\nuno\n\n" (9 characters) the 40 become 31.
        let fitted = chat.prompt(&tok, "four", all.len() - 9).unwrap();
        assert_eq!(fitted.dropped, 1);
        assert_eq!(
            tok.decode(&fitted.ids),
            "sys:\ntwo\ndos\n\nthree\ntres\n\nfour\n"
        );
        assert_eq!(chat.turns(), 2, "dropped for good");
        let fitted = chat.prompt(&tok, "four", 3).unwrap();
        assert_eq!((fitted.dropped, fitted.too_long), (2, true));
        assert_eq!(tok.decode(&fitted.ids), "sys:\nfour\n");
        chat.push("x", "y");
        chat.reset();
        assert_eq!(chat.turns(), 0);
        chat.set_system("");
        assert_eq!(
            tok.decode(&chat.prompt(&tok, "hi", 100).unwrap().ids),
            "hi\n"
        );
    }
}
