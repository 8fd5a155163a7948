//! The scheduler: one task per check, each on its own interval (missed ticks are delayed, never
//! burst), never overlapping itself (a run finishes or is cut off by its timeout before the next
//! tick is awaited), publishing every outcome into the snapshot. Shutdown cancels a run at its
//! next await point.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::catalog::Sample;
use crate::check::{Cadence, Check, CheckTarget, Scope};
use crate::error::{CheckError, ErrorKind};
use crate::leader::Leadership;
use crate::snapshot::{Freshness, Outcome, Store};

/// Runs one check once under its timeout and returns its outcome and samples.
pub async fn run_once(check: &dyn Check) -> (Outcome, Vec<Sample>) {
    let at = SystemTime::now();
    let started = Instant::now();
    let result = match tokio::time::timeout(check.timeout(), check.observe()).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::new(
            ErrorKind::QueryTimeout,
            format!(
                "check {} did not finish within {} ms",
                check.id(),
                check.timeout().as_millis()
            ),
        )),
    };
    let mut samples = Vec::new();
    match &result {
        Ok(obs) => obs.samples(&mut samples),
        Err(e) => check.failure_samples(e, &mut samples),
    }
    (
        Outcome {
            at,
            duration: started.elapsed(),
            result,
        },
        samples,
    )
}

/// Spawns every check's loop into `tasks`; every check runs (no fleet election).
pub fn spawn_all(
    tasks: &mut JoinSet<()>,
    checks: &[Arc<dyn Check>],
    fast: Duration,
    slow: Duration,
    store: &Store,
    cancel: &CancellationToken,
) {
    spawn_led(
        tasks,
        checks,
        fast,
        slow,
        store,
        cancel,
        None,
        Instant::now(),
    )
}

/// Makes `checks` the set the snapshot holds (a reload drops the state of removed checks, so
/// they export nothing stale) and the set that must report before the agent is ready.
pub(crate) fn adopt(store: &Store, checks: &[Arc<dyn Check>]) {
    let ids: Vec<Arc<str>> = checks.iter().map(|c| Arc::from(c.id())).collect();
    store.retain_checks(&ids);
    store.set_expected(ids);
}

/// Spawns every check's loop into `tasks`; with `leader`, database-wide checks
/// ([`Scope::Database`]) run only while this agent leads the fleet.
///
/// Every check runs on the schedule `epoch + k * period`. The first generation passes the time
/// it starts (every check runs at once); a reload passes the same epoch again, so a check whose
/// last outcome is still current keeps its phase and runs at its next tick instead of at once
/// (a burst of reloads must not become a burst of statements). A new check, or one whose outcome
/// would go stale before that tick, runs at once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_led(
    tasks: &mut JoinSet<()>,
    checks: &[Arc<dyn Check>],
    fast: Duration,
    slow: Duration,
    store: &Store,
    cancel: &CancellationToken,
    leader: Option<&Arc<Leadership>>,
    epoch: Instant,
) {
    let snap = store.current();
    let (now, wall) = (Instant::now(), SystemTime::now());
    for check in checks {
        let gate = leader
            .filter(|l| l.enabled() && check.scope() == Scope::Database)
            .cloned();
        let every = match check.cadence() {
            Cadence::Fast => fast,
            Cadence::Slow => slow,
            Cadence::Every(d) => d,
        };
        let next = next_tick(epoch, every, now);
        let current_then = snap.checks.get(check.id()).is_some_and(|st| {
            !st.is_stale(wall + (next - now) + check.timeout()) && st.freshness.max_age.is_some()
        });
        let start = if current_then { next } else { now };
        let (check, store, cancel) = (check.clone(), store.clone(), cancel.clone());
        let span = tracing::info_span!("check_loop", check = check.id());
        tasks.spawn(run_loop(check, every, store, cancel, gate, epoch, start).instrument(span));
    }
    if let Some(leader) = leader.filter(|l| l.enabled()) {
        let database_checks: Vec<Arc<str>> = checks
            .iter()
            .filter(|c| c.scope() == Scope::Database)
            .map(|c| Arc::from(c.id()))
            .collect();
        tasks.spawn(withdraw_while_following(
            leader.rounds(),
            database_checks,
            store.clone(),
            cancel.clone(),
        ));
    }
}

/// After every election round that follows, withdraws the series of the database-wide checks
/// (another agent of the fleet exports them; a lost connection also loses the lead).
async fn withdraw_while_following(
    mut rounds: tokio::sync::watch::Receiver<(u64, bool)>,
    database_checks: Vec<Arc<str>>,
    store: Store,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rounds.changed() => if changed.is_err() { return },
        }
        let (_, leads) = *rounds.borrow_and_update();
        if !leads {
            store.defer(&database_checks);
        }
    }
}

/// The span of one check run, with the OpenTelemetry semantic-convention attributes of what
/// the check talks to. Never query text or credentials.
pub(crate) fn check_span(check: &dyn Check) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "check",
        otel.name = format!("check {}", check.id()),
        otel.kind = Empty,
        otel.status_code = Empty,
        check = check.id(),
        outcome = Empty,
        "error.type" = Empty,
        duration_ms = Empty,
        db.system = Empty,
        db.namespace = Empty,
        server.address = Empty,
        server.port = Empty,
        http.request.method = Empty,
        url.full = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    match check.target() {
        CheckTarget::Local => {}
        CheckTarget::Postgres {
            namespace,
            address,
            port,
        } => {
            span.record("otel.kind", "client");
            span.record("db.system", "postgresql");
            span.record("db.namespace", namespace.as_str());
            span.record("server.address", address.as_str());
            span.record("server.port", port);
        }
        CheckTarget::Http {
            method,
            url,
            address,
            port,
        } => {
            span.record("otel.kind", "client");
            span.record("http.request.method", method.as_str());
            span.record("url.full", crate::dsn::redact(&url).as_str());
            span.record("server.address", address.as_str());
            span.record("server.port", port);
        }
    }
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.record("trace_id", sc.trace_id().to_string().as_str());
            span.record("span_id", sc.span_id().to_string().as_str());
        }
    }
    span
}

/// Records a run's outcome on its span.
pub(crate) fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    span.record("duration_ms", outcome.duration.as_millis() as u64);
    match &outcome.result {
        Ok(obs) => {
            span.record("outcome", "ok");
            if let Some(code) = obs.http_status() {
                span.record("http.response.status_code", code);
            }
        }
        Err(e) => {
            span.record("outcome", "error");
            span.record("error.type", e.kind.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
}

async fn run_loop(
    check: Arc<dyn Check>,
    every: Duration,
    store: Store,
    cancel: CancellationToken,
    gate: Option<Arc<Leadership>>,
    epoch: Instant,
    start: Instant,
) {
    let mut ticker = tokio::time::interval_at(start.into(), every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut led = gate.as_ref().map(|l| l.subscribe());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let (Some(leader), Some(rx)) = (&gate, &mut led)
            && !leader.is_leader()
        {
            // Another agent runs this check: export nothing, and run at once when this
            // agent takes the lead, so a takeover leaves no gap longer than one interval.
            // Before the first round nothing is known yet: wait without withdrawing, so a
            // single agent is not ready before its database-wide checks have run.
            rx.borrow_and_update();
            loop {
                if leader.decided() {
                    store.defer(&[check.id().into()]);
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
                if leader.is_leader() {
                    break;
                }
            }
            // Back on the common schedule (the phase every check loop started with), so a
            // database-wide check runs in the same cycle as pg_connectivity and a fault shows in
            // both at once, not one of them a fraction of an interval later with stale values.
            let next = next_tick(epoch, every, Instant::now() + Duration::from_nanos(1));
            ticker.reset_at(next.into());
        }
        let span = check_span(check.as_ref());
        let run = run_once(check.as_ref()).instrument(span.clone());
        let (outcome, samples) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = run => r,
        };
        record_outcome(&span, &outcome);
        let _enter = span.enter();
        match &outcome.result {
            Ok(_) => tracing::debug!(ms = outcome.duration.as_millis() as u64, "Check succeeded."),
            Err(e) => {
                let prev_ok = store
                    .current()
                    .checks
                    .get(check.id())
                    .is_none_or(|s| s.last.result.is_ok());
                if prev_ok {
                    tracing::warn!(kind = %e.kind, error = %e.message, "Check failed.");
                } else {
                    tracing::debug!(kind = %e.kind, error = %e.message, "Check still failing.");
                }
            }
        }
        if outcome.result.is_ok()
            && store
                .current()
                .checks
                .get(check.id())
                .is_some_and(|s| s.last.result.is_err())
        {
            tracing::info!("Check recovered.");
        }
        store.publish_fresh(
            check.id(),
            outcome,
            samples,
            freshness(check.as_ref(), every),
        );
    }
}

/// The first tick of the schedule `epoch + k * every` at or after `now`.
pub(crate) fn next_tick(epoch: Instant, every: Duration, now: Instant) -> Instant {
    let since = now.saturating_duration_since(epoch).as_nanos();
    let period = every.as_nanos().max(1);
    let k = since.div_ceil(period);
    epoch + Duration::from_nanos((k * period).min(u64::MAX as u128) as u64)
}

/// The freshness of a scheduled run: current until the next run should have finished; past
/// that, the check exports what it exports when it cannot tell (its failure series).
fn freshness(check: &dyn Check, every: Duration) -> Freshness {
    let stale = CheckError::new(
        ErrorKind::Other,
        format!(
            "check {} has not reported within its freshness bound",
            check.id()
        ),
    );
    let mut unknown = Vec::new();
    check.failure_samples(&stale, &mut unknown);
    Freshness {
        max_age: Some(Freshness::bound(every, check.timeout())),
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_the_epochs_phase() {
        let epoch = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_tick(epoch, s(15), epoch), epoch);
        assert_eq!(
            next_tick(epoch, s(15), epoch + Duration::from_millis(1)),
            epoch + s(15)
        );
        assert_eq!(next_tick(epoch, s(15), epoch + s(15)), epoch + s(15));
        assert_eq!(next_tick(epoch, s(15), epoch + s(31)), epoch + s(45));
        // Before the epoch (never in practice): the epoch itself.
        assert_eq!(next_tick(epoch + s(5), s(15), epoch), epoch + s(5));
    }
}
