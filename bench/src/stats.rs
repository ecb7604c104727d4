//! Latency summaries: pure, so that the numbers the benchmark prints are
//! unit-tested.

use std::time::Duration;

/// p50, p90, p99 and max of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latencies {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises `samples` (sorted in place).
pub fn summarise(samples: &mut [Duration]) -> Latencies {
    samples.sort_unstable();
    Latencies {
        p50: percentile(samples, 50.0),
        p90: percentile(samples, 90.0),
        p99: percentile(samples, 99.0),
        max: samples.last().copied().unwrap_or(Duration::ZERO),
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `a / b` as "12.3×", or "–" when b is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.1}×", a / b)
    } else {
        "–".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples = ms_list(&(1..=100).rev().collect::<Vec<_>>());
        let l = summarise(&mut samples);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p90, Duration::from_millis(90));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
    }

    #[test]
    fn one_slow_sample_in_ten_shows_in_p99_not_p50() {
        let mut samples = ms_list(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 500]);
        let l = summarise(&mut samples);
        assert_eq!(l.p50, Duration::from_millis(1));
        assert_eq!(l.p99, Duration::from_millis(500));
    }

    #[test]
    fn empty_and_ratios() {
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(ratio(10.0, 0.0), "–");
        assert_eq!(ratio(30.0, 3.0), "10.0×");
        assert_eq!(ms(Duration::from_micros(1500)), "1.50");
    }
}
