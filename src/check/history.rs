//! The one growth history the checks share: readings of one object over time (a table's size,
//! a checkpointer store's bytes and write counter), thinned so a short interval keeps a bounded
//! number of points, windowed, and measured against a baseline point. The PostgreSQL size rates
//! (`pg_util::History`) and the checkpointer stores' growth (`sqlite_checkpointer`,
//! `checkpoint_migration`) both use it; only the baseline rule differs ([`Baseline`]).

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Retained points are thinned to about one per `window / HISTORY_SPACING` (14 s for an hour),
/// so a short interval (a 10 ms soak) keeps ~2x this many points, not every sample of the
/// window (which grew the heap by 16 bytes a sample).
pub(crate) const HISTORY_SPACING: usize = 256;
/// A hard bound on retained points, whatever the window and the clock do.
pub(crate) const MAX_POINTS: usize = 4096;

/// Which retained point a new one is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Baseline {
    /// The oldest point inside the window (two points are always kept): a rate over the recent
    /// past, so after a gap only what the window holds counts.
    Recent,
    /// The newest point at least a window old (the oldest while the window fills): growth over
    /// a whole window at least, so "no growth" means none for the window.
    FullWindow,
}

/// Points `(seconds, value)` of one object.
#[derive(Debug, Clone)]
pub(crate) struct History<T> {
    window: f64,
    baseline: Baseline,
    points: VecDeque<(f64, T)>,
}

impl<T: Copy> History<T> {
    pub(crate) fn new(window: Duration, baseline: Baseline) -> History<T> {
        History {
            window: window.as_secs_f64(),
            baseline,
            points: VecDeque::new(),
        }
    }

    /// Records `value` at `at` (seconds; if the clock went back, the history starts over) and
    /// returns the baseline point it is measured against (`None` for the first point).
    pub(crate) fn push(&mut self, at: f64, value: T) -> Option<(f64, T)> {
        if self.points.back().is_some_and(|(t, _)| at < *t) {
            self.points.clear();
        }
        // The newest point is replaced while it is closer than the spacing to the one before it:
        // retained points two apart are at least a spacing apart, the latest is always kept.
        let spacing = self.window / HISTORY_SPACING as f64;
        let n = self.points.len();
        if n >= 2 && at - self.points[n - 2].0 < spacing {
            self.points.pop_back();
        }
        self.points.push_back((at, value));
        match self.baseline {
            Baseline::Recent => {
                while self.points.len() > 2
                    && self
                        .points
                        .front()
                        .is_some_and(|(t, _)| at - t > self.window)
                {
                    self.points.pop_front();
                }
            }
            Baseline::FullWindow => {
                while self.points.len() >= 2 && at - self.points[1].0 >= self.window {
                    self.points.pop_front();
                }
            }
        }
        while self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
        (self.points.len() >= 2)
            .then(|| self.points.front().copied())
            .flatten()
    }

    /// Forgets every point (the object became unreadable).
    pub(crate) fn reset(&mut self) {
        self.points.clear();
    }

    /// Points retained (the tests' view of the window).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// The oldest retained point (the tests' view of the window).
    #[cfg(test)]
    pub(crate) fn first(&self) -> Option<(f64, T)> {
        self.points.front().copied()
    }
}

/// Seconds on a monotonic clock (since the first call): for histories that must not see the
/// wall clock jump.
pub(crate) fn monotonic_seconds() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// One reading of a checkpointer store.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Reading {
    pub(crate) bytes: u64,
    /// A counter that rises with every write (SQLite: sum of max rowids; PostgreSQL: inserts +
    /// updates); `None` when unknown.
    pub(crate) writes: Option<u64>,
}

/// Change between the baseline reading and the newest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Growth {
    pub(crate) span_seconds: f64,
    pub(crate) bytes_delta: i64,
    pub writes_delta: Option<i64>,
    /// The write counter went down (statistics reset, rows deleted): judged by size only.
    pub(crate) counter_reset: bool,
    /// The store grew: more writes, or (without a usable counter) more bytes.
    pub growing: bool,
}

impl Growth {
    pub(crate) fn bytes_per_second(&self) -> f64 {
        if self.span_seconds > 0.0 {
            self.bytes_delta as f64 / self.span_seconds
        } else {
            0.0
        }
    }
}

/// Pure: growth between two readings.
pub(crate) fn growth(old: Reading, new: Reading, span: Duration) -> Growth {
    let bytes_delta = new.bytes as i64 - old.bytes as i64;
    let writes_delta = match (old.writes, new.writes) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    let counter_reset = writes_delta.is_some_and(|d| d < 0);
    // More rows is growth; with a steady or reset counter, judge by size.
    let growing = writes_delta.is_some_and(|d| d > 0) || bytes_delta > 0;
    Growth {
        span_seconds: span.as_secs_f64(),
        bytes_delta,
        writes_delta,
        counter_reset,
        growing,
    }
}

/// A store's readings over its growth window (baseline: a whole window back).
pub(crate) type StoreHistory = History<Reading>;

impl History<Reading> {
    /// A store's history over `window`: growth is measured a whole window back.
    pub(crate) fn store(window: Duration) -> StoreHistory {
        History::new(window, Baseline::FullWindow)
    }

    /// Adds a reading at `at` (monotonic seconds); the growth against the baseline (`None` for
    /// the first reading).
    pub(crate) fn push_reading(&mut self, at: f64, r: Reading) -> Option<Growth> {
        self.push(at, r)
            .map(|(t0, old)| growth(old, r, Duration::from_secs_f64((at - t0).max(0.0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_history_keeps_a_whole_window_baseline() {
        let mut t = History::store(Duration::from_secs(10));
        let r = |w| Reading {
            bytes: 0,
            writes: Some(w),
        };
        assert_eq!(t.push_reading(0.0, r(0)), None);
        let g = t.push_reading(5.0, r(1)).unwrap();
        assert_eq!((g.span_seconds, g.writes_delta), (5.0, Some(1)));
        let g = t.push_reading(12.0, r(1)).unwrap();
        assert_eq!(g.span_seconds, 12.0, "baseline still the first reading");
        let g = t.push_reading(16.0, r(1)).unwrap();
        // The reading at 5 s is now at least a window old, so it became the baseline.
        assert_eq!((g.span_seconds, g.writes_delta), (11.0, Some(0)));
        assert!(!g.growing);
        t.reset();
        assert_eq!(t.push_reading(20.0, r(1)), None);
    }

    #[test]
    fn a_recent_history_drops_what_left_the_window_but_keeps_two_points() {
        let mut h = History::new(Duration::from_secs(100), Baseline::Recent);
        assert_eq!(h.push(0.0, 1), None);
        assert_eq!(h.push(50.0, 2), Some((0.0, 1)));
        assert_eq!(h.push(500.0, 3), Some((50.0, 2)), "two points are kept");
        assert_eq!(h.push(520.0, 4), Some((500.0, 3)));
        // The clock going back starts over.
        assert_eq!(h.push(10.0, 5), None);
    }

    #[test]
    fn growth_prefers_the_write_counter() {
        let r = |bytes, writes| Reading { bytes, writes };
        let s = Duration::from_secs(10);
        assert!(growth(r(100, Some(1)), r(100, Some(2)), s).growing);
        assert!(!growth(r(100, Some(2)), r(100, Some(2)), s).growing);
        // WAL growth with the same rowid still counts as growth (bytes).
        assert!(growth(r(100, Some(2)), r(200, Some(2)), s).growing);
        let g = growth(r(100, Some(9)), r(100, Some(2)), s);
        assert!(g.counter_reset && !g.growing);
        let g = growth(r(100, None), r(300, None), s);
        assert!(g.growing);
        assert_eq!(g.bytes_per_second(), 20.0);
    }
}
