//! The HTTP side of `lmforge serve` (tokio + axum): routes, the API key,
//! request limits, turning a request into a job for the model's engine, and
//! the reply back as one JSON body or as server-sent events:
//!
//! ```text
//! data: {"object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant", ...
//! data: {... "choices": [{"delta": {"content": "Hel"}, "finish_reason": null}]}
//! data: {... "choices": [{"delta": {}, "finish_reason": "stop"}]}
//! data: [DONE]
//! ```
//!
//! A client that goes away drops its reply stream, which closes its job's
//! channel; the engine frees the slot on its next step.

use super::api::{self, ApiError, Header, Input, LoggedToken};
use super::engine::{Event, Job};
use super::write_deadline::WriteDeadline;
use super::{LongPrompts, ServeOptions, Served};
use crate::chat::{self, conversation::BASE_STOP};
use crate::error::{Error, Result};
use crate::sample::{Finish, SampleOptions, TokenLogprob};
use crate::tokenizer::Tokenizer;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

/// The chat page, inside the binary.
const PAGE: &str = include_str!("page.html");
/// How long Ctrl-C waits for the requests in flight before exiting anyway.
const DRAIN: Duration = Duration::from_secs(60);
/// Prompts made at once (chat templates and tokenizers run on blocking threads).
const PREPARING: usize = 2;
/// How long making a prompt may take before the request gets a 503.
const PREPARE_DEADLINE: Duration = Duration::from_secs(10);
/// How much of a too-large body is read (and dropped) before answering 413.
const DRAIN_BYTES: usize = 64 << 20;

/// Everything a handler needs.
struct App {
    models: Vec<Served>,
    opts: ServeOptions,
    started: u64,
    requests: AtomicU64,
    /// Permits to make a prompt ([`PREPARING`]).
    preparing: Arc<tokio::sync::Semaphore>,
}

/// Listen on `opts.addr` and serve until Ctrl-C or SIGTERM.
pub(super) fn run(
    models: Vec<Served>,
    opts: &ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Data(format!("cannot start the HTTP runtime: {e}")))?;
    let app = Arc::new(App {
        models,
        opts: opts.clone(),
        started: now(),
        requests: AtomicU64::new(0),
        preparing: Arc::new(tokio::sync::Semaphore::new(PREPARING)),
    });
    runtime.block_on(listen(app, opts.addr, on_ready))
}

async fn listen(app: Arc<App>, addr: SocketAddr, on_ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let cannot = |e: std::io::Error| Error::Data(format!("cannot listen on {addr}: {e}"));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(cannot)?;
    on_ready(listener.local_addr().map_err(cannot)?);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let connections = Arc::new(tokio::sync::Semaphore::new(app.opts.max_connections));
    let router = router(app.clone());
    let accepting = accept(listener, router, &app.opts, connections.clone(), stopped);
    tokio::select! {
        () = accepting => {}
        () = shutdown_signal() => {}
    }
    say("stopping: finishing the requests in flight (Ctrl-C again to quit now)");
    let _ = stopping.send(true);
    let all = u32::try_from(app.opts.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, connections.acquire_many(all))
        .await
        .is_err()
    {
        say("stopping: gave up waiting for the requests still in flight");
    }
    Ok(())
}

/// Accept connections, at most `max_connections` open at once (the others
/// wait in the listen queue), each served with the header and write timeouts, until
/// `stopped` turns true.
async fn accept(
    listener: tokio::net::TcpListener,
    router: Router,
    opts: &ServeOptions,
    connections: Arc<tokio::sync::Semaphore>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, or a connection reset while queued: go on.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stream = WriteDeadline::new(stream, opts.write_timeout);
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = stopped.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// A note on stderr (which may be closed: that is no reason to stop).
fn say(note: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{note}");
}

/// Ctrl-C, or SIGTERM (what `kill` and service managers send).
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => drop(term.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = interrupt => {}, _ = terminate => {} }
    // A second Ctrl-C quits at once.
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(e.body())).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `/v1/...` needs `Authorization: Bearer KEY` when the server has a key.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(key) = &app.opts.api_key else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same_secret(given.as_bytes(), key.as_bytes()) => next.run(request).await,
        _ => error(ApiError::status(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "a valid API key is needed: send the header 'Authorization: Bearer KEY'".into(),
        )),
    }
}

/// Equal secrets, compared in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn not_found(request: Request) -> Response {
    let message = format!(
        "no such endpoint: {} {}",
        request.method(),
        request.uri().path()
    );
    error(ApiError::status(
        404,
        "invalid_request_error",
        "not_found",
        message,
    ))
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let models: Vec<Value> = app
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "active": m.load.active.load(Ordering::Relaxed),
                "queued": m.load.queued.load(Ordering::Relaxed),
                "parallel": app.opts.parallel,
            })
        })
        .collect();
    Json(json!({"status": "ok", "models": models}))
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let data: Vec<Value> = app
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": app.started,
                "owned_by": "lmforge",
                "context_length": m.block_size,
                "chat_template": m.template.is_some(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    respond(app, body, false).await
}

async fn chat_completions(State(app): State<Arc<App>>, body: Body) -> Response {
    respond(app, body, true).await
}

async fn respond(app: Arc<App>, body: Body, chat: bool) -> Response {
    let limit = app.opts.max_body;
    let waited = app.opts.body_timeout;
    let bytes = match tokio::time::timeout(waited, read_body(body, limit)).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let message =
                format!("the request body is over {limit} bytes (the server's --max-body)");
            return error(ApiError::status(
                413,
                "invalid_request_error",
                "request_too_large",
                message,
            ));
        }
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {:.0} s (the server's --body-timeout)",
                waited.as_secs_f64()
            );
            return error(ApiError::status(
                408,
                "invalid_request_error",
                "request_timeout",
                message,
            ));
        }
    };
    match prepare(app, bytes, chat).await {
        Err(e) => error(e),
        Ok(reply) => {
            let cut = reply.cut;
            let mut response = if reply.stream {
                Sse::new(reply.into_events()).into_response()
            } else {
                reply.collect().await
            };
            if cut > 0 {
                let headers = response.headers_mut();
                headers.insert("x-lmforge-prompt-cut", HeaderValue::from(cut));
            }
            response
        }
    }
}

/// The body if it is at most `limit` bytes. A longer one is read on (and
/// thrown away) up to [`DRAIN_BYTES`] for at most a few seconds, so that the
/// client, still sending, gets the 413 rather than a reset connection.
async fn read_body(body: Body, limit: usize) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.ok()?;
        if bytes.len() + chunk.len() > limit {
            let drain = async {
                let mut seen = bytes.len() + chunk.len();
                while let Some(Ok(chunk)) = data.next().await {
                    seen += chunk.len();
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            return None;
        }
        bytes.extend_from_slice(&chunk);
    }
    Some(bytes)
}

/// Make the prompt and queue the request ([`start`]) on a blocking thread,
/// at most [`PREPARING`] at once and within [`PREPARE_DEADLINE`], so that a
/// slow chat template or tokenizer never holds up the async workers (and
/// `/health` with them).
async fn prepare(app: Arc<App>, body: Vec<u8>, chat: bool) -> std::result::Result<Reply, ApiError> {
    let too_slow = |what: &str| {
        ApiError::status(
            503,
            "server_error",
            "prompt_timeout",
            format!(
                "{what} took longer than {} s; try again later",
                PREPARE_DEADLINE.as_secs()
            ),
        )
    };
    let deadline = tokio::time::Instant::now() + PREPARE_DEADLINE;
    let permit = tokio::time::timeout_at(deadline, app.preparing.clone().acquire_owned())
        .await
        .map_err(|_| too_slow("waiting for a free thread to make the prompt"))?
        .map_err(|_| too_slow("waiting for a free thread to make the prompt"))?;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit; // held until the prompt is made, even after the deadline
        start(&app, &body, chat)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Err(ApiError::status(
            500,
            "server_error",
            "internal_error",
            "making the prompt failed".to_string(),
        )),
        Err(_) => Err(too_slow("making the prompt")),
    }
}

/// A request handed to its engine: what is needed to send the reply.
struct Reply {
    header: Header,
    chat: bool,
    stream: bool,
    include_usage: bool,
    prompt_tokens: usize,
    /// Prompt tokens cut from the front to fit the context.
    cut: usize,
    /// The prompt's text and tokens when it comes back first (`echo`).
    echo: Option<(String, Vec<u32>)>,
    /// Log-probabilities go into the response.
    logprobs: bool,
    /// Choices returned: the best `n` of the candidates.
    n: usize,
    candidates: Vec<UnboundedReceiver<Event>>,
    tokenizer: Arc<dyn Tokenizer>,
    /// Tokens streamed so far, and characters (for `text_offset`).
    streamed: Streamed,
}

/// Check a request, make its prompt and queue its candidates with the model's engine.
fn start(app: &App, body: &[u8], chat: bool) -> std::result::Result<Reply, ApiError> {
    let request = api::parse(body, chat)?;
    let served = pick(app, request.model.as_deref())?;
    let tok = &*served.tokenizer;
    let mut prompt = prompt_ids(served, &request.input)?;
    let max_tokens = max_tokens(app, request.max_tokens)?;
    // Scoring alone reads a long prompt in windows, as `lmforge eval` does.
    let scoring_only = request.echo && max_tokens == 0;
    let cut = match scoring_only {
        true => 0,
        false => fit(app, served, &mut prompt, max_tokens, chat)?,
    };
    let mut opts = SampleOptions {
        max_new_tokens: max_tokens,
        seed: request.seed.unwrap_or_else(|| fresh_seed(app)),
        ..request.opts.clone()
    };
    if chat && served.template.is_none() {
        opts.stop.push(BASE_STOP.to_string()); // a base model's reply ends at a blank line
    }
    let wanted = opts.logprobs;
    if request.best_of > request.n {
        opts.logprobs.get_or_insert(0); // the candidates are ranked by them
    }
    let stop_tokens = match chat {
        true => chat::stop_tokens(served.template.as_ref(), tok),
        false => tok.eot_token().into_iter().collect(),
    };
    let mut candidates = Vec::with_capacity(request.best_of);
    for candidate in 0..request.best_of {
        let (events, replies) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            prompt: prompt.clone(),
            opts: opts.clone(),
            stop_tokens: stop_tokens.clone(),
            candidate: candidate as u64,
            score_prompt: wanted.filter(|_| request.echo && candidate == 0),
            events,
        };
        queue(served, job)?;
        candidates.push(replies);
    }
    let echo = request.echo.then(|| {
        let text = match &request.input {
            Input::Prompt(text) if cut == 0 => text.clone(),
            _ => tok.decode(&prompt),
        };
        (text, prompt.clone())
    });
    let n = app.requests.fetch_add(1, Ordering::Relaxed);
    let prefix = if chat { "chatcmpl" } else { "cmpl" };
    Ok(Reply {
        header: Header {
            id: format!("{prefix}-{:x}{n:x}", app.started),
            created: now(),
            model: served.name.clone(),
        },
        chat,
        stream: request.stream,
        include_usage: request.include_usage,
        prompt_tokens: prompt.len(),
        cut,
        echo,
        logprobs: wanted.is_some(),
        n: request.n,
        candidates,
        tokenizer: served.tokenizer.clone(),
        streamed: Streamed::default(),
    })
}

/// The served run a request names; with one run served, any name is it.
fn pick<'a>(app: &'a App, name: Option<&str>) -> std::result::Result<&'a Served, ApiError> {
    if let [only] = app.models.as_slice() {
        return Ok(only);
    }
    let names: Vec<&str> = app.models.iter().map(|m| m.name.as_str()).collect();
    let Some(name) = name else {
        let message = format!("'model' is required: one of {}", names.join(", "));
        return Err(ApiError::field("model", message));
    };
    app.models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ApiError {
            status: 404,
            code: Some("model_not_found"),
            ..ApiError::field(
                "model",
                format!("no model '{name}': this server has {}", names.join(", ")),
            )
        })
}

/// The prompt's token ids (a chat through the model's template).
fn prompt_ids(served: &Served, input: &Input) -> std::result::Result<Vec<u32>, ApiError> {
    let tok = &*served.tokenizer;
    let (ids, param) = match input {
        Input::Prompt(text) => (tok.encode(text), "prompt"),
        Input::Chat(messages) => (
            chat::prompt_for(served.template.as_ref(), tok, messages),
            "messages",
        ),
    };
    let ids = ids.map_err(|e| ApiError::field(param, format!("'{param}': {e}")))?;
    if !ids.is_empty() {
        return Ok(ids);
    }
    // An empty prompt starts a new document, as OpenAI's models do.
    tok.eot_token().map(|eot| vec![eot]).ok_or_else(|| {
        ApiError::field(
            param,
            format!("'{param}' is empty and this model has no end-of-text token to start from"),
        )
    })
}

fn max_tokens(app: &App, asked: Option<usize>) -> std::result::Result<usize, ApiError> {
    let cap = app.opts.max_tokens;
    match asked {
        Some(n) if n > cap => Err(ApiError::field(
            "max_tokens",
            format!("'max_tokens' is {n}, above this server's limit of {cap} (its --max-tokens)"),
        )),
        Some(n) => Ok(n),
        None => Ok(cap),
    }
}

/// Make the prompt fit the context: refuse it, or keep its end with room
/// for the reply (up to half the context). Returns how many tokens were cut.
fn fit(
    app: &App,
    served: &Served,
    prompt: &mut Vec<u32>,
    max_tokens: usize,
    chat: bool,
) -> std::result::Result<usize, ApiError> {
    let block = served.block_size;
    if prompt.len() <= block {
        return Ok(0);
    }
    let param = if chat { "messages" } else { "prompt" };
    if app.opts.long_prompts == LongPrompts::Refuse {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::field(
                param,
                format!(
                    "the prompt is {} tokens, over this model's context of {block}",
                    prompt.len()
                ),
            )
        });
    }
    let keep = block - max_tokens.min(block / 2);
    let cut = prompt.len() - keep;
    prompt.drain(..cut);
    Ok(cut)
}

fn fresh_seed(app: &App) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::rng::mix64(nanos ^ app.requests.load(Ordering::Relaxed))
}

/// Hand a job to the engine's bounded queue, or say the server is busy.
fn queue(served: &Served, job: Job) -> std::result::Result<(), ApiError> {
    served.load.queued.fetch_add(1, Ordering::Relaxed);
    let busy = |message: String| ApiError::status(503, "server_error", "server_busy", message);
    match served.jobs.try_send(job) {
        Ok(()) => Ok(()),
        Err(e) => {
            served.load.queued.fetch_sub(1, Ordering::Relaxed);
            Err(match e {
                TrySendError::Full(_) => {
                    busy("the server is busy (its queue is full): retry in a moment".into())
                }
                TrySendError::Disconnected(_) => busy("the model's engine has stopped".into()),
            })
        }
    }
}

/// What an engine sends about one candidate, gathered.
#[derive(Default)]
struct Collected {
    text: String,
    tokens: Vec<(u32, Option<TokenLogprob>)>,
    prompt: Option<Vec<Option<TokenLogprob>>>,
    finish: &'static str,
}

impl Collected {
    /// The mean log-probability of its tokens (how `best_of` ranks).
    fn mean_logprob(&self) -> f64 {
        let sum: f64 = self
            .tokens
            .iter()
            .flat_map(|(_, lp)| lp)
            .map(|lp| lp.logprob as f64)
            .sum();
        sum / self.tokens.len().max(1) as f64
    }
}

/// The API's reason for a finish: `length`, or `stop` (a stop token or string).
fn reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Length => "length",
        _ => "stop",
    }
}

/// Wait for one candidate's whole reply (or the reason it failed).
async fn collect_one(
    events: &mut UnboundedReceiver<Event>,
) -> std::result::Result<Collected, String> {
    let mut got = Collected::default();
    loop {
        match events.recv().await {
            Some(Event::Prompt(scored)) => got.prompt = Some(scored),
            Some(Event::Token { id, text, logprob }) => {
                got.text.push_str(&text);
                got.tokens.push((id, logprob));
            }
            Some(Event::Done { text, finish }) => {
                got.text.push_str(&text);
                got.finish = reason(finish);
                return Ok(got);
            }
            Some(Event::Failed(message)) => return Err(message),
            None => return Err("the model's engine stopped".into()),
        }
    }
}

/// A token and its log-probabilities as the API reports them.
fn logged(tok: &dyn Tokenizer, id: u32, logprob: Option<&TokenLogprob>) -> LoggedToken {
    LoggedToken {
        bytes: tok.decode_bytes(&[id]),
        logprob: logprob.map(|lp| lp.logprob),
        top: logprob.map(|lp| {
            (lp.top.iter())
                .map(|&(t, l)| (tok.decode_bytes(&[t]), l))
                .collect()
        }),
    }
}

/// Where a streamed reply's log-probabilities are.
#[derive(Default)]
struct Streamed {
    tokens: usize,
    /// Characters of the text sent so far (the next token's `text_offset`).
    chars: usize,
}

impl Reply {
    /// Wait for every candidate and send the best `n` as one JSON body.
    async fn collect(mut self) -> Response {
        let mut all = Vec::with_capacity(self.candidates.len());
        for events in &mut self.candidates {
            match collect_one(events).await {
                Ok(got) => all.push(got),
                Err(message) => {
                    return error(ApiError::status(
                        500,
                        "server_error",
                        "model_failed",
                        message,
                    ));
                }
            }
        }
        let completion_tokens = all.iter().map(|c| c.tokens.len()).sum();
        let prompt_scores = all.first_mut().and_then(|c| c.prompt.take());
        if all.len() > self.n {
            all.sort_by(|a, b| b.mean_logprob().total_cmp(&a.mean_logprob()));
            all.truncate(self.n);
        }
        let choices = (all.iter().enumerate())
            .map(|(i, c)| self.choice(i, c, prompt_scores.as_deref()))
            .collect();
        let usage = api::usage(self.prompt_tokens, completion_tokens);
        let mut body = match self.chat {
            true => self.header.chat(choices, usage),
            false => self.header.completion(choices, usage),
        };
        if self.cut > 0 {
            body["warning"] = json!(format!(
                "the prompt was longer than the context: its first {} tokens were cut",
                self.cut
            ));
        }
        Json(body).into_response()
    }

    /// One choice of the response: the text (after the prompt with `echo`)
    /// and, when asked for, the log-probabilities.
    fn choice(
        &self,
        index: usize,
        c: &Collected,
        prompt: Option<&[Option<TokenLogprob>]>,
    ) -> Value {
        let tok = &*self.tokenizer;
        let mut tokens: Vec<LoggedToken> = Vec::new();
        if let (Some((_, ids)), true) = (&self.echo, self.logprobs) {
            let scores = prompt.unwrap_or_default();
            tokens.extend(
                ids.iter()
                    .enumerate()
                    .map(|(i, &id)| logged(tok, id, scores.get(i).and_then(Option::as_ref))),
            );
        }
        tokens.extend(
            c.tokens
                .iter()
                .map(|(id, lp)| logged(tok, *id, lp.as_ref())),
        );
        if self.chat {
            let logprobs = match self.logprobs {
                true => api::chat_logprobs(&tokens),
                false => Value::Null,
            };
            return api::chat_choice(index, &c.text, logprobs, c.finish);
        }
        let logprobs = match self.logprobs {
            true => api::completion_logprobs(&tokens, 0),
            false => Value::Null,
        };
        let echoed = self.echo.as_ref().map_or("", |(text, _)| text.as_str());
        api::completion_choice(
            index,
            &format!("{echoed}{}", c.text),
            logprobs,
            Some(c.finish),
        )
    }

    /// The reply as server-sent events, ending with `data: [DONE]`.
    fn into_events(
        self,
    ) -> impl futures_util::Stream<Item = std::result::Result<SseEvent, Infallible>> {
        let first = match (self.chat, &self.echo) {
            (true, _) => Phase::Role,
            (false, Some(_)) => Phase::Echo,
            (false, None) => Phase::Body,
        };
        futures_util::stream::unfold((self, first), |(mut reply, phase)| async move {
            let (data, next) = reply.event(phase).await?;
            Some((Ok(SseEvent::default().data(data)), (reply, next)))
        })
    }

    /// The data of the event of `phase`, and the phase after it.
    async fn event(&mut self, phase: Phase) -> Option<(String, Phase)> {
        let event = match phase {
            Phase::Role => {
                let delta = json!({"role": "assistant", "content": ""});
                (
                    self.header.chat_chunk(delta, Value::Null, None),
                    Phase::Body,
                )
            }
            Phase::Echo => match self.echo_chunk().await {
                Ok(chunk) => (chunk, Phase::Body),
                Err(failed) => (failed, Phase::Done),
            },
            Phase::Body => self.body_event().await,
            Phase::Usage if self.include_usage => {
                let object = if self.chat {
                    "chat.completion.chunk"
                } else {
                    "text_completion"
                };
                let usage = api::usage(self.prompt_tokens, self.streamed.tokens);
                (self.header.usage_chunk(object, usage), Phase::Done)
            }
            Phase::Usage | Phase::Done => return Some(("[DONE]".into(), Phase::Finished)),
            Phase::Finished => return None,
        };
        Some((event.0.to_string(), event.1))
    }

    /// The first chunk of an echoing completion: the prompt (with its log-probabilities).
    async fn echo_chunk(&mut self) -> std::result::Result<Value, Value> {
        let Some((text, ids)) = self.echo.clone() else {
            return Ok(self.header.completion_chunk("", Value::Null, None));
        };
        let mut logprobs = Value::Null;
        if self.logprobs {
            let scores = match self.candidates[0].recv().await {
                Some(Event::Prompt(scores)) => scores,
                Some(Event::Failed(message)) => return Err(failed(message)),
                _ => return Err(failed("the model's engine stopped".into())),
            };
            let tok = &*self.tokenizer;
            let tokens: Vec<LoggedToken> = (ids.iter().zip(&scores))
                .map(|(&id, lp)| logged(tok, id, lp.as_ref()))
                .collect();
            logprobs = api::completion_logprobs(&tokens, 0);
        }
        self.streamed.chars = text.chars().count();
        Ok(self.header.completion_chunk(&text, logprobs, None))
    }

    /// The next chunk of the reply (a token, the finish, or a failure).
    async fn body_event(&mut self) -> (Value, Phase) {
        loop {
            let (id, text, logprob) = match self.candidates[0].recv().await {
                Some(Event::Token { id, text, logprob }) => (id, text, logprob),
                Some(Event::Done { text, finish }) => {
                    let reason = Some(reason(finish));
                    let chunk = match (self.chat, text.is_empty()) {
                        (true, true) => self.header.chat_chunk(json!({}), Value::Null, reason),
                        (true, false) => {
                            let delta = json!({"content": text});
                            self.header.chat_chunk(delta, Value::Null, reason)
                        }
                        (false, _) => self.header.completion_chunk(&text, Value::Null, reason),
                    };
                    return (chunk, Phase::Usage);
                }
                Some(Event::Prompt(_)) => continue,
                Some(Event::Failed(message)) => return (failed(message), Phase::Done),
                None => return (failed("the model's engine stopped".into()), Phase::Done),
            };
            self.streamed.tokens += 1;
            if text.is_empty() && !self.logprobs {
                continue;
            }
            let token = logged(&*self.tokenizer, id, logprob.as_ref());
            let chunk = match self.chat {
                true => {
                    let logprobs = match self.logprobs {
                        true => api::chat_logprobs(std::slice::from_ref(&token)),
                        false => Value::Null,
                    };
                    self.header
                        .chat_chunk(json!({"content": text}), logprobs, None)
                }
                false => {
                    let logprobs = match self.logprobs {
                        true => api::completion_logprobs(
                            std::slice::from_ref(&token),
                            self.streamed.chars,
                        ),
                        false => Value::Null,
                    };
                    self.streamed.chars += String::from_utf8_lossy(&token.bytes).chars().count();
                    self.header.completion_chunk(&text, logprobs, None)
                }
            };
            return (chunk, Phase::Body);
        }
    }
}

/// A failure told inside a stream (the status line has gone already).
fn failed(message: String) -> Value {
    ApiError::status(500, "server_error", "model_failed", message).body()
}

/// Where a streamed reply is.
#[derive(Clone, Copy)]
enum Phase {
    /// Chat only: the chunk that opens the assistant's message.
    Role,
    /// Completions with `echo`: the prompt first.
    Echo,
    Body,
    Usage,
    Done,
    Finished,
}
