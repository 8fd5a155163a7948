//! What the outputs read (`/metrics`, OTLP, `/findings`, `/`, `/status`): the snapshot (check
//! outcomes, written by the scheduler) and the channels beside it, each with one writer of its
//! own: the findings loop's [`Published`] view, the agent's [`About`] (set per configuration),
//! the connection attempts the PostgreSQL target counts, and the self series of the Alertmanager
//! pusher, the OTLP exporter, the fleet election and the watched database's identity.
//! [`Sources`] holds the handles; [`Sources::read`] takes one [`Reading`] of all of them.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::catalog::{Sample, Series};
use crate::findings::state::{Published, View};
use crate::pg::ConnectCounts;
use crate::snapshot::{Snapshot, Store};

/// The handles of everything the outputs read; cheap to clone.
#[derive(Clone)]
pub struct Sources {
    /// Check outcomes (the scheduler writes).
    pub(crate) store: Store,
    /// Findings of the last evaluation cycle (the findings loop writes).
    pub findings: Published,
    /// What the status page says about the agent (the runtime sets it per configuration).
    about: Arc<Mutex<Arc<About>>>,
    /// Connection attempts (the PostgreSQL target's connect hook counts).
    pub(crate) connects: Arc<ConnectCounts>,
    /// `rose_agent_alertmanager_*` (the pusher writes).
    pub(crate) alertmanager: Series,
    /// `rose_agent_leader` (the election writes).
    pub(crate) leader: Series,
    /// `rose_agent_otlp_*` (the OTLP ticker writes).
    pub(crate) otlp: Series,
    /// `rose_target_info` (the runtime writes per configuration).
    pub(crate) target: Series,
}

impl Sources {
    pub fn new(store: Store) -> Sources {
        Sources {
            store,
            findings: Published::default(),
            about: Arc::default(),
            connects: Arc::default(),
            alertmanager: Series::default(),
            leader: Series::default(),
            otlp: Series::default(),
            target: Series::default(),
        }
    }

    /// Replaces what the status page says about the agent.
    pub(crate) fn set_about(&self, about: About) {
        let mut g = self.about.lock().unwrap_or_else(|p| p.into_inner());
        if **g != about {
            *g = Arc::new(about);
        }
    }

    /// One consistent reading of every source (`Arc` clones; no lock is held after return).
    pub fn read(&self) -> Reading {
        let (findings_generation, findings) = self.findings.current();
        // Name order, as the self series have always been rendered.
        let series = [&self.alertmanager, &self.leader, &self.otlp, &self.target];
        let mut series_version = 0;
        let mut components = Vec::with_capacity(series.len());
        for s in series {
            let (v, samples) = s.get();
            series_version += v;
            components.push(samples);
        }
        let pg_connects = self.connects.get();
        Reading {
            snap: self.store.current(),
            findings,
            findings_generation,
            about: self.about.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            pg_connects,
            components,
            series_version: series_version + pg_connects.0 + pg_connects.1,
        }
    }
}

/// One reading of the snapshot and the channels beside it; derefs to the [`Snapshot`].
#[derive(Debug, Clone)]
pub struct Reading {
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) findings: Arc<View>,
    /// Grows with every findings publish.
    pub(crate) findings_generation: u64,
    pub(crate) about: Arc<About>,
    /// Connection attempts: (succeeded, failed).
    pub(crate) pg_connects: (u64, u64),
    /// The components' self series.
    pub(crate) components: Vec<Arc<Vec<Sample>>>,
    /// Grows with every write of a self series or connection count.
    pub(crate) series_version: u64,
}

/// What a rendering depends on besides the clock: the snapshot generation, the findings
/// generation, the self series' version and the stale checks.
pub(crate) type CacheKey = (u64, u64, u64, Vec<Arc<str>>);

impl Reading {
    /// A snapshot with nothing beside it (no findings yet, no self series): one-shot runs and
    /// tests.
    pub fn of(snap: Arc<Snapshot>) -> Reading {
        Reading {
            snap,
            findings: Arc::default(),
            findings_generation: 0,
            about: Arc::default(),
            pg_connects: (0, 0),
            components: Vec::new(),
            series_version: 0,
        }
    }

    /// The cache key of a rendering at `now`.
    pub(crate) fn cache_key(&self, now: SystemTime) -> CacheKey {
        (
            self.snap.generation,
            self.findings_generation,
            self.series_version,
            self.snap.stale_checks(now),
        )
    }
}

impl Deref for Reading {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snap
    }
}

/// What the status page says about the agent itself, set with each configuration
/// ([`Sources::set_about`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct About {
    pub(crate) version: String,
    pub(crate) instance: String,
    /// Sanitized `host:port/dbname`; `None` without PostgreSQL.
    pub(crate) target: Option<String>,
    /// `FEATURE_DATABASE_TYPE` as the agent understood it.
    pub(crate) database_type: String,
    /// The app's base URL the probes use (no credentials).
    pub(crate) app_url: String,
    /// Where `docs/runbooks/` is published (`AGENT_RUNBOOK_BASE_URL`).
    pub(crate) runbook_base: String,
    /// `AGENT_INTERVAL`: findings are evaluated this often.
    pub(crate) interval: Duration,
    /// Connections in use over usable slots above which the connections figure warns (the
    /// same ratio as `connections_near_limit`).
    pub(crate) connections_warn_ratio: f64,
}

impl About {
    pub(crate) fn from_config(config: &crate::config::Config) -> About {
        About {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            instance: config.agent.instance.clone(),
            target: config.database.dsn.as_ref().map(|d| d.target()),
            database_type: format!("{:?}", config.app.database_type).to_lowercase(),
            app_url: if config.app.base_url.contains('@') {
                "(not shown: the URL holds credentials)".into()
            } else {
                crate::dsn::redact(&config.app.base_url)
            },
            runbook_base: config.agent.runbook_base_url.clone(),
            interval: config.agent.interval,
            connections_warn_ratio: crate::findings::Context::from_config(config)
                .connections_warn_ratio,
        }
    }

    /// The runbook of a finding code, the same URL pushed alerts carry.
    pub(crate) fn runbook_url(&self, code: &str) -> String {
        let base = if self.runbook_base.is_empty() {
            crate::config::DEFAULT_RUNBOOK_BASE
        } else {
            &self.runbook_base
        };
        format!("{}/{code}.md", base.trim_end_matches('/'))
    }
}
