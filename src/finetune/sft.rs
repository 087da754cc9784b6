//! Supervised fine-tuning data: conversations in JSON Lines, one per line,
//! either `{"prompt": "...", "response": "..."}` or
//! `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}`.
//!
//! Each conversation is rendered with the run's chat format
//! ([`crate::chat::format`]: the model's own `chat_template`, or lmforge's
//! template); the loss counts only the tokens the model must learn to write,
//! the assistant's contents and what closes them (`<|end|>`, `<|im_end|>`, ...).
//! Conversations are packed end to end into one token stream, from which
//! training draws `block_size` windows like any corpus (a window may span two
//! conversations, as packing in TRL's `SFTTrainer` does). A token the loss must
//! skip carries [`PROMPT_BIT`]; the trainer clears it from inputs and turns
//! such targets into [`crate::backend::IGNORE_TARGET`].

use crate::chat::ChatFormat;
use crate::chat::template::{Message, Role};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde::Deserialize;
use std::path::Path;

/// Set on a token id in the stream: not a target the loss counts.
pub const PROMPT_BIT: u32 = 1 << 31;

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Messages { messages: Vec<Message> },
    Pair { prompt: String, response: String },
}

/// The conversation of one JSON line (`number` counts from 1, for errors).
fn parse_line(text: &str, number: usize, path: &Path) -> Result<Vec<Message>> {
    let at = |message: String| Error::format(path, format!("line {number}: {message}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| at(format!("not valid JSON: {e}")))?;
    let line: Line = serde_json::from_value(value).map_err(|_| {
        at("expected {\"prompt\": TEXT, \"response\": TEXT} or \
            {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": TEXT}, ...]}"
            .into())
    })?;
    let messages = match line {
        Line::Messages { messages } => messages,
        Line::Pair { prompt, response } => vec![
            Message::new(Role::User, prompt),
            Message::new(Role::Assistant, response),
        ],
    };
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(at(
            "the conversation has no assistant message to learn from".into(),
        ));
    }
    Ok(messages)
}

/// Every conversation of `path`, rendered: the token ids, with
/// [`PROMPT_BIT`] on those the loss skips.
pub fn read(path: &Path, tok: &dyn Tokenizer, format: &ChatFormat) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = crate::data::documents::strip_bom(&text);
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rendered = format
            .render(tok, &parse_line(line, i + 1, path)?)
            .map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))?;
        let flagged = rendered
            .ids
            .iter()
            .zip(&rendered.trained)
            .map(|(&id, &trained)| if trained { id } else { id | PROMPT_BIT })
            .collect();
        examples.push(flagged);
    }
    if examples.len() < 2 {
        return Err(Error::format(
            path,
            format!(
                "{} conversations; at least 2 are needed (one to validate on)",
                examples.len()
            ),
        ));
    }
    Ok(examples)
}

/// Pack conversations into training and validation streams: the last
/// `val_fraction` of them (at least one) validate. A stream shorter than
/// `min_len` tokens repeats until it is that long.
pub fn pack(examples: Vec<Vec<u32>>, val_fraction: f64, min_len: usize) -> (Vec<u32>, Vec<u32>) {
    let n_val =
        ((examples.len() as f64 * val_fraction).round() as usize).clamp(1, examples.len() - 1);
    let (train, val) = examples.split_at(examples.len() - n_val);
    let stream = |part: &[Vec<u32>]| {
        let once: Vec<u32> = part.concat();
        let mut out = once.clone();
        while out.len() < min_len && !once.is_empty() {
            out.extend_from_slice(&once);
        }
        out
    };
    (stream(train), stream(val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_line_shapes_parse_and_bad_lines_name_their_number() {
        let path = Path::new("chats.jsonl");
        let pair = parse_line(r#"{"prompt": "Hi", "response": "Hello!"}"#, 1, path).unwrap();
        assert_eq!(pair[1], Message::new(Role::Assistant, "Hello!"));
        let chat = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}"#;
        assert_eq!(parse_line(chat, 2, path).unwrap().len(), 3);
        let err = parse_line(r#"{"prompt": "Hi"}"#, 7, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chats.jsonl: line 7"), "{err}");
        let err = parse_line(
            r#"{"messages": [{"role": "user", "content": "x"}]}"#,
            3,
            path,
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("no assistant message")
        );
        assert!(
            parse_line("not json", 4, path)
                .unwrap_err()
                .to_string()
                .contains("line 4")
        );
    }

    #[test]
    fn packing_holds_out_the_last_conversations_and_repeats_short_streams() {
        let (train, val) = pack(vec![vec![1, 2], vec![3], vec![4, 5]], 0.3, 5);
        assert_eq!(val, [4, 5, 4, 5, 4, 5]);
        assert_eq!(train, [1, 2, 3, 1, 2, 3]);
    }
}
