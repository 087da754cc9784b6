//! What every chapter's program shares: its flags (`--threads N`, and
//! `--tiny` for the test-sized run), the folder it writes (its own, replaced
//! on a re-run), and errors printed as the `lmforge` command prints them.
//!
//! Each example compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::ExitCode;

/// The flags every example takes.
pub struct ExampleArgs {
    /// Worker threads (default: one per core).
    pub threads: Option<usize>,
    /// A run small enough for the test suite (`--tiny`, or `LMFORGE_TINY` set).
    pub tiny: bool,
}

/// Reads `--threads N` and `--tiny`; anything else is an error that says what is accepted.
pub fn parse_args() -> Result<ExampleArgs, String> {
    let mut args = ExampleArgs {
        threads: None,
        tiny: std::env::var_os("LMFORGE_TINY").is_some(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--threads" => {
                let n = words.next().ok_or("--threads needs a number")?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--threads {n}: not a whole number"))?;
                args.threads = Some(n);
            }
            "--tiny" => args.tiny = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}: this example takes --threads N and --tiny"
                ));
            }
        }
    }
    Ok(args)
}

/// Empties `dir` for this run, saying so when an earlier run's files are replaced.
pub fn fresh_folder(dir: &Path) -> lmforge::Result<()> {
    if dir.exists() {
        println!("replacing the earlier run in {}", dir.display());
        std::fs::remove_dir_all(dir).map_err(|e| lmforge::Error::io(dir, e))?;
    } else {
        println!("writing into {}", dir.display());
    }
    std::fs::create_dir_all(dir).map_err(|e| lmforge::Error::io(dir, e))
}

/// Parses the flags, sets the threads, runs `body`, and turns an error into
/// `error: …` and a failing exit code, as `lmforge` does.
pub fn main_with(body: impl FnOnce(&ExampleArgs) -> lmforge::Result<()>) -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match lmforge::backend::cpu::init_threads(args.threads).and_then(|_| body(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
