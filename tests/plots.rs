//! Plots, run tables and reports, end to end through the `lmforge` binary,
//! on synthetic metrics (fast, and every number known) and on one short
//! real training run.

use resvg::tiny_skia::Pixmap;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .expect("lmforge runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A run directory with `steps` logged steps, an evaluation every
/// `every`, a loss falling from 4.2 towards `floor`, and a train config.
fn synthetic_run(dir: &Path, steps: u64, every: u64, floor: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let loss = |s: u64| floor + (4.2 - floor) * (-(s as f64) / 60.0).exp();
    let mut lines = vec![format!(
        r#"{{"step":0,"eval":true,"train_loss":4.2,"val_loss":4.2,"elapsed_s":0.0}}"#
    )];
    for s in 1..=steps {
        let noise = 0.05 * ((s * 7919 % 13) as f64 / 13.0 - 0.5);
        let lr = 1e-3 * (s as f64 / 10.0).min(1.0);
        lines.push(format!(
            r#"{{"step":{s},"train_loss":{},"lr":{lr},"tokens_per_sec":5000,"elapsed_s":{}}}"#,
            loss(s) + noise,
            s as f64 * 0.5
        ));
        if s % every == 0 {
            lines.push(format!(
                r#"{{"step":{s},"eval":true,"train_loss":{},"val_loss":{},"elapsed_s":{},"peak_rss_mb":123.0,"new_field":[1]}}"#,
                loss(s),
                loss(s) + 0.1,
                s as f64 * 0.5
            ));
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let config = serde_json::json!({
        "format": "lmforge-run", "version": 1, "data": null, "unknown_field": true,
        "config": {"preset": "char-cpu", "tokenizer": "char", "arch": "gpt", "vocab_size": 65,
            "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0,
            "norm": "pre", "activation": "gelu", "tie_embeddings": true, "bias": false,
            "qkv_bias": false, "lm_head_bias": false, "batch_size": 4, "grad_accum": 2}
    });
    std::fs::write(dir.join("train_config.json"), config.to_string()).unwrap();
}

/// Pixels in the rectangle that are clearly coloured (a curve, not white,
/// grey grid or black text).
fn coloured_pixels(p: &Pixmap, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
    let mut n = 0;
    for yy in y {
        for xx in x.clone() {
            let c = p.pixel(xx, yy).unwrap();
            let (hi, lo) = (
                c.red().max(c.green()).max(c.blue()),
                c.red().min(c.green()).min(c.blue()),
            );
            n += usize::from(hi - lo > 60);
        }
    }
    n
}

fn is_white_border(p: &Pixmap, width: u32) -> bool {
    (0..p.height()).all(|y| {
        (0..p.width()).all(|x| {
            let edge = x < width || y < width || x >= p.width() - width || y >= p.height() - width;
            let c = p.pixel(x, y).unwrap();
            !edge || (c.red() == 255 && c.green() == 255 && c.blue() == 255)
        })
    })
}

#[test]
fn plot_draws_a_png_with_curves_in_both_panels() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run-a");
    synthetic_run(&run_dir, 400, 50, 1.5);
    let png = dir.path().join("loss.png");
    let out = run(&[
        "plot",
        run_dir.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pixmap = Pixmap::load_png(&png).unwrap();
    assert_eq!((pixmap.width(), pixmap.height()), (1200, 800));
    // The loss panel spans y 64..496, the learning-rate panel 530..696.
    let loss = coloured_pixels(&pixmap, 150..1150, 70..490);
    let lr = coloured_pixels(&pixmap, 150..1150, 535..690);
    assert!(loss > 2000, "only {loss} coloured pixels in the loss panel");
    assert!(
        lr > 500,
        "only {lr} coloured pixels in the learning-rate panel"
    );
    // Nothing is drawn at the picture's edge: no label runs off it.
    assert!(is_white_border(&pixmap, 4), "something touches the edge");

    let custom = dir.path().join("small.png");
    let out = run(&[
        "plot",
        run_dir.to_str().unwrap(),
        "--out",
        custom.to_str().unwrap(),
        "--width",
        "800",
        "--height",
        "500",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pixmap = Pixmap::load_png(&custom).unwrap();
    assert_eq!((pixmap.width(), pixmap.height()), (800, 500));
    assert!(is_white_border(&pixmap, 4));
}

#[test]
fn two_runs_overlay_with_a_legend_in_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("small-lr"), dir.path().join("big & bold"));
    synthetic_run(&a, 300, 50, 1.5);
    synthetic_run(&b, 200, 25, 1.8);
    let svg = dir.path().join("both.svg");
    let args = [
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
        "--x",
        "tokens",
        "--x-scale",
        "linear",
    ];
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains(">small-lr<") && text.contains(">big &amp; bold<"),
        "legend names the runs"
    );
    assert!(text.contains("loss (nats per token)") && text.contains("learning rate"));
    assert!(text.contains("training tokens seen"));
    // 300 steps x 4 x 16 x 2 = 38.4k tokens: the axis counts in thousands.
    assert!(text.contains(">30k<"), "tick labels count tokens");
    // Two runs: three polylines (steps, evaluation train, validation) each in the loss panel, one lr line each.
    assert_eq!(text.matches("<polyline").count(), 8);
}

#[test]
fn log_scale_is_chosen_when_the_loss_falls_early() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    // The loss falls with a time constant of 60 steps over a 3000-step run.
    synthetic_run(&run_dir, 3000, 500, 1.5);
    let svg = dir.path().join("p.svg");
    let out = run(&[
        "plot",
        run_dir.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("log scale"), "auto picks a log x axis here");
    let out = run(&[
        "plot",
        run_dir.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
        "--x-scale",
        "linear",
    ]);
    assert!(out.status.success());
    assert!(!std::fs::read_to_string(&svg).unwrap().contains("log scale"));
}

#[test]
fn bad_metrics_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let out_png = dir.path().join("x.png");
    let plot = |out: &Path| {
        run(&[
            "plot",
            run_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };

    std::fs::create_dir_all(&run_dir).unwrap();
    let out = plot(&out_png);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("metrics.jsonl"), "{}", stderr(&out));

    std::fs::write(run_dir.join("metrics.jsonl"), "").unwrap();
    let out = plot(&out_png);
    assert!(
        !out.status.success() && stderr(&out).contains("no metrics yet"),
        "{}",
        stderr(&out)
    );

    let lines = "{\"step\":1,\"train_loss\":3.0}\n{\"step\":2,\"train_loss\":2.9}\n{\"step\":3,\"train_lo\n";
    std::fs::write(run_dir.join("metrics.jsonl"), lines).unwrap();
    // A corrupt line is left out with a warning naming it; the rest is drawn.
    let out = plot(&out_png);
    assert!(
        out.status.success() && stderr(&out).contains("metrics.jsonl:3: not JSON"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&out_png).unwrap();

    std::fs::write(
        run_dir.join("metrics.jsonl"),
        "{\"step\":1,\"train_loss\":3.0}\n",
    )
    .unwrap();
    let out = plot(&dir.path().join("x.jpg"));
    assert!(
        !out.status.success() && stderr(&out).contains(".png or .svg"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "plot",
        run_dir.to_str().unwrap(),
        "--out",
        out_png.to_str().unwrap(),
        "--x",
        "tokens",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("train_config.json"),
        "{}",
        stderr(&out)
    );
    assert!(!out_png.exists(), "no picture is left behind by a failure");
}

#[test]
fn runs_lists_two_runs_and_report_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(&dir.path().join("alpha"), 120, 40, 1.5);
    synthetic_run(&dir.path().join("beta"), 60, 30, 1.9);
    let beta_config = dir.path().join("beta/train_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&beta_config).unwrap()).unwrap();
    config["init_from"] = "runs/alpha".into();
    std::fs::write(&beta_config, config.to_string()).unwrap();
    std::fs::create_dir_all(dir.path().join("not-a-run")).unwrap();

    let out = run(&["runs", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "header and two runs:\n{table}");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[0])[..5],
        ["run", "model", "params", "tokenizer", "steps"]
    );
    let alpha = cells(lines[1]);
    // 120 steps x 4 x 16 x 2 tokens = 15.36k; best val is the last: 1.5 + 2.7 e^-2 + 0.1.
    let best = 1.5 + 2.7 * (-2.0f64).exp() + 0.1;
    assert_eq!(alpha[..5], ["alpha", "2x32", &alpha[2], "char", "120"]);
    assert_eq!(alpha[5], format!("{best:.4}"));
    assert_eq!(alpha[6..], ["15.36k", "1m00s", "-"]);
    let beta = cells(lines[2]);
    assert_eq!(
        (beta[0].as_str(), beta[4].as_str(), beta[8].as_str()),
        ("beta", "60", "runs/alpha")
    );
    // Parameters of the 2x32 model: computed, the same for both runs.
    assert!(alpha[2].ends_with('k') && alpha[2] == beta[2], "{table}");

    let out = run(&["report", dir.path().join("alpha").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(dir.path().join("alpha/report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("loss (nats per token)"),
        "the plot is inline"
    );
    // The configuration, escaped for HTML, exactly as train_config.json holds it.
    assert!(
        html.contains("&quot;n_embd&quot;:32,&quot;n_head&quot;:2"),
        "the config is in the page"
    );
    assert!(html.contains("best validation loss"), "the plot's title");
    assert!(
        html.contains("123 MiB") && html.contains("5000 tokens/s"),
        "memory and throughput"
    );
    for external in ["<script", "<link", "src=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the report must not load {external}"
        );
    }

    let out = run(&["runs", dir.path().join("not-a-run").to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("no run directories"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_short_training_run_leaves_a_plot_samples_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i}: to be or not to be.\n"))
        .collect();
    std::fs::write(&data, text).unwrap();
    let out_dir = dir.path().join("run");
    let out = run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--block",
        "16",
        "--batch",
        "4",
        "--max-iters",
        "8",
        "--eval-interval",
        "4",
        "--eval-iters",
        "1",
        "--threads",
        "1",
        "--sample-every-eval",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("step 4: train loss") && log.contains("peak memory"),
        "{log}"
    );
    let pixmap = Pixmap::load_png(out_dir.join("loss.png")).unwrap();
    assert_eq!((pixmap.width(), pixmap.height()), (1200, 800));
    assert!(coloured_pixels(&pixmap, 150..1150, 70..490) > 500);
    let samples = std::fs::read_to_string(out_dir.join("samples.jsonl")).unwrap();
    let steps: Vec<u64> = samples
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [0, 4, 8]);
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert!(
        metrics
            .lines()
            .filter(|l| l.contains("\"eval\":true"))
            .all(|l| l.contains("peak_rss_mb"))
    );
    let out = run(&["report", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(
        html.contains("<h3>step 8</h3>"),
        "samples are in the report"
    );

    // --plot svg draws loss.svg instead; --plot none draws nothing.
    for (choice, drawn) in [("svg", true), ("none", false)] {
        let run_dir = dir.path().join(choice);
        let out = run(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--block",
            "16",
            "--batch",
            "4",
            "--max-iters",
            "2",
            "--eval-interval",
            "2",
            "--eval-iters",
            "1",
            "--threads",
            "1",
            "-q",
            "--plot",
            choice,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!run_dir.join("loss.png").exists(), "--plot {choice}");
        assert_eq!(run_dir.join("loss.svg").is_file(), drawn, "--plot {choice}");
    }
    let out = run(&[
        "train",
        "--plot",
        "gif",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success() && stderr(&out).contains("expected png, svg or none"));
}

#[test]
fn ctrl_c_between_evaluations_redraws_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i}: to be or not to be.\n"))
        .collect();
    std::fs::write(&data, text).unwrap();
    let out_dir = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--block",
            "16",
            "--batch",
            "4",
            "--max-iters",
            "100000",
            "--eval-interval",
            "50000",
            "--eval-iters",
            "1",
            "--threads",
            "1",
            "-q",
            "--plot",
            "svg",
        ])
        .spawn()
        .unwrap();
    // The evaluation before the first step draws a plot with no line yet.
    let metrics = out_dir.join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 20 {
        assert!(child.try_wait().unwrap().is_none(), "training exited early");
        assert!(
            std::time::Instant::now() < deadline,
            "training did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(kill.unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // Stopped between evaluations: the picture was redrawn with the steps and the learning rate.
    let svg = std::fs::read_to_string(out_dir.join("loss.svg")).unwrap();
    assert!(svg.matches("<polyline").count() >= 2, "{svg}");
}
