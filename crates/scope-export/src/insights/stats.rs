//! Percentiles by nearest rank: every reported value is one that occurred.

use serde::Serialize;

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 10.0).round() / 100.0
}

impl Percentiles {
    pub fn of(mut values: Vec<u64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        Some(Percentiles {
            count: values.len() as u64,
            p50_us: us(nearest_rank(&values, 0.50)),
            p99_us: us(nearest_rank(&values, 0.99)),
            max_us: us(*values.last().unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_observed_values() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50);
        assert_eq!(nearest_rank(&v, 0.99), 99);
        assert_eq!(nearest_rank(&v, 1.0), 100);
        assert_eq!(nearest_rank(&[7], 0.99), 7);
        assert_eq!(nearest_rank(&[1, 2, 3], 0.0), 1);
        let p = Percentiles::of(vec![3_000, 1_000, 2_000]).unwrap();
        assert_eq!((p.count, p.p50_us, p.p99_us, p.max_us), (3, 2.0, 3.0, 3.0));
        assert!(Percentiles::of(Vec::new()).is_none());
    }
}
