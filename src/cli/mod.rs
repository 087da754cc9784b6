//! One file per subcommand. Each parses its flags, calls one library function
//! and prints the result.

pub mod bench;
pub mod prepare;
pub mod sample;
pub mod train;

/// A closed stdout (`lmforge sample | head`) is a normal way to stop, not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Only the CPU backend exists so far; say so instead of silently ignoring the flag.
pub fn check_device(device: &str) -> anyhow::Result<()> {
    match device {
        "cpu" => Ok(()),
        "cuda" => anyhow::bail!(
            "--device cuda: the CUDA backend is not available in this version; use --device cpu"
        ),
        other => anyhow::bail!("unknown --device {other:?}; expected cpu"),
    }
}
