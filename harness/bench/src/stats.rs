//! Latency statistics.

use serde::Serialize;

/// Latency statistics in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Minimum.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Stats {
    /// Statistics of `ms` (must not be empty).
    pub fn of(ms: &[f64]) -> Stats {
        let mut s = ms.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[k.clamp(1, s.len()) - 1]
        };
        Stats {
            n: s.len(),
            min_ms: s[0],
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: s[s.len() - 1],
            mean_ms: s.iter().sum::<f64>() / s.len() as f64,
        }
    }
}
