//! The `lmforge` command line: parse, call one library function, print; turn
//! errors into an exit code. A closed stdout (`lmforge ... | head`) is a normal exit.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Build, train and sample your own GPT-style language model.
#[derive(Parser)]
#[command(name = "lmforge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a text file (or the built-in Tiny Shakespeare), or resume a run.
    #[command(allow_negative_numbers = true)]
    Train(cli::train::TrainArgs),
    /// Generate text from a trained run.
    #[command(allow_negative_numbers = true)]
    Sample(cli::sample::SampleArgs),
    /// Chat with a trained run in the terminal (or answer lines piped in).
    #[command(allow_negative_numbers = true)]
    Chat(cli::chat::ChatArgs),
    /// Serve runs over an OpenAI-compatible HTTP API, with a chat page in the browser.
    Serve(cli::serve::ServeArgs),
    /// Encode, decode and train tokenizers.
    Tokenizer(cli::tokenizer::TokenizerCommand),
    /// Measure a run: perplexity and bits per byte on a text, or multiple-choice accuracy.
    Eval(cli::eval::EvalArgs),
    /// Measure speed.
    #[command(allow_negative_numbers = true)]
    Bench(cli::bench::BenchArgs),
    /// Tokenize text corpora (plain, compressed, tar, JSON Lines, Parquet) into token shards.
    Prepare(cli::prepare::PrepareArgs),
    /// Import a Hugging Face GPT-2 folder, or a model in the local Hugging Face cache, as a run.
    ImportHf(cli::import_hf::ImportArgs),
    /// Export a run as a Hugging Face folder (LoRA adapters merged into the weights).
    ExportHf(cli::export_hf::ExportArgs),
    /// Export a run as one GGUF file for llama.cpp, Ollama and LM Studio.
    ExportGguf(cli::export_gguf::ExportGgufArgs),
    /// Import a GGUF file (llama.cpp, Ollama) as a run.
    ImportGguf(cli::import_gguf::ImportGgufArgs),
    /// Merge a LoRA run's adapters into its parent's weights, as an ordinary run.
    MergeLora(cli::merge_lora::MergeArgs),
    /// Draw the loss curves of runs (PNG or SVG); several runs overlay.
    Plot(cli::plot::PlotArgs),
    /// List the runs in a folder: model, tokenizer, steps, best loss, time.
    Runs(cli::runs::RunsArgs),
    /// Write a self-contained HTML report of a run.
    Report(cli::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => cli::train::run(args),
        Command::Sample(args) => cli::sample::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Tokenizer(cmd) => cli::tokenizer::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => cli::eval::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Prepare(args) => cli::prepare::run(args),
        Command::ImportHf(args) => cli::import_hf::run(args),
        Command::ExportHf(args) => cli::export_hf::run(args),
        Command::ExportGguf(args) => cli::export_gguf::run(args),
        Command::ImportGguf(args) => cli::import_gguf::run(args),
        Command::MergeLora(args) => cli::merge_lora::run(args),
        Command::Plot(args) => cli::plot::run(args),
        Command::Runs(args) => cli::runs::run(args),
        Command::Report(args) => cli::report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::describe(&err));
            ExitCode::FAILURE
        }
    }
}
