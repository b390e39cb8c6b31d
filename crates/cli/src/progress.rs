//! Progress on a terminal: bytes done of a total, rate and time left. Nothing is drawn when
//! standard error is not a terminal (cron, CI, a log file): there, each step is one line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte counter the work increments, and the bar that shows it (if stderr is a terminal).
#[derive(Debug)]
pub struct Progress {
    counter: Arc<AtomicU64>,
    ticker: Option<(ProgressBar, tokio::task::JoinHandle<()>)>,
}

impl Progress {
    /// Starts showing `counter`: `label`, bytes of `total` (when known), rate, ETA.
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let target = ProgressDrawTarget::stderr();
        if target.is_hidden() {
            return Self {
                counter,
                ticker: None,
            };
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_owned());
        let (shown, count) = (bar.clone(), counter.clone());
        let ticker = tokio::spawn(async move {
            loop {
                shown.set_position(count.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            counter,
            ticker: Some((bar, ticker)),
        }
    }

    /// The counter to hand to the work.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Removes the bar (the caller then prints its one-line result).
    pub fn finish(self) {
        if let Some((bar, ticker)) = self.ticker {
            ticker.abort();
            bar.finish_and_clear();
        }
    }
}
