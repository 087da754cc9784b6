//! One file per subcommand. Each parses its flags, calls one library function
//! and prints the result.

use lmforge::backend::Device;
use lmforge::backend::cpu::{Cpu, Dtype};
use lmforge::backend::cuda::{Cuda, MatmulPrecision};

pub mod bench;
pub mod chat;
pub mod eval;
pub mod export_gguf;
pub mod export_hf;
pub mod import_gguf;
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

/// The backend `--device` picked.
pub enum Selected {
    Cpu(Cpu),
    Cuda(Box<Cuda>),
}

/// The CPU backend with its thread pool started (`--threads`, default one
/// per core). Returns it and the thread count.
pub fn cpu_backend(threads: Option<usize>) -> anyhow::Result<(Cpu, usize)> {
    Ok((Cpu::new(), lmforge::backend::cpu::init_threads(threads)?))
}

/// The backend `--device` names, a GPU's products in TF32 (see [`backend_with`]).
pub fn backend(device: Device, threads: Option<usize>) -> anyhow::Result<Selected> {
    backend_with(device, threads, MatmulPrecision::default(), Dtype::F32)
}

/// The backend `--device` names. `cuda` fails with the reason when the GPU
/// or one of its libraries is missing; `auto` then says why and takes the CPU.
/// The GPU, driver and libraries in use are printed to stderr. `dtype` is the
/// CPU's product type (`--dtype`); bf16 is refused for the GPU, which has no
/// bf16 kernels yet.
pub fn backend_with(
    device: Device,
    threads: Option<usize>,
    precision: MatmulPrecision,
    dtype: Dtype,
) -> anyhow::Result<Selected> {
    if dtype == Dtype::Bf16 && device != Device::Cpu {
        anyhow::bail!("--dtype bf16 trains on the CPU only (use --device cpu)");
    }
    let cpu = || -> anyhow::Result<Selected> {
        lmforge::backend::cpu::init_threads(threads)?;
        Ok(Selected::Cpu(Cpu::with_dtype(dtype)))
    };
    let cuda = || {
        Cuda::with_precision(precision).map(|gpu| {
            eprint!("{}", gpu.info());
            Selected::Cuda(Box::new(gpu))
        })
    };
    match device {
        Device::Cpu => cpu(),
        Device::Cuda => Ok(cuda()?),
        Device::Auto => cuda().or_else(|e| {
            eprintln!("--device auto: using the CPU, because {e}");
            cpu()
        }),
    }
}
