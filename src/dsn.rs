//! PostgreSQL connection strings: parsing both libpq forms (URL and `key=value`) and the
//! SQLAlchemy URLs an app's `DATABASE_URL` is often written in (`postgresql+psycopg://`,
//! `+psycopg2`, `+asyncpg`: the suffix names a Python driver, the protocol is the same), with
//! libpq's multi-host lists (`host=a,b port=1,2`, `postgresql://a:1,b:2/db`), catching the
//! classic mistakes (an unencoded `@` or `/` in the password) with a message that says how to fix
//! them, and building the sanitized target (`host:port/dbname`) that is the only form of a DSN
//! that may reach a log line, a metric, a finding or a report.
//!
//! Every valid libpq key is accepted: those a monitoring connection honours are kept (TLS and
//! client certificates, `hostaddr`, `target_session_attrs`, `connect_timeout`,
//! `channel_binding`); the others are listed by name in [`Dsn::ignored`] for one warning.
//!
//! The values a driver reads (host and port lists, user, password, dbname, application_name,
//! channel_binding) are read by `tokio_postgres::Config` itself: this file scans the string for
//! the keys only the agent knows (libpq's `sslmode` semantics, `sslrootcert`, client
//! certificates, `hostaddr`, `target_session_attrs`, the accepted-but-ignored keys), checks
//! what it can point at by position, and hands the rest to the library, so the two cannot drift.
//!
//! The password lives only inside [`Dsn`]; its `Debug` prints the sanitized target, and
//! [`redact`] (in `dsn/redact.rs`) scrubs any DSN-looking text (both forms) for the places where
//! foreign text (a driver error, a config echo) could carry one.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

mod redact;
pub use redact::redact;
pub(crate) use redact::url_for_message;

/// Default PostgreSQL port, as libpq.
pub(crate) const DEFAULT_PORT: u16 = 5432;
/// Unix socket directory Debian's libpq uses when a DSN names no host.
pub(crate) const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// How TLS is negotiated, following libpq's `sslmode` semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// Try TLS without verifying the certificate, fall back to plain (libpq's default).
    Prefer,
    /// TLS required, certificate not verified (libpq semantics, not tokio-postgres').
    Require,
    /// TLS required, chain verified against the root certificates, host name not checked.
    VerifyCa,
    /// TLS required, chain and host name verified.
    VerifyFull,
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name or IP literal, resolved by the agent with a bound.
    Tcp(String),
    /// A Unix socket directory.
    Socket(PathBuf),
}

/// Which server of a multi-host DSN a session may use (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSessionAttrs {
    #[default]
    Any,
    /// `transaction_read_only` is off.
    ReadWrite,
    /// `transaction_read_only` is on.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery.
    Standby,
    /// A standby if any host is one, else any.
    PreferStandby,
}

/// SCRAM channel binding (libpq's `channel_binding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBinding {
    Disable,
    #[default]
    Prefer,
    Require,
}

/// One server of a DSN: where it is, and the address to use instead of resolving its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub(crate) host: Host,
    pub(crate) port: u16,
    /// libpq's `hostaddr`: connect here; the host name still names the server for TLS.
    pub(crate) hostaddr: Option<IpAddr>,
}

/// A parsed, validated connection string. Never prints its password.
#[derive(Clone)]
pub struct Dsn {
    /// The first (often the only) server.
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) hostaddr: Option<IpAddr>,
    /// The servers after the first of a multi-host DSN, tried in order.
    pub(crate) more_hosts: Vec<Endpoint>,
    pub user: String,
    password: Option<String>,
    pub(crate) dbname: String,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: Option<PathBuf>,
    /// Client certificate and its key (certificate authentication).
    pub(crate) sslcert: Option<PathBuf>,
    pub(crate) sslkey: Option<PathBuf>,
    pub(crate) target_session_attrs: TargetSessionAttrs,
    pub(crate) channel_binding: ChannelBinding,
    pub(crate) connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
    /// Valid libpq parameters the string sets that the agent's connection does not honour
    /// (names from the agent's own list only, never the values): for one warning.
    pub(crate) ignored: Vec<&'static str>,
}

/// Why a DSN was rejected. Messages never quote the input: an unparsed DSN may hold the
/// password anywhere (a missing scheme, a pasted JSON value, a stray space), so an error names
/// the problem and the character position (1-based, in the value as given), and echoes only
/// names from the agent's own lists (a known scheme, a known parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("is empty")]
    Empty,
    #[error(
        "the password contains an unencoded '{0}': percent-encode it ('@' as %40, '/' as %2F, ':' as %3A, '#' as %23, '?' as %3F)"
    )]
    UnencodedInPassword(char),
    #[error("the user name contains an unencoded '{0}': percent-encode it")]
    UnencodedInUser(char),
    #[error(
        "has no scheme: the URL form starts with postgresql:// (postgresql://user:password@host:5432/dbname); the key=value form is host=... user=... password=..."
    )]
    MissingScheme,
    #[error(
        "is wrapped in quotes or JSON: give the bare connection string (postgresql://... or host=... user=...)"
    )]
    Wrapped,
    #[error(
        "the scheme '{0}' must be followed by '://' (postgresql://user:password@host:5432/dbname)"
    )]
    BrokenScheme(&'static str),
    #[error("scheme must be postgresql:// or postgres:// (found {0})")]
    Scheme(&'static str),
    #[error("the port at character {0} is not a number from 1 to 65535")]
    Port(usize),
    #[error(
        "invalid percent-encoding at character {0}: '%' must be followed by two hex digits of UTF-8 (write a literal '%' as %25)"
    )]
    Encoding(usize),
    #[error("unknown parameter at character {position}{}", suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownParam {
        position: usize,
        suggestion: Option<&'static str>,
    },
    #[error("parameter '{key}' has an invalid value at character {position} (expected {expected})")]
    BadValue {
        key: &'static str,
        position: usize,
        expected: &'static str,
    },
    #[error(
        "the {what} list at character {position} has {found} entries for {hosts} hosts (give one, or one per host)"
    )]
    ListCount {
        what: &'static str,
        position: usize,
        found: usize,
        hosts: usize,
    },
    #[error("malformed at character {position}: {why}")]
    Malformed { position: usize, why: &'static str },
}

/// SQLAlchemy URL schemes of libpq-compatible drivers: the same URL after the `+driver`.
const SQLALCHEMY_SCHEMES: [&str; 3] = [
    "postgresql+psycopg://",
    "postgresql+psycopg2://",
    "postgresql+asyncpg://",
];

/// Schemes people paste by mistake: the only scheme text an error may show.
const KNOWN_SCHEMES: [(&str, &str); 9] = [
    (
        "jdbc:postgresql",
        "'jdbc:postgresql' (JDBC's; write postgresql://)",
    ),
    ("mysql", "'mysql'"),
    ("mariadb", "'mariadb'"),
    ("sqlite", "'sqlite'"),
    ("redis", "'redis'"),
    ("rediss", "'rediss'"),
    ("mongodb", "'mongodb'"),
    ("http", "'http'"),
    ("https", "'https'"),
];

/// The parameters the agent honours (libpq names).
const HONOURED_PARAMS: [&str; 15] = [
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "channel_binding",
    // SQLAlchemy's asyncpg dialect: `?ssl=require` is its sslmode.
    "ssl",
];

/// Valid libpq parameters the monitoring connection does not honour: accepted, named in one
/// warning. Some the agent does its own way (keepalives, `tcp_user_timeout`, its own
/// `application_name`, no startup `options` so that a pooler accepts the session), some it
/// cannot (a service file, GSSAPI, an encrypted key).
const IGNORED_PARAMS: [&str; 30] = [
    "options",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "client_encoding",
    "fallback_application_name",
    "service",
    "passfile",
    "load_balance_hosts",
    "sslnegotiation",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslkeylogfile",
    "requirepeer",
    "require_auth",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "replication",
    "min_protocol_version",
    "max_protocol_version",
];

/// Every parameter name the agent knows: the only parameter names an error may show.
fn known_params() -> impl Iterator<Item = &'static str> {
    HONOURED_PARAMS.iter().chain(IGNORED_PARAMS.iter()).copied()
}

/// 1-based character position of `sub` (a subslice of `full`, or its end) in `full`.
fn position(full: &str, sub: &str) -> usize {
    let off = (sub.as_ptr() as usize)
        .saturating_sub(full.as_ptr() as usize)
        .min(full.len());
    full.char_indices().take_while(|(i, _)| *i < off).count() + 1
}

/// 1-based character position of byte offset `off` in `full`.
fn position_at(full: &str, off: usize) -> usize {
    full.char_indices().take_while(|(i, _)| *i < off).count() + 1
}

/// The known parameter within two edits of an unknown one, if any (to suggest; the unknown
/// name itself is never shown).
fn closest_param(key: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    if key.chars().count() > 40 {
        return None;
    }
    let key = key.to_ascii_lowercase();
    known_params()
        .map(|k| (distance(&key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

impl Dsn {
    /// Parses a libpq connection string in either form, or a SQLAlchemy URL of a
    /// libpq-compatible driver.
    pub fn parse(input: &str) -> Result<Dsn, DsnError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DsnError::Empty);
        }
        if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            return parse_url(input, rest, false);
        }
        for scheme in SQLALCHEMY_SCHEMES {
            if let Some(rest) = s.strip_prefix(scheme) {
                return parse_url(input, rest, scheme.contains("asyncpg"));
            }
        }
        // A JSON value or a quoted string pasted whole (a key=value DSN starts with a key).
        if s.starts_with(['{', '[', '"', '\'', '`']) {
            return Err(DsnError::Wrapped);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            let known = KNOWN_SCHEMES
                .iter()
                .find(|(k, _)| scheme.eq_ignore_ascii_case(k))
                .map(|(_, shown)| *shown);
            return Err(match known {
                Some(shown) => DsnError::Scheme(shown),
                None if ["postgresql", "postgres"]
                    .iter()
                    .any(|p| scheme.eq_ignore_ascii_case(p)) =>
                {
                    DsnError::Scheme("the scheme in upper case (write postgresql://)")
                }
                None if scheme.to_ascii_lowercase().starts_with("postgresql+") => DsnError::Scheme(
                    "a SQLAlchemy driver that is not libpq's (write postgresql://, postgresql+psycopg:// or postgresql+asyncpg://)",
                ),
                None => DsnError::Scheme("an unknown scheme"),
            });
        }
        // `postgresql:/...`, `postgresql//...`, `postgres:...`: the scheme, mistyped.
        for scheme in ["postgresql", "postgres"] {
            if s.len() >= scheme.len()
                && s.is_char_boundary(scheme.len())
                && s[..scheme.len()].eq_ignore_ascii_case(scheme)
                && s[scheme.len()..].starts_with([':', '/'])
            {
                return Err(DsnError::BrokenScheme(scheme));
            }
        }
        // `user:password@host/db` (a URL without its scheme, a common paste), or anything whose
        // first key is no identifier: the key=value form cannot start like that.
        let first_key = s
            .split(|c: char| c == '=' || c.is_whitespace())
            .next()
            .unwrap_or("");
        if first_key.contains(['@', ':', '/']) {
            return Err(DsnError::MissingScheme);
        }
        parse_kv(input, s)
    }

    /// The password, for the connector only.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Every server, in the order they are tried.
    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        let mut all = vec![Endpoint {
            host: self.host.clone(),
            port: self.port,
            hostaddr: self.hostaddr,
        }];
        all.extend(self.more_hosts.iter().cloned());
        all
    }

    /// `host:port/dbname` (`a:1,b:2/dbname` for several hosts): the one form of this DSN that
    /// may be shown anywhere.
    pub fn target(&self) -> String {
        let hosts = self
            .endpoints()
            .iter()
            .map(Endpoint::host_port)
            .collect::<Vec<_>>()
            .join(",");
        format!("{hosts}/{}", self.dbname)
    }

    /// The URL form with the password replaced by `****`, for `--print-config`.
    pub fn redacted_url(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (u, Some(_)) => format!("{u}:****@"),
            (u, None) if !u.is_empty() => format!("{u}@"),
            _ => String::new(),
        };
        let endpoints = self.endpoints();
        let sockets = endpoints.iter().any(|e| matches!(e.host, Host::Socket(_)));
        let host = if sockets {
            String::new()
        } else {
            endpoints
                .iter()
                .map(Endpoint::host_port)
                .collect::<Vec<_>>()
                .join(",")
        };
        let kebab = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        let mut params = vec![format!(
            "sslmode={}",
            kebab(serde_json::to_value(self.sslmode).unwrap_or_default())
        )];
        if sockets {
            let list = |f: &dyn Fn(&Endpoint) -> String| {
                endpoints.iter().map(f).collect::<Vec<_>>().join(",")
            };
            params.push(format!(
                "host={}",
                list(&|e| match &e.host {
                    Host::Tcp(h) => h.clone(),
                    Host::Socket(p) => p.display().to_string(),
                })
            ));
            params.push(format!("port={}", list(&|e| e.port.to_string())));
        }
        if endpoints.iter().any(|e| e.hostaddr.is_some()) {
            let addrs = endpoints
                .iter()
                .map(|e| e.hostaddr.map(|a| a.to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",");
            params.push(format!("hostaddr={addrs}"));
        }
        for (key, path) in [
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ] {
            if let Some(p) = path {
                params.push(format!("{key}={}", p.display()));
            }
        }
        if self.target_session_attrs != TargetSessionAttrs::Any {
            params.push(format!(
                "target_session_attrs={}",
                kebab(serde_json::to_value(self.target_session_attrs).unwrap_or_default())
            ));
        }
        if self.channel_binding != ChannelBinding::Prefer {
            params.push(format!(
                "channel_binding={}",
                kebab(serde_json::to_value(self.channel_binding).unwrap_or_default())
            ));
        }
        format!(
            "postgresql://{auth}{host}/{}?{}",
            self.dbname,
            params.join("&")
        )
    }
}

impl Endpoint {
    /// `host:port` (`[v6]:port`, `/socket/dir:port`).
    pub(crate) fn host_port(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Socket(p) => format!("{}:{}", p.display(), self.port),
        }
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.target())
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target())
    }
}

// === URL form ===

fn parse_url(full: &str, rest: &str, asyncpg: bool) -> Result<Dsn, DsnError> {
    // libpq URLs have no fragment: a '#' can only be an unencoded character of the password.
    if rest.contains('#') {
        return Err(DsnError::UnencodedInPassword('#'));
    }
    // Split off the query: a '?' in the password shows up as an '@' after the first '?'.
    let (main, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if query.is_some_and(|q| q.contains('@')) && !main.contains('@') {
        return Err(DsnError::UnencodedInPassword('?'));
    }
    // The userinfo ends at the LAST '@': a password with an unencoded '@' shows up as an '@'
    // before it, and one with an unencoded '/' as a '/' before it.
    let (userinfo, hostpart) = match main.rfind('@') {
        Some(i) => (Some(&main[..i]), &main[i + 1..]),
        None => (None, main),
    };
    let mut parts = empty_parts(asyncpg);
    if let Some(ui) = userinfo {
        let (user, pass) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        for bad in ['@', '/'] {
            if user.contains(bad) {
                return Err(DsnError::UnencodedInUser(bad));
            }
        }
        if let Some(p) = pass {
            for bad in ['@', '/', ':'] {
                if p.contains(bad) {
                    return Err(DsnError::UnencodedInPassword(bad));
                }
            }
            decode(full, p)?;
        }
        decode(full, user)?;
    }
    let (hostport, path) = match hostpart.find('/') {
        Some(i) => (&hostpart[..i], &hostpart[i..]),
        None => (hostpart, ""),
    };
    // `a:1,b:2`: libpq's host list, each with its own port (an empty one is the default).
    let (mut url_hosts, mut url_ports) = (Vec::new(), Vec::new());
    if !hostport.is_empty() {
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for entry in hostport.split(',') {
            let (h, p) = split_host_port(full, entry)?;
            hosts.push((decode(full, h)?, position(full, h)));
            ports.push(match p {
                Some(p) => (p.to_owned(), position(full, p)),
                None => (String::new(), position(full, entry)),
            });
            url_hosts.push(h);
            url_ports.push(p.unwrap_or(""));
        }
        parts.hosts = Some(hosts);
        if ports.iter().any(|(p, _)| !p.is_empty()) {
            parts.ports = Some(ports);
        }
    }
    decode(full, path.strip_prefix('/').unwrap_or(path))?;
    let mut kept = Kept::default();
    let (mut query_hosts, mut query_ports) = (None, None);
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let at = (position(full, k), position(full, v));
            let key = decode(full, k)?;
            if apply_param(&mut parts, &key, &decode(full, v)?, at)? {
                match key.as_str() {
                    "host" => query_hosts = Some(v),
                    "port" => query_ports = Some(v),
                    _ => kept.push(&key, format!("{k}={v}")),
                }
            }
        }
    }
    // libpq: a host or port list in the query replaces the URL's. tokio-postgres reads a
    // query's `host` as one name and appends a query's ports to the URL's, so the lists the
    // libpq way go to the library in the URL's own `host:port,...` form.
    let merged;
    let mut authority = hostport;
    if query_hosts.is_some() || query_ports.is_some() {
        let hosts: Vec<&str> = query_hosts.map_or(url_hosts, |h| h.split(',').collect());
        let ports: Vec<&str> = query_ports.map_or(url_ports, |p| p.split(',').collect());
        merged = (0..hosts.len().max(ports.len()))
            .map(|i| {
                let host = hosts.get(i).copied().unwrap_or("");
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    // A socket directory, or a stray '@' or '?', must not end the authority.
                    host.replace('/', "%2F")
                        .replace('@', "%40")
                        .replace('?', "%3F")
                };
                let port = match ports.as_slice() {
                    [one] => one,
                    all => all.get(i).copied().unwrap_or(""),
                };
                if port.is_empty() {
                    host
                } else {
                    format!("{host}:{port}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        authority = &merged;
    }
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let query = if kept.0.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let library = format!("postgresql://{userinfo}{authority}{path}{query}");
    finish(parts, &library)
}

/// Splits one entry of a URL's host list as tokio-postgres does (the first ':' starts the
/// port; an IPv6 literal is bracketed), naming a bad entry by position.
fn split_host_port<'a>(full: &str, hp: &'a str) -> Result<(&'a str, Option<&'a str>), DsnError> {
    if let Some(rest) = hp.strip_prefix('[') {
        let end = rest.find(']').ok_or(DsnError::Malformed {
            position: position(full, hp),
            why: "'[' without a closing ']'",
        })?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return Err(DsnError::Malformed {
                position: position(full, after),
                why: "']' must be followed by ':port' or nothing",
            });
        }
        return Ok((host, after.strip_prefix(':').filter(|p| !p.is_empty())));
    }
    Ok(match hp.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hp, None),
    })
}

// === key=value form ===

fn parse_kv(full: &str, s: &str) -> Result<Dsn, DsnError> {
    let base = position(full, s) - 1;
    let pos = |i: usize| base + position_at(s, i);
    let mut parts = empty_parts(false);
    let mut kept = Kept::default();
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(key_at, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        skip_ws(&mut chars);
        if !matches!(chars.next(), Some((_, '='))) {
            return Err(DsnError::Malformed {
                position: pos(key_at),
                why: "expected key=value (quote a value with spaces: password='a b')",
            });
        }
        skip_ws(&mut chars);
        let value_at = chars.peek().map(|(i, _)| *i).unwrap_or(s.len());
        let mut value = String::new();
        if matches!(chars.peek(), Some((_, '\''))) {
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(DsnError::Malformed {
                    position: pos(value_at),
                    why: "a quoted value has no closing quote",
                });
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map(|(i, _)| *i).unwrap_or(s.len());
        if apply_param(&mut parts, &key, &value, (pos(key_at), pos(value_at)))? {
            // The library's own text of the pair; an empty value quoted, as libpq reads
            // `key=` (tokio-postgres refuses it unquoted).
            let text = if value.is_empty() {
                format!("{key}=''")
            } else {
                s[key_at..end].to_owned()
            };
            kept.push(&key, text);
        }
    }
    finish(parts, &kept.join(" "))
}

// === shared ===

/// The parameters handed to tokio-postgres, as their text in the input. A repeated key
/// replaces the earlier one (libpq: the last wins; tokio-postgres would append to a host or
/// port list).
#[derive(Default)]
struct Kept(Vec<(String, String)>);

impl Kept {
    fn push(&mut self, key: &str, text: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), text));
    }

    fn join(&self, sep: &str) -> String {
        self.0
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// A comma-separated libpq list (hosts, ports, hostaddrs), each entry with the character
/// position where it starts: checked here so that an error can point at it.
type List = Vec<(String, usize)>;

/// What a scan gathers: the agent's own parameters, and the lists to check by position.
struct Parts {
    dsn: Dsn,
    hosts: Option<List>,
    ports: Option<List>,
    hostaddrs: Option<List>,
    /// SQLAlchemy's asyncpg dialect: its `ssl=` query parameter is the sslmode.
    asyncpg: bool,
}

fn empty_parts(asyncpg: bool) -> Parts {
    Parts {
        dsn: Dsn {
            host: Host::Socket(DEFAULT_SOCKET_DIR.into()),
            port: DEFAULT_PORT,
            hostaddr: None,
            more_hosts: Vec::new(),
            user: String::new(),
            password: None,
            dbname: String::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            target_session_attrs: TargetSessionAttrs::Any,
            channel_binding: ChannelBinding::Prefer,
            connect_timeout: None,
            application_name: None,
            ignored: Vec::new(),
        },
        hosts: None,
        ports: None,
        hostaddrs: None,
        asyncpg,
    }
}

/// Splits a list value that starts at character `at`.
fn split_list(value: &str, at: usize) -> List {
    let mut out = Vec::new();
    let mut offset = 0;
    for part in value.split(',') {
        out.push((part.to_owned(), at + offset));
        offset += part.chars().count() + 1;
    }
    out
}

/// Checks the host, hostaddr and port lists as libpq does (one port for every host or one per
/// host, an empty entry being the default; one hostaddr per host; hostaddrs alone are the
/// hosts), then lets tokio-postgres read `library` (the parameters it shares with libpq) and
/// takes the servers, user, password, dbname, application_name and channel_binding from it.
fn finish(parts: Parts, library: &str) -> Result<Dsn, DsnError> {
    let Parts {
        mut dsn,
        hosts,
        ports,
        hostaddrs,
        ..
    } = parts;
    let hosts = hosts.unwrap_or_default();
    let hostaddrs = hostaddrs.unwrap_or_default();
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(DsnError::ListCount {
            what: "hostaddr",
            position: hostaddrs[0].1,
            found: hostaddrs.len(),
            hosts: hosts.len(),
        });
    }
    let addrs = hostaddrs
        .into_iter()
        .map(|(a, at)| {
            if a.is_empty() {
                return Ok(None);
            }
            a.parse::<IpAddr>()
                .map(Some)
                .map_err(|_| DsnError::BadValue {
                    key: "hostaddr",
                    position: at,
                    expected: "an IP address, or one per host separated by commas",
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = hosts.len().max(addrs.len()).max(1);
    let ports = ports.unwrap_or_default();
    if ports.len() > 1 && ports.len() != n {
        return Err(DsnError::ListCount {
            what: "port",
            position: ports[0].1,
            found: ports.len(),
            hosts: n,
        });
    }
    if let Some((_, at)) = ports
        .iter()
        .find(|(p, _)| !p.is_empty() && parse_port_value(p).is_none())
    {
        return Err(DsnError::Port(*at));
    }
    // The checks above leave nothing tokio-postgres refuses; if it does, say so without its
    // text (its messages quote values).
    let lib: tokio_postgres::Config = library.parse().map_err(|_| DsnError::Malformed {
        position: 1,
        why: "the PostgreSQL driver does not read it as a connection string",
    })?;
    let lib_ports = lib.get_ports();
    let mut endpoints = (0..n).map(|i| {
        let hostaddr = addrs.get(i).copied().flatten();
        let host = match lib.get_hosts().get(i) {
            Some(tokio_postgres::config::Host::Unix(p)) => Host::Socket(p.clone()),
            Some(tokio_postgres::config::Host::Tcp(h)) if !h.is_empty() => Host::Tcp(h.clone()),
            _ => match hostaddr {
                Some(a) => Host::Tcp(a.to_string()),
                None => Host::Socket(DEFAULT_SOCKET_DIR.into()),
            },
        };
        let port = lib_ports
            .get(i)
            .or(lib_ports.first())
            .copied()
            .unwrap_or(DEFAULT_PORT);
        Endpoint {
            host,
            port,
            hostaddr,
        }
    });
    if let Some(first) = endpoints.next() {
        dsn.host = first.host;
        dsn.port = first.port;
        dsn.hostaddr = first.hostaddr;
    }
    dsn.more_hosts = endpoints.collect();
    dsn.user = match lib.get_user().filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        // libpq defaults the user to the OS user; the agent needs a name it can show.
        None => std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_owned()),
    };
    dsn.password = lib
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    dsn.dbname = match lib.get_dbname().filter(|d| !d.is_empty()) {
        Some(d) => d.to_owned(),
        None => dsn.user.clone(),
    };
    dsn.application_name = lib.get_application_name().map(str::to_owned);
    dsn.channel_binding = match lib.get_channel_binding() {
        tokio_postgres::config::ChannelBinding::Disable => ChannelBinding::Disable,
        tokio_postgres::config::ChannelBinding::Require => ChannelBinding::Require,
        _ => ChannelBinding::Prefer,
    };
    Ok(dsn)
}

fn parse_sslmode(value: &str) -> Option<SslMode> {
    Some(match value {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        _ => return None,
    })
}

/// Applies one parameter; `at` is the character position of its key and of its value. True
/// when tokio-postgres reads it (the parameters libpq and the library share), false when it
/// is the agent's own (libpq's sslmode semantics, certificates, hostaddr, the session
/// attributes tokio-postgres lacks, connect_timeout's libpq rounding, the ignored keys).
fn apply_param(
    parts: &mut Parts,
    key: &str,
    value: &str,
    at: (usize, usize),
) -> Result<bool, DsnError> {
    let bad = |key: &'static str, expected: &'static str| DsnError::BadValue {
        key,
        position: at.1,
        expected,
    };
    let dsn = &mut parts.dsn;
    match key {
        "host" => parts.hosts = Some(split_list(value, at.1)),
        "port" => parts.ports = Some(split_list(value, at.1)),
        "user" | "password" | "dbname" | "application_name" => {}
        "channel_binding" => {
            if !matches!(value, "disable" | "prefer" | "require") {
                return Err(bad("channel_binding", "disable, prefer or require"));
            }
        }
        "hostaddr" => {
            parts.hostaddrs = Some(split_list(value, at.1));
            return Ok(false);
        }
        "sslmode" => {
            dsn.sslmode = parse_sslmode(value).ok_or(bad(
                "sslmode",
                "disable, allow, prefer, require, verify-ca or verify-full",
            ))?;
            return Ok(false);
        }
        "ssl" if parts.asyncpg => {
            dsn.sslmode = match value {
                "true" => SslMode::Require,
                "false" => SslMode::Disable,
                v => parse_sslmode(v).ok_or(bad(
                    "ssl",
                    "disable, allow, prefer, require, verify-ca or verify-full",
                ))?,
            };
            return Ok(false);
        }
        // PostgreSQL 16's `sslrootcert=system` is the system store, which is the default here.
        "sslrootcert" => {
            dsn.sslrootcert = (value != "system").then(|| value.into());
            return Ok(false);
        }
        "sslcert" => {
            dsn.sslcert = (!value.is_empty()).then(|| value.into());
            return Ok(false);
        }
        "sslkey" => {
            dsn.sslkey = (!value.is_empty()).then(|| value.into());
            return Ok(false);
        }
        "target_session_attrs" => {
            dsn.target_session_attrs = match value {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                "primary" => TargetSessionAttrs::Primary,
                "standby" => TargetSessionAttrs::Standby,
                "prefer-standby" => TargetSessionAttrs::PreferStandby,
                _ => {
                    return Err(bad(
                        "target_session_attrs",
                        "any, read-write, read-only, primary, standby or prefer-standby",
                    ));
                }
            };
            return Ok(false);
        }
        "connect_timeout" => {
            // libpq: zero or negative waits forever (here: the agent's bound), 1 means 2.
            let secs: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad("connect_timeout", "a number of seconds"))?;
            dsn.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64));
            return Ok(false);
        }
        other => match IGNORED_PARAMS.iter().find(|k| **k == other) {
            Some(known) => {
                if !dsn.ignored.contains(known) {
                    dsn.ignored.push(known);
                }
                return Ok(false);
            }
            None => {
                return Err(DsnError::UnknownParam {
                    position: at.0,
                    suggestion: closest_param(other),
                });
            }
        },
    }
    Ok(true)
}

fn parse_port_value(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|n| *n > 0)
}

/// Percent-decodes one URL part of `full`. As libpq: a '%' not followed by two hex digits is
/// an error (not kept as is), and so is a result that is not UTF-8.
fn decode(full: &str, s: &str) -> Result<String, DsnError> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
            return Err(DsnError::Encoding(position(full, &s[i..])));
        }
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| DsnError::Encoding(position(full, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_parses_and_decodes() {
        let d = Dsn::parse("postgresql://rose:p%40ss%2Fw@db.example:6543/railway?sslmode=require")
            .unwrap();
        assert_eq!(d.host, Host::Tcp("db.example".into()));
        assert_eq!(d.port, 6543);
        assert_eq!(d.user, "rose");
        assert_eq!(d.password(), Some("p@ss/w"));
        assert_eq!(d.dbname, "railway");
        assert_eq!(d.sslmode, SslMode::Require);
        assert_eq!(d.target(), "db.example:6543/railway");
    }

    #[test]
    fn unencoded_at_and_slash_in_password_are_named() {
        assert_eq!(
            Dsn::parse("postgresql://rose:p@ss@host:5432/db").unwrap_err(),
            DsnError::UnencodedInPassword('@')
        );
        assert_eq!(
            Dsn::parse("postgresql://rose:pa/ss@host:5432/db").unwrap_err(),
            DsnError::UnencodedInPassword('/')
        );
        let msg = DsnError::UnencodedInPassword('@').to_string();
        assert!(
            msg.contains("percent-encode") && msg.contains("%40"),
            "{msg}"
        );
    }

    #[test]
    fn kv_form_with_quotes() {
        let d =
            Dsn::parse("host=127.0.0.1 port=5433 user=mon password='a b\\'c' dbname=rose").unwrap();
        assert_eq!(d.password(), Some("a b'c"));
        assert_eq!(d.target(), "127.0.0.1:5433/rose");
    }

    #[test]
    fn socket_host_and_defaults() {
        let d = Dsn::parse("postgresql:///rose?host=/tmp/sock&port=5999").unwrap();
        assert_eq!(d.host, Host::Socket("/tmp/sock".into()));
        assert_eq!(d.port, 5999);
    }

    #[test]
    fn rejects_bad_port_scheme_and_params() {
        assert!(matches!(
            Dsn::parse("postgresql://h:99999/db"),
            Err(DsnError::Port(_))
        ));
        assert!(matches!(
            Dsn::parse("mysql://h/db"),
            Err(DsnError::Scheme(_))
        ));
        assert!(matches!(
            Dsn::parse("postgresql://h/db?frobnicate=1"),
            Err(DsnError::UnknownParam { .. })
        ));
        assert!(matches!(
            Dsn::parse("host=a,b port=1,2,3"),
            Err(DsnError::ListCount { what: "port", .. })
        ));
    }

    #[test]
    fn debug_and_redacted_url_hide_password() {
        let d = Dsn::parse("postgresql://rose:SECRETpw@h/db").unwrap();
        assert!(!format!("{d:?}").contains("SECRETpw"));
        assert!(!d.redacted_url().contains("SECRETpw"));
        assert!(d.redacted_url().contains("rose:****@h:5432"));
    }

    #[test]
    fn malformed_dsns_name_the_problem_never_the_text() {
        let secret = "Zq9-Secret";
        let cases: [(String, DsnError); 10] = [
            (
                format!("rose_monitor:{secret}@host/db"),
                DsnError::MissingScheme,
            ),
            (
                format!("  rose_monitor:{secret}@host:5432/db?sslmode=require"),
                DsnError::MissingScheme,
            ),
            (
                format!("postgresql:/rose_monitor:{secret}@host/db"),
                DsnError::BrokenScheme("postgresql"),
            ),
            (
                format!("postgresql//rose_monitor:{secret}@host/db"),
                DsnError::BrokenScheme("postgresql"),
            ),
            (
                format!("postgres:rose_monitor:{secret}@host/db"),
                DsnError::BrokenScheme("postgres"),
            ),
            (
                format!("postgresql+pg8000://rose_monitor:{secret}@host/db"),
                DsnError::Scheme(
                    "a SQLAlchemy driver that is not libpq's (write postgresql://, postgresql+psycopg:// or postgresql+asyncpg://)",
                ),
            ),
            (
                format!("{secret}://x"),
                DsnError::Scheme("an unknown scheme"),
            ),
            (
                format!("{{\"url\": \"postgresql://rose_monitor:{secret}@h/db\"}}"),
                DsnError::Wrapped,
            ),
            // A port that is really the password (the '@' and host forgotten).
            (
                format!("postgresql://rose_monitor:{secret}"),
                DsnError::Port(27),
            ),
            // Unquoted space in a key=value password: the rest is no key=value pair.
            (
                format!("host=h password=a {secret} user=u"),
                DsnError::Malformed {
                    position: 19,
                    why: "expected key=value (quote a value with spaces: password='a b')",
                },
            ),
        ];
        for (dsn, want) in cases {
            let e = Dsn::parse(&dsn).unwrap_err();
            assert_eq!(e, want, "{dsn}");
            assert!(!e.to_string().contains("Secret"), "{e}");
        }
        // Invalid percent-encoding is an error (libpq), with its position.
        assert_eq!(
            Dsn::parse("postgresql://u:Se%zzcret@h/db").unwrap_err(),
            DsnError::Encoding(18)
        );
        assert_eq!(
            Dsn::parse("postgresql://u:pw%4@h/db").unwrap_err(),
            DsnError::Encoding(18)
        );
        assert_eq!(
            Dsn::parse("postgresql://u:pw%C3%28@h/db").unwrap_err(),
            DsnError::Encoding(16)
        );
        // Unknown parameters and bad values: the position and what is known, not the text.
        let e = Dsn::parse("postgresql://h/db?sslmod=require").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown parameter at character 19 (did you mean 'sslmode'?)"
        );
        let e = Dsn::parse(&format!("host=h sslmode={secret}")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("parameter 'sslmode' has an invalid value at character 16"),
            "{e}"
        );
        let e = Dsn::parse(&format!("host=h {secret}=1")).unwrap_err();
        assert_eq!(e.to_string(), "unknown parameter at character 8");
    }

    #[test]
    fn sqlalchemy_urls_read_as_the_app_reads_them() {
        for scheme in [
            "postgresql+psycopg",
            "postgresql+psycopg2",
            "postgresql+asyncpg",
        ] {
            let d = Dsn::parse(&format!(
                "{scheme}://rose:p%40ss@db.example:6543/rose?sslmode=require"
            ))
            .unwrap();
            assert_eq!(d.target(), "db.example:6543/rose", "{scheme}");
            assert_eq!(d.password(), Some("p@ss"));
            assert_eq!(d.sslmode, SslMode::Require);
        }
        // asyncpg's own spelling of the sslmode, only there.
        let d = Dsn::parse("postgresql+asyncpg://u@h/db?ssl=verify-full").unwrap();
        assert_eq!(d.sslmode, SslMode::VerifyFull);
        assert_eq!(
            Dsn::parse("postgresql+asyncpg://u@h/db?ssl=true")
                .unwrap()
                .sslmode,
            SslMode::Require
        );
        assert!(matches!(
            Dsn::parse("postgresql://u@h/db?ssl=require"),
            Err(DsnError::UnknownParam { .. })
        ));
        // Unencoded characters are caught in these forms too, without echoing.
        let e = Dsn::parse("postgresql+psycopg://u:Se@cret@h/db").unwrap_err();
        assert_eq!(e, DsnError::UnencodedInPassword('@'));
    }

    #[test]
    fn multi_host_lists_in_both_forms() {
        let d = Dsn::parse(
            "postgresql://u:pw@a.example:6001,[::1]:6002,c/db?target_session_attrs=read-write",
        )
        .unwrap();
        let eps = d.endpoints();
        assert_eq!(eps.len(), 3);
        assert_eq!(
            (eps[0].host.clone(), eps[0].port),
            (Host::Tcp("a.example".into()), 6001)
        );
        assert_eq!(
            (eps[1].host.clone(), eps[1].port),
            (Host::Tcp("::1".into()), 6002)
        );
        assert_eq!(
            (eps[2].host.clone(), eps[2].port),
            (Host::Tcp("c".into()), DEFAULT_PORT)
        );
        assert_eq!(d.target(), "a.example:6001,[::1]:6002,c:5432/db");
        assert_eq!(d.target_session_attrs, TargetSessionAttrs::ReadWrite);
        // key=value: one port for every host, or one per host.
        let d = Dsn::parse("host=127.0.0.1,127.0.0.2 port=5433 dbname=x").unwrap();
        assert_eq!(d.target(), "127.0.0.1:5433,127.0.0.2:5433/x");
        let d = Dsn::parse("host=a,/run/pg port=1,2 target_session_attrs=standby").unwrap();
        assert_eq!(d.more_hosts[0].host, Host::Socket("/run/pg".into()));
        assert_eq!(d.more_hosts[0].port, 2);
        assert_eq!(d.target_session_attrs, TargetSessionAttrs::Standby);
        assert!(
            d.redacted_url().contains("host=a,/run/pg&port=1,2"),
            "{}",
            d.redacted_url()
        );
        // The query's port list overrides the URL's.
        let d = Dsn::parse("postgresql://a,b/db?port=7,8").unwrap();
        assert_eq!(d.target(), "a:7,b:8/db");
        // Counts that do not match are named by position, never echoed.
        let e = Dsn::parse("host=a,b,c port=1,2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the port list at character 17 has 2 entries for 3 hosts (give one, or one per host)"
        );
        assert_eq!(
            Dsn::parse("postgresql://a:1,b:Secret/db").unwrap_err(),
            DsnError::Port(20)
        );
        assert!(matches!(
            Dsn::parse("host=a target_session_attrs=leader"),
            Err(DsnError::BadValue {
                key: "target_session_attrs",
                ..
            })
        ));
    }

    #[test]
    fn hostaddr_keeps_the_host_name_for_tls() {
        let d =
            Dsn::parse("host=db.example hostaddr=127.0.0.1 port=6000 sslmode=verify-full").unwrap();
        assert_eq!(d.host, Host::Tcp("db.example".into()));
        assert_eq!(d.hostaddr, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            d.target(),
            "db.example:6000/postgres".replace("postgres", &d.dbname)
        );
        // hostaddr alone is the host.
        let d = Dsn::parse("hostaddr=127.0.0.1,::1 port=1,2").unwrap();
        assert_eq!(d.host, Host::Tcp("127.0.0.1".into()));
        assert_eq!(d.more_hosts[0].hostaddr, Some("::1".parse().unwrap()));
        assert!(matches!(
            Dsn::parse("host=a hostaddr=not-an-ip"),
            Err(DsnError::BadValue {
                key: "hostaddr",
                position: 17,
                ..
            })
        ));
        assert!(matches!(
            Dsn::parse("host=a,b hostaddr=127.0.0.1"),
            Err(DsnError::ListCount {
                what: "hostaddr",
                ..
            })
        ));
    }

    #[test]
    fn honoured_libpq_keys_are_kept() {
        let d = Dsn::parse(
            "host=h sslmode=verify-full sslrootcert=/ca.pem sslcert=/c.pem sslkey=/c.key connect_timeout=7 channel_binding=require",
        )
        .unwrap();
        assert_eq!(d.sslcert, Some("/c.pem".into()));
        assert_eq!(d.sslkey, Some("/c.key".into()));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(d.channel_binding, ChannelBinding::Require);
        assert!(d.ignored.is_empty());
        let r = d.redacted_url();
        assert!(
            r.contains("sslcert=/c.pem") && r.contains("channel_binding=require"),
            "{r}"
        );
        // libpq: 1 s means 2, zero and negative mean no bound of the DSN's own.
        assert_eq!(
            Dsn::parse("host=h connect_timeout=1")
                .unwrap()
                .connect_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            Dsn::parse("host=h connect_timeout=-1")
                .unwrap()
                .connect_timeout,
            None
        );
        assert_eq!(
            Dsn::parse("host=h sslrootcert=system").unwrap().sslrootcert,
            None
        );
        assert!(matches!(
            Dsn::parse("host=h channel_binding=always"),
            Err(DsnError::BadValue {
                key: "channel_binding",
                ..
            })
        ));
    }

    #[test]
    fn other_valid_libpq_keys_are_accepted_and_named_not_refused() {
        let secret = "Zq9-Secret";
        let d = Dsn::parse(&format!(
            "postgresql://u@h/db?service={secret}&tcp_user_timeout=1000&load_balance_hosts=random&sslnegotiation=direct&sslpassword={secret}&keepalives=1&tcp_user_timeout=5"
        ))
        .unwrap();
        assert_eq!(
            d.ignored,
            vec![
                "service",
                "tcp_user_timeout",
                "load_balance_hosts",
                "sslnegotiation",
                "sslpassword",
                "keepalives"
            ]
        );
        assert!(!format!("{:?} {}", d.ignored, d.redacted_url()).contains(secret));
        // A misspelt one is still an error, with a suggestion from the agent's own list.
        let e = Dsn::parse("host=h tcp_user_timout=5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown parameter at character 8 (did you mean 'tcp_user_timeout'?)"
        );
    }

    /// The library's own parser reads the shared parameters the same way, so the two cannot
    /// drift unnoticed (tokio-postgres knows neither libpq's sslmode semantics nor sslrootcert,
    /// so those stay here).
    #[test]
    fn agrees_with_tokio_postgres_on_the_shared_parameters() {
        use tokio_postgres::config::Host as TpHost;
        for text in [
            "postgresql://rose:p%40ss@db.example:6543/railway",
            "postgresql://u:pw@a:1,b:2/db",
            "postgresql://u@[::1]:5433/db",
            "host=a,b port=7,8 user=u password='x y' dbname=d",
            "host=/run/pg port=5999 user=u dbname=d",
            "host=h user=u dbname=d target_session_attrs=read-write connect_timeout=9",
            "postgresql://u@%2Frun%2Fpg:5999/d",
            "postgresql://u:@h:/d?application_name=a%20b&channel_binding=require",
            "postgresql://u:pw@h,[::1]:6,i:7/d?channel_binding=disable",
            "host=h user=u password='' dbname=d application_name='x y' channel_binding=disable",
            "host=a,/run/pg,c port=1,,3 user=u dbname=d",
            "user=u\tdbname = d  host=h password=a\\ b",
        ] {
            let ours = Dsn::parse(text).unwrap();
            let theirs: tokio_postgres::Config = text.parse().unwrap();
            let hosts: Vec<Host> = theirs
                .get_hosts()
                .iter()
                .map(|h| match h {
                    TpHost::Tcp(n) => Host::Tcp(n.clone()),
                    TpHost::Unix(p) => Host::Socket(p.clone()),
                })
                .collect();
            let eps = ours.endpoints();
            assert_eq!(
                eps.iter().map(|e| e.host.clone()).collect::<Vec<_>>(),
                hosts,
                "{text}"
            );
            let ports = theirs.get_ports();
            for (i, e) in eps.iter().enumerate() {
                let p = ports
                    .get(i)
                    .or(ports.first())
                    .copied()
                    .unwrap_or(DEFAULT_PORT);
                assert_eq!(e.port, p, "{text}");
            }
            assert_eq!(Some(ours.user.as_str()), theirs.get_user(), "{text}");
            assert_eq!(Some(ours.dbname.as_str()), theirs.get_dbname(), "{text}");
            assert_eq!(
                ours.password().map(str::as_bytes),
                theirs.get_password(),
                "{text}"
            );
            assert_eq!(
                ours.connect_timeout,
                theirs.get_connect_timeout().copied(),
                "{text}"
            );
            assert_eq!(
                ours.application_name.as_deref(),
                theirs.get_application_name(),
                "{text}"
            );
            assert_eq!(
                format!("{:?}", ours.channel_binding),
                format!("{:?}", theirs.get_channel_binding()),
                "{text}"
            );
        }
    }

    /// Where tokio-postgres reads a string otherwise than libpq, the agent keeps libpq's
    /// reading (it promises to read `DATABASE_URL` as the app does): a query's host list is a
    /// list, a query's ports replace the URL's, the last of a repeated key wins.
    #[test]
    fn keeps_libpq_semantics_where_the_library_differs() {
        let d = Dsn::parse("postgresql:///db?host=a,b&port=7").unwrap();
        assert_eq!(d.target(), "a:7,b:7/db");
        let d = Dsn::parse("postgresql://x:1,y:2/db?host=a,%2Frun%2Fpg").unwrap();
        assert_eq!(d.target(), "a:1,/run/pg:2/db");
        let d = Dsn::parse("postgresql://a,[::1]/db?port=7,8").unwrap();
        assert_eq!(d.target(), "a:7,[::1]:8/db");
        let d = Dsn::parse("host=a host=b port=1 port=2 user=u user=v").unwrap();
        assert_eq!((d.target().as_str(), d.user.as_str()), ("b:2/v", "v"));
        // An empty value is libpq's "unset", which tokio-postgres refuses unquoted.
        let d = Dsn::parse("host=h user=u password=").unwrap();
        assert_eq!(Dsn::parse("host=h port=").unwrap().port, DEFAULT_PORT);
        assert_eq!((d.port, d.password()), (DEFAULT_PORT, Some("")));
        // libpq's own connect_timeout rounding and session attributes stay the agent's.
        let d = Dsn::parse("host=h connect_timeout=1 target_session_attrs=standby").unwrap();
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(d.target_session_attrs, TargetSessionAttrs::Standby);
        // A bracketed host with junk after it is named by position, as the library refuses it.
        assert!(matches!(
            Dsn::parse("postgresql://[::1]x/db"),
            Err(DsnError::Malformed { position: 19, .. })
        ));
    }
}
