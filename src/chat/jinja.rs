//! A model's own chat template: the Jinja `chat_template` of its
//! `tokenizer_config.json` (or `chat_template.jinja`), rendered with
//! `minijinja` the way `transformers`' `apply_chat_template` renders it.
//!
//! **The template's context**, as `transformers` gives it: `messages` (a
//! list of `{"role", "content"}`), `add_generation_prompt`, the special
//! tokens of `tokenizer_config.json` by name (`bos_token`, `eos_token`, ...),
//! and `tools = documents = none`; `trim_blocks` and `lstrip_blocks` on,
//! `{% break %}` / `{% continue %}`, Python's string and dict methods
//! (`.strip()`, `.startswith()`, `.items()`, ... from `minijinja-contrib`),
//! `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` that writes as
//! Python's `json.dumps` does (no HTML escaping).
//!
//! **Text to tokens, safely.** User text must never become a control token,
//! so the template is rendered twice: once with the real contents (the text
//! `transformers` would give) and once with each content replaced by a
//! sentinel (`\u{E000}i\u{E001}` for message `i`). The sentinel rendering is
//! cut at the sentinels into the template's own pieces; the real text is then
//! read as `piece₀ content₀ piece₁ content₁ ... pieceₙ`, where a content may
//! have lost whitespace at either end (templates often `.strip()` it) but
//! nothing else. The pieces are encoded with special tokens recognised
//! ([`Tokenizer::encode`]), the contents with [`Tokenizer::encode_ordinary`].
//! A template that writes a content twice, drops one, reorders them or
//! changes them otherwise is refused with an error saying so.
//!
//! **What SFT trains** ([`JinjaTemplate::render`]): for each assistant
//! message `i`, exactly what the model must write after the generation
//! prompt: the text of `messages[..=i]` after that of `messages[..i]` with
//! `add_generation_prompt`, i.e. the reply and what closes it (`<|im_end|>`,
//! `<|eot_id|>`, ` </s>`). The pieces are also cut at those boundaries, so
//! the tokens trained after a prompt are the tokens a prompt ends with when
//! chatting. A template for which the shorter rendering is not the start of
//! the longer one is refused.
//!
//! **Where a reply ends** ([`JinjaTemplate::stop_tokens`]): the `eos_token`,
//! the special tokens that close an assistant message in the template, the
//! ids `eos_token_id` of `generation_config.json`, and the tokenizer's end of
//! text.
//!
//! **Limits.** A template is at most [`MAX_TEMPLATE_BYTES`]; one rendering
//! gets [`FUEL`] units of work (instructions, and bytes made: about 64 MB in
//! all, see `minijinja`'s fuel), with the ways around the fuel closed
//! ([`super::jinja_limits`]), and [`RECURSION_LIMIT`] levels of nesting, so a
//! template that loops forever or builds huge text or lists fails quickly
//! with an error instead of hanging or taking the memory.

use super::template::{Message, Rendered, Role};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind, State};
use std::path::Path;

/// Where `transformers` keeps the template and the special tokens.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Where newer `transformers` versions save the template on its own.
pub const TEMPLATE_FILE: &str = "chat_template.jinja";
/// Where `eos_token_id` (one id or a list) is read from.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// The files that carry a model's chat format from folder to run to fine-tune.
pub const CHAT_FILES: [&str; 3] = [TOKENIZER_CONFIG_FILE, TEMPLATE_FILE, GENERATION_CONFIG_FILE];

/// The largest template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Work one rendering may do: one unit per instruction or per 64 bytes made
/// (so at most about 64 MB of data, or a million instructions).
pub const FUEL: u64 = 1_000_000;
/// How deeply a rendering may nest (loops, macros, includes).
pub const RECURSION_LIMIT: usize = 100;

/// The special tokens `transformers` passes to a template by name.
const SPECIAL_TOKEN_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// What opens and closes the sentinel that stands for a message's content.
const SENTINEL_OPEN: char = '\u{E000}';
const SENTINEL_CLOSE: char = '\u{E001}';

/// A piece of a rendered conversation: the template's own text, or a content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    text: String,
    content: bool,
}

/// A compiled `chat_template` with the special tokens it is given.
#[derive(Debug, Clone)]
pub struct JinjaTemplate {
    env: Environment<'static>,
    /// The template's text (compiled again, `+` checked, at each rendering).
    source: String,
    /// `(name, text)` of each special token in `tokenizer_config.json`.
    specials: Vec<(&'static str, String)>,
    /// `eos_token_id` of `generation_config.json`.
    eos_ids: Vec<u32>,
    /// The file the template came from, for messages.
    file: String,
}

impl JinjaTemplate {
    /// The template of the folder `dir`: `None` when it has no
    /// `tokenizer_config.json` with a `chat_template` (nor `chat_template.jinja`).
    pub fn load(dir: &Path) -> Result<Option<JinjaTemplate>> {
        let config_path = dir.join(TOKENIZER_CONFIG_FILE);
        let config = match config_path.exists() {
            true => read_json(&config_path)?,
            false => serde_json::Value::Null,
        };
        let jinja_path = dir.join(TEMPLATE_FILE);
        let (source, file) = match jinja_path.exists() {
            true => (Some(read_text(&jinja_path)?), jinja_path),
            false => (chat_template(&config, &config_path)?, config_path.clone()),
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let specials = special_tokens(&config, &config_path)?;
        let eos_ids = eos_token_ids(&dir.join(GENERATION_CONFIG_FILE))?;
        JinjaTemplate::compile(source, specials, eos_ids, &file).map(Some)
    }

    /// The template text of the folder `dir` (`chat_template.jinja`, or
    /// `tokenizer_config.json`'s `chat_template`), uncompiled; `None` without one.
    pub fn source(dir: &Path) -> Result<Option<String>> {
        let jinja_path = dir.join(TEMPLATE_FILE);
        if jinja_path.exists() {
            return read_text(&jinja_path).map(Some);
        }
        let config_path = dir.join(TOKENIZER_CONFIG_FILE);
        match config_path.exists() {
            true => chat_template(&read_json(&config_path)?, &config_path),
            false => Ok(None),
        }
    }

    /// Compile `source` (read from `file`); `specials` are the `(name, text)`
    /// the template sees.
    fn compile(
        source: String,
        specials: Vec<(&'static str, String)>,
        eos_ids: Vec<u32>,
        file: &Path,
    ) -> Result<JinjaTemplate> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::format(
                file,
                format!(
                    "the chat template is {} bytes, more than the {MAX_TEMPLATE_BYTES} accepted",
                    source.len()
                ),
            ));
        }
        if source.contains([SENTINEL_OPEN, SENTINEL_CLOSE]) {
            return Err(Error::format(
                file,
                "the chat template holds the private-use characters U+E000/U+E001 that lmforge \
                 marks message contents with",
            ));
        }
        let env = environment(source.clone())
            .map_err(|e| Error::format(file, format!("the chat template does not compile: {e}")))?;
        let name = file.file_name().unwrap_or(file.as_os_str());
        Ok(JinjaTemplate {
            env,
            source,
            specials,
            eos_ids,
            file: name.to_string_lossy().into_owned(),
        })
    }

    /// The text of `messages`, as `apply_chat_template(..., tokenize=False)` gives it.
    pub fn render_text(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(minijinja::value::Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        for (name, text) in &self.specials {
            ctx.push((name, Value::from(text.as_str())));
        }
        super::jinja_limits::render(
            &self.env,
            "chat_template",
            &self.source,
            Value::from_pairs(ctx),
        )
        .map_err(|e| self.error(e))
    }

    fn error(&self, e: minijinja::Error) -> Error {
        let why = match e.kind() {
            ErrorKind::OutOfFuel => format!(
                "it ran out of fuel (more than {FUEL} units of work: a loop without end, or \
                 more than about {} MB of text and lists)",
                FUEL * 64 / 1_000_000
            ),
            _ => e.to_string(),
        };
        Error::Data(format!("the chat template of {}: {why}", self.file))
    }

    /// The tokens asking for the reply to `messages` (with the generation prompt).
    pub fn prompt(&self, tok: &dyn Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        let segments = self.segments(messages, true)?;
        Ok(encode(tok, &segments)?.0)
    }

    /// The tokens of `messages` and which of them SFT trains (see the module doc).
    pub fn render(&self, tok: &dyn Tokenizer, messages: &[Message]) -> Result<Rendered> {
        let segments = self.segments(messages, false)?;
        let full: String = segments.iter().map(|s| s.text.as_str()).collect();
        let mut trained = Vec::new();
        for (i, _) in messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Assistant)
        {
            let prompt = self.render_text(&messages[..i], true)?;
            let upto = self.render_text(&messages[..=i], false)?;
            if !upto.starts_with(&prompt) || !full.starts_with(&upto) {
                return Err(Error::Data(format!(
                    "the chat template of {}: rendering the conversation up to message {} \
                     does not start with its rendering up to the prompt for that reply, so \
                     lmforge cannot tell which tokens the reply is",
                    self.file,
                    i + 1
                )));
            }
            trained.push(prompt.len()..upto.len());
        }
        let cuts: Vec<usize> = trained.iter().flat_map(|r| [r.start, r.end]).collect();
        let (ids, spans) = encode(tok, &cut_at(segments, &cuts))?;
        let trained = spans
            .iter()
            .map(|span| {
                trained
                    .iter()
                    .any(|r| r.start <= span.start && span.end <= r.end)
            })
            .collect();
        Ok(Rendered { ids, trained })
    }

    /// `messages` rendered as the template's pieces and the contents (see the module doc).
    fn segments(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<Segment>> {
        let real = self.render_text(messages, add_generation_prompt)?;
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(m.role, sentinel(i)))
            .collect();
        let marked = self.render_text(&marked, add_generation_prompt)?;
        let pieces = self.split_at_sentinels(&marked, messages.len())?;
        self.read_contents(&real, &pieces, messages)
    }

    /// The template's pieces around the `n` sentinels, which must each
    /// appear once, in order.
    fn split_at_sentinels(&self, marked: &str, n: usize) -> Result<Vec<String>> {
        let mut pieces = Vec::new();
        let mut rest = marked;
        while let Some(open) = rest.find(SENTINEL_OPEN) {
            pieces.push(rest[..open].to_string());
            let after = &rest[open + SENTINEL_OPEN.len_utf8()..];
            let close = after.find(SENTINEL_CLOSE).unwrap_or(after.len());
            let index = after[..close].parse::<usize>().ok();
            if index != Some(pieces.len() - 1) {
                return Err(self.unfollowable("writes message contents twice or out of order"));
            }
            rest = &after[(close + SENTINEL_CLOSE.len_utf8()).min(after.len())..];
        }
        pieces.push(rest.to_string());
        if pieces.len() != n + 1 {
            return Err(self.unfollowable(&format!(
                "writes the contents of {} of the {n} messages",
                pieces.len() - 1
            )));
        }
        Ok(pieces)
    }

    /// Read `real` as `pieces[0] content₀ pieces[1] ...`, each content as
    /// written or with whitespace trimmed at either end.
    fn read_contents(
        &self,
        real: &str,
        pieces: &[String],
        messages: &[Message],
    ) -> Result<Vec<Segment>> {
        let differs =
            || self.unfollowable("changes message contents (more than trimming whitespace)");
        let piece = |text: &str| Segment {
            text: text.to_string(),
            content: false,
        };
        let mut rest = real.strip_prefix(pieces[0].as_str()).ok_or_else(differs)?;
        let mut segments = vec![piece(&pieces[0])];
        for (message, next) in messages.iter().zip(&pieces[1..]) {
            let c = message.content.as_str();
            let written = [c, c.trim_end(), c.trim_start(), c.trim()]
                .into_iter()
                .find(|w| {
                    rest.strip_prefix(w)
                        .is_some_and(|r| r.starts_with(next.as_str()))
                })
                .ok_or_else(differs)?;
            segments.push(Segment {
                text: written.to_string(),
                content: true,
            });
            segments.push(piece(next));
            rest = &rest[written.len() + next.len()..];
        }
        match rest.is_empty() {
            true => Ok(segments),
            false => Err(differs()),
        }
    }

    fn unfollowable(&self, what: &str) -> Error {
        Error::Data(format!(
            "the chat template of {} {what}: lmforge renders conversations only through \
             templates that write each message's content once, in order",
            self.file
        ))
    }

    /// The tokens that end a reply (see the module doc).
    pub fn stop_tokens(&self, tok: &dyn Tokenizer) -> Vec<u32> {
        let eos = self
            .special("eos_token")
            .and_then(|text| single_token(tok, text));
        let mut stops: Vec<u32> = eos
            .into_iter()
            .chain(self.eos_ids.iter().copied())
            .collect();
        stops.extend(self.closing_specials(tok));
        stops.extend(tok.eot_token());
        let mut seen = std::collections::HashSet::new();
        stops.retain(|id| seen.insert(*id));
        stops
    }

    /// The special tokens the template writes after an assistant's content.
    fn closing_specials(&self, tok: &dyn Tokenizer) -> Vec<u32> {
        let probe = [
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello"),
        ];
        let Ok(segments) = self.segments(&probe, false) else {
            return Vec::new(); // a template that refuses this probe: the eos alone
        };
        let last = segments.iter().rposition(|s| s.content).unwrap_or(0);
        let closer: String = segments[last + 1..]
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        let ids = tok.encode(&closer).unwrap_or_default();
        ids.into_iter()
            .filter(|&id| tok.special_token(&tok.decode(&[id])) == Some(id))
            .collect()
    }

    /// The text of the special token `name` (`bos_token`, `eos_token`, ...).
    pub fn special(&self, name: &str) -> Option<&str> {
        self.specials
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text.as_str())
    }
}

/// The sentinel standing for message `i`'s content.
fn sentinel(i: usize) -> String {
    format!("{SENTINEL_OPEN}{i}{SENTINEL_CLOSE}")
}

/// The id of `text` if it is one token of `tok`.
fn single_token(tok: &dyn Tokenizer, text: &str) -> Option<u32> {
    tok.special_token(text).or_else(|| match tok.encode(text) {
        Ok(ids) if ids.len() == 1 => Some(ids[0]),
        _ => None,
    })
}

/// Split segments so that each of `cuts` (byte offsets into their
/// concatenation) falls between two of them.
fn cut_at(segments: Vec<Segment>, cuts: &[usize]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0;
    for segment in segments {
        let end = start + segment.text.len();
        let mut inner: Vec<usize> = cuts
            .iter()
            .filter(|&&c| c > start && c < end)
            .map(|&c| c - start)
            .collect();
        inner.sort_unstable();
        inner.dedup();
        let mut from = 0;
        for at in inner.into_iter().chain([segment.text.len()]) {
            out.push(Segment {
                text: segment.text[from..at].to_string(),
                content: segment.content,
            });
            from = at;
        }
        start = end;
    }
    out
}

/// Encode segments (pieces with specials, contents as plain text); returns
/// the ids and, for each id, the byte span of its segment in the rendered text.
fn encode(
    tok: &dyn Tokenizer,
    segments: &[Segment],
) -> Result<(Vec<u32>, Vec<std::ops::Range<usize>>)> {
    let (mut ids, mut spans, mut at) = (Vec::new(), Vec::new(), 0);
    for segment in segments {
        let part = match segment.content {
            true => tok.encode_ordinary(&segment.text)?,
            false => tok.encode(&segment.text)?,
        };
        let span = at..at + segment.text.len();
        spans.extend(std::iter::repeat_n(span, part.len()));
        at += segment.text.len();
        ids.extend(part);
    }
    Ok((ids, spans))
}

/// The environment `transformers` renders chat templates in (see the module doc).
fn environment(source: String) -> std::result::Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()?;
    env.set_syntax(syntax);
    super::jinja_limits::install(&mut env);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_template_owned("chat_template", source)?;
    Ok(env)
}

/// `raise_exception(msg)`: the template refuses the conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the template refused the conversation: {message}"),
    ))
}

/// `strftime_now(fmt)`: the local time as Python's `datetime.now().strftime(fmt)`.
fn strftime_now(format: String) -> std::result::Result<Value, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.contains(&Item::Error) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: {format:?} is not a valid date format"),
        ));
    }
    let now = chrono::Local::now();
    Ok(Value::from(
        now.format_with_items(items.into_iter()).to_string(),
    ))
}

/// `tojson`, as `transformers` defines it: Python's `json.dumps` (`", "` and
/// `": "` between items, or `indent`), with no HTML escaping.
fn tojson(
    state: &State,
    value: Value,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    use serde::Serialize;
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let f = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonSpaced,
        )),
    };
    written
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    state.consume_fuel(out.len() as u64 / 64)?;
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(Value::from_safe_string(text))
}

/// `json.dumps`' default layout: `[1, 2]`, `{"a": 1, "b": 2}`.
struct PythonSpaced;

impl serde_json::ser::Formatter for PythonSpaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// A JSON file, or an error naming it.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

/// `chat_template`: a string, or a list of `{"name", "template"}` (the one
/// named `default`); `None` when absent.
fn chat_template(config: &serde_json::Value, path: &Path) -> Result<Option<String>> {
    use serde_json::Value as J;
    match config.get("chat_template") {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s.clone())),
        Some(J::Array(list)) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(J::as_str) == Some(name))
                    .and_then(|t| t.get("template")?.as_str())
            };
            let names: Vec<&str> = list
                .iter()
                .filter_map(|t| t.get("name")?.as_str())
                .collect();
            named("default")
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| {
                    Error::format(
                        path,
                        format!(
                            "chat_template lists templates named {names:?}, none named \"default\" \
                         with a \"template\" text"
                        ),
                    )
                })
        }
        Some(other) => Err(Error::format(
            path,
            format!(
                "chat_template must be a string or a list of {{\"name\", \"template\"}}, not {other}"
            ),
        )),
    }
}

/// The special tokens of `tokenizer_config.json`: each a string or an
/// `AddedToken` object `{"content": ...}`.
fn special_tokens(config: &serde_json::Value, path: &Path) -> Result<Vec<(&'static str, String)>> {
    use serde_json::Value as J;
    let mut out = Vec::new();
    for name in SPECIAL_TOKEN_NAMES {
        let text = match config.get(name) {
            None | Some(J::Null) => continue,
            Some(J::String(s)) => s.clone(),
            Some(J::Object(o)) => match o.get("content") {
                Some(J::String(s)) => s.clone(),
                _ => {
                    return Err(Error::format(
                        path,
                        format!("{name} has no \"content\" text"),
                    ));
                }
            },
            Some(other) => {
                return Err(Error::format(
                    path,
                    format!("{name} must be a string or {{\"content\": TEXT}}, not {other}"),
                ));
            }
        };
        out.push((name, text));
    }
    Ok(out)
}

/// `eos_token_id` of `generation_config.json` (an id or a list of ids), if the file exists.
fn eos_token_ids(path: &Path) -> Result<Vec<u32>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let config = read_json(path)?;
    let bad = || Error::format(path, "eos_token_id must be a token id or a list of them");
    let id = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)
    };
    match config.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(ids)) => ids.iter().map(id).collect(),
        Some(one) => Ok(vec![id(one)?]),
    }
}

/// Give the folder `to` the chat files of `from` ([`CHAT_FILES`]), removing
/// those `from` lacks (or all of them when `from` is `None`), so that a run
/// carries its model's chat template and never a stale one.
pub fn sync_chat_files(from: Option<&Path>, to: &Path) -> Result<()> {
    for name in CHAT_FILES {
        let (source, target) = (from.map(|f| f.join(name)), to.join(name));
        if source.as_deref() == Some(target.as_path()) {
            continue;
        }
        match source.filter(|s| s.exists()) {
            Some(source) => {
                let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
                crate::fsutil::write_atomic_bytes(&target, &bytes)?;
            }
            None if target.exists() => {
                std::fs::remove_file(&target).map_err(|e| Error::io(&target, e))?
            }
            None => {}
        }
    }
    Ok(())
}
