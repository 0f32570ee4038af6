//! Progress of a long operation: bytes done of an (estimated) total, shown as a bar on a terminal and
//! otherwise logged at a steady interval as structured fields (bytes, percent, rate, seconds left).
//! The logged rate and ETA are over the last [`WINDOW`] lines, not since the start: a start-up pause
//! (listing storage, filling the pipeline) would otherwise make every later estimate too slow.

use std::{
    collections::VecDeque,
    io::IsTerminal,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Progress lines the logged rate is measured over.
pub const WINDOW: usize = 5;

use tokio::task::JoinHandle;

/// Shared counters of one operation.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
    /// (when, bytes done) at the last [`WINDOW`] + 1 lines.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Progress {
    /// New counters with an estimated total (0 when unknown).
    pub fn new(total: u64) -> Arc<Self> {
        let started = Instant::now();
        let samples = Mutex::new(VecDeque::from([(started, 0)]));
        Arc::new(Self { done: AtomicU64::new(0), total: AtomicU64::new(total), started, samples })
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

    /// Records a sample now and returns the rate since the oldest kept one, in bytes per second.
    fn sample(&self) -> f64 {
        let (now, done) = (Instant::now(), self.done());
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.push_back((now, done));
        while samples.len() > WINDOW + 1 {
            samples.pop_front();
        }
        let (then, before) = samples.front().copied().unwrap_or((self.started, 0));
        done.saturating_sub(before) as f64 / now.duration_since(then).as_secs_f64().max(1e-3)
    }

    /// Seconds left at `rate`, when the total is known and the rate is not zero.
    fn eta_seconds(&self, rate: f64) -> Option<u64> {
        let (total, done) = (self.total.load(Ordering::Relaxed), self.done());
        (total > 0 && rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate).round() as u64)
    }

    /// Logs one progress line: bytes done and total, percent, the recent rate, seconds left at it.
    fn log_line(&self, operation: &'static str) {
        let rate = self.sample();
        tracing::info!(
            operation,
            bytes_done = self.done(),
            bytes_total = self.total.load(Ordering::Relaxed),
            percent = self.percent().map(|p| (p * 10.0).round() / 10.0),
            rate_mib_s = (rate / 1048576.0 * 10.0).round() / 10.0,
            eta_s = self.eta_seconds(rate),
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
    }

    #[test]
    fn the_rate_and_eta_are_over_the_last_lines_not_since_the_start() {
        let p = Progress::new(0);
        assert_eq!(p.eta_seconds(p.sample()), None, "no total");
        p.set_total(1000);
        // A slow start: nothing for 300 ms.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(p.eta_seconds(p.sample()), None, "nothing done yet");
        // Then 100 bytes every 50 ms, a line after each.
        let mut rate = 0.0;
        for _ in 0..WINDOW + 1 {
            p.add_done(100);
            std::thread::sleep(Duration::from_millis(50));
            rate = p.sample();
        }
        // The window holds only the steady part: about 2,000 B/s, not the 1,000 the average says.
        assert!(rate > 1500.0 && p.rate() < 1300.0, "recent {rate}, average {}", p.rate());
        assert_eq!(p.eta_seconds(rate), Some(0), "400 bytes left: under a second");
        p.set_total(3000);
        let eta = p.eta_seconds(rate).unwrap();
        assert!((1..=2).contains(&eta), "2,400 bytes left at ~2,000 B/s: {eta}");
    }
}
