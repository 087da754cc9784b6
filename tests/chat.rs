//! `lmforge chat` driven as a user drives it: through a pseudo-terminal
//! (typing, Ctrl-C, Ctrl-D) and with input piped; and the sampling flags of
//! `lmforge sample` end to end.
//!
//! Two tiny runs: a character-level base model trained here for 30 steps,
//! and a random GPT with GPT-2's vocabulary plus the chat template's special
//! tokens, whose head bias forces or forbids the stop tokens so that a reply
//! ends at once or never ends by itself.

mod runs;

use rexpect::process::WaitStatus;
use rexpect::session::{PtySession, spawn_command};
use runs::{Shape, char_run, chat_model_run, lmforge};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const EOT: usize = 50256;
const END: usize = 50260;

/// A random chat model: 16 dimensions, block 32, head bias `bias` on the given ids.
fn template_run(dir: &Path, bias: &[(usize, f32)]) -> PathBuf {
    let shape = Shape {
        block_size: 32,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
    };
    chat_model_run(dir, "template", shape, 7, bias)
}

/// `lmforge chat RUN ARGS` on a pseudo-terminal, history in `dir`.
fn spawn_chat(dir: &Path, run: &Path, args: &[&str]) -> PtySession {
    let mut cmd = lmforge();
    cmd.arg("chat").arg(run).args(args).args(["--threads", "2"]);
    cmd.arg("--history").arg(dir.join("history"));
    cmd.env("TERM", "xterm").env("HOME", dir);
    spawn_command(cmd, Some(60_000)).unwrap()
}

/// `lmforge ARGS` with `input` on stdin.
fn piped(args: &[&str], run: &Path, input: &str) -> Output {
    use std::io::Write;
    let mut child = lmforge()
        .args(&args[..1])
        .arg(run)
        .args(&args[1..])
        .args(["--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails on its flags exits without reading its input.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn exited_ok(p: &mut PtySession) {
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("chat ended with {other:?}"),
    }
}

#[test]
fn terminal_session_replies_resets_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let args = ["--max-new-tokens", "20", "--verbose", "--stats"];
    let mut p = spawn_chat(dir.path(), &run, &args);
    p.exp_string("base model: continues your text").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("ROMEO:").unwrap();
    p.exp_string(r#"[prompt: 7 tokens (continue): "ROMEO:\n"]"#)
        .unwrap();
    p.exp_string("[stats] prompt_tokens=7 reused=0 ttft_ms=")
        .unwrap();
    p.exp_string("> ").unwrap();
    // The second prompt holds the first turn...
    p.send_line("JULIET:").unwrap();
    let (_, shown) = p
        .exp_regex(r#"\[prompt: \d+ tokens \(continue\): "ROMEO:\\n"#)
        .unwrap();
    assert!(!shown.contains("prompt: 8 tokens"), "{shown}");
    p.exp_string("> ").unwrap();
    // ... and after /reset only the new line.
    p.send_line("/reset").unwrap();
    p.exp_string("(conversation cleared)").unwrap();
    p.send_line("JULIET:").unwrap();
    p.exp_string(r#"[prompt: 8 tokens (continue): "JULIET:\n"]"#)
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("/temperature -1").unwrap();
    p.exp_string("/temperature must be").unwrap();
    p.send_line("/help").unwrap();
    p.exp_string("/system TEXT").unwrap();
    p.send_line("/quit").unwrap();
    exited_ok(&mut p);
    let history = std::fs::read_to_string(dir.path().join("history")).unwrap();
    assert!(
        history.contains("JULIET:") && history.contains("/reset"),
        "{history}"
    );
}

#[test]
fn ctrl_c_stops_a_reply_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // End of text and <|end|> are never drawn: the reply runs until stopped.
    let run = template_run(dir.path(), &[(EOT, -1e4), (END, -1e4)]);
    let mut p = spawn_chat(
        dir.path(),
        &run,
        &["--max-new-tokens", "1000000", "--verbose"],
    );
    p.exp_string("chat model: talks through its chat template")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("hello").unwrap();
    p.exp_string(r#"<|user|>hello<|end|><|assistant|>"]"#)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    p.send_control('c').unwrap();
    let streamed = p.exp_string("(reply stopped)").unwrap();
    assert!(
        streamed.chars().count() > 20,
        "the reply was printed as it came: {streamed:?}"
    );
    p.exp_string("> ").unwrap();
    // Ctrl-C at the prompt clears the line: "abc" is not sent with /quit.
    p.send("abc").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("/quit").unwrap();
    exited_ok(&mut p);
}

#[test]
fn ctrl_d_at_the_prompt_quits() {
    let dir = tempfile::tempdir().unwrap();
    let run = template_run(dir.path(), &[(END, 1e4)]);
    let mut p = spawn_chat(dir.path(), &run, &[]);
    p.exp_string("> ").unwrap();
    p.send_control('d').unwrap();
    exited_ok(&mut p);
}

#[test]
fn piped_input_prints_only_the_replies() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let args = ["chat", "--max-new-tokens", "20", "--verbose"];
    let out = piped(&args, &run, "ROMEO:\n\n☃\nJULIET:\n/quit\nIGNORED\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(stdout.matches("\n---\n").count(), 2, "{stdout:?}");
    assert!(stdout.ends_with("\n---\n"), "{stdout:?}");
    assert!(!stdout.contains("[prompt"), "notices go to stderr");
    assert_eq!(stderr.matches("[prompt:").count(), 2, "{stderr}");
    assert!(!stderr.contains("IGNORED"), "nothing after /quit: {stderr}");
    assert!(!stderr.contains("lmforge chat"), "no banner: {stderr}");
    assert!(
        stderr.contains("(the model's vocabulary has no '☃'"),
        "{stderr}"
    );
    // Without /quit: the end of input ends the session.
    let out = piped(&args, &run, "ROMEO:");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("\n---\n").count(), 1);
}

#[test]
fn the_oldest_turns_are_dropped_and_the_user_told_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    // Each line is 33 tokens with its newline; the budget is 64 - 20 = 44,
    // so every prompt after the first must drop the turn before it.
    let line = "ROMEO: what light through yonder\n";
    let out = piped(&["chat", "--max-new-tokens", "20"], &run, &line.repeat(5));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr
            .matches("context of 64 tokens: dropped the oldest turn")
            .count(),
        4,
        "{stderr}"
    );
}

#[test]
fn a_chat_model_talks_through_its_template() {
    let dir = tempfile::tempdir().unwrap();
    // <|end|> is always drawn first: every reply is empty.
    let run = template_run(dir.path(), &[(END, 1e4)]);
    let args = ["chat", "--verbose", "--stats", "--system", "Be brief."];
    let out = piped(&args, &run, "hi\nthere\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let first = r#"[prompt: 9 tokens (template): "<|system|>Be brief.<|end|><|user|>hi<|end|><|assistant|>"]"#;
    let second = concat!(
        r#"[prompt: 14 tokens (template): "<|system|>Be brief.<|end|><|user|>hi<|end|>"#,
        r#"<|assistant|><|end|><|user|>there<|end|><|assistant|>"]"#
    );
    assert!(stderr.contains(first), "{stderr}");
    assert!(stderr.contains(second), "{stderr}");
    assert_eq!(stderr.matches(" tokens=0 ").count(), 2, "{stderr}");
    // The second turn starts with the whole first prompt: the KV cache has it.
    assert!(stderr.contains("prompt_tokens=14 reused=9 "), "{stderr}");
    assert_eq!(text(&out.stdout), "\n---\n\n---\n");
}

#[test]
fn sample_stops_at_the_end_of_text_token() {
    let dir = tempfile::tempdir().unwrap();
    let run = template_run(dir.path(), &[(EOT, 1e4)]);
    let out = piped(
        &["sample", "--prompt", "Hello", "--max-new-tokens", "50"],
        &run,
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello\n");
}

#[test]
fn sample_stop_strings_end_the_text_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = char_run(dir.path());
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--prompt", "A", "--max-new-tokens", "60"];
        args.extend_from_slice(extra);
        let out = piped(&args, &run, "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let full = sample(&[]);
    let chars: Vec<char> = full.chars().collect();
    assert_eq!(chars.len(), 1 + 60 + 1, "{full:?}");
    let stop: String = chars[30..32].iter().collect();
    let at = full.find(&stop).unwrap();
    assert_eq!(
        sample(&["--stop", "@@@", "--stop", &stop]),
        format!("{}\n", &full[..at])
    );
    let other = sample(&["--top-k", "5", "--top-p", "0.9", "--min-p", "0.05"]);
    assert_ne!(other, full, "the filters change the draws");
    let again = sample(&["--top-k", "5", "--top-p", "0.9", "--min-p", "0.05"]);
    assert_eq!(other, again, "the same seed gives the same text");
    let penalised = sample(&["--repetition-penalty", "1.5"]);
    assert_ne!(penalised, full);
}

#[test]
fn bad_sampling_flags_are_named_before_anything_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let run = template_run(dir.path(), &[]);
    for (flag, value) in [
        ("--temperature", "nan"),
        ("--top-k", "0"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--min-p", "2"),
        ("--repetition-penalty", "0"),
        ("--stop", ""),
    ] {
        for command in ["sample", "chat"] {
            let out = piped(&[command, flag, value], &run, "hi\n");
            assert!(!out.status.success(), "{command} {flag} {value}");
            assert_eq!(text(&out.stdout), "", "{command} {flag} {value}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(flag), "{command} {flag} {value}: {stderr}");
        }
    }
}
