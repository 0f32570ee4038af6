//! Progress of a long operation: bytes done of an (estimated) total, shown as a bar on a terminal and
//! otherwise logged at a steady interval as structured fields (bytes, percent, rate).

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

/// Shared counters of one operation.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
}

impl Progress {
    /// New counters with an estimated total (0 when unknown).
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self { done: AtomicU64::new(0), total: AtomicU64::new(total), started: Instant::now() })
    }

    /// Counts `n` more bytes done.
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Replaces the estimated total.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Average rate since the start, in bytes per second.
    pub fn rate(&self) -> f64 {
        self.done() as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Percent done, when the total is known; never above 100 (totals are estimates).
    pub fn percent(&self) -> Option<f64> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| (self.done() as f64 * 100.0 / total as f64).min(100.0))
    }

    /// Seconds left at the average rate, when the total is known and something is done.
    pub fn eta_seconds(&self) -> Option<u64> {
        let (total, done, rate) = (self.total.load(Ordering::Relaxed), self.done(), self.rate());
        (total > 0 && rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate).round() as u64)
    }

    /// Logs one progress line: bytes done and total, percent, average rate, seconds left.
    fn log_line(&self, operation: &'static str) {
        tracing::info!(
            operation,
            bytes_done = self.done(),
            bytes_total = self.total.load(Ordering::Relaxed),
            percent = self.percent().map(|p| (p * 10.0).round() / 10.0),
            rate_mib_s = (self.rate() / 1048576.0 * 10.0).round() / 10.0,
            eta_s = self.eta_seconds(),
            "progress"
        );
    }

    /// Starts showing progress of `operation`: a bar when stderr is a terminal, else a log line every
    /// `interval` and a last one when [`Reporter::stop`] is called, so even a short run's log shows it.
    pub fn report(self: &Arc<Self>, operation: &'static str, interval: Duration) -> Reporter {
        let me = self.clone();
        let terminal = std::io::stderr().is_terminal();
        let handle = if terminal {
            tokio::spawn(async move {
                let bar = indicatif::ProgressBar::new(me.total.load(Ordering::Relaxed));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(operation);
                loop {
                    bar.set_length(me.total.load(Ordering::Relaxed).max(me.done()));
                    bar.set_position(me.done());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        } else {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    me.log_line(operation);
                }
            })
        };
        Reporter { handle, progress: self.clone(), operation, terminal }
    }
}

/// A running progress display; stop it when the operation ends.
pub struct Reporter {
    handle: JoinHandle<()>,
    progress: Arc<Progress>,
    operation: &'static str,
    terminal: bool,
}

impl Reporter {
    /// Stops the display; when logging, writes the final line.
    pub fn stop(self) {
        self.handle.abort();
        if !self.terminal {
            self.progress.log_line(self.operation);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_capped_and_unknown_without_total() {
        let p = Progress::new(0);
        p.add_done(5);
        assert_eq!(p.percent(), None);
        p.set_total(10);
        assert_eq!(p.percent(), Some(50.0));
        p.add_done(20);
        assert_eq!(p.percent(), Some(100.0));
        assert_eq!(p.eta_seconds(), Some(0), "done (past the estimate): nothing left");
    }

    #[test]
    fn the_eta_is_what_is_left_at_the_average_rate() {
        let p = Progress::new(0);
        assert_eq!(p.eta_seconds(), None, "no total");
        p.set_total(1000);
        assert_eq!(p.eta_seconds(), None, "nothing done yet");
        p.add_done(100);
        std::thread::sleep(Duration::from_millis(200));
        // 100 bytes in ≥ 0.2 s, so ≤ 500 B/s: the 900 left take ≥ 1.8 s.
        let eta = p.eta_seconds().unwrap();
        assert!((2..=60).contains(&eta), "{eta}");
    }
}
