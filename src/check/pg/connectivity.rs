//! Check `pg_connectivity`: can the agent reach PostgreSQL and run a query, how long does a
//! round trip take, and which server is it (version, start time, recovery). One JSON part of
//! the cycle's combined statement ([`crate::pg::batch`]), whose round trip it reports, and the
//! batch's fallbacks and prepares (`rose_pg_batch_fallbacks_total`, `rose_pg_batch_prepares_total`); on failure `rose_pg_up` is 0, never a
//! stale 1. A change of `pg_postmaster_start_time` between runs is a restart, counted in
//! `rose_pg_restarts_observed_total`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Check, Observation};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_CONNECTIVITY;

const SQL: &str = "SELECT json_build_object('version_num', current_setting('server_version_num'), \
     'version', current_setting('server_version'), \
     'start', extract(epoch FROM pg_postmaster_start_time())::float8, \
     'in_recovery', pg_is_in_recovery())::text";

/// The statement's document.
#[derive(Debug, serde::Deserialize)]
struct Raw {
    version_num: String,
    version: String,
    start: Option<f64>,
    in_recovery: bool,
}

/// What a successful run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connectivity {
    pub(crate) target: String,
    pub roundtrip_seconds: f64,
    /// Set-up time of the connection in use.
    pub(crate) connect_seconds: f64,
    pub server_version_num: u32,
    pub(crate) server_version: String,
    pub(crate) postmaster_start_time_seconds: f64,
    pub(crate) in_recovery: bool,
    /// Restarts seen since the agent started (the start time changed between two runs).
    pub restarts_observed: u64,
    /// The start time before the last restart seen, if any.
    pub previous_start_time_seconds: Option<f64>,
    /// This agent's cycle batches that fell back to per-check statements, by reason
    /// ([`crate::pg::batch`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) batch_fallbacks: Vec<(String, u64)>,
    /// This agent's combined statements prepared so far (a steady cycle prepares none).
    #[serde(skip_serializing_if = "is_zero")]
    pub batch_prepares: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Pure: whether the server restarted between two observed start times.
pub(crate) fn restarted(previous: Option<f64>, current: f64) -> bool {
    previous.is_some_and(|p| current > 0.0 && (current - p).abs() > 0.001)
}

/// What the check remembers between runs: the last start time and restarts counted.
#[derive(Debug, Default)]
struct Memory {
    start_time: Option<f64>,
    restarts: u64,
    previous: Option<f64>,
}

impl Connectivity {
    /// Major version (13, 14, ... 18).
    pub(crate) fn major(&self) -> u32 {
        self.server_version_num / 10_000
    }
}

pub(crate) struct ConnectivityCheck {
    pg: Arc<PgTarget>,
    memory: Mutex<Memory>,
    recovery: Option<Arc<crate::check::app_recovery::Watch>>,
}

impl ConnectivityCheck {
    pub(crate) fn new(pg: Arc<PgTarget>) -> Self {
        ConnectivityCheck {
            pg,
            memory: Mutex::new(Memory::default()),
            recovery: None,
        }
    }

    /// Reports each restart to the app recovery watch (`app_recovery`).
    pub(crate) fn with_recovery_watch(
        mut self,
        w: Option<Arc<crate::check::app_recovery::Watch>>,
    ) -> Self {
        self.recovery = w;
        self
    }
}

impl Check for ConnectivityCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        let l = self.pg.limits();
        l.connect_timeout
            + crate::pg::query_deadline(l, l.connect_timeout)
            + Duration::from_millis(100)
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            // The cycle's combined statement carries this one: the round trip is that
            // statement's less the server's time on it, as a trivial statement alone would see.
            let (raw, roundtrip): (Raw, _) =
                super::util::json_query_timed(&self.pg, &conn, SQL, "connectivity").await?;
            let start = raw.start.unwrap_or(0.0);
            let (restarts_observed, previous_start_time_seconds) = {
                let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                if restarted(m.start_time, start) {
                    m.restarts += 1;
                    m.previous = m.start_time;
                    if let Some(w) = &self.recovery {
                        w.restart_seen(start);
                    }
                }
                if start > 0.0 {
                    m.start_time = Some(start);
                }
                (m.restarts, m.previous)
            };
            Ok(Observation::PgConnectivity(Connectivity {
                target: self.pg.target().to_owned(),
                roundtrip_seconds: roundtrip.as_secs_f64(),
                connect_seconds: conn.connect_duration.as_secs_f64(),
                server_version_num: raw.version_num.parse().unwrap_or(0),
                server_version: raw
                    .version
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                postmaster_start_time_seconds: start,
                in_recovery: raw.in_recovery,
                restarts_observed,
                previous_start_time_seconds,
                batch_fallbacks: self
                    .pg
                    .batch()
                    .fallbacks()
                    .into_iter()
                    .map(|(r, n)| (r.as_str().to_owned(), n))
                    .collect(),
                batch_prepares: self.pg.batch().prepares(),
            }))
        })
    }
    fn failure_samples(&self, err: &CheckError, out: &mut Vec<Sample>) {
        // Out of descriptors or memory on the agent's side: up or down is unknown, so no value.
        if err.kind != ErrorKind::LocalResources {
            out.push(Sample::new(&catalog::PG_UP, &[], 0.0));
        }
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Connectivity, out: &mut Vec<Sample>) {
    out.push(Sample::new(&catalog::PG_UP, &[], 1.0));
    out.push(Sample::new(
        &catalog::PG_ROUNDTRIP,
        &[],
        o.roundtrip_seconds,
    ));
    out.push(Sample::new(&catalog::PG_CONNECT, &[], o.connect_seconds));
    out.push(Sample::new(
        &catalog::PG_VERSION_NUM,
        &[],
        f64::from(o.server_version_num),
    ));
    out.push(Sample::owned(
        &catalog::PG_VERSION_INFO,
        vec![o.server_version.clone(), o.major().to_string()],
        1.0,
    ));
    out.push(Sample::new(
        &catalog::PG_START_TIME,
        &[],
        o.postmaster_start_time_seconds,
    ));
    out.push(Sample::new(
        &catalog::PG_BATCH_PREPARES,
        &[],
        o.batch_prepares as f64,
    ));
    for (reason, n) in &o.batch_fallbacks {
        out.push(Sample::owned(
            &catalog::PG_BATCH_FALLBACKS,
            vec![reason.clone()],
            *n as f64,
        ));
    }
    out.push(Sample::new(
        &catalog::PG_IN_RECOVERY,
        &[],
        if o.in_recovery { 1.0 } else { 0.0 },
    ));
    out.push(Sample::new(
        &catalog::PG_RESTARTS,
        &[],
        o.restarts_observed as f64,
    ));
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(|pg| ConnectivityCheck::new(pg).with_recovery_watch(b.watch.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_and_version_series() {
        let o = Connectivity {
            target: "h:5432/rose".into(),
            roundtrip_seconds: 0.002,
            connect_seconds: 0.01,
            server_version_num: 150018,
            server_version: "15.18".into(),
            postmaster_start_time_seconds: 1.7e9,
            in_recovery: false,
            restarts_observed: 0,
            previous_start_time_seconds: None,
            batch_fallbacks: vec![],
            batch_prepares: 0,
        };
        let mut out = Vec::new();
        samples(&o, &mut out);
        assert_eq!(out[0].def.name, "rose_pg_up");
        assert_eq!(out[0].num(), Some(1.0));
        let info = out
            .iter()
            .find(|s| s.def.name == "rose_pg_server_info")
            .unwrap();
        assert_eq!(info.labels, vec!["15.18".to_owned(), "15".to_owned()]);
        assert_eq!(o.major(), 15);
    }

    #[test]
    fn a_changed_start_time_is_a_restart() {
        assert!(!restarted(None, 1.7e9));
        assert!(!restarted(Some(1.7e9), 1.7e9));
        assert!(restarted(Some(1.7e9), 1.7e9 + 30.0));
        assert!(
            !restarted(Some(1.7e9), 0.0),
            "an unparsable time is not a restart"
        );
    }
}
