//! Percentiles and medians.

/// Latency figures of one case, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub n: usize,
    pub median: u64,
    pub p99: u64,
    pub p999: u64,
    pub min: u64,
}

impl Latency {
    pub fn of(mut samples: Vec<u64>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Latency {
            n: samples.len(),
            median: percentile(&samples, 0.5),
            p99: percentile(&samples, 0.99),
            p999: percentile(&samples, 0.999),
            min: samples[0],
        })
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample that at
/// least `q` of all samples are at or below.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// Throughput figures of one case: the median repetition, and the spread.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub reps: usize,
    /// Bytes per second: median, slowest and fastest repetition.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Messages per second of the median repetition.
    pub msgs: f64,
}

impl Throughput {
    /// From seconds per repetition, each moving `msgs` messages of `size`
    /// bytes.
    pub fn of(secs: &[f64], msgs: usize, size: usize) -> Option<Throughput> {
        if secs.is_empty() {
            return None;
        }
        let mut rates: Vec<f64> = secs.iter().map(|s| (msgs * size) as f64 / s).collect();
        rates.sort_by(f64::total_cmp);
        let median = median(&rates);
        Some(Throughput {
            reps: rates.len(),
            median,
            min: rates[0],
            max: rates[rates.len() - 1],
            msgs: median / size as f64,
        })
    }
}

/// Median of sorted values (mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[5], 0.999), 5);
        let t = Throughput::of(&[1.0, 2.0, 4.0], 10, 100).unwrap();
        assert_eq!(t.median, 500.0);
        assert_eq!(t.msgs, 5.0);
    }
}
