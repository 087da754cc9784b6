//! The OpenAI API's shapes: requests read field by field (so an error can
//! name the field at fault, and unknown fields are ignored), and the JSON of
//! responses, streamed chunks and errors, as `api.openai.com` frames them.
//!
//! ```text
//! POST /v1/completions        {"model", "prompt", "max_tokens", "temperature",
//! POST /v1/chat/completions    "top_p", "stop", "seed", "stream"} / {"messages", ...}
//! error:  {"error": {"message", "type", "param", "code"}}
//! ```

use crate::chat::{Message, Role};
use serde_json::{Map, Value, json};

/// An error as the OpenAI API returns it: an HTTP status and a body naming
/// the field at fault (`param`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: field `param` is wrong.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            param: Some(param.to_string()),
            kind: "invalid_request_error",
            code: None,
        }
    }

    /// Any other status, with no field named.
    pub fn status(status: u16, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            message,
            param: None,
            kind,
            code: Some(code),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

type Parsed<T> = std::result::Result<T, ApiError>;

/// What to continue: a prompt (`/v1/completions`) or a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Prompt(String),
    Chat(Vec<Message>),
}

/// A completion or chat request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: Option<String>,
    pub input: Input,
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub include_usage: bool,
}

/// Read a request body; `chat` picks `messages` over `prompt`.
pub fn parse(body: &[u8], chat: bool) -> Parsed<Request> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        param: None,
        ..ApiError::field("", format!("the request body is not valid JSON: {e}"))
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError {
            param: None,
            ..ApiError::field("", "the request body must be a JSON object")
        });
    };
    let f = Fields(&map);
    if let Some(n) = f.uint("n")?.filter(|&n| n != 1) {
        return Err(ApiError::field(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    let input = if chat {
        Input::Chat(messages(f.get("messages"))?)
    } else {
        Input::Prompt(prompt(f.get("prompt"))?)
    };
    let max_tokens = match f.uint("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.uint("max_tokens")?,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::field(
            "max_tokens",
            "'max_tokens' must be at least 1",
        ));
    }
    let temperature = f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = f.number("top_p", 0.0, 1.0)?;
    if top_p == Some(0.0) {
        return Err(ApiError::field("top_p", "'top_p' must be above 0"));
    }
    Ok(Request {
        model: f.string("model")?,
        input,
        max_tokens,
        temperature,
        top_p,
        stop: stop(f.get("stop"))?,
        seed: f.uint("seed")?.map(|s| s as u64),
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage: include_usage(f.get("stream_options"))?,
    })
}

/// A request's fields; `null` counts as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Parsed<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ApiError::field(
                name,
                format!("'{name}' must be a string, got {v}"),
            )),
        }
    }

    fn bool(&self, name: &str) -> Parsed<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::field(
                name,
                format!("'{name}' must be true or false, got {v}"),
            )),
        }
    }

    fn uint(&self, name: &str) -> Parsed<Option<usize>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::field(
                        name,
                        format!("'{name}' must be a whole number at least 0, got {v}"),
                    )
                }),
        }
    }

    fn number(&self, name: &str, low: f64, high: f64) -> Parsed<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (low..=high).contains(&x) => Ok(Some(x as f32)),
                _ => Err(ApiError::field(
                    name,
                    format!("'{name}' must be a number from {low} to {high}, got {v}"),
                )),
            },
        }
    }
}

/// `prompt`: a string, or a list holding one string.
fn prompt(value: Option<&Value>) -> Parsed<String> {
    match value {
        None => Err(ApiError::field("prompt", "'prompt' is required")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            _ => Err(ApiError::field(
                "prompt",
                "'prompt' must be a string (one prompt per request)",
            )),
        },
        Some(v) => Err(ApiError::field(
            "prompt",
            format!("'prompt' must be a string, got {v}"),
        )),
    }
}

/// `stop`: a string or a list of up to 4 non-empty strings.
fn stop(value: Option<&Value>) -> Parsed<Vec<String>> {
    let bad = || {
        ApiError::field(
            "stop",
            "'stop' must be a string or a list of up to 4 non-empty strings",
        )
    };
    let stops = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= 4 => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Parsed<Vec<_>>>()?,
        Some(_) => return Err(bad()),
    };
    if stops.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(stops)
}

fn include_usage(value: Option<&Value>) -> Parsed<bool> {
    match value {
        None => Ok(false),
        Some(Value::Object(map)) => Ok(Fields(map).bool("include_usage")?.unwrap_or(false)),
        Some(v) => Err(ApiError::field(
            "stream_options",
            format!("'stream_options' must be an object, got {v}"),
        )),
    }
}

/// `messages`: a non-empty list of `{"role", "content"}` with text content.
fn messages(value: Option<&Value>) -> Parsed<Vec<Message>> {
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::field(
            "messages",
            "'messages' must be a list of messages",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::field(
            "messages",
            "'messages' must hold at least one message",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, value: &Value) -> Parsed<Message> {
    let param = format!("messages[{i}]");
    let Value::Object(map) = value else {
        return Err(ApiError::field(
            &param,
            format!("'{param}' must be an object"),
        ));
    };
    let role = match map.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        other => {
            let got = other.map_or("nothing".to_string(), |r| format!("'{r}'"));
            return Err(ApiError::field(
                &format!("{param}.role"),
                format!("'{param}.role' must be system, user or assistant, got {got}"),
            ));
        }
    };
    let content = content(&format!("{param}.content"), map.get("content"))?;
    Ok(Message::new(role, content))
}

/// Message content: a string, or a list of `{"type": "text", "text"}` parts.
fn content(param: &str, value: Option<&Value>) -> Parsed<String> {
    let text_only = || {
        ApiError::field(
            param,
            format!("'{param}' must be text (only text parts are supported)"),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(text_only()),
                },
            )
            .collect(),
        Some(_) => Err(text_only()),
    }
}

/// Token counts, as every response reports them.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Who a response is: its id, creation time and model, shared by its chunks.
#[derive(Debug, Clone)]
pub struct Header {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Header {
    fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole `/v1/completions` response.
    pub fn completion(&self, text: &str, finish: &str, usage: Value) -> Value {
        let choice = json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]);
        let mut body = self.object("text_completion", choice);
        body["usage"] = usage;
        body
    }

    /// One streamed piece of a completion (`finish` on the last).
    pub fn completion_chunk(&self, text: &str, finish: Option<&str>) -> Value {
        let choice = json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]);
        self.object("text_completion", choice)
    }

    /// The whole `/v1/chat/completions` response.
    pub fn chat(&self, text: &str, finish: &str, usage: Value) -> Value {
        let message = json!({"role": "assistant", "content": text});
        let choice =
            json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}]);
        let mut body = self.object("chat.completion", choice);
        body["usage"] = usage;
        body
    }

    /// One streamed chat chunk: `delta` is `{"role"}`, `{"content"}` or `{}`.
    pub fn chat_chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let choice =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        self.object("chat.completion.chunk", choice)
    }

    /// The last streamed chunk when usage was asked for: no choices, the counts.
    pub fn usage_chunk(&self, object: &str, usage: Value) -> Value {
        let mut body = self.object(object, json!([]));
        body["usage"] = usage;
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_field_is_named() {
        let cases = [
            (r#"{"prompt": "a", "temperature": "hot"}"#, "temperature"),
            (r#"{"prompt": "a", "temperature": 3}"#, "temperature"),
            (r#"{"prompt": "a", "max_tokens": -1}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (r#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (r#"{"prompt": "a", "stop": ["", "x"]}"#, "stop"),
            (r#"{"prompt": "a", "stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"prompt": "a", "stream": "yes"}"#, "stream"),
            (r#"{"prompt": "a", "seed": 1.5}"#, "seed"),
            (r#"{"prompt": "a", "n": 2}"#, "n"),
            (r#"{"prompt": 7}"#, "prompt"),
            (r#"{"prompt": ["a", "b"]}"#, "prompt"),
            (r#"{}"#, "prompt"),
        ];
        for (body, field) in cases {
            let err = parse(body.as_bytes(), false).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(field), "{body}: {}", err.message);
            assert!(err.message.contains(field), "{body}: {}", err.message);
        }
        let chat = [
            (r#"{"messages": []}"#, "messages"),
            (
                r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}, 3]}"#,
                "messages[1]",
            ),
        ];
        for (body, field) in chat {
            let err = parse(body.as_bytes(), true).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(field), "{body}: {}", err.message);
        }
    }

    #[test]
    fn good_requests_read_every_field_and_ignore_unknown_ones() {
        let body = r#"{"model": "m", "prompt": ["hi"], "max_tokens": 5, "temperature": 0,
            "top_p": 0.5, "stop": "\n", "seed": 3, "stream": true, "logit_bias": {},
            "stream_options": {"include_usage": true}, "user": "x"}"#;
        let r = parse(body.as_bytes(), false).unwrap();
        assert_eq!(r.input, Input::Prompt("hi".into()));
        assert_eq!(
            (r.max_tokens, r.temperature, r.top_p),
            (Some(5), 0.0, Some(0.5))
        );
        assert_eq!(
            (r.stop, r.seed, r.stream, r.include_usage),
            (vec!["\n".to_string()], Some(3), true, true)
        );
        let chat = r#"{"messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 9, "temperature": null}"#;
        let r = parse(chat.as_bytes(), true).unwrap();
        let expected = vec![
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "ab"),
        ];
        assert_eq!(
            (r.input, r.max_tokens, r.temperature),
            (Input::Chat(expected), Some(9), 1.0)
        );
    }

    #[test]
    fn broken_json_is_a_400_without_a_field() {
        for body in ["{", "[1]", "", "\u{0}\u{1}"] {
            let err = parse(body.as_bytes(), false).unwrap_err();
            assert_eq!((err.status, err.param), (400, None), "{body}");
        }
    }
}
