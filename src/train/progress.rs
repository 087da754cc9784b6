//! Progress output: a bar on a terminal, plain lines otherwise.

/// Reports training progress on stderr.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
    every: u64,
    /// For the ETA of plain lines: when and at which step this session began, and the last step.
    started: (std::time::Instant, u64),
    total: u64,
}

impl Progress {
    /// `enabled: false` prints nothing; otherwise a bar from `start` to
    /// `total` steps on a terminal, or a line every twentieth of the run.
    pub fn new(enabled: bool, start: u64, total: u64) -> Self {
        use std::io::IsTerminal;
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total).with_position(start);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "step {pos}/{len} {bar:30.cyan/blue} {percent:>3}% | {msg} | {elapsed} elapsed, ETA {eta}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            bar,
            enabled,
            every: (total / 20).max(1),
            started: (std::time::Instant::now(), start),
            total,
        }
    }

    pub fn step(&self, step: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(message);
            }
            None if self.enabled && step.is_multiple_of(self.every) => {
                let percent = 100 * step / self.total.max(1);
                let eta = self
                    .eta(step)
                    .map_or(String::new(), |s| format!(" | ETA {}", clock(s)));
                eprintln!("step {step}/{} ({percent}%): {message}{eta}", self.total)
            }
            None => {}
        }
    }

    /// Seconds left at this session's pace, once a step has been timed.
    fn eta(&self, step: u64) -> Option<f64> {
        let (t0, first) = self.started;
        let done = step.checked_sub(first).filter(|&d| d > 0)?;
        let per_step = t0.elapsed().as_secs_f64() / done as f64;
        Some(per_step * self.total.saturating_sub(step) as f64)
    }

    pub fn line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `1h 02m`, `3m 05s` or `42s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec:02}s"),
        (h, min, _) => format!("{h}h {min:02}m"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_reads_like_a_person_writes() {
        assert_eq!(super::clock(42.4), "42s");
        assert_eq!(super::clock(185.0), "3m 05s");
        assert_eq!(super::clock(3720.0), "1h 02m");
    }
}
