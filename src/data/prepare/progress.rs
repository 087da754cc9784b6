//! Prepare's progress on stderr, as `train` shows its own: a bar on a
//! terminal; otherwise (a log file, a pipe) a plain line every
//! [`LINE_EVERY`], so short runs print nothing and long ones say how far
//! they are; nothing at all when progress is off (`--quiet`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The interval between plain progress lines.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// One pass over the inputs (`vocabulary` or `tokenizing`).
pub struct Progress {
    what: &'static str,
    total_bytes: u64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    /// When the next plain line is due (`None`: no plain lines).
    next_line: Option<Instant>,
}

impl Progress {
    /// Report a pass over `total_bytes` of input, if `show`.
    pub fn new(show: bool, total_bytes: u64, what: &'static str) -> Self {
        let started = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        Progress {
            what,
            total_bytes,
            started,
            bar: (show && terminal).then(|| bar(total_bytes, what)),
            next_line: (show && !terminal).then(|| started + LINE_EVERY),
        }
    }

    /// `bytes` of input read so far, `tokens` written (0 when the pass
    /// writes none), `documents` seen.
    pub fn update(&mut self, bytes: u64, tokens: u64, documents: u64) {
        let now = Instant::now();
        let seconds = now.duration_since(self.started).as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(counts(tokens, documents, seconds));
        }
        if let Some(due) = self.next_line.filter(|&due| now >= due) {
            eprintln!("{}", self.line(bytes, tokens, seconds));
            self.next_line = Some(due.max(now - LINE_EVERY) + LINE_EVERY);
        }
    }

    /// `tokenizing: 512.0 MB of 2.0 GB read (25%), 130000000 tokens written
    /// (2100000 tokens/s), 41.2 MB/s, ETA 1m 05s`.
    fn line(&self, bytes: u64, tokens: u64, seconds: f64) -> String {
        let rate = bytes as f64 / seconds.max(1e-9);
        let percent = 100 * bytes / self.total_bytes.max(1);
        let tokens = match tokens {
            0 => String::new(),
            n => format!(
                ", {n} tokens written ({:.0} tokens/s)",
                n as f64 / seconds.max(1e-9)
            ),
        };
        let left = self.total_bytes.saturating_sub(bytes) as f64 / rate.max(1.0);
        format!(
            "{}: {} of {} read ({percent}%){tokens}, {:.1} MB/s, ETA {}",
            self.what,
            megabytes(bytes),
            megabytes(self.total_bytes),
            rate / 1e6,
            clock(left)
        )
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bar's message: documents, and tokens with their rate.
fn counts(tokens: u64, documents: u64, seconds: f64) -> String {
    match tokens {
        0 => format!("{documents} docs"),
        n => format!(
            "{documents} docs, {n} tokens ({:.0} tokens/s)",
            n as f64 / seconds.max(1e-9)
        ),
    }
}

/// A bar showing bytes read, their rate and the ETA.
fn bar(total_bytes: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// `512.0 MB`.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1h 02m`, `3m 05s` or `42s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_only(total_bytes: u64) -> Progress {
        Progress {
            what: "tokenizing",
            total_bytes,
            started: Instant::now() - Duration::from_secs(20),
            bar: None,
            next_line: Some(Instant::now() + LINE_EVERY),
        }
    }

    #[test]
    fn a_line_says_bytes_tokens_rate_and_time_left() {
        let p = lines_only(2_000_000_000);
        let line = p.line(500_000_000, 130_000_000, 20.0);
        assert_eq!(
            line,
            "tokenizing: 500.0 MB of 2000.0 MB read (25%), 130000000 tokens written \
             (6500000 tokens/s), 25.0 MB/s, ETA 1m 00s"
        );
        assert!(
            !p.line(10, 0, 1.0).contains("tokens"),
            "no tokens in the first pass"
        );
    }

    #[test]
    fn lines_are_throttled() {
        let mut p = lines_only(100);
        p.update(10, 5, 1);
        assert!(
            p.next_line.unwrap() > Instant::now(),
            "not due yet: nothing printed"
        );
        p.next_line = Some(Instant::now() - Duration::from_secs(1));
        p.update(20, 10, 2);
        let next = p.next_line.unwrap();
        assert!(
            next > Instant::now() + LINE_EVERY - Duration::from_secs(2),
            "next line in ~10 s"
        );
        assert_eq!(clock(3725.0), "1h 02m");
        assert_eq!(clock(185.0), "3m 05s");
    }
}
