//! `agent run`: builds the checks from the configuration, starts the scheduler and the HTTP
//! server, and owns shutdown: SIGTERM/SIGINT cancel one token, the server drains, check loops
//! stop at their next await, and whatever is still running after the grace period is dropped.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::check;
use crate::config::Config;
use crate::findings::{self, state::Tracker, state::Transition};
use crate::pg::leader::Leadership;
use crate::pg::{Limits, PgTarget};
use crate::scheduler;
use crate::server;
use crate::snapshot::Store;

/// Builds the shared PostgreSQL target, if a DSN is configured.
pub fn pg_target(config: &Config, store: Option<Store>) -> Option<Arc<PgTarget>> {
    let dsn = config.database.dsn.clone()?;
    let limits = Limits {
        connect_timeout: config.database.connect_timeout,
        statement_timeout: config.database.statement_timeout,
        lock_timeout: config.database.lock_timeout,
        query_timeout: config.database.query_timeout(),
        max_backoff: config.agent.interval.mul_f64(0.9),
    };
    let mut target = PgTarget::new(dsn, limits);
    if let Some(store) = store {
        target = target.with_connect_hook(move |ok| store.count_connect(ok));
    }
    Some(Arc::new(target))
}

/// Runs until SIGTERM/SIGINT or until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let telemetry = crate::telemetry::init(&config);
    let listener = server::bind(config.agent.listen)
        .await
        .with_context(|| format!("cannot listen on {} (AGENT_LISTEN)", config.agent.listen))?;
    let local = listener.local_addr()?;

    let store = Store::new(Vec::new());
    let pg = pg_target(&config, Some(store.clone()));
    match &pg {
        Some(t) => {
            tracing::info!(target_db = %t.target(), source = config.database.dsn_source, "Watching PostgreSQL.")
        }
        None => tracing::warn!(
            "No PostgreSQL DSN configured (FEATURE_DATABASE_TYPE=sqlite): PostgreSQL checks are off."
        ),
    }
    let leader = Leadership::new(
        pg.clone(),
        config.agent.leader_election,
        config.agent.leader_lock_key,
    );
    let has_pg = pg.is_some();
    let checks = check::registry(&config, pg);
    let store = store.with_expected(checks.iter().map(|c| c.id()).collect());

    telemetry.export_snapshot(&store);
    let mut tasks = JoinSet::new();
    if telemetry.exporting() {
        let (stats, store, cancel, every) = (
            telemetry.stats.clone(),
            store.clone(),
            cancel.clone(),
            config.agent.interval,
        );
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => store.publish_component("otlp", stats.samples()),
                }
            }
        });
    }
    if has_pg {
        let database_checks = checks
            .iter()
            .filter(|c| c.scope() == check::Scope::Database)
            .map(|c| c.id())
            .collect();
        tasks.spawn(leader.clone().run(
            config.agent.interval,
            store.clone(),
            database_checks,
            cancel.clone(),
        ));
    }
    scheduler::spawn_led(
        &mut tasks,
        &checks,
        config.agent.interval,
        config.agent.slow_interval,
        &store,
        &cancel,
        Some(&leader),
    );
    tasks.spawn(findings_loop(config.clone(), store.clone(), cancel.clone()));
    if let Some(url) = &config.agent.alertmanager_url {
        let push = crate::alerting::PushConfig {
            url: url.clone(),
            instance: config.agent.instance.clone(),
            runbook_base: config.agent.runbook_base_url.clone(),
            interval: config.agent.interval,
            timeout: config.agent.interval.min(std::time::Duration::from_secs(5)),
        };
        tracing::info!(url = %crate::dsn::redact(url), instance = %push.instance, "Pushing findings to Alertmanager.");
        tasks.spawn(crate::alerting::run(push, store.clone(), cancel.clone()));
    }
    let server_cancel = cancel.clone();
    let server_store = store.clone();
    let server = {
        let web = config.agent.web.clone();
        tokio::spawn(async move { server::serve(listener, server_store, web, server_cancel).await })
    };
    tracing::info!(listen = %local, interval = %humantime::format_duration(config.agent.interval), checks = checks.len(), "Agent started.");

    tokio::spawn(signals(cancel.clone()));
    cancel.cancelled().await;
    tracing::info!(grace = %humantime::format_duration(config.agent.shutdown_grace), "Shutting down.");
    let drain = async {
        while tasks.join_next().await.is_some() {}
        let _ = server.await;
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(config.agent.shutdown_grace, drain).await {
        Ok(()) => tracing::info!("Shutdown complete."),
        Err(_) => tracing::warn!("Shutdown grace period over; stopping what is left."),
    }
    // Flush telemetry within what is left of the grace period.
    telemetry
        .shutdown(
            config
                .agent
                .shutdown_grace
                .saturating_sub(started.elapsed())
                .max(std::time::Duration::from_millis(100)),
        )
        .await;
    Ok(())
}

/// Evaluates findings once per interval over the latest snapshot and logs each transition.
async fn findings_loop(config: Config, store: Store, cancel: CancellationToken) {
    let cx = findings::Context::from_config(&config);
    let mut tracker = Tracker::new(
        config.agent.finding_pending_cycles,
        config.agent.finding_resolve_cycles,
    );
    let mut ticker = tokio::time::interval(config.agent.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let snap = store.current();
        if !snap.ready() {
            continue;
        }
        let now = std::time::SystemTime::now();
        let (view, transitions) = tracker.update(findings::evaluate(&snap, &cx, now), now);
        for t in transitions {
            match t {
                Transition::Activated(f) => {
                    tracing::warn!(code = f.code, severity = f.severity.as_str(), summary = %f.summary, evidence = %f.evidence, runbook = %f.runbook, "Finding active.")
                }
                Transition::Resolved(f) => {
                    tracing::info!(code = f.code, severity = f.severity.as_str(), summary = %f.summary, "Finding resolved.")
                }
            }
        }
        store.publish_findings(view);
    }
}

async fn signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers.");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Signal received."),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "Signal received."),
    }
    cancel.cancel();
}
