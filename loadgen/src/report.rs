//! What a phase measured, and how it is printed.
//!
//! Each client keeps its own `Tally` (no sharing on the hot path); the tallies are
//! merged when the phase ends. Latency is kept in microseconds, of successful calls
//! only: a failure is counted, never timed, so fast errors cannot flatter the figures.

use anyhow::Result;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::time::Duration;

/// Highest latency the histogram tells apart (larger values count as this): one minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One client's (or, merged, one phase's) successes, their latencies and its failures.
pub struct Tally {
    latencies_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        let latencies_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Self {
            latencies_us,
            errors: 0,
            first_error: None,
        }
    }

    /// Records a successful call that took `latency`.
    pub fn succeeded(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies_us.saturating_record(micros.max(1));
    }

    /// Counts a failed call, keeping the description of the first.
    pub fn failed(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: Tally) -> Result<()> {
        self.latencies_us.add(&other.latencies_us)?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// The slowest latency of each second of a run, by when the work started: a stall shows
/// as one bad second, a server too slow for the offered load as a rising line.
#[derive(Debug, Default)]
pub struct SlowestBySecond {
    micros: Vec<u64>,
}

impl SlowestBySecond {
    /// Records work started in `second` (from the run's start) that took `micros`.
    pub fn record(&mut self, second: usize, micros: u64) {
        if self.micros.len() <= second {
            self.micros.resize(second + 1, 0);
        }
        self.micros[second] = self.micros[second].max(micros);
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &SlowestBySecond) {
        for (second, micros) in other.micros.iter().enumerate() {
            self.record(second, *micros);
        }
    }

    /// Each second's slowest, in microseconds.
    pub fn micros(&self) -> &[u64] {
        &self.micros
    }

    /// Each second's slowest in whole milliseconds, space-separated.
    pub fn millis_line(&self) -> String {
        millis_line(&self.micros)
    }
}

/// Every latency of each second of a run, by when the work started, for the 99th
/// percentile of each second: how long a bad stretch lasts (a login storm's aftermath, a
/// backlog draining), which one run's overall p99 hides.
#[derive(Debug, Default)]
pub struct LatencyBySecond {
    micros: Vec<Vec<u32>>,
}

impl LatencyBySecond {
    /// Records work started in `second` (from the run's start) that took `micros`.
    pub fn record(&mut self, second: usize, micros: u64) {
        if self.micros.len() <= second {
            self.micros.resize_with(second + 1, Vec::new);
        }
        self.micros[second].push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: LatencyBySecond) {
        if self.micros.len() < other.micros.len() {
            self.micros.resize_with(other.micros.len(), Vec::new);
        }
        for (second, micros) in other.micros.into_iter().enumerate() {
            self.micros[second].extend(micros);
        }
    }

    /// Each second's 99th percentile in microseconds (0 for a second with nothing).
    pub fn p99_micros(&mut self) -> Vec<u64> {
        self.micros
            .iter_mut()
            .map(|micros| {
                if micros.is_empty() {
                    return 0;
                }
                micros.sort_unstable();
                // The nearest-rank percentile: the smallest value with 99 % at or below it.
                let rank = (micros.len() * 99).div_ceil(100);
                u64::from(micros[rank.max(1) - 1])
            })
            .collect()
    }
}

impl LatencyBySecond {
    /// How many were recorded in each second.
    pub fn counts(&self) -> Vec<u64> {
        self.micros
            .iter()
            .map(|micros| micros.len() as u64)
            .collect()
    }

    /// The 99th percentile over the seconds `seconds` together, in microseconds (0 when
    /// nothing was recorded there).
    pub fn p99_over(&self, seconds: std::ops::Range<usize>) -> u64 {
        let mut micros: Vec<u32> = self
            .micros
            .get(seconds.start.min(self.micros.len())..seconds.end.min(self.micros.len()))
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
            .collect();
        if micros.is_empty() {
            return 0;
        }
        micros.sort_unstable();
        let rank = (micros.len() * 99).div_ceil(100);
        u64::from(micros[rank.max(1) - 1])
    }
}

/// A count per second of a run (by when the work started), e.g. refused sends.
#[derive(Debug, Default, Clone)]
pub struct CountBySecond {
    counts: Vec<u64>,
}

impl CountBySecond {
    /// Counts one in `second`.
    pub fn record(&mut self, second: usize) {
        if self.counts.len() <= second {
            self.counts.resize(second + 1, 0);
        }
        self.counts[second] += 1;
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &CountBySecond) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// Each second's count.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// Counts, space-separated.
pub fn counts_line(counts: &[u64]) -> String {
    let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
    counts.join(" ")
}

/// Microseconds as whole milliseconds, space-separated.
pub fn millis_line(micros: &[u64]) -> String {
    let millis: Vec<String> = micros
        .iter()
        .map(|micros| (micros / 1000).to_string())
        .collect();
    millis.join(" ")
}

/// The figures of one measured phase.
pub struct PhaseFigures {
    /// What was called, e.g. `broker GET /api/auth/me`.
    pub name: &'static str,
    /// Concurrent clients.
    pub clients: u32,
    /// Length of the measured window.
    pub duration: Duration,
    /// Calls that ended in the window, failed ones included.
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// The first failure seen, if any.
    pub first_error: Option<String>,
    /// Successful calls per second.
    pub per_sec: f64,
    /// Latency percentiles of successful calls, in microseconds: p50, p90, p99.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p90_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// Slowest successful call, in microseconds.
    pub max_us: u64,
}

impl PhaseFigures {
    /// Summarises the merged tally of a phase whose measured window lasted `duration`.
    pub fn new(name: &'static str, clients: u32, duration: Duration, tally: Tally) -> Self {
        let latencies = &tally.latencies_us;
        let ok = latencies.len();
        Self {
            name,
            clients,
            duration,
            requests: ok + tally.errors,
            errors: tally.errors,
            first_error: tally.first_error,
            per_sec: ok as f64 / duration.as_secs_f64(),
            p50_us: latencies.value_at_quantile(0.50),
            p90_us: latencies.value_at_quantile(0.90),
            p99_us: latencies.value_at_quantile(0.99),
            max_us: latencies.max(),
        }
    }

    /// Prints a one-line summary (and the first failure) to stderr, as progress.
    pub fn print_summary(&self) {
        eprintln!(
            "{}: {} requests, {} errors, {:.0} req/s, p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
            self.name,
            self.requests,
            self.errors,
            self.per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us
        );
        if let Some(error) = &self.first_error {
            eprintln!("{}: first error: {error}", self.name);
        }
    }

    /// The figures as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "clients": self.clients,
            "duration_secs": self.duration.as_secs_f64(),
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "per_sec": self.per_sec,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
        })
    }
}

/// Prints phases side by side as a Markdown table.
pub fn print_table(phases: &[&PhaseFigures]) {
    println!("| phase | clients | requests | errors | req/s | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            p.name,
            p.clients,
            p.requests,
            p.errors,
            p.per_sec,
            p.p50_us,
            p.p90_us,
            p.p99_us,
            p.max_us
        );
    }
}

/// `a / b`, or `None` when `b` measured nothing.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_of_each_second_is_kept_and_merged() {
        let mut one = SlowestBySecond::default();
        one.record(0, 5_000);
        one.record(2, 9_000);
        one.record(0, 3_000);
        let mut other = SlowestBySecond::default();
        other.record(1, 7_000);
        other.record(2, 1_000);
        one.merge(&other);
        assert_eq!(one.micros(), [5_000, 7_000, 9_000]);
        assert_eq!(one.millis_line(), "5 7 9");
    }

    #[test]
    fn the_p99_of_each_second_is_taken_over_every_socket() {
        let mut one = LatencyBySecond::default();
        for micros in 1..=99 {
            one.record(0, micros * 1000);
        }
        one.record(2, 5_000);
        let mut other = LatencyBySecond::default();
        other.record(0, 900_000);
        one.merge(other);
        // Second 0: 100 values, the 99th is 99 ms (the one slow outlier is the 1 %).
        assert_eq!(one.p99_micros(), [99_000, 0, 5_000]);
        assert_eq!(millis_line(&one.p99_micros()), "99 0 5");
    }

    #[test]
    fn counts_and_a_p99_over_several_seconds() {
        let mut latency = LatencyBySecond::default();
        for micros in 1..=100 {
            latency.record(1, micros * 1000);
        }
        latency.record(3, 500_000);
        assert_eq!(latency.counts(), [0, 100, 0, 1]);
        assert_eq!(latency.p99_over(0..2), 99_000);
        assert_eq!(latency.p99_over(2..3), 0);
        assert_eq!(latency.p99_over(1..9), 100_000);
        let mut refused = CountBySecond::default();
        refused.record(2);
        let mut more = CountBySecond::default();
        more.record(0);
        more.record(2);
        refused.merge(&more);
        assert_eq!(refused.counts(), [1, 0, 2]);
        assert_eq!(counts_line(refused.counts()), "1 0 2");
    }

    #[test]
    fn merged_tallies_count_every_call_and_keep_the_first_error() {
        let mut fast = Tally::new();
        for _ in 0..3 {
            fast.succeeded(Duration::from_micros(100));
        }
        let mut slow = Tally::new();
        slow.succeeded(Duration::from_millis(10));
        slow.failed(&anyhow::anyhow!("HTTP 401"));
        slow.failed(&anyhow::anyhow!("HTTP 500"));

        fast.merge(slow).unwrap();
        let figures = PhaseFigures::new("test", 2, Duration::from_secs(2), fast);

        assert_eq!((figures.requests, figures.errors), (6, 2));
        assert_eq!(figures.per_sec, 2.0);
        assert_eq!(figures.first_error.as_deref(), Some("HTTP 401"));
        assert_eq!(figures.p50_us, 100);
        assert!(figures.max_us >= 10_000);
    }

    #[test]
    fn a_ratio_over_nothing_is_absent() {
        assert_eq!(ratio(300, 100), Some(3.0));
        assert_eq!(ratio(300, 0), None);
    }
}
