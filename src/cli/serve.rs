//! `lmforge serve`: serve runs over an OpenAI-compatible HTTP API, with a
//! chat page at `/`.

use lmforge::backend::{Device, WeightType};
use lmforge::serve::{LongPrompts, ServeOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Run directories to serve (each is a model, named by its directory), or
    /// `.gguf` files (named by the file, converted to f32 weights at load).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Address to listen on: 127.0.0.1 (this machine only) unless you open it up, e.g. 0.0.0.0.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Port to listen on (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ requests (default: the LMFORGE_API_KEY variable, if set).
    #[arg(long, env = "LMFORGE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Sequences each model decodes together (each holds a KV cache of the model's context).
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Requests that may wait for a free slot; beyond that the server answers 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// The most tokens a request may ask for (and the default when it does not say).
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds a client has to send a request's headers, from when it connects or its previous reply
    /// ends (so also how long an idle connection stays open).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's whole body (answer 408 after).
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds a reply may wait for the client to read any of it; then the connection is closed
    /// (a client that stopped reading a streamed reply cannot hold its connection).
    #[arg(long, default_value_t = 30.0)]
    write_timeout: f64,
    /// Connections open at once; more wait to be accepted until one closes.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// A prompt longer than the model's context: keep its end (cut) or answer 400 (refuse).
    #[arg(long, value_enum, default_value = "cut")]
    long_prompts: LongPrompts,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Start even if the models look too big for the memory available.
    #[arg(long)]
    ignore_memory_check: bool,
    /// Keep the weights in this type while decoding: f32, bf16, or ggml's q8_0 / q4_0
    /// blocks (8.5 and 4.5 bits a value). Matrices are converted at load and no f32
    /// copy of them is kept; norms, biases and positions stay f32. CPU only.
    /// Default: f32 for a run directory; for a .gguf file its own type (q8_0, q4_0,
    /// bf16; f32 for F32/F16 files), and q8_0 for K-quant files (lmforge has no
    /// K-quant kernels: their tensors are re-packed to q8_0 at load).
    #[arg(long, value_enum)]
    weights: Option<WeightType>,
}

/// A timeout flag: a positive number of seconds.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => anyhow::bail!("{flag} must be a positive number of seconds, not {value}"),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.device == Device::Cuda {
        anyhow::bail!(
            "--device {:?}: lmforge serve runs on the CPU for now",
            args.device
        );
    }
    let (_, threads) = super::cpu_backend(args.threads)?;
    if !args.host.is_loopback() && args.api_key.is_none() {
        eprintln!(
            "warning: listening on {} without --api-key: anyone who can reach this machine can use the models",
            args.host
        );
    }
    let opened = (args.runs.iter())
        .map(|run| lmforge::gguf::open_run(run, args.weights))
        .collect::<lmforge::Result<Vec<_>>>()?;
    let opts = ServeOptions {
        runs: opened.iter().map(|run| run.path().to_path_buf()).collect(),
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key,
        parallel: args.parallel,
        queue: args.queue,
        max_tokens: args.max_tokens,
        max_body: args.max_body,
        header_timeout: seconds("--header-timeout", args.header_timeout)?,
        body_timeout: seconds("--body-timeout", args.body_timeout)?,
        write_timeout: seconds("--write-timeout", args.write_timeout)?,
        max_connections: args.max_connections,
        long_prompts: args.long_prompts,
        ignore_memory_check: args.ignore_memory_check,
        weights: args.weights,
    };
    let names = opts.runs.len();
    lmforge::serve::serve(lmforge::backend::cpu::Cpu::new, opts, |addr| {
        // A closed stdout (a supervisor that read the address and left) is no reason to stop.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "lmforge serve: {names} model(s) on http://{addr} ({threads} threads)"
        );
        let _ = writeln!(out, "  chat page:  http://{addr}/");
        let _ = writeln!(out, "  OpenAI API: base_url=http://{addr}/v1");
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
