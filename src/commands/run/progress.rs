//! The progress of `virtlab run`: a bar on a terminal, one line per run otherwise.

use virtlab::harness::Job;

/// A progress bar on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: usize,
    total: usize,
}

impl Progress {
    /// A bar (or lines) for `total` runs.
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} {elapsed_precise} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            done: 0,
            total,
        }
    }

    /// One run finished: its guest, mode and verdict.
    pub fn step(&mut self, job: &Job, r: &Result<contract::RunRecord, reports::RunFailure>) {
        self.done += 1;
        let status = match r {
            Ok(rec) => reports::verdict::Verdict::of(rec).words().to_string(),
            Err(f) => format!("error: {}", f.error),
        };
        let what = format!(
            "{} in {}{}: {status}",
            job.guest.name(),
            job.mode,
            if job.warmup { " (warm-up)" } else { "" }
        );
        match &self.bar {
            Some(b) => {
                b.set_message(what);
                b.inc(1);
            }
            None => eprintln!("[{}/{}] {what}", self.done, self.total),
        }
    }

    /// All runs finished (or the rest were not started): the bar goes away.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
