//! The snapshot: the last outcome of every check, published through a `watch` channel, and
//! nothing else (findings, the self series and the status page's facts have channels of their
//! own, see `crate::reading`). Only the runtime's scheduling writes it (check runs, the
//! election's deferrals, a reload's check set); `/metrics`, `/readyz` and everything else only
//! read it, so a scrape never waits on the database.
//!
//! A failed run replaces the check's samples with none: a failed check exports no stale values.
//! Every outcome carries a freshness bound (the check's period plus its timeout and some slack):
//! past it the outcome is no longer current (the agent stalled, its runtime starved, a check's
//! loop stopped), and readers serve the check's "unknown" samples instead (`rose_pg_up 0`, never
//! a stale 1). See [`CheckState::is_stale`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::catalog::Sample;
use crate::check::Observation;
use crate::error::{CheckError, ErrorKind};

/// One run's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub(crate) at: SystemTime,
    pub duration: Duration,
    pub result: Result<Observation, CheckError>,
}

/// Everything known about one check.
#[derive(Debug, Clone)]
pub struct CheckState {
    pub(crate) last: Outcome,
    /// Samples of the last run: empty when it failed.
    pub(crate) samples: Vec<Sample>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) runs: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    /// How long the last outcome counts as current, and what the check exports past that.
    pub(crate) freshness: Freshness,
    /// While the last run failed: the observation of the last run that succeeded (facts such as
    /// the role's connection limit that explain the failure). `None` while the last run
    /// succeeded (it is `last`), so nothing is held twice.
    pub(crate) last_good: Option<Arc<Observation>>,
}

/// How long an outcome is current, and what its check exports once it is not.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Age of an outcome (from the start of its run) past which it is stale; `None`: never
    /// (one-shot runs such as `agent diagnose`).
    pub(crate) max_age: Option<Duration>,
    /// The series the check exports while its outcome is stale (its failure series, such as
    /// `rose_pg_up 0`); the outcome's own samples are withheld.
    pub(crate) unknown: Vec<Sample>,
}

impl Freshness {
    /// The bound of a check that runs every `every` with runs cut off at `timeout`: the next
    /// run should have finished by `every + timeout`; half a period (at least a second) of slack
    /// absorbs scheduling jitter on a loaded host.
    pub(crate) fn bound(every: Duration, timeout: Duration) -> Duration {
        every + timeout + (every / 2).max(Duration::from_secs(1))
    }
}

impl CheckState {
    /// True when the last outcome is older than its freshness bound at `now`.
    pub(crate) fn is_stale(&self, now: SystemTime) -> bool {
        self.freshness
            .max_age
            .is_some_and(|max| now.duration_since(self.last.at).is_ok_and(|age| age > max))
    }
}

/// What the agent knows now.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Bumped on every publish; renderers cache by it.
    pub(crate) generation: u64,
    pub(crate) started: SystemTime,
    /// Checks that must report once before the agent is ready.
    pub(crate) expected: Vec<Arc<str>>,
    pub(crate) checks: BTreeMap<Arc<str>, Arc<CheckState>>,
    /// Database-wide checks this agent skips because another agent of the fleet leads: they
    /// export nothing here and do not hold readiness back (until they run here again).
    pub(crate) deferred: BTreeSet<Arc<str>>,
    /// The last good observation of checks withdrawn by [`Store::defer`] (a lost connection
    /// also loses the lead): facts that explain a later failure (see [`Snapshot::last_good`]).
    pub(crate) retired: BTreeMap<Arc<str>, Arc<Observation>>,
}

impl Snapshot {
    /// True once every expected check has completed at least once.
    pub(crate) fn ready(&self) -> bool {
        self.expected
            .iter()
            .all(|id| self.checks.contains_key(id) || self.deferred.contains(id))
    }

    /// The last successful observation of a check, if its last run succeeded.
    pub fn observation(&self, id: &str) -> Option<&Observation> {
        self.checks
            .get(id)
            .and_then(|s| s.last.result.as_ref().ok())
    }

    /// The checks whose last outcome is stale at `now`, in id order.
    pub(crate) fn stale_checks(&self, now: SystemTime) -> Vec<Arc<str>> {
        self.checks
            .iter()
            .filter(|(_, s)| s.is_stale(now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Seconds since the newest check outcome was published (`None` before the first).
    pub(crate) fn age(&self, now: SystemTime) -> Option<Duration> {
        self.checks
            .values()
            .map(|s| s.last.at + s.last.duration)
            .max()
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }

    /// The observation of the check's last successful run, whether or not its last run
    /// succeeded (see [`CheckState::last_good`]).
    pub(crate) fn last_good(&self, id: &str) -> Option<&Observation> {
        match self.checks.get(id) {
            Some(st) => match &st.last.result {
                Ok(o) => Some(o),
                Err(_) => st.last_good.as_deref(),
            },
            None => self.retired.get(id).map(|o| o.as_ref()),
        }
    }

    /// The last error of a check, if its last run failed.
    pub(crate) fn error(&self, id: &str) -> Option<&CheckError> {
        self.checks
            .get(id)
            .and_then(|s| s.last.result.as_ref().err())
    }
}

/// The single writer side; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Store {
    pub fn new(expected: Vec<Arc<str>>) -> Store {
        let snap = Snapshot {
            generation: 0,
            started: SystemTime::now(),
            expected,
            checks: BTreeMap::new(),
            deferred: BTreeSet::new(),
            retired: BTreeMap::new(),
        };
        Store {
            tx: Arc::new(watch::channel(Arc::new(snap)).0),
        }
    }

    /// Replaces the checks that must report before the agent is ready (after a reload).
    pub(crate) fn set_expected(&self, expected: Vec<Arc<str>>) {
        self.tx
            .send_modify(|snap| Arc::make_mut(snap).expected = expected);
    }

    /// Drops the state of checks a reload removed, so they export nothing stale.
    pub(crate) fn retain_checks(&self, ids: &[Arc<str>]) {
        self.tx.send_if_modified(|snap| {
            if snap.checks.keys().all(|k| ids.contains(k)) {
                return false;
            }
            let snap = Arc::make_mut(snap);
            snap.checks.retain(|k, _| ids.contains(k));
            snap.deferred.retain(|k| ids.contains(k));
            snap.retired.retain(|k, _| ids.contains(k));
            snap.generation += 1;
            true
        });
    }

    /// The current snapshot (an `Arc` clone; no lock is held after return).
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Records one run of a check with the samples it exports; the outcome never goes stale
    /// (one-shot runs). The scheduler uses [`Store::publish_fresh`].
    pub(crate) fn publish(&self, id: &str, outcome: Outcome, samples: Vec<Sample>) {
        self.publish_fresh(id, outcome, samples, Freshness::default())
    }

    /// Records one run of a check with the samples it exports and how long they are current.
    pub(crate) fn publish_fresh(
        &self,
        id: &str,
        outcome: Outcome,
        samples: Vec<Sample>,
        freshness: Freshness,
    ) {
        self.tx.send_modify(|snap| {
            let snap = Arc::make_mut(snap);
            let prev = snap.checks.get(id);
            let mut errors = prev.map(|p| p.errors.clone()).unwrap_or_default();
            let (last_success, consecutive_failures) = match &outcome.result {
                Ok(_) => (Some(outcome.at), 0),
                Err(e) => {
                    *errors.entry(e.kind).or_default() += 1;
                    (
                        prev.and_then(|p| p.last_success),
                        prev.map_or(0, |p| p.consecutive_failures) + 1,
                    )
                }
            };
            let last_good = match (&outcome.result, prev) {
                (Ok(_), _) | (_, None) => None,
                (Err(_), Some(p)) => match &p.last.result {
                    Ok(o) => Some(Arc::new(o.clone())),
                    Err(_) => p.last_good.clone(),
                },
            };
            let state = CheckState {
                last_good,
                runs: prev.map_or(0, |p| p.runs) + 1,
                last: outcome,
                samples,
                last_success,
                consecutive_failures,
                errors,
                freshness,
            };
            // The id's first run allocates its key; later runs reuse it.
            let key = match snap.checks.get_key_value(id) {
                Some((k, _)) => k.clone(),
                None => Arc::from(id),
            };
            snap.checks.insert(key, Arc::new(state));
            snap.deferred.remove(id);
            snap.retired.remove(id);
            snap.generation += 1;
        });
    }

    /// Withdraws checks another agent of the fleet runs: their state and series go, and they
    /// stop counting for readiness until they publish again. A no-op when already withdrawn.
    pub(crate) fn defer(&self, ids: &[Arc<str>]) {
        self.tx.send_if_modified(|snap| {
            if ids
                .iter()
                .all(|id| snap.deferred.contains(id) && !snap.checks.contains_key(id))
            {
                return false;
            }
            let snap = Arc::make_mut(snap);
            for id in ids {
                if let Some(st) = snap.checks.remove(id) {
                    let good = match &st.last.result {
                        Ok(o) => Some(Arc::new(o.clone())),
                        Err(_) => st.last_good.clone(),
                    };
                    if let Some(o) = good {
                        snap.retired.insert(id.clone(), o);
                    }
                }
                snap.deferred.insert(id.clone());
            }
            snap.generation += 1;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Outcome {
        Outcome {
            at: SystemTime::now(),
            duration: Duration::ZERO,
            result: Err(CheckError::new(ErrorKind::Other, "x")),
        }
    }

    #[test]
    fn deferred_checks_do_not_hold_readiness_and_export_nothing() {
        let store = Store::new(vec!["pg_connectivity".into(), "pg_activity".into()]);
        store.publish("pg_connectivity", failed(), vec![]);
        assert!(!store.current().ready());
        store.publish("pg_activity", failed(), vec![]);
        store.defer(&["pg_activity".into()]);
        let snap = store.current();
        assert!(snap.ready());
        assert!(!snap.checks.contains_key("pg_activity"));
        // Deferring again changes nothing (no new generation for scrapes to re-render).
        store.defer(&["pg_activity".into()]);
        assert_eq!(store.current().generation, snap.generation);
        // Running again (as leader) takes it out of the deferred set.
        store.publish("pg_activity", failed(), vec![]);
        assert!(store.current().deferred.is_empty());
    }

    #[test]
    fn an_outcome_past_its_bound_is_stale() {
        let store = Store::new(vec!["pg_connectivity".into(), "host".into()]);
        let at = SystemTime::now();
        let bound = Freshness::bound(Duration::from_secs(15), Duration::from_secs(5));
        assert_eq!(bound, Duration::from_millis(27_500));
        let outcome = Outcome {
            at,
            duration: Duration::from_millis(3),
            result: Err(CheckError::new(ErrorKind::Other, "x")),
        };
        store.publish_fresh(
            "pg_connectivity",
            outcome.clone(),
            vec![],
            Freshness {
                max_age: Some(bound),
                unknown: vec![],
            },
        );
        store.publish("host", outcome, vec![]);
        let snap = store.current();
        assert!(snap.stale_checks(at + bound).is_empty());
        assert_eq!(
            snap.stale_checks(at + bound + Duration::from_millis(1)),
            vec![std::sync::Arc::<str>::from("pg_connectivity")]
        );
        // One-shot outcomes (diagnose) never go stale.
        assert!(!snap.checks["host"].is_stale(at + Duration::from_secs(86_400)));
        assert_eq!(
            snap.age(at + Duration::from_secs(10)),
            Some(Duration::from_millis(9_997))
        );
    }
}
