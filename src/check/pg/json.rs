//! The shape most PostgreSQL checks share: one statement returning one JSON document, decoded
//! and turned into an observation by a pure function. A check of this shape is a [`JsonCheck`]
//! value built by its module's `check()`; checks with state of their own (version caches,
//! histories, several statements) implement [`Check`] themselves.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::util;
use crate::catalog::Sample;
use crate::check::{Cadence, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

/// One JSON statement on `pg`, decoded as `R` and converted by `convert`.
pub(crate) struct JsonCheck<R> {
    pub(crate) id: &'static str,
    pub(crate) pg: Arc<PgTarget>,
    pub(crate) sql: String,
    /// Names the document in protocol errors.
    pub(crate) what: &'static str,
    pub(crate) convert: fn(&PgTarget, R) -> Observation,
    /// The series a failed run exports (none by default).
    pub(crate) on_failure: Option<fn(&mut Vec<Sample>)>,
    /// Fast unless the module says otherwise ([`JsonCheck::slow`]).
    pub(crate) cadence: Cadence,
    pub(crate) raw: PhantomData<fn() -> R>,
}

impl<R> JsonCheck<R> {
    pub(crate) fn new(
        id: &'static str,
        pg: Arc<PgTarget>,
        sql: impl Into<String>,
        what: &'static str,
        convert: fn(&PgTarget, R) -> Observation,
    ) -> Self {
        JsonCheck {
            id,
            pg,
            sql: sql.into(),
            what,
            convert,
            on_failure: None,
            cadence: Cadence::Fast,
            raw: PhantomData,
        }
    }

    /// Runs on the slow cadence (`AGENT_SLOW_INTERVAL`).
    pub(crate) fn slow(mut self) -> Self {
        self.cadence = Cadence::Slow;
        self
    }

    /// Sets the series a failed run exports.
    pub(crate) fn on_failure(mut self, f: fn(&mut Vec<Sample>)) -> Self {
        self.on_failure = Some(f);
        self
    }
}

impl<R: DeserializeOwned + 'static> Check for JsonCheck<R> {
    fn id(&self) -> &str {
        self.id
    }
    fn cadence(&self) -> Cadence {
        self.cadence
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let raw: R = util::json_query(&self.pg, &conn, &self.sql, self.what).await?;
            Ok((self.convert)(&self.pg, raw))
        })
    }
    fn failure_samples(&self, _err: &CheckError, out: &mut Vec<Sample>) {
        if let Some(f) = self.on_failure {
            f(out);
        }
    }
}
