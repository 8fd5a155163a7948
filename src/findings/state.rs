//! The finding state machine of `agent run`: a finding is pending until it has been seen in
//! `pending_cycles` consecutive evaluations, then active; an active finding resolves after
//! `resolve_cycles` consecutive evaluations without it. This keeps a flapping condition from
//! paging. Transitions are returned so the caller can log them (and push alerts).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::Finding;

/// What `/findings`, `rose_finding_active` and alert pushes read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    pub(crate) active: Vec<ActiveFinding>,
    pub(crate) pending: Vec<Finding>,
    /// Findings silenced on purpose (`[findings]`): shown, never counted (set by the caller
    /// after [`Tracker::update`], see `findings::silence`).
    pub(crate) silenced: Vec<super::silence::SilencedFinding>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub(crate) evaluated_at: Option<SystemTime>,
    /// Findings that became active since the agent started.
    pub(crate) activated_total: u64,
    /// Findings that resolved since the agent started.
    pub(crate) resolved_total: u64,
}

/// The findings channel: the findings loop publishes each evaluation cycle's [`View`] here (its
/// only writer); `/findings`, `rose_finding_*`, the status page and alert pushes read it. The
/// generation grows with every publish, so renderers can cache by it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Published {
    tx: std::sync::Arc<tokio::sync::watch::Sender<(u64, std::sync::Arc<View>)>>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            tx: std::sync::Arc::new(tokio::sync::watch::channel((0, Default::default())).0),
        }
    }
}

impl Published {
    /// Publishes an evaluation cycle's view.
    pub fn publish(&self, view: View) {
        self.tx.send_modify(|(generation, v)| {
            *generation += 1;
            *v = std::sync::Arc::new(view);
        });
    }

    /// The generation and the view of the last cycle (empty before the first).
    pub(crate) fn current(&self) -> (u64, std::sync::Arc<View>) {
        self.tx.borrow().clone()
    }
}

/// The overall status of a view, as `/findings` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `unknown` (nothing evaluated yet), `ok`, `warning` or `critical`: the worst of the active
    /// and pending findings, so a critical that is still confirming is not reported as ok.
    pub status: &'static str,
    /// True when the status comes from pending findings only (not yet active, not yet alerted).
    pub(crate) pending: bool,
}

impl View {
    /// The view's status (see [`Status`]).
    pub fn status(&self) -> Status {
        if self.evaluated_at.is_none() {
            return Status {
                status: "unknown",
                pending: false,
            };
        }
        let active = self.active.iter().map(|a| a.finding.severity).max();
        let pending = self.pending.iter().map(|f| f.severity).max();
        let worst = active.max(pending);
        Status {
            status: super::status_of(worst.into_iter()),
            pending: worst.is_some_and(|w| w > super::Severity::Info) && pending > active,
        }
    }
}

/// An active finding and since when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFinding {
    #[serde(flatten)]
    pub(crate) finding: Finding,
    #[serde(with = "time")]
    pub(crate) since: SystemTime,
}

/// A change of state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Activated(Finding),
    Resolved(Finding),
}

struct Entry {
    finding: Finding,
    seen: u32,
    clean: u32,
    active_since: Option<SystemTime>,
}

/// Tracks findings across evaluation cycles.
pub struct Tracker {
    pending_cycles: u32,
    resolve_cycles: u32,
    entries: BTreeMap<String, Entry>,
    activated_total: u64,
    resolved_total: u64,
}

impl Tracker {
    pub fn new(pending_cycles: u32, resolve_cycles: u32) -> Tracker {
        Tracker {
            pending_cycles: pending_cycles.max(1),
            resolve_cycles: resolve_cycles.max(1),
            entries: BTreeMap::new(),
            activated_total: 0,
            resolved_total: 0,
        }
    }

    /// Feeds one cycle's findings; returns the new view and the transitions.
    pub fn update(&mut self, found: Vec<Finding>, now: SystemTime) -> (View, Vec<Transition>) {
        let mut transitions = Vec::new();
        let mut present = std::collections::HashSet::new();
        for f in found {
            let key = f.key();
            present.insert(key.clone());
            let e = self.entries.entry(key).or_insert_with(|| Entry {
                finding: f.clone(),
                seen: 0,
                clean: 0,
                active_since: None,
            });
            e.finding = f;
            e.seen += 1;
            e.clean = 0;
            if e.active_since.is_none() && e.seen >= self.pending_cycles {
                e.active_since = Some(now);
                transitions.push(Transition::Activated(e.finding.clone()));
            }
        }
        let resolve = self.resolve_cycles;
        self.entries.retain(|key, e| {
            if present.contains(key) {
                return true;
            }
            e.clean += 1;
            match e.active_since {
                None => false,
                Some(_) if e.clean >= resolve => {
                    transitions.push(Transition::Resolved(e.finding.clone()));
                    false
                }
                Some(_) => true,
            }
        });
        for t in &transitions {
            match t {
                Transition::Activated(_) => self.activated_total += 1,
                Transition::Resolved(_) => self.resolved_total += 1,
            }
        }
        let mut view = View {
            evaluated_at: Some(now),
            activated_total: self.activated_total,
            resolved_total: self.resolved_total,
            ..View::default()
        };
        for e in self.entries.values() {
            match e.active_since {
                Some(since) => view.active.push(ActiveFinding {
                    finding: e.finding.clone(),
                    since,
                }),
                None => view.pending.push(e.finding.clone()),
            }
        }
        view.active.sort_by(|a, b| {
            b.finding
                .severity
                .cmp(&a.finding.severity)
                .then(a.finding.code.cmp(b.finding.code))
        });
        (view, transitions)
    }
}

mod time {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(crate) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        )
    }
}

mod opt_time {
    use std::time::SystemTime;

    pub(crate) fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::time::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Code;

    fn f(code: Code) -> Finding {
        Finding::new(code, "s", "e", vec![])
    }

    #[test]
    fn a_pending_critical_is_in_the_status_and_nothing_evaluated_is_unknown() {
        let mut t = Tracker::new(2, 2);
        assert_eq!(View::default().status().status, "unknown");
        let now = SystemTime::now();
        let mut crit = f(Code::ConnectionRefused);
        crit.severity = super::super::Severity::Critical;
        let (v, _) = t.update(vec![crit.clone()], now);
        assert_eq!(
            v.status(),
            Status {
                status: "critical",
                pending: true
            }
        );
        let (v, _) = t.update(vec![crit], now);
        assert_eq!(
            v.status(),
            Status {
                status: "critical",
                pending: false
            }
        );
        let (v, _) = Tracker::new(2, 2).update(vec![], now);
        assert_eq!(
            v.status(),
            Status {
                status: "ok",
                pending: false
            }
        );
    }

    #[test]
    fn pending_then_active_then_resolved() {
        let mut t = Tracker::new(2, 2);
        let now = SystemTime::now();
        let (v, tr) = t.update(vec![f(Code::SlowQueries)], now);
        assert_eq!((v.active.len(), v.pending.len(), tr.len()), (0, 1, 0));
        let (v, tr) = t.update(vec![f(Code::SlowQueries)], now);
        assert_eq!((v.active.len(), v.pending.len()), (1, 0));
        assert!(matches!(&tr[..], [Transition::Activated(x)] if x.code == "slow_queries"));
        let (v, tr) = t.update(vec![], now);
        assert_eq!(
            (v.active.len(), tr.len()),
            (1, 0),
            "one clean cycle is not enough"
        );
        let (v, tr) = t.update(vec![], now);
        assert_eq!(v.active.len(), 0);
        assert!(matches!(&tr[..], [Transition::Resolved(x)] if x.code == "slow_queries"));
    }

    #[test]
    fn a_flap_never_activates() {
        let mut t = Tracker::new(3, 1);
        let now = SystemTime::now();
        for i in 0..10 {
            let found = if i % 2 == 0 {
                vec![f(Code::LockContention)]
            } else {
                vec![]
            };
            let (v, tr) = t.update(found, now);
            assert!(v.active.is_empty() && tr.is_empty());
        }
    }

    #[test]
    fn subjects_are_tracked_separately() {
        let mut t = Tracker::new(1, 1);
        let a = f(Code::MissingIndex).with_subject("a");
        let b = f(Code::MissingIndex).with_subject("b");
        let (v, tr) = t.update(vec![a.clone(), b], SystemTime::now());
        assert_eq!((v.active.len(), tr.len()), (2, 2));
        let (v, tr) = t.update(vec![a], SystemTime::now());
        assert_eq!((v.active.len(), tr.len()), (1, 1));
    }
}
