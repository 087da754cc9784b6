//! The OpenAI API's shapes: requests read field by field (so an error can
//! name the field at fault, and unknown fields are ignored), and the JSON of
//! responses, streamed chunks and errors, as `api.openai.com` frames them.
//!
//! ```text
//! POST /v1/completions        {"model", "prompt", "max_tokens", "temperature", "top_p",
//!                              "presence_penalty", "frequency_penalty", "stop", "seed",
//!                              "stream", "n", "best_of", "logprobs", "echo"}
//! POST /v1/chat/completions   {"messages", ... "logprobs": true, "top_logprobs"}
//! extensions (vLLM's names):  "top_k", "min_p", "repetition_penalty"
//! error:  {"error": {"message", "type", "param", "code"}}
//! ```
//!
//! The ranges of the sampling options are [`SampleOptions::check`]'s, the
//! same as the command line's.

use crate::chat::{Message, Role};
use crate::sample::SampleOptions;
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

/// The most choices (`n`) and candidates (`best_of`) a request may ask for.
pub const MAX_CHOICES: usize = 16;

/// A completion or chat request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: Option<String>,
    pub input: Input,
    /// 0 only with `echo` (score the prompt, generate nothing).
    pub max_tokens: Option<usize>,
    /// Sampling, penalties, stop strings, log-probs (`max_new_tokens` and
    /// `seed` are set when the request is queued).
    pub opts: SampleOptions,
    pub seed: Option<u64>,
    /// Completions: the prompt comes back before the reply (with its log-probs).
    pub echo: bool,
    /// Choices returned, and candidates generated (the `n` best by mean log-probability).
    pub n: usize,
    pub best_of: usize,
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
    let input = if chat {
        Input::Chat(messages(f.get("messages"))?)
    } else {
        Input::Prompt(prompt(f.get("prompt"))?)
    };
    let max_tokens = match f.uint("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.uint("max_tokens")?,
    };
    let echo = !chat && f.bool("echo")?.unwrap_or(false);
    if max_tokens == Some(0) && !echo {
        return Err(ApiError::field(
            "max_tokens",
            "'max_tokens' must be at least 1 (0 only with 'echo', to score the prompt)",
        ));
    }
    let opts = options(&f, chat)?;
    let (n, best_of) = choices(&f)?;
    let stream = f.bool("stream")?.unwrap_or(false);
    if stream && best_of > 1 {
        return Err(ApiError::field(
            "stream",
            "'stream' is supported with one choice only (n and best_of 1)",
        ));
    }
    Ok(Request {
        model: f.string("model")?,
        input,
        max_tokens,
        opts,
        seed: f.uint("seed")?.map(|s| s as u64),
        echo,
        n,
        best_of,
        stream,
        include_usage: include_usage(f.get("stream_options"))?,
    })
}

/// The sampling options, checked by [`SampleOptions::check`].
fn options(f: &Fields, chat: bool) -> Parsed<SampleOptions> {
    let d = SampleOptions::default();
    let logprobs = if chat {
        let top = f.uint("top_logprobs")?;
        match (f.bool("logprobs")?.unwrap_or(false), top) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, Some(_)) => {
                return Err(ApiError::field(
                    "top_logprobs",
                    "'top_logprobs' needs 'logprobs': true",
                ));
            }
            (false, None) => None,
        }
    } else {
        f.uint("logprobs")?
    };
    let opts = SampleOptions {
        temperature: f.number("temperature")?.unwrap_or(1.0),
        top_k: f.uint("top_k")?,
        top_p: f.number("top_p")?,
        min_p: f.number("min_p")?,
        repetition_penalty: f.number("repetition_penalty")?.unwrap_or(1.0),
        presence_penalty: f.number("presence_penalty")?.unwrap_or(0.0),
        frequency_penalty: f.number("frequency_penalty")?.unwrap_or(0.0),
        stop: stop(f.get("stop"))?,
        logprobs,
        ..d
    };
    opts.check().map_err(|bad| {
        let param = match bad.option {
            "logprobs" if chat => "top_logprobs",
            option => option,
        };
        ApiError::field(param, format!("'{param}' {}", bad.rule))
    })?;
    Ok(opts)
}

/// `n` (default 1) and `best_of` (default `n`, at least `n`), each up to [`MAX_CHOICES`].
fn choices(f: &Fields) -> Parsed<(usize, usize)> {
    let n = f.uint("n")?.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(ApiError::field(
            "n",
            format!("'n' must be from 1 to {MAX_CHOICES}, got {n}"),
        ));
    }
    let best_of = f.uint("best_of")?.unwrap_or(n);
    if !(n..=MAX_CHOICES).contains(&best_of) {
        return Err(ApiError::field(
            "best_of",
            format!("'best_of' must be from n ({n}) to {MAX_CHOICES}, got {best_of}"),
        ));
    }
    Ok((n, best_of))
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

    /// A number (its range is checked with the other options).
    fn number(&self, name: &str) -> Parsed<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(ApiError::field(
                    name,
                    format!("'{name}' must be a number, got {v}"),
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

    /// The whole `/v1/completions` response, from [`completion_choice`]s.
    pub fn completion(&self, choices: Vec<Value>, usage: Value) -> Value {
        let mut body = self.object("text_completion", Value::Array(choices));
        body["usage"] = usage;
        body
    }

    /// One streamed piece of a completion (`finish` on the last).
    pub fn completion_chunk(&self, text: &str, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = completion_choice(0, text, logprobs, finish);
        self.object("text_completion", json!([choice]))
    }

    /// The whole `/v1/chat/completions` response, from [`chat_choice`]s.
    pub fn chat(&self, choices: Vec<Value>, usage: Value) -> Value {
        let mut body = self.object("chat.completion", Value::Array(choices));
        body["usage"] = usage;
        body
    }

    /// One streamed chat chunk: `delta` is `{"role"}`, `{"content"}` or `{}`.
    pub fn chat_chunk(&self, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice =
            json!([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]);
        self.object("chat.completion.chunk", choice)
    }

    /// The last streamed chunk when usage was asked for: no choices, the counts.
    pub fn usage_chunk(&self, object: &str, usage: Value) -> Value {
        let mut body = self.object(object, json!([]));
        body["usage"] = usage;
        body
    }
}

/// One choice of a completion (`logprobs` null unless asked for).
pub fn completion_choice(index: usize, text: &str, logprobs: Value, finish: Option<&str>) -> Value {
    json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish})
}

/// One choice of a chat completion.
pub fn chat_choice(index: usize, text: &str, logprobs: Value, finish: &str) -> Value {
    let message = json!({"role": "assistant", "content": text});
    json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
}

/// A token as the API reports it: its text (its bytes as UTF-8, invalid
/// ones replaced), its bytes, its log-probability (`None` for a prompt's
/// first token, which nothing predicts) and the likeliest alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedToken {
    pub bytes: Vec<u8>,
    pub logprob: Option<f32>,
    /// `(bytes, logprob)`, likeliest first; `None` with `logprob`.
    pub top: Option<Vec<(Vec<u8>, f32)>>,
}

impl LoggedToken {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A completion's `logprobs`, OpenAI's legacy shape: parallel lists, the
/// alternatives as `{token: logprob}` with the chosen token among them,
/// `text_offset` the character offset of each token in the text returned,
/// counting from `offset`.
pub fn completion_logprobs(tokens: &[LoggedToken], offset: usize) -> Value {
    let mut at = offset;
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(at);
        at += t.text().chars().count();
    }
    let top = |t: &LoggedToken| match (&t.top, t.logprob) {
        (Some(top), Some(logprob)) => {
            let mut map: Map<String, Value> = top
                .iter()
                .map(|(bytes, lp)| (String::from_utf8_lossy(bytes).into_owned(), json!(lp)))
                .collect();
            map.entry(t.text()).or_insert(json!(logprob));
            Value::Object(map)
        }
        _ => Value::Null,
    };
    json!({
        "tokens": tokens.iter().map(LoggedToken::text).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(top).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// A chat choice's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
pub fn chat_logprobs(tokens: &[LoggedToken]) -> Value {
    let entry = |bytes: &[u8], logprob: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": logprob, "bytes": bytes});
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.bytes, t.logprob.unwrap_or(0.0));
            let top = t.top.iter().flatten().map(|(b, lp)| entry(b, *lp));
            e["top_logprobs"] = Value::Array(top.collect());
            e
        })
        .collect();
    json!({ "content": content })
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
            (r#"{"prompt": "a", "n": 0}"#, "n"),
            (r#"{"prompt": "a", "n": 17}"#, "n"),
            (r#"{"prompt": "a", "n": 3, "best_of": 2}"#, "best_of"),
            (r#"{"prompt": "a", "n": 2, "stream": true}"#, "stream"),
            (r#"{"prompt": "a", "logprobs": 21}"#, "logprobs"),
            (r#"{"prompt": "a", "logprobs": -1}"#, "logprobs"),
            (
                r#"{"prompt": "a", "presence_penalty": 2.5}"#,
                "presence_penalty",
            ),
            (
                r#"{"prompt": "a", "frequency_penalty": -3}"#,
                "frequency_penalty",
            ),
            (r#"{"prompt": "a", "top_k": 0}"#, "top_k"),
            (r#"{"prompt": "a", "echo": 1}"#, "echo"),
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
        let chat = chat.into_iter().chain([
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}"#,
                "top_logprobs",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": 21}"#,
                "top_logprobs",
            ),
        ]);
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
            (r.max_tokens, r.opts.temperature, r.opts.top_p),
            (Some(5), 0.0, Some(0.5))
        );
        assert_eq!(
            (r.opts.stop, r.seed, r.stream, r.include_usage),
            (vec!["\n".to_string()], Some(3), true, true)
        );
        let body = r#"{"prompt": "a", "max_tokens": 0, "echo": true, "logprobs": 3, "n": 2,
            "best_of": 4, "presence_penalty": -0.5, "frequency_penalty": 1}"#;
        let r = parse(body.as_bytes(), false).unwrap();
        assert_eq!(
            (r.max_tokens, r.echo, r.opts.logprobs),
            (Some(0), true, Some(3))
        );
        assert_eq!((r.n, r.best_of), (2, 4));
        assert_eq!(
            (r.opts.presence_penalty, r.opts.frequency_penalty),
            (-0.5, 1.0)
        );
        let body = r#"{"messages": [{"role": "user", "content": "a"}], "logprobs": true,
            "top_logprobs": 2}"#;
        assert_eq!(parse(body.as_bytes(), true).unwrap().opts.logprobs, Some(2));
        let chat = r#"{"messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 9, "temperature": null}"#;
        let r = parse(chat.as_bytes(), true).unwrap();
        let expected = vec![
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "ab"),
        ];
        assert_eq!(
            (r.input, r.max_tokens, r.opts.temperature, r.opts.logprobs),
            (Input::Chat(expected), Some(9), 1.0, None)
        );
    }

    /// The shapes of OpenAI's log-probabilities: the completions' parallel
    /// lists (a prompt's first token null, the chosen token among the
    /// alternatives, character offsets) and chat's `content` entries.
    #[test]
    fn logprobs_are_shaped_as_openai_shapes_them() {
        let token = |text: &str, logprob: Option<f32>, top: &[(&str, f32)]| LoggedToken {
            bytes: text.as_bytes().to_vec(),
            logprob,
            top: logprob.map(|_| {
                top.iter()
                    .map(|(t, lp)| (t.as_bytes().to_vec(), *lp))
                    .collect()
            }),
        };
        let tokens = [
            token("Hé", None, &[]),
            token("llo", Some(-0.5), &[("llo", -0.5), ("y", -1.5)]),
            token(" w", Some(-2.0), &[("!", -0.25)]),
        ];
        let got = completion_logprobs(&tokens, 0);
        assert_eq!(
            got,
            json!({
                "tokens": ["Hé", "llo", " w"],
                "token_logprobs": [null, -0.5, -2.0],
                "top_logprobs": [null, {"llo": -0.5, "y": -1.5}, {"!": -0.25, " w": -2.0}],
                "text_offset": [0, 2, 5],
            })
        );
        assert_eq!(
            completion_logprobs(&tokens[1..], 7)["text_offset"],
            json!([7, 10])
        );
        let chat = chat_logprobs(&tokens[1..]);
        assert_eq!(
            chat,
            json!({"content": [
                {"token": "llo", "logprob": -0.5, "bytes": [108, 108, 111], "top_logprobs": [
                    {"token": "llo", "logprob": -0.5, "bytes": [108, 108, 111]},
                    {"token": "y", "logprob": -1.5, "bytes": [121]}]},
                {"token": " w", "logprob": -2.0, "bytes": [32, 119], "top_logprobs": [
                    {"token": "!", "logprob": -0.25, "bytes": [33]}]},
            ]})
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
