//! Rules over the connection ladder: a failed `pg_connectivity` run is classified by its error
//! kind (from SQLSTATE or the I/O error, never message text) into the guide's troubleshooting
//! issue, with its steps made concrete; privilege errors of any PostgreSQL check are reported too.

use super::{Code, Context, Finding, Severity, connections};
use crate::check::{Observation, pg};
use crate::error::ErrorKind;
use crate::snapshot::Snapshot;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    // The agent's own lack of descriptors or memory says nothing about the database: no
    // verdict (the failed check and its `kind="local_resources"` error count show it).
    if let Some(e) = snap
        .error(pg::connectivity::ID)
        .filter(|e| e.kind != ErrorKind::LocalResources)
    {
        // SQLSTATE 53300 is the same for the server's and the role's limit: the last good
        // observation of who held what tells them apart.
        let last = match snap.last_good(pg::connections::ID) {
            Some(Observation::PgConnections(c)) => Some(c),
            _ => None,
        };
        out.push(match (e.kind, connections::refusing_limit(last), last) {
            (ErrorKind::TooManyConnections, connections::Limit::Role, Some(c)) => {
                connections::role_limit_refused(c, cx, &e.message)
            }
            _ => for_connect_error(e.kind, &e.message, cx, last),
        });
    }
    // A check that lacks a privilege, while the connection works.
    let denied: Vec<&str> = snap
        .checks
        .iter()
        .filter(|(_, st)| {
            st.last
                .result
                .as_ref()
                .err()
                .is_some_and(|e| e.kind == ErrorKind::PrivilegeMissing)
        })
        .map(|(id, _)| &**id)
        .collect();
    if !denied.is_empty() && snap.error(pg::connectivity::ID).is_none() {
        out.push(privilege_missing(&denied.join(", "), cx));
    }
}

/// The finding for a failed connection attempt, by error kind; `last` is the last good
/// `pg_connections` observation (who held the connections), when there is one.
pub(crate) fn for_connect_error(
    kind: ErrorKind,
    message: &str,
    cx: &Context,
    last: Option<&pg::connections::Connections>,
) -> Finding {
    let t = &cx.target;
    let src = cx.dsn_source;
    let ev = if message.starts_with(t.as_str()) {
        message.to_owned()
    } else {
        format!("{t}: {message}")
    };
    match kind {
        ErrorKind::Refused | ErrorKind::Unreachable | ErrorKind::ConnectionClosed | ErrorKind::Io => Finding::new(
            Code::ConnectionRefused,
            format!("PostgreSQL at {t} refuses connections"),
            ev,
            vec![
                format!("Verify {src} is correct: it points at {t}"),
                "Check the database is running (Railway dashboard, or `pg_isready -h HOST -p PORT`)".into(),
                "Verify network connectivity from the app's host to the database host".into(),
                "Check firewall rules and the server's listen_addresses".into(),
            ],
        ),
        ErrorKind::AuthFailed => Finding::new(
            Code::AuthFailed,
            format!("Password authentication failed at {t}"),
            ev,
            vec![
                format!("Verify the username and password in {src}"),
                "Check the password for special characters: percent-encode them in the URL (@ as %40, / as %2F, : as %3A, # as %23, ? as %3F)".into(),
                format!("Regenerate the database credentials (Railway dashboard) and update {src}"),
            ],
        ),
        ErrorKind::TooManyConnections => {
            let demand = super::database::pool_demand(cx);
            let model = format!(
                "worst-case demand of the app is {demand} connections ({} instance(s) x (DATABASE_POOL_SIZE {} + DATABASE_MAX_OVERFLOW {}{}) + 1 agent)",
                cx.instances,
                cx.pool_size,
                cx.max_overflow,
                cx.checkpointer_pool_max_size.map(|n| format!(" + checkpointer pool {n}")).unwrap_or_default()
            );
            match last {
                Some(c) => Finding::new(
                    Code::TooManyConnections,
                    format!("PostgreSQL at {t} has no connection slots left"),
                    format!(
                        "{ev}; at the last good check {} of {} usable slots were in use, held by: {}; {model}",
                        c.total(),
                        c.slots(),
                        connections::holders(c)
                    ),
                    connections::sizing_steps(c, c.slots(), cx.instances, cx),
                ),
                None => Finding::new(
                    Code::TooManyConnections,
                    format!("PostgreSQL at {t} has no connection slots left"),
                    format!("{ev}; the agent has not seen who holds the connections yet; {model}"),
                    vec![
                        format!("Reduce DATABASE_POOL_SIZE (now {}) and DATABASE_MAX_OVERFLOW (now {}) so {} instance(s) fit the plan", cx.pool_size, cx.max_overflow, cx.instances),
                        "Find who holds the slots: SELECT application_name, usename, client_addr, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC;".into(),
                        format!("If the server has free slots, the monitoring role's own CONNECTION LIMIT refused it: SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user; and raise it (ALTER ROLE ... CONNECTION LIMIT n) instead of touching the app (DSN from {src})"),
                        "Upgrade the database plan for more connections (Railway Starter 22, Pro 97), or put PgBouncer (transaction pooling) between the app instances and PostgreSQL".into(),
                    ],
                ),
            }
        }
        ErrorKind::Dns => Finding::new(
            Code::DnsFailure,
            format!("The database host of {t} does not resolve"),
            ev,
            vec![
                format!("Check the host name in {src} for typos"),
                "Check the service still exists (Railway dashboard) and its public/private hostname".into(),
                "Check DNS from the app's host: `getent hosts HOST`".into(),
            ],
        ),
        ErrorKind::ConnectTimeout | ErrorKind::QueryTimeout => Finding::new(
            Code::ConnectTimeout,
            format!("PostgreSQL at {t} does not answer in time"),
            ev,
            vec![
                "Check the database is running and not overloaded or frozen (Railway dashboard / metrics)".into(),
                "Check firewall rules: a silently dropped connection looks like a timeout".into(),
                "Check database region (should match app region)".into(),
                "If the database is far away (a round trip of hundreds of ms) while `psql` connects, raise AGENT_CONNECT_TIMEOUT (default 3s): a connection takes about five round trips".into(),
            ],
        ),
        ErrorKind::Tls => Finding::new(
            Code::TlsError,
            format!("TLS to PostgreSQL at {t} fails"),
            ev,
            vec![
                format!("Check sslmode in {src}: require (encrypt, no verification), verify-full (needs sslrootcert with the server's CA)"),
                "If the server does not offer TLS, use sslmode=prefer or enable ssl on the server".into(),
                "Check the server certificate's host name and expiry".into(),
            ],
        ),
        ErrorKind::DatabaseMissing => Finding::new(
            Code::DatabaseMissing,
            format!("The database of {t} does not exist"),
            ev,
            vec![
                format!("Check the database name at the end of {src}"),
                "Create it (`createdb NAME`) or use the name the provider gives (Railway: railway)".into(),
            ],
        ),
        ErrorKind::HbaRejected => Finding::new(
            Code::HbaRejected,
            format!("PostgreSQL at {t} rejects this client (pg_hba.conf)"),
            ev,
            vec![
                "Add a pg_hba.conf entry for this client address, user and database, then reload PostgreSQL".into(),
                format!("Or check {src} uses sslmode=require if the server only allows hostssl"),
            ],
        ),
        ErrorKind::PrivilegeMissing => privilege_missing("pg_connectivity", cx),
        ErrorKind::StartingUp | ErrorKind::ShuttingDown => Finding::new(
            Code::DatabaseRestarted,
            format!("PostgreSQL at {t} is starting up or shutting down"),
            ev,
            vec![
                "Wait for the server to finish starting; the app should retry connections".into(),
                "Check the provider's status page and the server log for the restart's cause".into(),
            ],
        )
        .with_severity(Severity::Warning),
        _ => Finding::new(
            Code::ConnectionRefused,
            format!("Cannot connect to PostgreSQL at {t}"),
            ev,
            vec![format!("Verify {src} is correct"), "Check the database is running".into()],
        ),
    }
}

fn privilege_missing(checks: &str, cx: &Context) -> Finding {
    Finding::new(
        Code::PrivilegeMissing,
        "The monitoring role cannot read some statistics",
        format!("{}: permission denied in check(s) {checks}", cx.target),
        vec![
            "Grant the monitoring role pg_monitor: `GRANT pg_monitor TO <monitoring role>;`".into(),
            "Or create the least-privilege role with scripts/create-monitoring-role.sql".into(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CheckError;
    use crate::findings::testutil::snap;

    #[test]
    fn error_kinds_map_to_the_guides_codes() {
        let cx = Context::default();
        for (kind, code) in [
            (ErrorKind::Refused, "connection_refused"),
            (ErrorKind::AuthFailed, "auth_failed"),
            (ErrorKind::TooManyConnections, "too_many_connections"),
            (ErrorKind::Dns, "dns_failure"),
            (ErrorKind::ConnectTimeout, "connect_timeout"),
            (ErrorKind::Tls, "tls_error"),
            (ErrorKind::DatabaseMissing, "database_missing"),
            (ErrorKind::HbaRejected, "hba_rejected"),
            (ErrorKind::PrivilegeMissing, "privilege_missing"),
        ] {
            let s = snap(vec![(
                pg::connectivity::ID,
                Err(CheckError::new(kind, "x")),
            )]);
            let mut out = vec![];
            evaluate(&s, &cx, &mut out);
            assert_eq!(out.len(), 1, "{kind:?}");
            assert_eq!(out[0].code, code, "{kind:?}");
            assert!(!out[0].steps.is_empty());
            assert_eq!(out[0].runbook, format!("docs/runbooks/{code}.md"));
        }
    }

    #[test]
    fn the_agents_own_exhaustion_is_no_database_verdict() {
        let s = snap(vec![(
            pg::connectivity::ID,
            Err(CheckError::new(
                ErrorKind::LocalResources,
                "h:5432/rose: Too many open files (os error 24)",
            )),
        )]);
        let mut out = vec![];
        evaluate(&s, &Context::default(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn too_many_connections_names_the_pool_settings() {
        let cx = Context {
            pool_size: 10,
            max_overflow: 20,
            instances: 3,
            ..Context::default()
        };
        let f = for_connect_error(ErrorKind::TooManyConnections, "x", &cx, None);
        assert!(f.evidence.contains("91"), "{}", f.evidence);
        assert!(f.steps[0].contains("DATABASE_POOL_SIZE (now 10)"));
        assert!(f.steps[2].contains("rolconnlimit"), "{:?}", f.steps);
        assert_eq!(f.severity, Severity::Critical);
    }

    #[test]
    fn privilege_errors_of_other_checks_are_reported() {
        let s = snap(vec![(
            "pg_statements",
            Err(CheckError::new(ErrorKind::PrivilegeMissing, "denied")),
        )]);
        let mut out = vec![];
        evaluate(&s, &Context::default(), &mut out);
        assert_eq!(out[0].code, "privilege_missing");
        assert!(out[0].steps[0].contains("pg_monitor"));
    }
}
