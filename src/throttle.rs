//! Rate limits on bytes: a token bucket shared by every task that reads or uploads, so that one limit
//! holds over all of them together, and a parser for rates as people write them (`20MiB`, `20Mi`,
//! `500M`, `1048576`).
//!
//! The bucket holds at most a tenth of a second's worth of bytes (and at least 64 KiB), so a burst
//! after a pause stays short. Waiters are served in arrival order: the bucket's lock is tokio's fair
//! mutex, held while a waiter sleeps for its share. The clock is tokio's, so tests drive it with
//! paused time.

use std::{num::NonZeroU64, str::FromStr, time::Duration};

use tokio::{sync::Mutex, time::Instant};

/// A rate in bytes per second, parsed from `20MiB`, `20Mi`, `500M`, `64KiB`, `1G` or plain bytes; an
/// optional `/s` may follow. `K`, `M`, `G` are powers of 1000; `Ki`, `Mi`, `Gi` of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRate(pub NonZeroU64);

/// A rate that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a rate in bytes per second (e.g. 20MiB, 20Mi, 500M, 1048576): {reason}")]
pub struct ParseRateError {
    text: String,
    reason: &'static str,
}

impl FromStr for ByteRate {
    type Err = ParseRateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseRateError { text: text.to_string(), reason };
        let s = text.trim();
        let s = s.strip_suffix("/s").unwrap_or(s).trim_end();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let number: u64 = number.parse().map_err(|_| err("it does not start with a whole number"))?;
        let unit = unit.trim();
        let unit = unit.strip_suffix('B').filter(|u| !u.ends_with('B')).unwrap_or(unit);
        let factor: u64 = match unit {
            "" => 1,
            "K" | "k" => 1000,
            "Ki" => 1024,
            "M" => 1000 * 1000,
            "Mi" => 1024 * 1024,
            "G" => 1000 * 1000 * 1000,
            "Gi" => 1024 * 1024 * 1024,
            _ => return Err(err("the unit is none of K, Ki, M, Mi, G, Gi (optionally followed by B)")),
        };
        let bytes = number.checked_mul(factor).ok_or_else(|| err("it is too large"))?;
        NonZeroU64::new(bytes).map(ByteRate).ok_or_else(|| err("a limit of 0 would never finish"))
    }
}

impl std::fmt::Display for ByteRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} B/s", self.0)
    }
}

/// A token bucket of bytes.
#[derive(Debug)]
pub struct RateLimit {
    rate: u64,
    burst: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `rate`, starting with a full bucket.
    pub fn new(rate: ByteRate) -> Self {
        let rate = rate.0.get();
        let burst = (rate / 10).max(64 * 1024);
        Self { rate, burst, bucket: Mutex::new(Bucket { tokens: burst as f64, at: Instant::now() }) }
    }

    /// The limit, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` may pass. Larger amounts than a burst pass a burst at a time.
    pub async fn take(&self, bytes: u64) {
        let mut left = bytes;
        while left > 0 {
            let piece = left.min(self.burst);
            let mut bucket = self.bucket.lock().await;
            self.refill(&mut bucket);
            let missing = piece as f64 - bucket.tokens;
            if missing > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(missing / self.rate as f64)).await;
                self.refill(&mut bucket);
            }
            bucket.tokens -= piece as f64;
            left -= piece;
        }
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.rate as f64;
        bucket.tokens = (bucket.tokens + earned).min(self.burst as f64);
        bucket.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rate(text: &str) -> u64 {
        text.parse::<ByteRate>().unwrap().0.get()
    }

    #[test]
    fn rates_parse_as_people_write_them() {
        assert_eq!(rate("20MiB"), 20 * 1024 * 1024);
        assert_eq!(rate("20Mi"), 20 * 1024 * 1024);
        assert_eq!(rate("20 MiB/s"), 20 * 1024 * 1024);
        assert_eq!(rate("500M"), 500_000_000);
        assert_eq!(rate("500MB"), 500_000_000);
        assert_eq!(rate("64KiB"), 65536);
        assert_eq!(rate("8k"), 8000);
        assert_eq!(rate("1Gi"), 1 << 30);
        assert_eq!(rate("1048576"), 1 << 20);
        let err = |t: &str| t.parse::<ByteRate>().unwrap_err().to_string();
        assert_eq!(
            err("0"),
            "\"0\" is not a rate in bytes per second (e.g. 20MiB, 20Mi, 500M, 1048576): a limit of 0 would never finish"
        );
        assert!(err("fast").ends_with("it does not start with a whole number"), "{}", err("fast"));
        assert!(err("20MiBB").contains("the unit is none of"), "{}", err("20MiBB"));
        assert!(err("20Ti").contains("the unit is none of"));
        assert!(err("99999999999Gi").ends_with("it is too large"));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_pass_at_the_rate_over_all_takers_after_one_burst() {
        let limit = Arc::new(RateLimit::new("10MiB".parse().unwrap()));
        let start = Instant::now();
        // Four tasks of 4 MiB chunks, 40 MiB in all: a burst of 1 MiB, then 39 MiB at 10 MiB/s.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move {
                    for _ in 0..10 / 4 + 1 {
                        limit.take(4 << 20).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        // 48 MiB taken: 47 MiB after the first burst's 1 MiB (a tenth of the rate), at 10 MiB/s.
        assert!((took - 4.7).abs() < 0.01, "took {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_earns_at_most_one_burst() {
        let limit = RateLimit::new("1MiB".parse().unwrap());
        limit.take(1 << 20).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        limit.take(1 << 20).await;
        // A minute's pause earned a burst, a tenth of a second's worth: the rest waits.
        let took = start.elapsed().as_secs_f64();
        assert!((took - 0.9).abs() < 0.01, "took {took} s");
    }
}
