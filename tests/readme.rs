//! The README's commands, run as a newcomer would run them: every `lmforge`
//! line of its `sh` blocks, in order, in an empty folder (a fresh clone has
//! nothing beside it), each of which must succeed.
//!
//! Only their length is changed, so the suite stays fast: `train` gets a few
//! iterations instead of thousands (`--max-iters` replaced or added, a short
//! evaluation), `serve` listens on a free port and is stopped once `/health`
//! answers, and `chat` gets one line on standard input. Every other word of
//! each command is the README's.

mod runs;

use runs::lmforge;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `lmforge` commands in the README's `sh` blocks, comments removed.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        let command = line.split(" #").next().unwrap_or("").trim();
        if in_sh && command.starts_with("lmforge ") {
            commands.push(shell_words(command).into_iter().skip(1).collect());
        }
    }
    commands
}

/// A command line split into words as `sh` splits it: on spaces, except
/// inside single or double quotes, which are removed.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, in_word) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `words` with `--max-iters` set to `iters` (replaced where given) and a
/// short evaluation.
fn shortened_train(words: &[String], iters: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "--max-iters" {
            i += 2;
            continue;
        }
        out.push(words[i].clone());
        i += 1;
    }
    let short = [
        "--max-iters",
        &iters.to_string(),
        "--eval-interval",
        "10",
        "--eval-iters",
        "2",
    ];
    out.extend(short.iter().map(|s| s.to_string()));
    out.extend(["--threads".to_string(), "2".to_string()]);
    out
}

fn run(dir: &Path, words: &[String]) {
    let output = lmforge().current_dir(dir).args(words).output().unwrap();
    assert!(
        output.status.success(),
        "`lmforge {}` failed:\n{}",
        words.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn chat(dir: &Path, words: &[String]) {
    let mut child = lmforge()
        .current_dir(dir)
        .args(words)
        .args(["--max-new-tokens", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To be or not\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("---"), "chat printed no reply: {stdout:?}");
}

/// Starts the server on a free port, waits for `/health`, then stops it.
fn serve(dir: &Path, words: &[String]) {
    let mut child = lmforge()
        .current_dir(dir)
        .args(words)
        .args(["--port", "0", "--threads", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let at = line
        .find("http://")
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let base = line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let health = agent.get(&format!("{base}/health")).call();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.unwrap().status().as_u16(), 200);
}

#[test]
fn every_readme_command_runs_in_an_empty_folder() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 7,
        "found only {} commands",
        commands.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut trained = 0;
    for words in &commands {
        assert!(
            !words.iter().any(|w| w.contains("../")),
            "`lmforge {}` names a path outside the repository",
            words.join(" ")
        );
        match words[0].as_str() {
            "train" => {
                trained += 20;
                run(dir.path(), &shortened_train(words, trained));
            }
            "chat" => chat(dir.path(), words),
            "serve" => serve(dir.path(), words),
            _ => run(dir.path(), words),
        }
    }
    assert!(
        dir.path().join("loss.png").is_file(),
        "`plot` wrote no loss.png"
    );
}

#[test]
fn readme_install_and_test_commands_are_the_ones_ci_uses() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let ci =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(readme.contains("cargo install --path ."));
    assert!(readme.contains("cargo test --release"));
    assert!(
        ci.contains("cargo test --release"),
        ".ci/run no longer runs the README's test command"
    );
    assert!(
        readme.lines().count() <= 250,
        "the README is over 250 lines"
    );
    // The README's install line must name a command that exists.
    let status = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .arg("--version")
        .status()
        .unwrap();
    assert!(status.success());
}
