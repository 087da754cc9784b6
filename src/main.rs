//! The `lmforge` command: parse flags, run the subcommand, turn errors into an
//! exit code. A closed stdout (`lmforge ... | head`) is a normal exit.

use clap::Parser;
mod cli;

#[derive(Parser)]
#[command(
    name = "lmforge",
    version,
    about = "Build, train and sample GPT-style language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Encode, decode and train tokenizers.
    Tokenizer(cli::tokenizer::TokenizerCommand),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Tokenizer(cmd) => cli::tokenizer::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the error chain ends in writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error chain joined by `: `, leaving out a cause that its parent's
/// message already ends with (library errors print their source).
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}
