//! One file per subcommand. Each parses its flags, calls one library function
//! and prints the result.

use lmforge::backend::Device;
use lmforge::backend::cpu::Cpu;

pub mod bench;
pub mod chat;
pub mod export_hf;
pub mod import_hf;
pub mod merge_lora;
pub mod plot;
pub mod prepare;
pub mod report;
pub mod runs;
pub mod sample;
pub mod serve;
pub mod tokenizer;
pub mod train;

/// A closed stdout (`lmforge sample | head`) is a normal way to stop, not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error chain joined by `: `, leaving out a cause that its parent's
/// message already ends with (library errors print their source).
pub fn describe(e: &anyhow::Error) -> String {
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

/// The backend `--device` names, with the CPU's thread pool started
/// (`--threads`, default one per core). Returns it and the thread count.
pub fn backend(device: Device, threads: Option<usize>) -> anyhow::Result<(Cpu, usize)> {
    match device {
        Device::Cpu => Ok((Cpu::new(), lmforge::backend::cpu::init_threads(threads)?)),
        Device::Cuda => anyhow::bail!(
            "--device cuda: the CUDA backend is not available in this version; use --device cpu"
        ),
    }
}
