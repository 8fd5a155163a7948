//! Check `pg_database_size`: the size of the monitored database (the guide's
//! `pg_database_size('railway')`) and its growth per hour from the agent's own history. Slow
//! cadence: it walks the database's files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::pg_util::{self, History};
use super::{BoxFuture, Cadence, Check, Observation};
use crate::catalog::{self, Sample};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub const ID: &str = "pg_database_size";

const SQL: &str = "SELECT current_database(), pg_database_size(current_database())";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseSize {
    pub datname: String,
    pub bytes: u64,
    /// From the agent's history; `None` until two samples a second apart exist.
    pub growth_bytes_per_second: Option<f64>,
}

pub struct DatabaseSizeCheck {
    pg: Arc<PgTarget>,
    history: Mutex<History>,
}

impl DatabaseSizeCheck {
    pub fn new(pg: Arc<PgTarget>) -> Self {
        DatabaseSizeCheck {
            pg,
            history: Mutex::new(History::default()),
        }
    }
}

impl Check for DatabaseSizeCheck {
    fn id(&self) -> &'static str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Slow
    }
    fn timeout(&self) -> Duration {
        super::pg_util::timeout(&self.pg, 1)
    }
    fn target(&self) -> super::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let rows = self.pg.simple_query(&conn, SQL).await?;
            let row = rows.first().ok_or_else(|| {
                CheckError::new(ErrorKind::Protocol, "size query returned no row")
            })?;
            let datname = row.first().cloned().flatten().unwrap_or_default();
            let bytes: u64 = row
                .get(1)
                .cloned()
                .flatten()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    CheckError::new(ErrorKind::Protocol, "pg_database_size returned no number")
                })?;
            let growth_bytes_per_second = self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pg_util::unix_now(), bytes as f64);
            Ok(Observation::PgDatabaseSize(DatabaseSize {
                datname,
                bytes,
                growth_bytes_per_second,
            }))
        })
    }
}

/// Pure: the series of a successful run.
pub fn samples(o: &DatabaseSize, out: &mut Vec<Sample>) {
    out.push(Sample::owned(
        &catalog::PG_DATABASE_SIZE,
        vec![o.datname.clone()],
        o.bytes as f64,
    ));
    if let Some(g) = o.growth_bytes_per_second {
        out.push(Sample::owned(
            &catalog::PG_DATABASE_GROWTH,
            vec![o.datname.clone()],
            g,
        ));
    }
}
