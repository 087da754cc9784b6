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

/// An example's rows: each choice after the context, and how many of its
/// tokens are scored.
fn encode(
    example: &Example,
    tokenizer: &dyn Tokenizer,
    context: usize,
) -> std::result::Result<Vec<(Sequence, usize)>, String> {
    let ctx = tokenizer
        .encode(&example.context)
        .map_err(|e| format!("the context: {e}"))?;
    example
        .choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let end = tokenizer
                .encode(choice)
                .map_err(|e| format!("choice {i}: {e}"))?;
            if end.is_empty() {
                return Err(format!("choice {i} encodes to no tokens"));
            }
            let joined = [&ctx[..], &end[..]].concat();
            let kept = &joined[joined.len().saturating_sub(context + 1)..];
            let scored = end.len().min(kept.len() - 1);
            Ok((
                Sequence::continuation(kept, kept.len() - 1 - scored),
                scored,
            ))
        })
        .collect()
}

/// Score every example, several per forward, calling `progress(examples
/// done, examples)` after each forward.
pub fn score_choices<B: Backend>(
    scorer: &mut Scorer<B>,
    tokenizer: &dyn Tokenizer,
    examples: &[Example],
    path: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<ChoiceScore> {
    let context = scorer.block_size();
    let mut picks = Vec::with_capacity(examples.len());
    let mut at = 0;
    while at < examples.len() {
        let (mut rows, mut longest, mut owners) = (Vec::new(), 0, Vec::new());
        while at < examples.len() {
            let example = &examples[at];
            let encoded = encode(example, tokenizer, context)
                .map_err(|m| Error::format(path, format!("line {}: {m}", example.line)))?;
            let t = encoded
                .iter()
                .map(|(s, _)| s.inputs.len())
                .max()
                .unwrap_or(1)
                .max(longest);
            let fits = (rows.len() + encoded.len()) * t <= scorer.rows();
            if !rows.is_empty() && !fits {
                break;
            }
            longest = t;
            owners.push((at, encoded.iter().map(|(_, n)| *n).collect::<Vec<_>>()));
            rows.extend(encoded.into_iter().map(|(s, _)| s));
            at += 1;
        }
        let losses = score_rows(scorer, &rows)?;
        let mut row = 0;
        for (index, counts) in owners {
            let example = &examples[index];
            let sums: Vec<f64> = counts
                .iter()
                .enumerate()
                .map(|(i, _)| losses[row + i].iter().map(|&l| l as f64).sum())
                .collect();
            row += counts.len();
            picks.push(pick(example, sums, counts));
        }
        progress(at, examples.len());
    }
    let share = |hits: usize| hits as f64 / picks.len() as f64;
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
fn pick(example: &Example, sums: Vec<f64>, counts: Vec<usize>) -> Pick {
    let argmin = |score: &dyn Fn(usize) -> f64| {
        (0..sums.len()).fold(0, |best, i| if score(i) < score(best) { i } else { best })
    };
    let by_sum = argmin(&|i| sums[i]);
    let by_mean = argmin(&|i| sums[i] / counts[i] as f64);
    Pick {
        line: example.line,
        label: example.label,
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
    fn ties_pick_the_first_and_means_divide_by_tokens() {
        let e = Example {
            line: 1,
            context: "c".into(),
            choices: vec!["a".into(), "b".into(), "c".into()],
            label: 1,
        };
        let p = pick(&e, vec![6.0, 3.0, 3.0], vec![6, 1, 1]);
        assert_eq!((p.by_sum, p.by_mean), (1, 0));
    }
}
