//! The probe-duration histogram a probe keeps across its runs (per-bucket counts, exposed
//! cumulatively).

use serde::Serialize;

use crate::catalog::HistogramValue;

/// Probe durations accumulated since the agent started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DurationHistogram {
    pub(crate) bounds: Vec<f64>,
    /// Per bucket (not cumulative): observations `<= bounds[i]` and `> bounds[i-1]`.
    pub(crate) counts: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl DurationHistogram {
    pub(crate) fn new(bounds: &[f64]) -> DurationHistogram {
        DurationHistogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Adds one observation; negative or non-finite values count as 0.
    pub(crate) fn observe(&mut self, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// Cumulative buckets as the exposition wants them (`+Inf` is `count`).
    pub(crate) fn to_value(&self) -> HistogramValue {
        let mut acc = 0;
        HistogramValue {
            buckets: self
                .bounds
                .iter()
                .zip(&self.counts)
                .map(|(b, n)| {
                    acc += n;
                    (*b, acc)
                })
                .collect(),
            count: self.count,
            sum: self.sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_accumulates_cumulatively() {
        let mut h = DurationHistogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let v = h.to_value();
        assert_eq!(v.buckets, vec![(0.1, 4), (1.0, 5)]);
        assert_eq!(v.count, 6);
        assert!((v.sum - 3.65).abs() < 1e-9);
    }
}
