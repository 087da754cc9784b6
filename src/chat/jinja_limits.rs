//! What a chat template may build. A template comes with a model (its
//! `tokenizer_config.json`) and runs on every chat turn and every request
//! `serve` gets, so a hostile one must fail quickly with a clear error, never
//! hang or take all the memory.
//!
//! **The budget.** minijinja's fuel ([`super::jinja::FUEL`] per rendering)
//! charges one unit per instruction and one per 64 bytes a template makes or
//! walks (text, list slots, items visited), and checks sizes known in advance
//! (`'x' * n`). Since fuel only goes down, it bounds both the time and the
//! data of one rendering.
//!
//! **The ways around it in minijinja 3.1, closed here.** Some operations
//! copy data without charging for the copies, so a template can double a
//! value at every step for the price of a few instructions:
//! - `+` on two lists is lazy, but after 32 concatenations minijinja copies
//!   the whole list uncharged (`{% set l = l + l %}` 34 times: 2^34 items).
//!   Every `+` of a template is compiled to a call of [`ADD`] instead, which
//!   pays for the items of two lists before adding them.
//! - `join` (the filter and Python's `str.join`) copies its items
//!   uncharged (`[s, s, s, s]|join` is 4x bigger at every step).
//! - `format` (the filter and `str.format`) may copy each argument many
//!   times (`('%s' * 8)|format(s, s, s, s, s, s, s, s)`).
//!
//! For `join` and `format` the size of the text is measured first (a meter
//! that stops as soon as the budget left is passed, so the measure is itself
//! bounded) and the call refused when the budget left cannot pay for it.

use minijinja::machinery::{self, Instruction, Instructions};
use minijinja::value::{Kwargs, Rest, StringInput, Value, ValueKind, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};
use std::fmt::Write;

/// The function every `+` of a template calls (see the module doc).
pub const ADD: &str = "__lmforge_add";
/// Bytes one unit of fuel pays for (minijinja's `UNITS_PER_FUEL`).
const BYTES_PER_FUEL: u64 = 64;
/// What a list slot or an item visited costs, in bytes (minijinja's `SLOT_COST`).
const SLOT_BYTES: u64 = 32;

/// Give `env` the checked `+`, `join` and `format` (call before adding templates).
pub fn install(env: &mut Environment<'_>) {
    env.add_function(ADD, add);
    env.add_filter("join", join);
    env.add_filter("format", format);
    env.set_unknown_method_callback(|state, value, method, args| {
        if value.kind() == ValueKind::String {
            match (method, args) {
                ("join", [items]) => ensure_room(state, join_size(state, value, items)?)?,
                ("format", args) => ensure_room(state, format_size(state, value, args)?)?,
                _ => {}
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
}

/// Render `source` (named `name`) in `env`, its `+` compiled to [`ADD`].
pub fn render(
    env: &Environment<'_>,
    name: &str,
    source: &str,
    ctx: Value,
) -> Result<String, Error> {
    let ast = machinery::parse(source, name, env.syntax().clone())?;
    let mut codegen = machinery::CodeGenerator::new(name, source);
    codegen.compile_stmt(&ast);
    let (mut instructions, mut blocks) = codegen.finish();
    checked_adds(&mut instructions);
    blocks.values_mut().for_each(checked_adds);
    let mut text = String::new();
    let mut out = machinery::make_string_output(&mut text);
    machinery::eval(env, &instructions, ctx, &blocks, &mut out, AutoEscape::None)?;
    Ok(text)
}

/// Replace each `Add` instruction by a call of [`ADD`] with the same two operands.
fn checked_adds(instructions: &mut Instructions<'_>) {
    let mut at = 0;
    while let Some(instruction) = instructions.get_mut(at) {
        if matches!(instruction, Instruction::Add) {
            *instruction = Instruction::CallFunction(ADD, Some(2));
        }
        at += 1;
    }
}

/// `a + b`: minijinja's own, after paying for the items when both are lists.
fn add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let is_list = |v: &Value| matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable);
    if is_list(&a) && is_list(&b) {
        let items = a.len().unwrap_or(0) as u64 + b.len().unwrap_or(0) as u64;
        let bytes = items.saturating_mul(SLOT_BYTES);
        ensure_room(state, bytes)?;
        state.consume_fuel(bytes / BYTES_PER_FUEL)?;
    }
    let expression = state.env().compile_expression("a + b")?;
    expression.eval(minijinja::context! { a => a, b => b })
}

/// The `join` filter, refused when its text would not fit the budget left.
fn join(
    state: &mut State,
    value: &Value,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let separator = Value::from(joiner.as_ref().map_or("", |j| j.as_str()));
    ensure_room(state, join_size(state, &separator, value)?)?;
    minijinja::filters::join(state, value, joiner, attribute, kwargs)
}

/// The `format` filter, refused when its text would not fit the budget left.
fn format(
    state: &mut State,
    format_str: &Value,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    let values: Vec<Value> = args.iter().map(|a| Value::clone(a)).collect();
    ensure_room(state, format_size(state, format_str, &values)?)?;
    minijinja::filters::format(state, format_str, args)
}

/// Bytes of `items` joined by `separator` (and what visiting them costs),
/// measured up to just past the budget left.
fn join_size(state: &State, separator: &Value, items: &Value) -> Result<u64, Error> {
    let separator = separator.as_str().unwrap_or("").len() as u64;
    let limit = room(state);
    let mut size = 0u64;
    for item in items.try_iter()? {
        let item_bytes = text_size(&item, limit.saturating_sub(size));
        size = size
            .saturating_add(item_bytes)
            .saturating_add(separator)
            .saturating_add(SLOT_BYTES);
        if size > limit {
            break;
        }
    }
    Ok(size)
}

/// An upper bound on the bytes of `format_str` formatted with `args`: each
/// of its placeholders (`%` or `{`) may write the longest argument.
fn format_size(state: &State, format_str: &Value, args: &[Value]) -> Result<u64, Error> {
    let format_str = format_str.as_str().unwrap_or("");
    let placeholders = format_str.matches(['%', '{']).count() as u64;
    let limit = room(state);
    let longest = args.iter().map(|a| text_size(a, limit)).max().unwrap_or(0);
    Ok((format_str.len() as u64).saturating_add(placeholders.saturating_mul(longest)))
}

/// The bytes of `value` as text, counted up to just past `limit`.
fn text_size(value: &Value, limit: u64) -> u64 {
    if let Some(s) = value.as_str() {
        return s.len() as u64;
    }
    let mut meter = Meter { bytes: 0, limit };
    let _ = write!(meter, "{value}"); // stops with an error once past the limit
    meter.bytes
}

/// Counts the bytes written to it and refuses more once past `limit`.
struct Meter {
    bytes: u64,
    limit: u64,
}

impl Write for Meter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes = self.bytes.saturating_add(s.len() as u64);
        match self.bytes > self.limit {
            true => Err(std::fmt::Error),
            false => Ok(()),
        }
    }
}

/// The bytes the fuel left can pay for.
fn room(state: &State) -> u64 {
    state
        .fuel_levels()
        .map_or(u64::MAX, |(_, left)| left.saturating_mul(BYTES_PER_FUEL))
}

/// Fail when `bytes` more do not fit the budget left.
fn ensure_room(state: &State, bytes: u64) -> Result<(), Error> {
    let left = room(state);
    if bytes <= left {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "it would build about {} of data, more than the {} left of the {} a chat \
             template may build",
            megabytes(bytes),
            megabytes(left),
            megabytes(super::jinja::FUEL * BYTES_PER_FUEL)
        ),
    ))
}

fn megabytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 40 => "more than a TB".to_string(),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}
