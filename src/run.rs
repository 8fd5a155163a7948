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
use crate::leader::Leadership;
use crate::pg::{ConnectCounts, Limits, PgTarget};
use crate::reading::Sources;
use crate::scheduler;
use crate::server;

/// Builds the shared PostgreSQL target, if a DSN is configured; its connection attempts are
/// counted into `connects` when given.
pub fn pg_target(config: &Config, connects: Option<Arc<ConnectCounts>>) -> Option<Arc<PgTarget>> {
    let dsn = config.database.dsn.clone()?;
    let limits = Limits::from_config(config);
    let mut target = PgTarget::new(dsn, limits);
    if let Some(counts) = connects {
        target = target.with_connect_hook(move |ok| counts.record(ok));
    }
    Some(Arc::new(target))
}

/// What one configuration runs: its check loops, the election, the findings loop and the
/// alert pusher, under their own token so a reload can stop them without touching the
/// snapshot or the server.
struct Generation {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    pg: Option<Arc<PgTarget>>,
    leader: Arc<Leadership>,
    checks: usize,
}

impl Generation {
    fn start(
        config: &Config,
        sources: &Sources,
        reuse: Option<(Option<Arc<PgTarget>>, Arc<Leadership>)>,
        tracker: Arc<std::sync::Mutex<Tracker>>,
        parent: &CancellationToken,
        epoch: std::time::Instant,
    ) -> Generation {
        let cancel = parent.child_token();
        let store = &sources.store;
        let (pg, leader) = match reuse {
            Some(r) => r,
            None => {
                let pg = pg_target(config, Some(sources.connects.clone()));
                match &pg {
                    Some(t) => {
                        tracing::info!(target_db = %t.target(), source = config.database.dsn_source, "Watching PostgreSQL.")
                    }
                    None => log_no_dsn(config),
                }
                let leader = Leadership::new(
                    pg.clone(),
                    config.agent.leader_election,
                    config.agent.leader_lock_key,
                );
                (pg, leader)
            }
        };
        // The database's identity label, shared by the rules (joined on instance, job) and
        // pushed alerts: one database's outage is one page whichever agent or path saw it.
        let rose_target = config.database.dsn.as_ref().map(|d| d.target());
        sources.target.set(
            rose_target
                .iter()
                .map(|t| crate::catalog::Sample::new(&crate::catalog::AGENT_TARGET_INFO, &[t], 1.0))
                .collect(),
        );
        sources.set_about(crate::status::About::from_config(config));
        let checks = check::registry(config, pg.clone());
        scheduler::adopt(store, &checks);
        let mut tasks = JoinSet::new();
        if pg.is_some() {
            tasks.spawn(leader.clone().run(
                config.agent.interval,
                sources.leader.clone(),
                cancel.clone(),
            ));
        }
        scheduler::spawn_led(
            &mut tasks,
            &checks,
            config.agent.interval,
            config.agent.slow_interval,
            store,
            &cancel,
            Some(&leader),
            epoch,
        );
        tasks.spawn(findings_loop(
            config.clone(),
            store.clone(),
            sources.findings.clone(),
            tracker,
            cancel.clone(),
        ));
        if let Some(url) = &config.agent.alertmanager_url {
            let push = crate::alerting::PushConfig {
                url: url.clone(),
                instance: config.agent.instance.clone(),
                rose_target: rose_target.clone(),
                runbook_base: config.agent.runbook_base_url.clone(),
                interval: config.agent.interval,
                timeout: config.agent.interval.min(std::time::Duration::from_secs(5)),
            };
            tracing::info!(url = %crate::dsn::redact(url), instance = %push.instance, "Pushing findings to Alertmanager.");
            tasks.spawn(crate::alerting::run(
                push,
                sources.findings.clone(),
                sources.alertmanager.clone(),
                cancel.clone(),
            ));
        }
        Generation {
            cancel,
            tasks,
            pg,
            leader,
            checks: checks.len(),
        }
    }

    /// Stops this generation's tasks, waiting at most `grace` for runs to reach an await.
    async fn stop(
        mut self,
        grace: std::time::Duration,
    ) -> (Option<Arc<PgTarget>>, Arc<Leadership>) {
        self.cancel.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            self.tasks.abort_all();
        }
        (self.pg, self.leader)
    }
}

/// Says which variables would give the agent a DSN: an error when the app runs on PostgreSQL
/// (the finding `no_database_configured` follows), otherwise a note.
fn log_no_dsn(config: &Config) {
    let vars = crate::config::DSN_VARIABLES.join(", ");
    match config.app.database_type {
        crate::config::DatabaseType::Postgresql => tracing::error!(
            code = "no_database_configured",
            "FEATURE_DATABASE_TYPE=postgresql but no PostgreSQL DSN is set ({vars}): the database is not monitored. Set AGENT_DATABASE_URL to the monitoring role's DSN."
        ),
        crate::config::DatabaseType::Sqlite => tracing::info!(
            "No PostgreSQL DSN set ({vars}) and FEATURE_DATABASE_TYPE=sqlite: PostgreSQL checks are off."
        ),
    }
}

/// Names each `AGENT_*` variable that is set but not read, once at start, with the closest name
/// the agent reads (see `config::vars`); never a value.
fn log_unknown_variables(config: &Config) {
    let (unknown, omitted) = &config.unknown_variables;
    for u in unknown {
        tracing::warn!(variable = %u.name, closest = u.closest, "{}", u.message());
    }
    if *omitted > 0 {
        tracing::warn!(
            omitted,
            "More AGENT_* variables are set that the agent does not read; only the first {} are named.",
            unknown.len()
        );
    }
}

/// Whether a reload can keep the PostgreSQL connection (and with it the fleet's lock).
fn same_database(a: &Config, b: &Config) -> bool {
    let (x, y) = (&a.database, &b.database);
    x.dsn.as_ref().map(|d| d.redacted_url()) == y.dsn.as_ref().map(|d| d.redacted_url())
        && x.dsn.as_ref().and_then(|d| d.password().map(str::to_owned))
            == y.dsn.as_ref().and_then(|d| d.password().map(str::to_owned))
        && x.connect_timeout == y.connect_timeout
        && x.statement_timeout == y.statement_timeout
        && x.lock_timeout == y.lock_timeout
        && a.agent.leader_election == b.agent.leader_election
        && a.agent.leader_lock_key == b.agent.leader_lock_key
}

/// Runs until SIGTERM/SIGINT or until `cancel` fires; on SIGHUP re-reads `config_path` and the
/// environment and, when the result is valid, restarts the checks on it. The snapshot, the
/// server and (when the database settings did not change) the PostgreSQL connection carry
/// over; an invalid configuration keeps the running one and logs every problem.
pub async fn run_with_reload(
    config: Config,
    web: crate::web::WebConfig,
    config_path: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let telemetry = crate::telemetry::init(&config);
    log_unknown_variables(&config);
    let listener = server::bind(config.agent.listen)
        .await
        .with_context(|| format!("cannot listen on {} (AGENT_LISTEN)", config.agent.listen))?;
    let local = listener.local_addr()?;

    let sources = Sources::new(crate::snapshot::Store::new(Vec::new()));
    telemetry.export_snapshot(&sources);
    let mut tasks = JoinSet::new();
    if telemetry.exporting() {
        let (stats, otlp, cancel, every) = (
            telemetry.stats.clone(),
            sources.otlp.clone(),
            cancel.clone(),
            config.agent.interval,
        );
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => otlp.set(stats.samples()),
                }
            }
        });
    }
    let tracker = Arc::new(std::sync::Mutex::new(Tracker::new(
        config.agent.finding_pending_cycles,
        config.agent.finding_resolve_cycles,
    )));
    // The schedule's phase: every generation's checks tick on `epoch + k * period`.
    let epoch = std::time::Instant::now();
    let mut generation =
        Generation::start(&config, &sources, None, tracker.clone(), &cancel, epoch);
    let server_cancel = cancel.clone();
    let server_sources = sources.clone();
    let server = {
        let limits = config.agent.web_limits;
        let web = web.clone();
        tokio::spawn(async move {
            server::serve(listener, server_sources, web, limits, server_cancel).await
        })
    };
    {
        // One line that says what this agent watches and how it is reached (all sanitized).
        let about = crate::status::About::from_config(&config);
        let pg_tls = config.database.dsn.as_ref().map(|d| {
            serde_json::to_value(d.sslmode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        tracing::info!(
            version = %about.version,
            target_db = %about.target.as_deref().unwrap_or("none"),
            feature_database_type = %about.database_type,
            app_url = %about.app_url,
            pg_sslmode = %pg_tls.as_deref().unwrap_or("none"),
            listen = %local,
            endpoint_tls = web.tls.is_some(),
            endpoint_auth = web.auth.is_some(),
            interval = %humantime::format_duration(config.agent.interval),
            checks = generation.checks,
            "Agent started: status page at /, findings at /findings, metrics at /metrics."
        );
    }

    tokio::spawn(signals(cancel.clone()));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut config = config;
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = hangup => {}
        }
        // A burst of SIGHUPs (a config-management loop, a script) is one reload.
        let coalesced = match hup.as_mut() {
            Some(h) => debounce(h, &cancel).await,
            None => 1,
        };
        if cancel.is_cancelled() {
            break;
        }
        tracing::info!(signal = "SIGHUP", signals = coalesced, file = ?config_path, "Reloading the configuration.");
        let new = match Config::load(config_path.as_deref(), &crate::config::ProcessEnv) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.0 {
                    tracing::error!(key = %p.key, problem = %p.message, "Reload rejected; the running configuration stays.");
                }
                continue;
            }
        };
        if let Err(e) = crate::web::WebConfig::for_config(&new) {
            for p in &e.0 {
                tracing::error!(key = %p.key, problem = %p.message, "Reload rejected; the running configuration stays.");
            }
            continue;
        }
        if new.agent.listen != config.agent.listen
            || new.agent.web_config_file != config.agent.web_config_file
            || new.agent.web_limits != config.agent.web_limits
        {
            tracing::warn!("AGENT_LISTEN and AGENT_WEB_* settings take effect only at restart.");
        }
        let keep = same_database(&config, &new);
        let (pg, leader) = generation.stop(config.agent.shutdown_grace).await;
        let reuse = keep.then_some((pg, leader));
        generation = Generation::start(&new, &sources, reuse, tracker.clone(), &cancel, epoch);
        tracing::info!(interval = %humantime::format_duration(new.agent.interval), slow_interval = %humantime::format_duration(new.agent.slow_interval), checks = generation.checks, kept_connection = keep, "Configuration reloaded.");
        config = new;
    }
    tracing::info!(grace = %humantime::format_duration(config.agent.shutdown_grace), "Shutting down.");
    let started = std::time::Instant::now();
    let drain = async {
        while tasks.join_next().await.is_some() {}
        while generation.tasks.join_next().await.is_some() {}
        let _ = server.await;
    };
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

/// A reload waits until SIGHUPs have been quiet this long...
pub(crate) const RELOAD_QUIET: std::time::Duration = std::time::Duration::from_millis(300);
/// ...but never longer than this after the first one.
pub(crate) const RELOAD_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until SIGHUPs have been quiet for [`RELOAD_QUIET`] (at most [`RELOAD_MAX_DELAY`]);
/// returns how many arrived, the first included.
async fn debounce(hup: &mut tokio::signal::unix::Signal, cancel: &CancellationToken) -> u32 {
    let until = tokio::time::Instant::now() + RELOAD_MAX_DELAY;
    let mut n = 1;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let quiet = tokio::time::sleep(RELOAD_QUIET.min(left));
        tokio::select! {
            _ = cancel.cancelled() => return n,
            _ = quiet => return n,
            r = hup.recv() => match r {
                Some(()) if tokio::time::Instant::now() < until => n += 1,
                _ => return n,
            },
        }
    }
}

/// Evaluates findings once per interval over the latest snapshot and logs each transition.
async fn findings_loop(
    config: Config,
    store: crate::snapshot::Store,
    published: findings::state::Published,
    tracker: Arc<std::sync::Mutex<Tracker>>,
    cancel: CancellationToken,
) {
    let cx = findings::Context::from_config(&config);
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
        // A stale outcome (the agent stalled, its runtime starved) is no evidence either way:
        // hold every finding where it is until the checks have reported again.
        let stale = snap.stale_checks(now);
        if !stale.is_empty() {
            tracing::debug!(checks = ?stale, "Findings held: stale check outcomes.");
            continue;
        }
        // Silenced findings never enter the tracker: no transition, no alert, no status.
        let (counted, silenced) =
            findings::silence::apply(findings::evaluate(&snap, &cx, now), &config.findings, now);
        let (mut view, transitions) = tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(counted, now);
        view.silenced = silenced;
        for t in transitions {
            match t {
                Transition::Activated(f) if f.severity == findings::Severity::Info => {
                    tracing::info!(code = f.code, severity = f.severity.as_str(), summary = %f.summary, evidence = %f.evidence, runbook = %f.runbook, "Finding active.")
                }
                Transition::Activated(f) => {
                    tracing::warn!(code = f.code, severity = f.severity.as_str(), summary = %f.summary, evidence = %f.evidence, runbook = %f.runbook, "Finding active.")
                }
                Transition::Resolved(f) => {
                    tracing::info!(code = f.code, severity = f.severity.as_str(), summary = %f.summary, "Finding resolved.")
                }
            }
        }
        published.publish(view);
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
