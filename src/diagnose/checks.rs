//! The checks `agent diagnose` runs once: the same registry as `agent run`, each check under
//! its own timeout and the global deadline, its outcome landing on the rung its line in the
//! check list declares. Checks that talk to PostgreSQL wait for the connection ladder; the
//! others (app, SQLite, migration, host) run beside it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant as TokioInstant;

use super::{Rung, RungStatus};
use crate::catalog::Sample;
use crate::check::{self, Check, Observation, TargetKind};
use crate::error::{CheckError, ErrorKind};
use crate::scheduler;
use crate::snapshot::Outcome;

/// One check's run: the check, its outcome and its series.
pub(super) type Ran = (Arc<dyn Check>, Outcome, Vec<Sample>);

/// Splits the registry into the checks that need the PostgreSQL ladder and the rest.
pub(super) fn partition(all: check::Built) -> (check::Built, check::Built) {
    all.into_iter().partition(|c| {
        c.kind()
            .is_some_and(|k| k.contract().target == TargetKind::Postgres)
    })
}

/// Runs the checks that do not need the ladder. Growth needs two readings: with both stores
/// configured, `checkpoint_migration` reads again after `sample` (the growth window, at most
/// half the budget), judged as a short sample.
pub(super) async fn independent(
    checks: Vec<Arc<dyn Check>>,
    sample: Option<Duration>,
    timeout: Duration,
    deadline: TokioInstant,
) -> Vec<Ran> {
    let started = TokioInstant::now();
    let mut out = run_checks(checks, deadline).await;
    let again = out
        .iter()
        .position(|(c, _, _)| c.id() == check::checkpoint_migration::ID);
    if let (Some(wait), Some(i)) = (sample, again) {
        let c = out[i].0.clone();
        // The second reading is two quick statements; leave it a margin of the budget.
        let margin = (timeout / 5).max(Duration::from_millis(500));
        let until = (started + wait).min(deadline.checked_sub(margin).unwrap_or(started));
        tokio::time::sleep_until(until).await;
        if let Some(mut second) = run_checks(vec![c], deadline).await.pop() {
            if let Ok(Observation::CheckpointMigration(m)) = &second.1.result {
                second.1.result = Ok(Observation::CheckpointMigration(
                    check::checkpoint_migration::judge_short_sample(m),
                ));
            }
            out[i] = second;
        }
    }
    out
}

/// Runs checks once, concurrently, each under its own timeout and the global deadline.
pub(super) async fn run_checks(checks: Vec<Arc<dyn Check>>, deadline: TokioInstant) -> Vec<Ran> {
    let mut set = tokio::task::JoinSet::new();
    for c in checks {
        set.spawn(async move {
            use tracing::Instrument;
            let span = scheduler::check_span(c.as_ref());
            let run = scheduler::run_once(c.as_ref()).instrument(span.clone());
            let (outcome, samples) = match tokio::time::timeout_at(deadline, run).await {
                Ok(r) => r,
                Err(_) => (
                    Outcome {
                        at: SystemTime::now(),
                        duration: Duration::ZERO,
                        result: Err(CheckError::new(
                            ErrorKind::QueryTimeout,
                            format!("check {} cut off by --timeout", c.id()),
                        )),
                    },
                    vec![],
                ),
            };
            scheduler::record_outcome(&span, &outcome);
            (c, outcome, samples)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by(|(a, _, _), (b, _, _)| a.id().cmp(b.id()));
    out
}

/// The rung of one check's outcome: the rung its list line declares.
pub(super) fn rung_for(c: &dyn Check, outcome: &Outcome) -> Rung {
    let id = c.id();
    let (status, detail) = match &outcome.result {
        Ok(_) => (RungStatus::Ok, Some(id.to_owned())),
        Err(e) => (RungStatus::Critical, Some(format!("{id}: {}", e.message))),
    };
    let name = c.rung().map_or("other", |r| r.as_str());
    Rung::new(name, status, outcome.duration, detail)
}
