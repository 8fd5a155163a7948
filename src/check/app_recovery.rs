//! Check `app_recovery`: does the app survive a database restart (the guide's Next Steps, "Test
//! Failover")? `pg_connectivity` reports each restart it sees (a new postmaster start time) and
//! every app probe reports its health into one shared [`Watch`]; this check reads the watch (no
//! I/O) and reports how long after the restart the app answered healthy again
//! (`rose_app_recovery_seconds`), or how long it has been waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, Sample};
use crate::error::CheckError;

pub(crate) const ID: &str = crate::catalog::checks::APP_RECOVERY;

/// Restarts and app health, written by `pg_connectivity` and the app probes.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    inner: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The new postmaster start time of the last restart seen (unix seconds).
    restart_at: Option<f64>,
    /// When every app probe first answered healthy at or after `restart_at`.
    recovered_at: Option<f64>,
    /// The latest health of each probe.
    probes: BTreeMap<String, bool>,
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pg_connectivity` saw the server restart; it came back up at `start_time`.
    pub(crate) fn restart_seen(&self, start_time: f64) {
        let mut s = self.lock();
        s.restart_at = Some(start_time);
        s.recovered_at = None;
    }

    /// An app probe's verdict at unix time `at`.
    pub(crate) fn probe(&self, id: &str, at: f64, healthy: bool) {
        let mut s = self.lock();
        match s.probes.get_mut(id) {
            Some(h) => *h = healthy,
            None => {
                s.probes.insert(id.to_owned(), healthy);
            }
        }
        if let Some(r) = s.restart_at
            && s.recovered_at.is_none()
            && at >= r
            && s.probes.values().all(|h| *h)
        {
            s.recovered_at = Some(at);
        }
    }
}

/// What the check reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// When the server came back from the last restart the agent saw (unix seconds).
    pub(crate) restart_at: Option<f64>,
    /// From `restart_at` until every app probe answered healthy.
    pub(crate) recovery_seconds: Option<f64>,
    /// Since `restart_at`, while the app has not answered healthy yet.
    pub(crate) waiting_seconds: Option<f64>,
    /// Past this the app counts as not recovered (`AGENT_APP_RECOVERY_TIMEOUT`).
    pub(crate) bound_seconds: f64,
}

/// Pure: the recovery state at unix time `now`.
pub(crate) fn judge(
    restart_at: Option<f64>,
    recovered_at: Option<f64>,
    now: f64,
    bound: Duration,
) -> Recovery {
    let (recovery_seconds, waiting_seconds) = match (restart_at, recovered_at) {
        (Some(r), Some(h)) => (Some((h - r).max(0.0)), None),
        (Some(r), None) => (None, Some((now - r).max(0.0))),
        (None, _) => (None, None),
    };
    Recovery {
        restart_at,
        recovery_seconds,
        waiting_seconds,
        bound_seconds: bound.as_secs_f64(),
    }
}

pub(crate) struct RecoveryCheck {
    watch: Arc<Watch>,
    bound: Duration,
}

impl RecoveryCheck {
    pub(crate) fn new(watch: Arc<Watch>, bound: Duration) -> Self {
        RecoveryCheck { watch, bound }
    }
}

impl Check for RecoveryCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let (restart_at, recovered_at) = {
                let s = self.watch.lock();
                (s.restart_at, s.recovered_at)
            };
            Ok(Observation::AppRecovery(judge(
                restart_at,
                recovered_at,
                super::pg::util::unix_now(),
                self.bound,
            )))
        })
    }
}

/// Pure: the series of a run.
pub(crate) fn samples(o: &Recovery, out: &mut Vec<Sample>) {
    if let Some(s) = o.recovery_seconds {
        out.push(Sample::new(&catalog::APP_RECOVERY, &[], s));
    }
}

/// The registry entry (the check list in `check/mod.rs`): With both PostgreSQL and app probes (the shared watch).
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.watch
        .iter()
        .flat_map(|w| {
            crate::check::one(RecoveryCheck::new(w.clone(), b.config.app.recovery_timeout))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    #[test]
    fn recovery_is_measured_from_the_restart_to_the_first_healthy_answer() {
        let w = Watch::default();
        w.probe("app_probe_health", 100.0, true);
        w.restart_seen(200.0);
        w.probe("app_probe_health", 203.0, false);
        let s = w.lock();
        assert_eq!(
            judge(s.restart_at, s.recovered_at, 230.0, BOUND).waiting_seconds,
            Some(30.0)
        );
        drop(s);
        w.probe("app_probe_health", 207.5, true);
        w.probe("app_probe_health", 210.0, true);
        let s = w.lock();
        let r = judge(s.restart_at, s.recovered_at, 300.0, BOUND);
        assert_eq!((r.recovery_seconds, r.waiting_seconds), (Some(7.5), None));
    }

    #[test]
    fn every_probe_must_be_healthy_and_a_new_restart_starts_over() {
        let w = Watch::default();
        w.probe("b", 9.0, true);
        w.restart_seen(10.0);
        w.probe("b", 10.5, false);
        w.probe("a", 11.0, true);
        w.probe("b", 12.0, false);
        assert_eq!(w.lock().recovered_at, None);
        w.probe("b", 13.0, true);
        assert_eq!(w.lock().recovered_at, Some(13.0));
        w.restart_seen(50.0);
        assert_eq!(w.lock().recovered_at, None);
        // An answer from before the restart does not count.
        w.probe("a", 40.0, true);
        assert_eq!(w.lock().recovered_at, None);
    }

    #[test]
    fn no_restart_no_series() {
        let r = judge(None, None, 10.0, BOUND);
        assert_eq!((r.recovery_seconds, r.waiting_seconds), (None, None));
        let mut out = vec![];
        samples(&r, &mut out);
        assert!(out.is_empty());
        samples(&judge(Some(1.0), Some(4.0), 10.0, BOUND), &mut out);
        assert_eq!(out.len(), 1);
    }
}
