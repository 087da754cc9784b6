//! `lmforge serve`: trained runs behind an OpenAI-compatible HTTP API and a
//! chat page, the way `llama-server`, Ollama and vLLM serve theirs.
//!
//! ```text
//! GET  /                       the chat page (page.html, inside the binary)
//! GET  /health                 {"status": "ok", models, active, queued}
//! GET  /v1/models              the runs served, by directory name
//! POST /v1/completions         continue a prompt       (stream: server-sent events)
//! POST /v1/chat/completions    reply to a conversation (stream: server-sent events)
//! ```
//!
//! Each served run has an [`engine`] thread that decodes every request
//! together (one forward over all active sequences per token); the HTTP
//! side ([`http`], tokio + axum) checks requests ([`api`]), turns them into
//! prompts, queues them (a bounded queue: `503` with `Retry-After` when
//! full) and streams the tokens back as text, cut at stop strings.
//!
//! Safe by default: it listens on 127.0.0.1 unless told otherwise, checks
//! `Authorization: Bearer KEY` when an API key is set, caps the body, the
//! prompt and `max_tokens`, and on Ctrl-C stops taking requests, lets the
//! running ones finish, and exits.

pub mod api;
pub mod engine;
mod http;
mod write_deadline;

use crate::backend::Backend;
use crate::backend::WeightType;
use crate::chat::ChatFormat;
use crate::error::{Error, Result};
use crate::sample::load::{LoadedWeights, load_weights};
use crate::tokenizer::Tokenizer;
use engine::{Engine, Job, Load};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

/// What to do with a prompt longer than the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LongPrompts {
    /// Keep its end (the response says how many tokens were cut).
    Cut,
    /// Answer 400 `context_length_exceeded`.
    Refuse,
}

/// How to serve; the fields are `lmforge serve`'s flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub runs: Vec<PathBuf>,
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    /// Sequences each model decodes together.
    pub parallel: usize,
    /// Requests that may wait for a free slot before new ones get a 503.
    pub queue: usize,
    /// The largest `max_tokens` a request may ask for (also the default).
    pub max_tokens: usize,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// How long a client may take to send a request's headers, from when it
    /// connects or its previous reply ends (so also the idle limit).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// How long a reply may wait for the client to read any of it before the
    /// connection is closed (a client that stopped reading a stream).
    pub write_timeout: Duration,
    /// Connections open at once (more wait in the listen queue).
    pub max_connections: usize,
    pub long_prompts: LongPrompts,
    /// Start even if the estimate says the memory is short.
    pub ignore_memory_check: bool,
    /// The type the weights are kept in (`--weights`; `None`: each run's own).
    pub weights: Option<crate::backend::WeightType>,
}

/// A run being served, as the HTTP side sees it.
pub(crate) struct Served {
    pub name: String,
    pub tokenizer: Arc<dyn Tokenizer>,
    /// How chats become prompts; `None` for a base model.
    pub template: Option<ChatFormat>,
    pub block_size: usize,
    pub jobs: SyncSender<Job>,
    pub load: Arc<Load>,
}

/// Serve `opts.runs` until Ctrl-C (or SIGTERM); `on_ready` gets the address
/// once it listens (port 0 picks a free one). Each model's engine gets its
/// own backend from `new_backend`.
pub fn serve<B, F>(
    new_backend: F,
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()>
where
    B: Backend + 'static,
    F: Fn() -> B + Clone + Send + 'static,
{
    check(&opts)?;
    let mut served = Vec::new();
    let mut engines = Vec::new();
    for dir in &opts.runs {
        let (entry, thread) = start_engine(new_backend.clone(), dir, &opts)?;
        if served.iter().any(|s: &Served| s.name == entry.name) {
            return Err(Error::Config(format!(
                "two runs are named '{}': serve runs whose directory names differ",
                entry.name
            )));
        }
        served.push(entry);
        engines.push(thread);
    }
    let outcome = http::run(served, &opts, on_ready);
    for engine in engines {
        let _ = engine.join(); // their job queues closed with `served`
    }
    outcome
}

fn check(opts: &ServeOptions) -> Result<()> {
    let bad = |m: &str| Err(Error::Config(m.to_string()));
    if opts.runs.is_empty() {
        return bad("name at least one run directory to serve");
    }
    if opts.parallel == 0 || opts.parallel > 256 {
        return bad("--parallel must be from 1 to 256");
    }
    if opts.max_tokens == 0 {
        return bad("--max-tokens must be at least 1");
    }
    if opts.max_connections == 0 {
        return bad("--max-connections must be at least 1");
    }
    if opts.max_body < 1024 {
        return bad("--max-body must be at least 1024 bytes");
    }
    Ok(())
}

/// Load a run and start its engine thread; returns once its KV caches are
/// allocated (or with the reason they could not be).
fn start_engine<B, F>(
    new_backend: F,
    dir: &std::path::Path,
    opts: &ServeOptions,
) -> Result<(Served, std::thread::JoinHandle<()>)>
where
    B: Backend + 'static,
    F: Fn() -> B + Send + 'static,
{
    crate::sample::check_is_run(dir)?;
    let config = crate::checkpoint::load_config(dir)?;
    let weights = crate::sample::load::resolve(dir, opts.weights)?;
    if !opts.ignore_memory_check {
        let estimate = crate::memory::serving(&config, opts.parallel, weights)?;
        let what = format!(
            "serving {} with --parallel {}",
            dir.display(),
            opts.parallel
        );
        crate::memory::check(&estimate, &what, crate::memory::available().as_ref())?;
    }
    // f32 weights load here; packed ones on the engine's thread, where the backend is.
    let (model, params, tokenizer) = match weights {
        WeightType::F32 => {
            let (model, params, tokenizer) = crate::sample::load_run(dir)?;
            (model, Some(params), tokenizer)
        }
        _ => {
            let model = crate::model::Model::new(config)?;
            let tokenizer = crate::checkpoint::load_tokenizer(dir, &model)?;
            (model, None, tokenizer)
        }
    };
    let tokenizer: Arc<dyn Tokenizer> = Arc::from(tokenizer);
    let weights_dir = dir.to_path_buf();
    let template = ChatFormat::find(dir, &*tokenizer)?;
    let name = run_name(dir);
    let (jobs, queue) = sync_channel(opts.queue);
    let (ready, started) = sync_channel(1);
    let load = Arc::new(Load::default());
    let (engine_load, slots, block_size) = (load.clone(), opts.parallel, model.config.block_size);
    let engine_tokenizer = tokenizer.clone();
    let thread = std::thread::spawn(move || {
        let be = new_backend();
        let loaded = match params {
            Some(params) => be.upload(params).map(|params| LoadedWeights {
                params,
                packed: None,
            }),
            None => load_weights(&be, &weights_dir, &model, weights),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => return drop(ready.send(Err(e))),
        };
        let loaded = (&model, loaded.weights(), engine_tokenizer);
        match Engine::new(&be, loaded, slots, engine_load) {
            Ok(engine) => {
                let _ = ready.send(Ok(()));
                engine.run(queue);
            }
            Err(e) => drop(ready.send(Err(e))),
        }
    });
    let failed = || {
        Error::Data(format!(
            "{}: the engine thread stopped while starting",
            dir.display()
        ))
    };
    started.recv().map_err(|_| failed())??;
    let served = Served {
        name,
        tokenizer,
        template,
        block_size,
        jobs,
        load,
    };
    Ok((served, thread))
}

/// A run's name in the API: its directory's name.
fn run_name(dir: &std::path::Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}
