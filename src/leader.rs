//! Leadership of a fleet of agents through PostgreSQL itself.
//!
//! Many app instances share one database, and each has an agent beside it. Database-wide checks
//! ([`crate::check::Scope::Database`]) would cost the database N times and export the same series
//! N times; instead they run only on the agent holding a session-level advisory lock,
//! `pg_try_advisory_lock(`[`DEFAULT_LOCK_KEY`]`)` (configurable: `AGENT_LEADER_LOCK_KEY`), taken on
//! the agent's one connection, the one its checks use.
//!
//! - At the start of each cycle (every `AGENT_INTERVAL`) the agent makes sure it leads: if it
//!   already holds the lock on the connection that is open now, nothing is sent (a session lock
//!   lives exactly as long as its session); otherwise it tries once on the current connection
//!   (one cheap statement per follower per cycle).
//! - A new connection is a new attempt: the lock belonged to the old session. An agent whose
//!   connection dropped stops leading at once (its database-wide checks are skipped even before
//!   the next cycle), and PostgreSQL frees the lock when that backend ends, so a surviving agent
//!   takes it at its next cycle: within one interval.
//! - Followers skip the database-wide checks and withdraw their series (so sums over the fleet
//!   stay right); the skipped checks do not hold readiness back. Instance-local checks run on
//!   every agent.
//! - A single agent needs no configuration: it takes the free lock at its first cycle.
//!   `AGENT_LEADER_ELECTION=off` makes every agent run everything.
//!
//! Advisory locks are per database, so fleets watching different databases never contend.
//!
//! Through a connection pooler (PgBouncer; see [`crate::pg::Conn::direct`]) a session lock is no
//! election: in transaction pooling it lands on whichever server connection ran the statement,
//! two agents sharing that connection both "hold" it, and it stays behind on an idle pooled
//! connection (up to PgBouncer's `server_idle_timeout`) keeping every direct agent a follower.
//! So an agent behind a pooler never takes the lock: each cycle it looks whether a directly
//! connected agent holds it (`pg_locks`), follows if so, and otherwise runs the database-wide
//! checks itself (as with `AGENT_LEADER_ELECTION=off`: several pooled agents then all lead).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Sample};
use crate::pg::PgTarget;

pub use crate::config::DEFAULT_LOCK_KEY;

/// Whether any session holds the election lock `key` in this database (for an agent behind a
/// pooler, which must not take it). A bigint advisory lock shows in `pg_locks` as classid = high
/// 32 bits, objid = low 32 bits, objsubid = 1.
pub(crate) fn held_by_anyone_sql(key: i64) -> String {
    let k = key as u64;
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = '{}'::oid AND objid = '{}'::oid AND objsubid = 1)",
        k >> 32,
        k & 0xffff_ffff
    )
}

/// Who leads, as this agent sees it.
pub struct Leadership {
    pg: Option<Arc<PgTarget>>,
    enabled: bool,
    key: i64,
    /// The connection generation the lock is held on.
    held: Mutex<Option<u64>>,
    /// (a round has completed, the held generation), for check loops waiting to lead.
    tx: watch::Sender<(bool, Option<u64>)>,
    /// (rounds run by [`Leadership::run`], whether the last one leads): the scheduler
    /// withdraws the database-wide checks' series after each round that follows.
    rounds: watch::Sender<(u64, bool)>,
}

impl Leadership {
    /// `enabled == false` (or no PostgreSQL at all): this agent always leads.
    pub fn new(pg: Option<Arc<PgTarget>>, enabled: bool, key: i64) -> Arc<Leadership> {
        Arc::new(Leadership {
            enabled: enabled && pg.is_some(),
            pg,
            key,
            held: Mutex::new(None),
            tx: watch::channel((false, None)).0,
            rounds: watch::channel((0, true)).0,
        })
    }

    /// Whether elections happen at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// True while this agent holds the lock on the connection open now.
    pub fn is_leader(&self) -> bool {
        if !self.enabled {
            return true;
        }
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        match (held, self.pg.as_ref().and_then(|p| p.current_generation())) {
            (Some(h), Some(c)) => h == c,
            _ => false,
        }
    }

    /// Changes after the first round and whenever the lock is taken (on a new connection) or
    /// lost.
    pub(crate) fn subscribe(&self) -> watch::Receiver<(bool, Option<u64>)> {
        self.tx.subscribe()
    }

    /// Changes after every round of [`Leadership::run`]: (rounds so far, whether it leads).
    pub(crate) fn rounds(&self) -> watch::Receiver<(u64, bool)> {
        self.rounds.subscribe()
    }

    /// True once the first election round has completed (or when there is no election).
    pub(crate) fn decided(&self) -> bool {
        !self.enabled || self.tx.borrow().0
    }

    /// One election round: keeps or tries to take the lock on the current connection.
    pub async fn renew(&self) -> bool {
        let Some(pg) = self.pg.as_ref().filter(|_| self.enabled) else {
            return true;
        };
        let held = match pg.conn().await {
            Err(_) => None,
            Ok(conn) => {
                let prev = *self.held.lock().unwrap_or_else(|p| p.into_inner());
                if !conn.direct {
                    let sql = held_by_anyone_sql(self.key);
                    match pg.simple_query(&conn, &sql).await {
                        Ok(rows)
                            if rows.first().and_then(|r| r.first()).cloned().flatten()
                                == Some("f".into()) =>
                        {
                            Some(conn.generation)
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::debug!(kind = %e.kind, error = %e.message, "Leader look-up failed.");
                            None
                        }
                    }
                } else if prev == Some(conn.generation) {
                    prev
                } else {
                    let sql = format!("SELECT pg_try_advisory_lock({})", self.key);
                    match pg.simple_query(&conn, &sql).await {
                        Ok(rows)
                            if rows.first().and_then(|r| r.first()).cloned().flatten()
                                == Some("t".into()) =>
                        {
                            Some(conn.generation)
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::debug!(kind = %e.kind, error = %e.message, "Leader election failed.");
                            None
                        }
                    }
                }
            }
        };
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
        self.tx.send_if_modified(|v| {
            let changed = *v != (true, held);
            *v = (true, held);
            changed
        });
        self.is_leader()
    }

    /// Runs an election round every `every`, publishes `rose_agent_leader` (its own series) and
    /// each round's result ([`Leadership::rounds`]: the scheduler withdraws the series of the
    /// database-wide checks after each round that follows).
    pub(crate) async fn run(
        self: Arc<Self>,
        every: Duration,
        series: catalog::Series,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was: Option<bool> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let leads = tokio::select! {
                _ = cancel.cancelled() => return,
                l = self.renew() => l,
            };
            if was != Some(leads) {
                if leads {
                    tracing::info!(
                        key = self.key,
                        "Leading the fleet: running the database-wide checks."
                    );
                } else {
                    tracing::info!(
                        key = self.key,
                        "Following: another agent (or none, while PostgreSQL is unreachable) runs the database-wide checks."
                    );
                }
                series.set(vec![Sample::new(
                    &catalog::AGENT_LEADER,
                    &[],
                    if leads { 1.0 } else { 0.0 },
                )]);
                was = Some(leads);
            }
            self.rounds.send_modify(|r| *r = (r.0 + 1, leads));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_look_up_splits_the_key_as_postgresql_does() {
        let sql = held_by_anyone_sql(DEFAULT_LOCK_KEY);
        assert!(sql.contains("classid = '1383035749'::oid"), "{sql}");
        assert!(sql.contains("objid = '761358196'::oid"), "{sql}");
        let neg = held_by_anyone_sql(-1);
        assert!(neg.contains("classid = '4294967295'::oid"), "{neg}");
        assert!(neg.contains("objid = '4294967295'::oid"), "{neg}");
    }
}
