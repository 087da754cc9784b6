//! Hostile inputs to chatting and serving: chat templates that try to take
//! all the memory or time (each fails quickly with a clear error and bounded
//! memory, and the server keeps answering meanwhile), slow and idle HTTP
//! clients (timeouts and a cap on connections keep a normal request going),
//! and the messages for folders that are not runs.

mod runs;

use lmforge::chat::jinja::JinjaTemplate;
use lmforge::chat::{Message, Role};
use runs::lmforge;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Templates that grow a value exponentially for a few instructions each:
/// a list doubled with `+`, a string grown 8x by `format`, 4x by `join`
/// (filter and Python's `str.join`), and `format` through `str.format`.
fn hostile_templates() -> Vec<String> {
    let contents = "{% for m in messages %}{{ m.content }}{% endfor %}";
    vec![
        "{% set l = [1] %}".to_string() + &"{% set l = l + l %}".repeat(34) + "{{ l|length }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}\
         {% endfor %}{{ ns.l|length }}"
            .to_string(),
        "{% set s = 'ab' %}".to_string()
            + &"{% set s = ('%s' * 8)|format(s, s, s, s, s, s, s, s) %}".repeat(12)
            + "{{ s|length }}",
        "{% set s = 'abcd' %}".to_string()
            + &"{% set s = [s, s, s, s]|join %}".repeat(18)
            + "{{ s|length }}",
        "{% set s = 'abcd' %}".to_string() + &"{% set s = ''.join([s, s, s, s]) %}".repeat(18),
        "{% set s = 'abcd' %}".to_string()
            + &"{% set s = '{0}{0}{0}{0}{0}{0}{0}{0}'.format(s) %}".repeat(12),
        "{% set s = 'abcd' %}{{ ([s] * 100000000)|join }}".to_string(),
    ]
    .into_iter()
    .map(|t| t + contents)
    .collect()
}

/// Resident memory of a process, in bytes (from `/proc/PID/statm`).
fn resident(pid: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A folder whose `tokenizer_config.json` holds `template`.
fn template_folder(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"chat_template": template, "eos_token": "<|endoftext|>"});
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn templates_that_grow_without_bound_fail_fast_with_bounded_memory() {
    let msgs = [Message::new(Role::User, "hi")];
    for source in hostile_templates() {
        let before = resident("self");
        let started = Instant::now();
        let template = JinjaTemplate::load(template_folder(&source).path())
            .unwrap()
            .unwrap();
        let err = template.render_text(&msgs, true).unwrap_err().to_string();
        let (took, grew) = (started.elapsed(), resident("self").saturating_sub(before));
        assert!(
            err.contains("chat template of tokenizer_config.json"),
            "{source}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{source}: {took:?}");
        assert!(grew < 400 << 20, "{source}: grew {} MB", grew >> 20);
    }
}

/// The tiny GPT-2 fixture imported as a run in `dir`, with `template` as its chat template.
fn run_with_template(dir: &Path, template: Option<&str>) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2/single");
    let run = dir.join("run");
    let out = lmforge()
        .args(["import-hf", fixture.to_str().unwrap(), "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(template) = template {
        let config = json!({"chat_template": template, "eos_token": "<|endoftext|>"});
        std::fs::write(run.join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    run
}

/// A running `lmforge serve`, stopped when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(run: &Path, args: &[&str]) -> Server {
        let mut child = lmforge()
            .arg("serve")
            .arg(run)
            .args(["--port", "0", "--threads", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let at = line.find("http://").unwrap_or_else(|| panic!("{line:?}")) + 7;
        let addr = line[at..].split_whitespace().next().unwrap().to_string();
        Server { child, addr }
    }

    /// One request on a fresh connection: the status and the body, or `None`
    /// when no full answer came within `patience`.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        patience: Duration,
    ) -> Option<(u16, Value)> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(patience)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.get(9..12)?.parse().ok()?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        Some((
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        ))
    }

    fn health(&self, patience: Duration) -> bool {
        matches!(self.request("GET", "/health", "", patience), Some((200, _)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_hostile_template_request_fails_fast_and_health_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let boom = "{% if messages[0].content == 'boom' %}{% set l = [1] %}".to_string()
        + &"{% set l = l + l %}".repeat(34)
        + "{{ l|length }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}";
    let run = run_with_template(dir.path(), Some(&boom));
    let server = Server::start(&run, &[]);
    let chat = |content: &str| {
        json!({"messages": [{"role": "user", "content": content}], "max_tokens": 2}).to_string()
    };
    let patience = Duration::from_secs(20);
    std::thread::scope(|s| {
        let hostile: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let answer =
                        server.request("POST", "/v1/chat/completions", &chat("boom"), patience);
                    (answer, started.elapsed())
                })
            })
            .collect();
        for _ in 0..5 {
            let started = Instant::now();
            assert!(
                server.health(Duration::from_secs(2)),
                "/health did not answer"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(100));
        }
        for request in hostile {
            let (answer, took) = request.join().unwrap();
            let (status, body) = answer.expect("an answer to the hostile request");
            assert_eq!(status, 400, "{body}");
            assert!(body.to_string().contains("chat template"), "{body}");
            assert!(took < Duration::from_secs(10), "{took:?}");
        }
    });
    let pid = server.child.id().to_string();
    assert!(
        resident(&pid) < 1 << 30,
        "the server holds {} MB",
        resident(&pid) >> 20
    );
    let (status, body) = server
        .request("POST", "/v1/chat/completions", &chat("hi"), patience)
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A client that connects, sends half a request head and waits.
fn slow_client(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
}

#[test]
fn slow_clients_are_timed_out_and_cannot_starve_a_normal_request() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_with_template(dir.path(), None);
    let limits = [
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--max-connections",
        "8",
    ];
    let server = Server::start(&run, &limits);
    // A half-sent head is closed after the header timeout.
    let mut one = slow_client(&server.addr);
    one.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let _ = one.read(&mut buf); // 408, or the connection closed
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A body that stops short gets 408 after the body timeout.
    let mut short = TcpStream::connect(&server.addr).unwrap();
    short
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
        .unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    let _ = short.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // A crowd of slow clients, more than the connection cap: a normal request still gets through.
    let crowd: Vec<TcpStream> = (0..40).map(|_| slow_client(&server.addr)).collect();
    let started = Instant::now();
    let body = json!({"prompt": "a", "max_tokens": 2}).to_string();
    let answer = server.request("POST", "/v1/completions", &body, Duration::from_secs(20));
    assert_eq!(answer.map(|a| a.0), Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(crowd);
}

/// A client that asks for a long streamed reply and then reads nothing: once
/// the kernel's buffers are full the server's writes wait, and after
/// `--write-timeout` the connection is closed and its engine slot freed.
/// Without that, with one connection and one slot allowed, nobody else
/// would ever be answered.
#[test]
fn a_client_that_stops_reading_a_stream_loses_its_connection_after_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let run = runs::char_run(dir.path());
    let limits = [
        "--write-timeout",
        "1",
        "--max-connections",
        "1",
        "--parallel",
        "1",
        "--max-tokens",
        "30000",
    ];
    let server = Server::start(&run, &limits);
    // About 700 bytes a token with 20 top log-probabilities: some 20 MB, far
    // more than the socket buffers hold.
    let body = json!({"prompt": "a", "max_tokens": 30000, "stream": true, "logprobs": 20});
    let body = body.to_string();
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let quick = json!({"prompt": "a", "max_tokens": 2}).to_string();
    let answer = server.request("POST", "/v1/completions", &quick, Duration::from_secs(30));
    assert_eq!(answer.map(|a| a.0), Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The stalled client finds its reply cut short: the connection was closed.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let read = stalled.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(read.is_ok() || reply.len() > 1000, "{read:?}");
    assert!(!text.contains("data: [DONE]"), "the whole reply arrived");
}

#[test]
fn sample_and_serve_say_when_a_folder_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("notes");
    std::fs::create_dir(&folder).unwrap();
    for command in ["sample", "serve"] {
        let out = lmforge().arg(command).arg(&folder).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(
                "is not an lmforge run (no config.json); runs are made by \
                          `lmforge train` or `lmforge import-hf`"
            ),
            "{command}: {err}"
        );
    }
}

#[test]
fn a_lora_run_whose_parent_is_gone_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let parent = run_with_template(dir.path(), None);
    let data = dir.path().join("text.txt");
    std::fs::write(
        &data,
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let lora = dir.path().join("lora");
    let out = lmforge()
        .args([
            "train",
            "--init-from",
            parent.to_str().unwrap(),
            "--lora-rank",
            "2",
        ])
        .args([
            "--max-iters",
            "2",
            "--eval-interval",
            "1",
            "--block",
            "16",
            "--quiet",
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--out",
            lora.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&parent, dir.path().join("moved")).unwrap();
    let out = lmforge().arg("sample").arg(&lora).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("parent model") && err.contains("is gone"),
        "{err}"
    );
    assert!(!err.contains("huggingface-cli"), "{err}");
}
