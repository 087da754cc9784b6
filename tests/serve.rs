//! `lmforge serve` over real HTTP: the server runs as its own process on a
//! free loopback port, and the tests talk to it as clients do.
//!
//! Two tiny runs: a character-level base model (block 64) trained here for
//! 30 steps, and a random GPT with GPT-2's vocabulary plus the chat
//! template's special tokens (a chat model, whose replies end at `<|end|>`).

mod runs;

use runs::{Shape, char_run, chat_model_run, chatml_run, lmforge};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A random chat model: 16 dimensions, block 48.
fn chat_run(dir: &Path) -> PathBuf {
    let shape = Shape {
        block_size: 48,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
    };
    chat_model_run(dir, "chatty", shape, 7, &[])
}

/// A running `lmforge serve`, stopped when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(runs: &[&Path], args: &[&str]) -> Server {
        let mut child = lmforge()
            .arg("serve")
            .args(runs)
            .args(["--port", "0", "--threads", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let at = line
            .find("http://")
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let addr = line[at..].split_whitespace().next().unwrap().to_string();
        Server { child, base: addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        post_raw(&self.url(path), &body.to_string(), None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn post_raw(url: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = agent().post(url).header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(url: &str) -> (u16, Value) {
    let mut response = agent().get(url).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    (
        response.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A streamed request's events (the `data:` of each), through `[DONE]`.
fn stream(url: &str, body: &Value) -> Vec<String> {
    let response = agent().post(url).send(body.to_string()).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut text = String::new();
    response
        .into_body()
        .into_reader()
        .read_to_string(&mut text)
        .unwrap();
    let events: Vec<String> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_string()
        })
        .collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    events
}

/// The text of a streamed reply (chat deltas or completion pieces), and its finish reason.
fn streamed_text(events: &[String]) -> (String, String) {
    let (mut text, mut finish) = (String::new(), String::new());
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let piece = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str());
        text.push_str(piece.unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

#[test]
fn completions_match_lmforge_sample_and_report_usage() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &[]);
    let (status, body) = server.post(
        "/v1/completions",
        &json!({"model": "char", "prompt": "ROMEO:", "max_tokens": 30, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 30, "total_tokens": 36})
    );
    // Greedy: exactly what `lmforge sample` writes after the same prompt.
    let sample = lmforge()
        .arg("sample")
        .arg(&run)
        .args([
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "30",
            "--temperature",
            "0",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let sampled = String::from_utf8(sample.stdout).unwrap();
    assert!(
        sampled.contains(&format!("ROMEO:{text}")),
        "{sampled:?} vs {text:?}"
    );
    // Sampling with a seed gives `lmforge sample`'s text with that seed,
    // also past the context of 64 tokens (the window slides, as in `sample`).
    let (status, body) = server.post(
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 100, "temperature": 0.9, "top_k": 30,
                "frequency_penalty": 0.5, "seed": 21}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["usage"]["completion_tokens"], 100,
        "not cut at the context"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let sample = lmforge()
        .arg("sample")
        .arg(&run)
        .args([
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "100",
            "--temperature",
            "0.9",
        ])
        .args([
            "--top-k",
            "30",
            "--frequency-penalty",
            "0.5",
            "--seed",
            "21",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let sampled = String::from_utf8(sample.stdout).unwrap();
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert_eq!(sampled, format!("ROMEO:{text}\n"));
    // Seeded sampling repeats; another seed differs.
    let seeded = |seed: u64| {
        let request =
            json!({"prompt": "ROMEO:", "max_tokens": 40, "temperature": 1.0, "seed": seed});
        server.post("/v1/completions", &request).1["choices"][0]["text"].clone()
    };
    assert_eq!(seeded(5), seeded(5));
    assert_ne!(seeded(5), seeded(6));
    let (_, models) = get(&server.url("/v1/models"));
    assert_eq!(models["data"][0]["id"], "char");
    assert_eq!(get(&server.url("/health")).1["status"], "ok");
    let (status, page) = get(&server.url("/"));
    assert!(
        status == 200
            && page
                .as_str()
                .unwrap()
                .contains("<title>lmforge chat</title>")
    );
}

/// A run with its own `chat_template` (ChatML): the prompt is the template's,
/// a typed `<|im_end|>` stays text, and the template's `<|im_end|>` ends the reply.
#[test]
fn a_run_with_its_own_chat_template_is_served_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        block_size: 64,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
    };
    let im_end = 50258;
    let run = chatml_run(dir.path(), "chatml", shape, &[(im_end, 1e4)]);
    let server = Server::start(&[&run], &[]);
    let messages = json!([{"role": "user", "content": "hi<|im_end|>"}]);
    let request = json!({"messages": messages, "max_tokens": 20, "temperature": 0});
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop", "{body}");
    assert_eq!(choice["message"]["content"], "");
    // The library's prompt for the same messages, and its specials: the
    // template's four, none from the typed text.
    let tok = lmforge::tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let format = lmforge::chat::ChatFormat::find(&run, tok.as_ref())
        .unwrap()
        .unwrap();
    let messages: Vec<lmforge::chat::Message> = serde_json::from_value(messages).unwrap();
    let prompt = format.prompt(tok.as_ref(), &messages).unwrap();
    assert_eq!(
        tok.decode(&prompt),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
         hi<|im_end|><|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(prompt.iter().filter(|&&id| id >= 50257).count(), 5);
    assert_eq!(body["usage"]["prompt_tokens"], prompt.len());
    let (_, models) = get(&server.url("/v1/models"));
    assert_eq!(models["data"][0]["chat_template"], true);
}

/// A Llama (RoPE, grouped-query attention) served through the same batch:
/// greedy replies equal `lmforge sample`'s, alone and with others at once.
#[test]
fn a_llama_run_is_served_like_a_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("llama");
    let status = lmforge()
        .args([
            "train",
            "--preset",
            "llama-char",
            "--max-iters",
            "20",
            "--threads",
            "2",
            "-q",
            "--out",
        ])
        .arg(&run)
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start(&[&run], &[]);
    let sample = lmforge()
        .arg("sample")
        .arg(&run)
        .args([
            "--prompt",
            "KING:",
            "--max-new-tokens",
            "20",
            "--temperature",
            "0",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let sampled = String::from_utf8(sample.stdout).unwrap();
    let url = server.url("/v1/completions");
    let texts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ["KING:", "KING:", "QUEEN:", "A"]
            .into_iter()
            .map(|prompt| {
                let url = url.clone();
                s.spawn(move || {
                    let body = json!({"prompt": prompt, "max_tokens": 20, "temperature": 0});
                    post_raw(&url, &body.to_string(), None).1["choices"][0]["text"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        sampled.contains(&format!("KING:{}", texts[0])),
        "{sampled:?} vs {:?}",
        texts[0]
    );
    assert_eq!(texts[0], texts[1]);
}

#[test]
fn streaming_frames_events_as_openai_does_and_equals_the_whole_reply() {
    let dir = tempfile::tempdir().unwrap();
    let run = chat_run(dir.path());
    let server = Server::start(&[&run], &[]);
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]);
    let request = json!({"messages": messages, "max_tokens": 20, "seed": 3, "temperature": 1.0});
    let (status, whole) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = stream(&server.url("/v1/chat/completions"), &streamed);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, finish) = streamed_text(&events);
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        finish,
        whole["choices"][0]["finish_reason"].as_str().unwrap()
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    // Completions stream too, one event per token that completes text.
    let request = json!({"prompt": "Once", "max_tokens": 5, "seed": 4});
    let whole = server.post("/v1/completions", &request).1;
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = stream(&server.url("/v1/completions"), &streamed);
    let choice = &whole["choices"][0];
    let expected = (
        choice["text"].as_str().unwrap().to_string(),
        choice["finish_reason"].as_str().unwrap().to_string(),
    );
    assert_eq!(streamed_text(&events), expected);
    assert!(
        events.len() <= 5 + 2,
        "at most a token per event, the finish, [DONE]: {events:?}"
    );
}

#[test]
fn a_stop_string_ends_the_reply_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &[]);
    let greedy = |stop: Value| {
        let request = json!({"prompt": "KING:", "max_tokens": 40, "temperature": 0, "stop": stop});
        server.post("/v1/completions", &request).1["choices"][0].clone()
    };
    let full = greedy(Value::Null);
    let text = full["text"].as_str().unwrap();
    let stop: String = text.chars().skip(10).take(3).collect();
    let cut = greedy(json!([stop.clone()]));
    let expected = &text[..text.find(&stop).unwrap()];
    assert_eq!(
        (
            cut["text"].as_str().unwrap(),
            cut["finish_reason"].as_str().unwrap()
        ),
        (expected, "stop")
    );
    let events = stream(
        &server.url("/v1/completions"),
        &json!({"prompt": "KING:", "max_tokens": 40, "temperature": 0, "stop": stop, "stream": true}),
    );
    assert_eq!(
        streamed_text(&events),
        (expected.to_string(), "stop".to_string())
    );
}

/// `echo` with `max_tokens: 0` scores a text as an evaluation harness asks
/// for it: the prompt's tokens with their log-probabilities, the first
/// null, each equal to minus `lmforge eval`'s loss for it (a text longer
/// than the context, read in the same windows).
#[test]
fn echo_logprobs_equal_lmforge_eval_per_token_losses() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let text = "ROMEO:\nBut soft, what light through yonder window breaks?\n\
                It is the east, and Juliet is the sun. Arise, fair sun,\n\
                and kill the envious moon, who is already sick and pale.\n";
    let file = dir.path().join("text.txt");
    std::fs::write(&file, text).unwrap();
    let eval = lmforge()
        .arg("eval")
        .arg(&run)
        .arg("--text")
        .arg(&file)
        .args(["--json", "--per-token", "--threads", "2"])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{eval:?}");
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(eval["windows"].as_u64().unwrap() > 1, "{eval}");
    let server = Server::start(&[&run], &[]);
    let request = json!({"prompt": text, "max_tokens": 0, "echo": true, "logprobs": 2});
    let (status, body) = server.post("/v1/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(
        (choice["text"].as_str(), &choice["finish_reason"]),
        (Some(text), &json!("length"))
    );
    let logprobs = &choice["logprobs"];
    assert_eq!(logprobs["tokens"], eval["token_texts"]);
    let got = logprobs["token_logprobs"].as_array().unwrap();
    let losses = eval["losses"].as_array().unwrap();
    assert_eq!(
        (got.len(), &got[0], &logprobs["top_logprobs"][0]),
        (losses.len() + 1, &Value::Null, &Value::Null)
    );
    for (i, (lp, loss)) in got[1..].iter().zip(losses).enumerate() {
        let (lp, loss) = (lp.as_f64().unwrap(), loss.as_f64().unwrap());
        assert!((lp + loss).abs() < 1e-5, "token {}: {lp} vs -{loss}", i + 1);
        let top = logprobs["top_logprobs"][i + 1].as_object().unwrap();
        assert!((2..=3).contains(&top.len()), "{top:?}");
        assert!(top.values().all(|v| v.as_f64().unwrap() <= 1e-6));
    }
    let offsets: Vec<u64> = (0..text.len() as u64).collect();
    assert_eq!(
        logprobs["text_offset"],
        json!(offsets),
        "one character per token"
    );
    assert_eq!(body["usage"]["completion_tokens"], 0);
}

/// Chat log-probabilities in OpenAI's shape, `n` choices picked from
/// `best_of` candidates, and the penalties' limits.
#[test]
fn chat_logprobs_and_several_choices_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &[]);
    let messages = json!([{"role": "user", "content": "KING:"}]);
    let request = json!({"messages": messages, "max_tokens": 8, "seed": 2,
        "logprobs": true, "top_logprobs": 3, "presence_penalty": 1.0});
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        body["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for entry in content {
        let token = entry["token"].as_str().unwrap();
        let bytes: Vec<u8> = serde_json::from_value(entry["bytes"].clone()).unwrap();
        assert_eq!(bytes, token.as_bytes());
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(
            entry["top_logprobs"].as_array().unwrap().len(),
            3,
            "{entry}"
        );
    }
    let request = json!({"prompt": "KING:", "max_tokens": 5, "n": 2, "best_of": 3, "seed": 4});
    let (status, body) = server.post("/v1/completions", &request);
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (&choices[0]["index"], &choices[1]["index"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(choices[0]["logprobs"], Value::Null, "not asked for");
    assert_eq!(
        body["usage"]["completion_tokens"], 15,
        "every candidate counts"
    );
    for (field, value) in [
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("temperature", 2.5),
    ] {
        let (status, body) = server.post("/v1/completions", &json!({"prompt": "a", field: value}));
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
}

#[test]
fn bad_requests_get_openai_errors_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(
        &[&run],
        &[
            "--max-tokens",
            "50",
            "--max-body",
            "4096",
            "--long-prompts",
            "refuse",
        ],
    );
    let url = server.url("/v1/completions");
    let (status, body) = post_raw(&url, "{\"prompt\": ", None);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let (status, body) = server.post("/v1/completions", &json!({"prompt": "a", "max_tokens": 51}));
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("max_tokens")),
        "{body}"
    );
    let big = json!({"prompt": "a".repeat(5000)}).to_string();
    let (status, body) = post_raw(&url, &big, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("request_too_large")),
        "{body}"
    );
    let long = json!({"prompt": "a ".repeat(100)});
    let (status, body) = server.post("/v1/completions", &long);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("context_length_exceeded")),
        "{body}"
    );
    let (status, body) = server.post("/v1/completions", &json!({"prompt": "snow ☃"}));
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("prompt")),
        "{body}"
    );
    let (status, _) = get(&server.url("/v2/nothing"));
    assert_eq!(status, 404);
    // Nothing above hurt the server.
    let (status, _) = server.post("/v1/completions", &json!({"prompt": "a", "max_tokens": 2}));
    assert_eq!(status, 200);
}

#[test]
fn long_prompts_are_cut_and_the_response_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &[]);
    let response = agent()
        .post(&server.url("/v1/completions"))
        .send(json!({"prompt": "ab".repeat(50), "max_tokens": 10}).to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-lmforge-prompt-cut"], "46"); // 100 - (64 - 10)
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 54);
    assert!(
        body["warning"]
            .as_str()
            .unwrap()
            .contains("46 tokens were cut"),
        "{body}"
    );
}

#[test]
fn an_api_key_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &["--api-key", "s3cret"]);
    let body = json!({"prompt": "a", "max_tokens": 2}).to_string();
    let url = server.url("/v1/completions");
    let (status, answer) = post_raw(&url, &body, None);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert_eq!(post_raw(&url, &body, Some("wrong")).0, 401);
    assert_eq!(post_raw(&url, &body, Some("s3cret")).0, 200);
    assert_eq!(get(&server.url("/")).0, 200, "the page itself is open");
}

/// `/health`'s count of sequences decoding now.
fn active(server: &Server) -> u64 {
    get(&server.url("/health")).1["models"][0]["active"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_client_that_leaves_mid_stream_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    // Block 64 and 500 tokens: the reply would run to the end of the context.
    let server = Server::start(&[&run], &["--parallel", "1"]);
    for _ in 0..3 {
        let body = json!({"prompt": "A", "max_tokens": 500, "stream": true});
        let response = agent()
            .post(&server.url("/v1/completions"))
            .send(body.to_string())
            .unwrap();
        let mut reader = response.into_body().into_reader();
        let mut first = [0u8; 16];
        reader.read_exact(&mut first).unwrap();
        drop(reader); // the client goes away
        let (status, body) =
            server.post("/v1/completions", &json!({"prompt": "B", "max_tokens": 3}));
        assert_eq!(status, 200, "the only slot was not freed: {body}");
    }
    let start = Instant::now();
    while active(&server) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a slot is still busy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sixteen_concurrent_streams_each_get_their_own_reply() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &["--parallel", "8"]);
    let request = |i: usize| {
        let prompt = ["ROMEO:", "JULIET:\n", "First Citizen:", "O"][i % 4];
        json!({"prompt": prompt, "max_tokens": 12 + i, "seed": i, "temperature": 0.9, "stream": true})
    };
    // Each request alone first, then all sixteen at once: the batch must not mix them up.
    let alone: Vec<_> = (0..16)
        .map(|i| streamed_text(&stream(&server.url("/v1/completions"), &request(i))))
        .collect();
    let url = server.url("/v1/completions");
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (url, body) = (url.clone(), request(i));
                s.spawn(move || streamed_text(&stream(&url, &body)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    for (i, (text, finish)) in together.iter().enumerate() {
        assert_eq!(
            (text.chars().count(), finish.as_str()),
            (12 + i, "length"),
            "stream {i}"
        );
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let server = Server::start(&[&run], &["--parallel", "1", "--queue", "1"]);
    let url = server.url("/v1/completions");
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                s.spawn(move || {
                    let body = json!({"prompt": "A", "max_tokens": 60}).to_string();
                    let response = agent().post(&url).send(body).unwrap();
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (response.status().as_u16(), retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|s| s.0 == 200), "{statuses:?}");
    assert!(statuses.contains(&(503, Some("1".into()))), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s.0 == 200 || s.0 == 503),
        "{statuses:?}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_lets_the_streams_in_flight_finish_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let mut server = Server::start(&[&run], &["--parallel", "2"]);
    let url = server.url("/v1/completions");
    let pid = server.child.id().to_string();
    let events = std::thread::scope(|s| {
        let streaming = s.spawn(|| {
            stream(
                &url,
                &json!({"prompt": "A", "max_tokens": 60, "stream": true}),
            )
        });
        std::thread::sleep(Duration::from_millis(150));
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        streaming.join().unwrap()
    });
    assert_eq!(
        streamed_text(&events).1,
        "length",
        "the stream was cut: {events:?}"
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("finishing the requests in flight"),
        "{stderr}"
    );
}

#[test]
fn several_runs_are_served_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (char, chatty) = (char_run(dir.path()), chat_run(dir.path()));
    let server = Server::start(&[&char, &chatty], &[]);
    let ids: Vec<Value> = get(&server.url("/v1/models")).1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("char"), json!("chatty")]);
    let ask = |model: &str| {
        server.post(
            "/v1/completions",
            &json!({"model": model, "prompt": "The", "max_tokens": 3}),
        )
    };
    assert_eq!(ask("char").1["model"], "char");
    assert_eq!(ask("chatty").1["model"], "chatty");
    let (status, body) = ask("gpt-4");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{body}"
    );
}
