//! Agent-side push of active findings to Alertmanager's v2 API (`AGENT_ALERTMANAGER_URL`), for
//! setups without Prometheus rules. Its own task, reading the snapshot once per interval:
//!
//! - every active finding is posted each interval with `endsAt` three intervals ahead, so it
//!   stays firing while the agent lives and expires by itself if the agent dies;
//! - a finding that stops being active is posted once more with `endsAt` = now (resolved), and
//!   re-sent until a post succeeds (at most [`RESOLVED_RETRY_TICKS`] intervals);
//! - each post is bounded by a timeout and retried a bounded number of times within the tick;
//!   an Alertmanager that is down never blocks the checks, `/metrics` or anything else.
//!
//! Labels: `alertname="RoseFinding"` (the name of the rule that forwards findings, so routes and
//! inhibition treat both paths alike), `code` (the finding code, the runbook's name), `severity`,
//! `job="rose-agent"`, `source="agent"`, `rose_target` (the sanitized database target, the
//! identity label the rules join from `rose_agent_target_info`), `subject` when the finding has
//! one, and `instance` only for findings about this agent's own instance ([`instance_scoped`]):
//! a finding about the database is one alert per database, whichever agent of a fleet (or
//! leader, after leadership moves) pushes it. Annotations: `summary`, `description` (the
//! evidence), `steps` (numbered), `runbook_url`. A finding's `raw_query_text` (other sessions'
//! raw SQL, opt-in) is never sent.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Sample};
use crate::findings::Finding;
use crate::findings::state::Published;

/// Intervals a resolved alert is re-sent while posts fail.
pub(crate) const RESOLVED_RETRY_TICKS: u32 = 10;
/// Attempts per tick.
const ATTEMPTS: u32 = 3;

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Alertmanager base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// The `instance` label of instance-scoped findings: set it to what Prometheus calls this
    /// agent (`podIP:port` under a PodMonitor) so a pushed alert and its rule's alert dedupe.
    pub instance: String,
    /// The `rose_target` label (`host:port/dbname`), when a DSN is configured.
    pub rose_target: Option<String>,
    /// Where `docs/runbooks/` is published: `runbook_url` is `<base>/<code>.md`, as in the rules.
    pub runbook_base: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One alert in Alertmanager's v2 `postableAlert` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub(crate) starts_at: String,
    #[serde(rename = "endsAt")]
    pub(crate) ends_at: String,
}

/// The alert name of every pushed finding: the rule that forwards findings has it too.
pub(crate) const ALERTNAME: &str = "RoseFinding";

/// Codes about this agent's own instance (its configuration, its host's round trip, its app
/// instance, its SQLite file): their pushed alerts carry `instance`. Every other code is about
/// the database and is identified by `rose_target` alone, so a fleet pushes it once and it keeps
/// its identity when leadership moves. Without a `rose_target` every alert carries `instance`.
pub(crate) const INSTANCE_CODES: &[&str] = &[
    "bad_database_url",
    "no_database_configured",
    "unknown_variable",
    "region_latency",
    "app_unreachable",
    "app_unhealthy",
    "app_degraded",
    "app_slow",
    "migration_not_effective",
    "migration_partial",
    "migration_incomplete",
    "sqlite_unreadable",
];

/// Pure: whether the pushed alert for `code` carries `instance`.
pub(crate) fn instance_scoped(code: &str, cfg: &PushConfig) -> bool {
    cfg.rose_target.is_none() || INSTANCE_CODES.contains(&code)
}

/// Pure: the alert for a finding.
pub fn alert_for(f: &Finding, cfg: &PushConfig, starts: SystemTime, ends: SystemTime) -> Alert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), ALERTNAME.to_owned());
    labels.insert("code".to_owned(), f.code.to_owned());
    labels.insert("severity".to_owned(), f.severity.as_str().to_owned());
    if instance_scoped(f.code, cfg) {
        labels.insert("instance".to_owned(), cfg.instance.clone());
    }
    if let Some(t) = &cfg.rose_target {
        labels.insert("rose_target".to_owned(), t.clone());
    }
    labels.insert("job".to_owned(), "rose-agent".to_owned());
    labels.insert("source".to_owned(), "agent".to_owned());
    if let Some(s) = &f.subject {
        labels.insert("subject".to_owned(), s.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_owned(), f.summary.clone());
    annotations.insert("description".to_owned(), f.evidence.clone());
    let steps: Vec<String> = f
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect();
    annotations.insert("steps".to_owned(), steps.join("\n"));
    annotations.insert(
        "runbook_url".to_owned(),
        format!("{}/{}.md", cfg.runbook_base.trim_end_matches('/'), f.code),
    );
    Alert {
        labels,
        annotations,
        starts_at: humantime::format_rfc3339_seconds(starts).to_string(),
        ends_at: humantime::format_rfc3339_seconds(ends).to_string(),
    }
}

/// Pushes until `cancel` fires.
/// Reads the findings channel; writes only its own series (`rose_agent_alertmanager_*`).
pub(crate) async fn run(
    cfg: PushConfig,
    findings: Published,
    series: catalog::Series,
    cancel: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the Alertmanager client; push is off.");
            return;
        }
    };
    let endpoint = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Key -> (finding, first seen active) of what was last posted as firing.
    let mut firing: HashMap<String, (Finding, SystemTime)> = HashMap::new();
    // Key -> (resolved alert, ticks left).
    let mut resolving: HashMap<String, (Alert, u32)> = HashMap::new();
    let (mut ok, mut failed, mut down_logged) = (0u64, 0u64, false);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (_, view) = findings.current();
        let now = SystemTime::now();
        let mut current: HashMap<String, (Finding, SystemTime)> = HashMap::new();
        for a in &view.active {
            current.insert(a.finding.key(), (a.finding.clone(), a.since));
        }
        for (key, (f, since)) in firing.drain() {
            if !current.contains_key(&key) {
                resolving.insert(key, (alert_for(&f, &cfg, since, now), RESOLVED_RETRY_TICKS));
            }
        }
        let ends = now + cfg.interval * 3;
        let mut batch: Vec<Alert> = current
            .values()
            .map(|(f, since)| alert_for(f, &cfg, *since, ends))
            .collect();
        batch.extend(resolving.values().map(|(a, _)| a.clone()));
        firing = current;
        if batch.is_empty() {
            continue;
        }
        let sent = post(&client, &endpoint, &batch, &cancel).await;
        if sent {
            ok += 1;
            resolving.clear();
            if down_logged {
                tracing::info!(url = %cfg.url, "Alertmanager reachable again.");
                down_logged = false;
            }
        } else {
            failed += 1;
            resolving.retain(|_, (_, left)| {
                *left -= 1;
                *left > 0
            });
            if !down_logged {
                tracing::warn!(url = %cfg.url, "Cannot post alerts to Alertmanager; retrying each interval.");
                down_logged = true;
            }
        }
        series.set(vec![
            Sample::new(&catalog::AGENT_AM_POSTS, &["ok"], ok as f64),
            Sample::new(&catalog::AGENT_AM_POSTS, &["error"], failed as f64),
            Sample::new(&catalog::AGENT_AM_ALERTS, &[], firing.len() as f64),
        ]);
    }
}

async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    batch: &[Alert],
    cancel: &CancellationToken,
) -> bool {
    for attempt in 0..ATTEMPTS {
        match client.post(endpoint).json(batch).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::debug!(
                status = r.status().as_u16(),
                attempt,
                "Alertmanager rejected the alerts."
            ),
            Err(e) => tracing::debug!(error = %e, attempt, "Alertmanager post failed."),
        }
        let wait = Duration::from_millis(200 << attempt);
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Code;

    fn cfg(rose_target: Option<&str>) -> PushConfig {
        PushConfig {
            url: "http://am".into(),
            instance: "host:9188".into(),
            rose_target: rose_target.map(str::to_owned),
            runbook_base: "https://runbooks.example/rose/".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn alert_shape() {
        let cfg = cfg(Some("db.internal:5432/rose"));
        let f = Finding::new(
            Code::MissingIndex,
            "s",
            "e",
            vec!["one".into(), "two".into()],
        )
        .with_subject("checkpoints_thread_id_idx");
        let a = alert_for(
            &f,
            &cfg,
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_secs(45),
        );
        assert_eq!(a.labels["alertname"], "RoseFinding");
        assert_eq!(a.labels["code"], "missing_index");
        assert_eq!(a.labels["severity"], "warning");
        assert_eq!(a.labels["rose_target"], "db.internal:5432/rose");
        assert_eq!(a.labels["job"], "rose-agent");
        assert_eq!(a.labels["source"], "agent");
        assert_eq!(a.labels["subject"], "checkpoints_thread_id_idx");
        assert_eq!(a.annotations["steps"], "1. one\n2. two");
        assert_eq!(
            a.annotations["runbook_url"],
            "https://runbooks.example/rose/missing_index.md"
        );
        assert_eq!(a.starts_at, "1970-01-01T00:00:00Z");
        assert_eq!(a.ends_at, "1970-01-01T00:00:45Z");
        let v = serde_json::to_value(&a).unwrap();
        assert!(v.get("startsAt").is_some() && v.get("endsAt").is_some());
        // Other sessions' raw SQL, even when kept on request, is never pushed.
        let f = f.with_raw_query_text("pid 7: ALTER ROLE x PASSWORD 'hunter2'".into());
        let a = alert_for(&f, &cfg, SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH);
        assert!(!serde_json::to_string(&a).unwrap().contains("hunter2"));
    }

    /// A database finding is one alert per database: two agents of a fleet (the old and the new
    /// leader) push the same label set, so Alertmanager sees one alert, not a resolve and a new
    /// page. A finding about the agent's own instance keeps `instance`.
    #[test]
    fn database_findings_do_not_depend_on_the_agent() {
        let at = SystemTime::UNIX_EPOCH;
        let a = cfg(Some("db:5432/rose"));
        let mut b = a.clone();
        b.instance = "other-pod:9188".into();
        let refused = Finding::new(Code::ConnectionRefused, "s", "e", vec![]);
        let la = alert_for(&refused, &a, at, at).labels;
        assert_eq!(la, alert_for(&refused, &b, at, at).labels);
        assert!(!la.contains_key("instance"), "{la:?}");
        let app = Finding::new(Code::AppUnreachable, "s", "e", vec![]);
        assert_eq!(alert_for(&app, &a, at, at).labels["instance"], "host:9188");
        assert_ne!(
            alert_for(&app, &a, at, at).labels,
            alert_for(&app, &b, at, at).labels
        );
        // No database: nothing else identifies the alert, so it keeps instance.
        let none = cfg(None);
        let l = alert_for(&refused, &none, at, at).labels;
        assert_eq!(l["instance"], "host:9188");
        assert!(!l.contains_key("rose_target"));
    }

    #[test]
    fn instance_codes_are_catalog_codes() {
        for c in INSTANCE_CODES {
            assert!(
                crate::findings::CODES.iter().any(|d| d.code == *c),
                "{c} is not a finding code"
            );
        }
    }
}
