//! Multiple choice, scored as llm.c's `hellaswag.py` does: each choice's
//! tokens are scored after the context's, and the model picks
//!
//! ```text
//! acc:       argmin_i  sum_{t in choice i} loss_t        (the likeliest choice)
//! acc_norm:  argmin_i  mean_{t in choice i} loss_t       (per token: long choices not penalised)
//! ```
//!
//! Two JSON Lines layouts, one example per line:
//! - HellaSwag's: `ctx` (or `ctx_a` and `ctx_b`, joined by a space),
//!   `endings`, `label` (a number or a numeric string). Each ending is
//!   encoded after a space (`" " + ending`), as llm.c does.
//! - Generic: `context`, `choices`, `label`; the choices are encoded as given.
//!
//! Context and choice are encoded apart and their tokens joined. A pair
//! longer than the context window loses tokens from the left of its context.
//! The choices of several examples go through the model together
//! ([`Scorer`]), each as one row of the batch.

use super::scorer::{Scorer, Sequence};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Its line in the file (from 1).
    pub line: usize,
    pub context: String,
    /// The choices as they are encoded (HellaSwag's endings with their space).
    pub choices: Vec<String>,
    pub label: usize,
}

/// Read a JSON Lines file of examples (blank lines skipped); an error names
/// the file, the line and what is wrong with it.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example = parse_example(line, i + 1)
            .map_err(|message| Error::format(path, format!("line {}: {message}", i + 1)))?;
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(Error::format(
            path,
            "no examples (one JSON object per line)",
        ));
    }
    Ok(examples)
}

/// One line of either layout.
pub fn parse_example(line: &str, number: usize) -> std::result::Result<Example, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let (context, choices) = match (object.get("endings"), object.get("choices")) {
        (Some(endings), _) => {
            let endings = strings(endings, "endings")?;
            (
                hellaswag_context(object)?,
                endings.iter().map(|e| format!(" {e}")).collect(),
            )
        }
        (None, Some(choices)) => {
            let context = object.get("context").ok_or("no \"context\"")?;
            let context = context.as_str().ok_or("\"context\" is not a string")?;
            (context.to_string(), strings(choices, "choices")?)
        }
        (None, None) => {
            return Err("no \"endings\" (HellaSwag) or \"choices\" (generic layout)".into());
        }
    };
    if choices.len() < 2 {
        return Err(format!(
            "{} choice(s): at least two are needed",
            choices.len()
        ));
    }
    if context.is_empty() {
        return Err("the context is empty".into());
    }
    let label = label(object.get("label").ok_or("no \"label\"")?)?;
    if label >= choices.len() {
        return Err(format!(
            "label {label} is out of range for {} choices",
            choices.len()
        ));
    }
    Ok(Example {
        line: number,
        context,
        choices,
        label,
    })
}

/// HellaSwag's `ctx`, or `ctx_a` and `ctx_b` joined by a space.
fn hellaswag_context(
    object: &serde_json::Map<String, Value>,
) -> std::result::Result<String, String> {
    let field = |name: &str| -> std::result::Result<Option<String>, String> {
        match object.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or(format!("\"{name}\" is not a string")),
        }
    };
    if let Some(ctx) = field("ctx")? {
        return Ok(ctx);
    }
    match (field("ctx_a")?, field("ctx_b")?) {
        (Some(a), Some(b)) if !b.is_empty() => Ok(format!("{a} {b}")),
        (Some(a), _) => Ok(a),
        _ => Err("no \"ctx\" (or \"ctx_a\" and \"ctx_b\")".into()),
    }
}

fn strings(value: &Value, name: &str) -> std::result::Result<Vec<String>, String> {
    let list = value
        .as_array()
        .ok_or(format!("\"{name}\" is not a list"))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or(format!("\"{name}\" holds a value that is not a string"))
        })
        .collect()
}

/// A label as a number or a numeric string ("2").
fn label(value: &Value) -> std::result::Result<usize, String> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.map(|n| n as usize).ok_or(format!(
        "\"label\" must be a choice's index (0, 1, ...), got {value}"
    ))
}

/// One example's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub line: usize,
    pub label: usize,
    /// The choice of least summed loss (`acc`) and of least mean loss (`acc_norm`).
    pub by_sum: usize,
    pub by_mean: usize,
    /// Each choice's summed loss (nats) and its number of scored tokens.
    pub sums: Vec<f64>,
    pub counts: Vec<usize>,
}

/// What scoring a set of examples gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceScore {
    pub acc: f64,
    pub acc_norm: f64,
    pub picks: Vec<Pick>,
}

/// An example as the model reads it: one row per choice (the choice's
/// tokens after the context's), and how many tokens of each are scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub line: usize,
    pub label: usize,
    pub rows: Vec<Sequence>,
    pub scored: Vec<usize>,
}

impl Encoded {
    /// The rows of `choices` after `context` (token ids), each cropped on
    /// the left to `block_size + 1` tokens.
    pub fn new(
        line: usize,
        label: usize,
        context: &[u32],
        choices: &[Vec<u32>],
        block_size: usize,
    ) -> Self {
        let (mut rows, mut scored) = (Vec::new(), Vec::new());
        for end in choices {
            let joined = [context, &end[..]].concat();
            let kept = &joined[joined.len().saturating_sub(block_size + 1)..];
            let n = end.len().min(kept.len() - 1);
            rows.push(Sequence::continuation(kept, kept.len() - 1 - n));
            scored.push(n);
        }
        Encoded {
            line,
            label,
            rows,
            scored,
        }
    }

    /// The longest row, in positions.
    fn longest(&self) -> usize {
        self.rows.iter().map(|s| s.inputs.len()).max().unwrap_or(1)
    }
}

/// Encode an example with `tokenizer` for a model of context `block_size`.
fn encode(
    example: &Example,
    tokenizer: &dyn Tokenizer,
    block_size: usize,
) -> std::result::Result<Encoded, String> {
    let context = match tokenizer.encode(&example.context) {
        Ok(ids) if ids.is_empty() => return Err("the context encodes to no tokens".into()),
        Ok(ids) => ids,
        Err(e) => return Err(format!("the context: {e}")),
    };
    let choices = example
        .choices
        .iter()
        .enumerate()
        .map(|(i, choice)| match tokenizer.encode(choice) {
            Ok(end) if end.is_empty() => Err(format!("choice {i} encodes to no tokens")),
            Ok(end) => Ok(end),
            Err(e) => Err(format!("choice {i}: {e}")),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Encoded::new(
        example.line,
        example.label,
        &context,
        &choices,
        block_size,
    ))
}

/// Score every example (all are encoded first: a bad one stops the run
/// before any forward), calling `progress(examples done, examples)` after
/// each forward.
pub fn score_choices<B: Backend>(
    scorer: &mut Scorer<B>,
    tokenizer: &dyn Tokenizer,
    examples: &[Example],
    path: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<ChoiceScore> {
    let block_size = scorer.block_size();
    let encoded = examples
        .iter()
        .map(|e| {
            encode(e, tokenizer, block_size)
                .map_err(|m| Error::format(path, format!("line {}: {m}", e.line)))
        })
        .collect::<Result<Vec<_>>>()?;
    score_encoded(scorer, &encoded, progress)
}

/// Score encoded examples, as many per forward as fit (each padded to the
/// longest row of its forward).
pub fn score_encoded<B: Backend>(
    scorer: &mut Scorer<B>,
    examples: &[Encoded],
    mut progress: impl FnMut(usize, usize),
) -> Result<ChoiceScore> {
    let mut picks = Vec::with_capacity(examples.len());
    let mut at = 0;
    while at < examples.len() {
        let (first, mut longest) = (at, examples[at].longest());
        let mut rows: Vec<Sequence> = examples[at].rows.clone();
        at += 1;
        while let Some(next) = examples.get(at) {
            let t = longest.max(next.longest());
            if (rows.len() + next.rows.len()) * t > scorer.rows() {
                break;
            }
            longest = t;
            rows.extend_from_slice(&next.rows);
            at += 1;
        }
        let mut losses = score_rows(scorer, &rows)?.into_iter();
        for example in &examples[first..at] {
            let sums = (&mut losses)
                .take(example.rows.len())
                .map(|l| l.iter().map(|&x| x as f64).sum())
                .collect();
            picks.push(pick(
                example.line,
                example.label,
                sums,
                example.scored.clone(),
            ));
        }
        progress(at, examples.len());
    }
    let share = |hits: usize| hits as f64 / picks.len().max(1) as f64;
    Ok(ChoiceScore {
        acc: share(picks.iter().filter(|p| p.by_sum == p.label).count()),
        acc_norm: share(picks.iter().filter(|p| p.by_mean == p.label).count()),
        picks,
    })
}

/// Score rows that may be more than one forward holds (an example with many
/// long choices), in as many forwards as needed.
fn score_rows<B: Backend>(scorer: &mut Scorer<B>, rows: &[Sequence]) -> Result<Vec<Vec<f32>>> {
    let t = rows.iter().map(|s| s.inputs.len()).max().unwrap_or(1);
    let mut losses = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(scorer.sequences_per_batch(t)) {
        losses.extend(scorer.score(chunk)?);
    }
    Ok(losses)
}

/// The choices of least summed and least mean loss (the first on a tie).
fn pick(line: usize, label: usize, sums: Vec<f64>, counts: Vec<usize>) -> Pick {
    let argmin = |score: &dyn Fn(usize) -> f64| {
        (0..sums.len()).fold(0, |best, i| if score(i) < score(best) { i } else { best })
    };
    let by_sum = argmin(&|i| sums[i]);
    let by_mean = argmin(&|i| sums[i] / counts[i] as f64);
    Pick {
        line,
        label,
        by_sum,
        by_mean,
        sums,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_parse_and_bad_lines_say_why() {
        let hs = r#"{"ctx_a": "A man", "ctx_b": "sits", "endings": ["a", "b", "c"], "label": "2"}"#;
        let e = parse_example(hs, 4).unwrap();
        assert_eq!((e.context.as_str(), e.label, e.line), ("A man sits", 2, 4));
        assert_eq!(e.choices, [" a", " b", " c"]);
        let ctx = r#"{"ctx": "Hello", "ctx_a": "x", "endings": ["a", "b"], "label": 0}"#;
        assert_eq!(parse_example(ctx, 1).unwrap().context, "Hello");
        let generic = r#"{"context": "2+2=", "choices": ["4", "5"], "label": 0}"#;
        assert_eq!(parse_example(generic, 1).unwrap().choices, ["4", "5"]);
        for (line, why) in [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"context": "a", "label": 0}"#, "no \"endings\""),
            (
                r#"{"context": "a", "choices": ["x"], "label": 0}"#,
                "at least two",
            ),
            (
                r#"{"context": "a", "choices": ["x", "y"], "label": 2}"#,
                "out of range",
            ),
            (
                r#"{"context": "a", "choices": ["x", "y"], "label": -1}"#,
                "\"label\" must be",
            ),
            (
                r#"{"context": "a", "choices": ["x", 3], "label": 0}"#,
                "not a string",
            ),
            (r#"{"choices": ["x", "y"], "label": 0}"#, "no \"context\""),
            (r#"{"endings": ["x", "y"], "label": 0}"#, "no \"ctx\""),
            (
                r#"{"context": "", "choices": ["x", "y"], "label": 0}"#,
                "empty",
            ),
            (r#"{"context": "a", "choices": ["x", "y"]}"#, "no \"label\""),
        ] {
            let err = parse_example(line, 1).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn rows_score_the_choice_after_the_context_cropped_on_the_left() {
        let e = Encoded::new(3, 1, &[1, 2, 3], &[vec![4], vec![5, 6, 7, 8]], 4);
        assert_eq!(e.scored, [1, 4]);
        let ignore = crate::backend::IGNORE_TARGET;
        assert_eq!(
            e.rows[0],
            Sequence {
                inputs: vec![1, 2, 3],
                targets: vec![ignore, ignore, 4]
            }
        );
        // 3 + 4 tokens, 5 kept: the context's first two go.
        assert_eq!(
            e.rows[1],
            Sequence {
                inputs: vec![3, 5, 6, 7],
                targets: vec![5, 6, 7, 8]
            }
        );
    }

    #[test]
    fn ties_pick_the_first_and_means_divide_by_tokens() {
        let p = pick(1, 1, vec![6.0, 3.0, 3.0], vec![6, 1, 1]);
        assert_eq!((p.by_sum, p.by_mean), (1, 0));
    }
}
