//! The chat page of `lmforge serve` in a real headless browser (Debian's
//! `chromium` driven through `chromedriver`'s W3C WebDriver API): type a
//! message, watch the reply stream in, press Stop. A screenshot is left in
//! `target/serve_page.png` to look at.
//!
//! `.ci/run` installs both programs; where they are missing the test says so
//! and is skipped.

mod runs;

use lmforge::chat::SPECIAL_TOKENS;
use runs::{Shape, chat_model_run};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in WebDriver JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chat model whose replies never end by themselves (its head forbids
/// the stop tokens), with a long context: a reply streams until stopped.
fn endless_run(dir: &Path, name: &str) -> PathBuf {
    let shape = Shape {
        block_size: 2048,
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
    };
    let tok = lmforge::tokenizer::gpt2()
        .unwrap()
        .with_added_specials(&SPECIAL_TOKENS)
        .unwrap();
    let template = lmforge::chat::ChatTemplate::from_tokenizer(&tok).unwrap();
    let format = lmforge::chat::ChatFormat::own(template, &tok);
    let forbidden: Vec<_> = lmforge::chat::stop_tokens(Some(&format), &tok)
        .into_iter()
        .map(|id| (id as usize, -1e4))
        .collect();
    chat_model_run(dir, name, shape, 3, &forbidden)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `command` and wait for a stdout line containing `marker`.
fn start(
    mut command: Command,
    marker: &str,
) -> (Process, String, BufReader<std::process::ChildStdout>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no '{marker}' line");
    }
    (Process(child), line, out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session.
struct Browser {
    base: String,
    agent: ureq::Agent,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match body {
            Some(body) => self.agent.post(&url).send(body.to_string()),
            None if method == "DELETE" => self.agent.delete(&url).call(),
            None => self.agent.get(&url).call(),
        }
        .unwrap();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(
            answer["value"].get("error").is_none(),
            "{method} {path}: {answer}"
        );
        answer["value"].clone()
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// Run `script` in the page and return its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Wait (up to 30 s) until `script` returns true.
    fn wait_for(&self, script: &str) {
        let start = Instant::now();
        while self.eval(script) != json!(true) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for: {script}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_chat_page_streams_a_reply_and_stops_it() {
    if !found("chromedriver") || !found("chromium") {
        eprintln!(
            "skipped: chromium and chromedriver are not installed (.ci/run installs them with apt-get)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        endless_run(dir.path(), "endless"),
        endless_run(dir.path(), "other"),
    );
    let mut serve = Command::new(env!("CARGO_BIN_EXE_lmforge"));
    serve.arg("serve").args([&first, &second]).args([
        "--port",
        "0",
        "--threads",
        "2",
        "--max-tokens",
        "2000",
    ]);
    let (_server, line, _server_out) = start(serve, "http://");
    let at = line.find("http://").unwrap();
    let site = line[at..].split_whitespace().next().unwrap().to_string();
    let port = free_port();
    let mut driver = Command::new("chromedriver");
    driver.arg(format!("--port={port}"));
    let (_driver, _, _driver_out) = start(driver, "started successfully");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut browser = Browser {
        base: format!("http://127.0.0.1:{port}"),
        agent,
    };
    let options = json!({"binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,760"]});
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
    let session = browser.call("POST", "/session", Some(caps));
    browser.base = format!(
        "{}/session/{}",
        browser.base,
        session["sessionId"].as_str().unwrap()
    );

    browser.call("POST", "/url", Some(json!({"url": site})));
    browser.wait_for("return document.querySelectorAll('#model option').length === 2");
    browser.eval("document.getElementById('max-tokens').value = '2000'; return true");
    let input = browser.find("#input");
    let typed = json!({"text": "Tell me a long story\u{E007}"}); // U+E007: the Enter key
    browser.call("POST", &format!("/element/{input}/value"), Some(typed));
    browser.wait_for(
        "return document.querySelector('.msg.user')?.textContent === 'Tell me a long story'",
    );
    // The reply streams: its text grows while the Stop button shows.
    let length = "return document.querySelector('.msg.assistant').textContent.length";
    browser.wait_for(&format!("{length} > 0"));
    let before = browser.eval(length).as_u64().unwrap();
    browser.wait_for(&format!("{length} > {}", before + 5));
    assert_eq!(
        browser.eval("return document.getElementById('stop').hidden"),
        json!(false)
    );
    let stop = browser.find("#stop");
    browser.call("POST", &format!("/element/{stop}/click"), Some(json!({})));
    browser.wait_for(
        "return [...document.querySelectorAll('.note')].some(n => n.textContent === '(stopped)')",
    );
    assert_eq!(
        browser.eval("return document.getElementById('send').hidden"),
        json!(false)
    );
    let stopped_at = browser.eval(length).as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        browser.eval(length).as_u64().unwrap(),
        stopped_at,
        "the reply went on after Stop"
    );
    let shot = browser.call("GET", "/screenshot", None);
    let png = base64_decode(shot.as_str().unwrap());
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/serve_page.png");
    std::fs::write(&target, png).unwrap();
    browser.call("DELETE", "", None);
    // Stopping in the page closed the request: the server's slot is free again.
    let health = format!("{site}/health");
    let start = Instant::now();
    loop {
        let mut response = ureq::get(&health).call().unwrap();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        if body["models"][0]["active"] == json!(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot stayed busy: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
