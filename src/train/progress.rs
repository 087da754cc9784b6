//! Progress output: a bar on a terminal, plain lines otherwise.

/// Reports training progress on stderr.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
    every: u64,
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
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            bar,
            enabled,
            every: (total / 20).max(1),
        }
    }

    pub fn step(&self, step: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(message);
            }
            None if self.enabled && step.is_multiple_of(self.every) => {
                eprintln!("step {step}: {message}")
            }
            None => {}
        }
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
