//! Check errors and their bounded classification. A [`CheckError`] carries an [`ErrorKind`]
//! (the only part that reaches a metric label), the SQLSTATE when the server sent one, and a
//! message already scrubbed of secrets for logs and reports. Classification reads SQLSTATE codes
//! and I/O error kinds, never message text.

use std::fmt;

use serde::Serialize;

/// Declares [`ErrorKind`] from one list: variant, label value (`as_str`, also its serialized
/// form) and description, so the three never drift apart.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $variant:ident = $label:literal: $describe:literal,)+) => {
        /// What went wrong, from a fixed set. `as_str` is the metric label value.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorKind {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorKind {
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $label,)+
                }
            }

            pub fn describe(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $describe,)+
                }
            }
        }
    };
}

error_kinds! {
    Dns = "dns": "the host name did not resolve",
    Refused = "refused": "nothing accepted the TCP connection (server down or wrong port)",
    ConnectTimeout = "connect_timeout": "connection set-up did not finish within the connect timeout",
    Unreachable = "unreachable": "no route to the host or network",
    Tls = "tls": "the TLS handshake failed or the server does not offer TLS",
    AuthFailed = "auth_failed": "password authentication failed (SQLSTATE 28P01)",
    HbaRejected = "hba_rejected": "the server's pg_hba.conf rejects this client (SQLSTATE 28000)",
    DatabaseMissing = "database_missing": "the database does not exist (SQLSTATE 3D000)",
    TooManyConnections = "too_many_connections": "no connection slots left (SQLSTATE 53300)",
    StartingUp = "starting_up": "the server is starting up or in recovery (SQLSTATE 57P03)",
    ShuttingDown = "shutting_down": "the server is shutting down (SQLSTATE 57P01/57P02)",
    PrivilegeMissing = "privilege_missing": "the monitoring role lacks a privilege (SQLSTATE 42501)",
    UndefinedTable = "undefined_table": "a relation the check reads does not exist (SQLSTATE 42P01)",
    UndefinedColumn = "undefined_column": "a column the check reads does not exist (SQLSTATE 42703)",
    QueryTimeout = "query_timeout": "a query outlived statement_timeout or the client-side bound (SQLSTATE 57014)",
    Canceled = "canceled": "the run was canceled by shutdown",
    ConnectionClosed = "connection_closed": "the server closed the connection",
    Http = "http": "an HTTP probe got an unexpected answer",
    Io = "io": "another I/O error",
    /// The agent itself ran out of descriptors or memory: says nothing about the peer.
    LocalResources = "local_resources": "the agent ran out of file descriptors or memory (EMFILE, ENFILE, ENOMEM): nothing was learned about the peer",
    Protocol = "protocol": "the peer answered something unexpected",
    Other = "other": "anything else",
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ErrorKind {}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed check run, safe to log and show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckError {
    pub(crate) kind: ErrorKind,
    /// SQLSTATE from the server, when it sent one.
    pub sqlstate: Option<String>,
    /// Human text, secrets scrubbed.
    pub message: String,
}

impl CheckError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> CheckError {
        CheckError {
            kind,
            sqlstate: None,
            message: crate::dsn::redact(&message.into()),
        }
    }

    /// Classifies a tokio-postgres error by SQLSTATE, then by the I/O error kind in its chain.
    pub(crate) fn from_pg(e: &tokio_postgres::Error, target: &str) -> CheckError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_owned();
            let kind = kind_for_sqlstate(&code);
            return CheckError {
                kind,
                message: crate::dsn::redact(&format!(
                    "{target}: {} (SQLSTATE {code})",
                    db.message()
                )),
                sqlstate: Some(code),
            };
        }
        let kind = if e.is_closed() {
            ErrorKind::ConnectionClosed
        } else {
            classify_chain(e)
        };
        CheckError::new(kind, format!("{target}: {}", full_chain(e)))
    }
}

impl CheckError {
    /// Classifies an I/O error of the agent's own socket work (a TCP connect) by its kind.
    pub(crate) fn from_io(e: &std::io::Error, target: &str) -> CheckError {
        CheckError::new(classify_chain(e), format!("{target}: {}", full_chain(e)))
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for CheckError {}

/// SQLSTATE -> kind. Codes from the PostgreSQL manual, Appendix A.
pub(crate) fn kind_for_sqlstate(code: &str) -> ErrorKind {
    match code {
        "28P01" => ErrorKind::AuthFailed,
        "28000" => ErrorKind::HbaRejected,
        "3D000" => ErrorKind::DatabaseMissing,
        "53300" => ErrorKind::TooManyConnections,
        "57P03" => ErrorKind::StartingUp,
        "57P01" | "57P02" => ErrorKind::ShuttingDown,
        "42501" => ErrorKind::PrivilegeMissing,
        "42P01" => ErrorKind::UndefinedTable,
        "42703" => ErrorKind::UndefinedColumn,
        "57014" | "55P03" => ErrorKind::QueryTimeout,
        c if c.starts_with("08") => ErrorKind::ConnectionClosed,
        _ => ErrorKind::Other,
    }
}

fn classify_chain(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return ErrorKind::Tls;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return ErrorKind::Tls;
            }
            if is_local_resource_error(io) {
                return ErrorKind::LocalResources;
            }
            return match io.kind() {
                K::ConnectionRefused => ErrorKind::Refused,
                K::TimedOut => ErrorKind::ConnectTimeout,
                K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                    ErrorKind::Unreachable
                }
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    ErrorKind::ConnectionClosed
                }
                K::InvalidData => ErrorKind::Protocol,
                _ => ErrorKind::Io,
            };
        }
        cur = err.source();
    }
    ErrorKind::Other
}

/// Whether an I/O error is the agent's own lack of descriptors or memory (EMFILE, ENFILE,
/// ENOMEM, ENOBUFS), which must never be read as a verdict on the database or the app.
pub(crate) fn is_local_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    ) || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// The error and its sources joined, for the message (never for labels).
pub(crate) fn full_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let t = err.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = err.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        for (code, kind) in [
            ("28P01", ErrorKind::AuthFailed),
            ("28000", ErrorKind::HbaRejected),
            ("3D000", ErrorKind::DatabaseMissing),
            ("53300", ErrorKind::TooManyConnections),
            ("57P03", ErrorKind::StartingUp),
            ("42501", ErrorKind::PrivilegeMissing),
            ("42P01", ErrorKind::UndefinedTable),
            ("42703", ErrorKind::UndefinedColumn),
            ("57014", ErrorKind::QueryTimeout),
            ("08006", ErrorKind::ConnectionClosed),
            ("XX000", ErrorKind::Other),
        ] {
            assert_eq!(kind_for_sqlstate(code), kind, "{code}");
        }
    }

    #[test]
    fn io_kinds_are_classified() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_chain(&e), ErrorKind::Refused);
    }

    #[test]
    fn the_agents_own_exhaustion_is_not_the_peers_fault() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(classify_chain(&e), ErrorKind::LocalResources, "{e}");
        }
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify_chain(&e), ErrorKind::Refused);
    }

    #[test]
    fn label_values_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.as_str()));
            assert!(
                k.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }
}
