//! `lmforge eval`: a run's perplexity and bits per byte on a text, or its
//! accuracy on multiple-choice questions (HellaSwag's layout or a generic one).

use anyhow::Context;
use lmforge::backend::{Backend, Device, WeightType};
use lmforge::eval::{ChoiceScore, Scorer, TextScore};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["text", "choices"])))]
pub struct EvalArgs {
    /// Run directory written by `lmforge train` (or `import-hf`).
    run: PathBuf,
    /// Score this UTF-8 text: mean loss, perplexity, bits per byte.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Score these multiple-choice questions (JSON Lines: HellaSwag's `ctx`,
    /// `endings`, `label`, or `context`, `choices`, `label`).
    #[arg(long, value_name = "FILE.jsonl")]
    choices: Option<PathBuf>,
    /// Tokens between the starts of two windows over a long text (1 to the
    /// model's context; default half the context). Smaller gives each token
    /// more context and costs more forwards.
    #[arg(long)]
    stride: Option<usize>,
    /// Score only the first N questions.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print one JSON object (with every question's pick for --choices).
    #[arg(long)]
    json: bool,
    /// With --json and --text: also every token (`token_ids`, `tokens`) and
    /// its loss in nats (`losses[i]` is token i + 1's; the first is given).
    #[arg(long, requires = "json")]
    per_token: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Score with the weights kept in this type (as `sample --weights`, whose
    /// default it shares): how much a quantization costs in perplexity. CPU only.
    #[arg(long, value_enum)]
    weights: Option<WeightType>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    match super::backend(args.device, args.threads)? {
        super::Selected::Cpu(cpu) => eval_on(&cpu, args),
        super::Selected::Cuda(gpu) => eval_on(gpu.as_ref(), args),
    }
}

fn eval_on<B: Backend>(backend: &B, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let loading = || format!("loading the run {}", args.run.display());
    let run = lmforge::gguf::open_run(&args.run, args.weights).with_context(loading)?;
    let (model, loaded, tokenizer) =
        lmforge::sample::load_run_as(backend, run.path(), args.weights).with_context(loading)?;
    let rows = lmforge::eval::default_rows(&model);
    let mut scorer = Scorer::new(backend, &model, loaded.weights(), rows)?;
    let bar = ProgressLine::new(!args.json);
    if let Some(path) = &args.text {
        let text = lmforge::data::text::read_corpus(path)?;
        let score = lmforge::eval::score_text(
            &mut scorer,
            tokenizer.as_ref(),
            &text,
            args.stride,
            |done, all| bar.show("windows", done, all),
        )
        .with_context(|| format!("scoring {}", path.display()))?;
        bar.finish();
        match args.per_token {
            true => print_per_token(&score, tokenizer.as_ref()),
            false => print_text(&score, args.json),
        }
    } else if let Some(path) = &args.choices {
        let mut examples = lmforge::eval::read_examples(path)?;
        examples.truncate(args.limit.unwrap_or(usize::MAX));
        let score = lmforge::eval::score_choices(
            &mut scorer,
            tokenizer.as_ref(),
            &examples,
            path,
            |done, all| bar.show("questions", done, all),
        )?;
        bar.finish();
        print_choices(&score, args.json);
    }
    Ok(ExitCode::SUCCESS)
}

fn text_json(s: &TextScore) -> serde_json::Value {
    serde_json::json!({
        "tokens": s.tokens, "scored_tokens": s.scored_tokens,
        "text_bytes": s.text_bytes, "scored_bytes": s.scored_bytes,
        "total_loss": s.total_loss, "mean_loss": s.mean_loss,
        "perplexity": s.perplexity, "bits_per_byte": s.bits_per_byte,
        "context": s.context, "stride": s.stride, "windows": s.windows,
    })
}

/// The JSON of [`print_text`] with each token and its loss.
fn print_per_token(s: &TextScore, tok: &dyn lmforge::tokenizer::Tokenizer) {
    let mut value = text_json(s);
    let texts: Vec<String> = (s.token_ids.iter())
        .map(|&id| String::from_utf8_lossy(&tok.decode_bytes(&[id])).into_owned())
        .collect();
    value["token_ids"] = serde_json::json!(s.token_ids);
    value["token_texts"] = serde_json::json!(texts);
    value["losses"] = serde_json::json!(s.losses);
    println!("{value}");
}

fn print_text(s: &TextScore, json: bool) {
    if json {
        let value = text_json(s);
        println!("{value}");
        return;
    }
    println!(
        "{} tokens ({} scored, {} bytes), context {}, stride {}, {} windows",
        s.tokens, s.scored_tokens, s.scored_bytes, s.context, s.stride, s.windows
    );
    println!("mean loss      {:.4} nats/token", s.mean_loss);
    println!("perplexity     {:.3}", s.perplexity);
    println!("bits per byte  {:.4}", s.bits_per_byte);
}

fn print_choices(s: &ChoiceScore, json: bool) {
    if json {
        let picks: Vec<_> = s
            .picks
            .iter()
            .map(|p| {
                serde_json::json!({"line": p.line, "label": p.label, "pred": p.by_sum,
                    "pred_norm": p.by_mean, "losses": p.sums, "tokens": p.counts})
            })
            .collect();
        let value = serde_json::json!({"examples": s.picks.len(), "acc": s.acc,
            "acc_norm": s.acc_norm, "picks": picks});
        println!("{value}");
        return;
    }
    println!("{} questions", s.picks.len());
    println!("acc       {:.4}  (least summed loss)", s.acc);
    println!("acc_norm  {:.4}  (least loss per token)", s.acc_norm);
}

/// Progress on stderr: a bar on a terminal, a line every tenth otherwise.
pub(super) struct ProgressLine {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
}

impl ProgressLine {
    pub(super) fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style =
                "{msg} {pos}/{len} {bar:30.cyan/blue} {percent:>3}% | {elapsed} elapsed, ETA {eta}";
            bar.set_style(indicatif::ProgressStyle::with_template(style).expect("valid template"));
            bar
        });
        ProgressLine { bar, enabled }
    }

    pub(super) fn show(&self, what: &str, done: usize, all: usize) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(all as u64);
                bar.set_message(what.to_string());
                bar.set_position(done as u64);
            }
            None if self.enabled && all >= 10 && (done * 10 / all) != ((done - 1) * 10 / all) => {
                eprintln!("{what} {done}/{all}");
            }
            None => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
