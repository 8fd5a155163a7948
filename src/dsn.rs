//! PostgreSQL connection strings: parsing both libpq forms (URL and `key=value`), catching the
//! classic mistakes (an unencoded `@` or `/` in the password) with a message that says how to fix
//! them, and building the sanitized target (`host:port/dbname`) that is the only form of a DSN
//! that may reach a log line, a metric, a finding or a report.
//!
//! The password lives only inside [`Dsn`]; its `Debug` prints the sanitized target, and
//! [`redact`] scrubs any DSN-looking text (both forms) for the places where foreign text (a
//! driver error, a config echo) could carry one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// Default PostgreSQL port, as libpq.
pub const DEFAULT_PORT: u16 = 5432;
/// Unix socket directory Debian's libpq uses when a DSN names no host.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

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

/// A parsed, validated connection string. Never prints its password.
#[derive(Clone)]
pub struct Dsn {
    pub host: Host,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
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
    #[error("names several hosts; the agent watches one server: give one DSN per agent")]
    MultiHost,
    #[error("malformed at character {position}: {why}")]
    Malformed { position: usize, why: &'static str },
}

/// Schemes people paste by mistake: the only scheme text an error may show.
const KNOWN_SCHEMES: [(&str, &str); 12] = [
    (
        "postgresql+psycopg",
        "'postgresql+psycopg' (SQLAlchemy's; write postgresql://)",
    ),
    (
        "postgresql+psycopg2",
        "'postgresql+psycopg2' (SQLAlchemy's; write postgresql://)",
    ),
    (
        "postgresql+asyncpg",
        "'postgresql+asyncpg' (SQLAlchemy's; write postgresql://)",
    ),
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

/// The parameters the agent accepts (libpq names): the only parameter names an error may show.
const KNOWN_PARAMS: [&str; 20] = [
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "gssencmode",
    "channel_binding",
    "client_encoding",
    "fallback_application_name",
];

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
    KNOWN_PARAMS
        .iter()
        .map(|k| (distance(&key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

impl Dsn {
    /// Parses a libpq connection string in either form.
    pub fn parse(input: &str) -> Result<Dsn, DsnError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DsnError::Empty);
        }
        if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            return parse_url(input, rest);
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
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `host:port/dbname`: the one form of this DSN that may be shown anywhere.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}/{}", self.port, self.dbname),
            Host::Tcp(h) => format!("{h}:{}/{}", self.port, self.dbname),
            Host::Socket(p) => format!("{}:{}/{}", p.display(), self.port, self.dbname),
        }
    }

    /// The URL form with the password replaced by `****`, for `--print-config`.
    pub fn redacted_url(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (u, Some(_)) => format!("{u}:****@"),
            (u, None) if !u.is_empty() => format!("{u}@"),
            _ => String::new(),
        };
        let host = match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Socket(_) => String::new(),
        };
        let mut params = vec![format!(
            "sslmode={}",
            serde_json::to_value(self.sslmode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )];
        if let Host::Socket(p) = &self.host {
            params.push(format!("host={}", p.display()));
            params.push(format!("port={}", self.port));
        }
        format!(
            "postgresql://{auth}{host}/{}?{}",
            self.dbname,
            params.join("&")
        )
    }

    /// The same server with other credentials/database kept: used for the replica.
    pub fn with_application_name(mut self, name: &str) -> Dsn {
        self.application_name = Some(name.to_owned());
        self
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

fn parse_url(full: &str, rest: &str) -> Result<Dsn, DsnError> {
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
    let mut dsn = empty_dsn();
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
        }
        dsn.user = decode(full, user)?;
        dsn.password = pass.map(|p| decode(full, p)).transpose()?;
    }
    let (hostport, db) = match hostpart.find('/') {
        Some(i) => (&hostpart[..i], Some(&hostpart[i + 1..])),
        None => (hostpart, None),
    };
    if hostport.contains(',') {
        return Err(DsnError::MultiHost);
    }
    if !hostport.is_empty() {
        let (h, p) = split_host_port(full, hostport)?;
        let h = decode(full, h)?;
        dsn.host = if h.starts_with('/') {
            Host::Socket(h.into())
        } else {
            Host::Tcp(h)
        };
        if let Some(p) = p {
            dsn.port = parse_port(full, p)?;
        }
    }
    if let Some(db) = db.filter(|d| !d.is_empty()) {
        dsn.dbname = decode(full, db)?;
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let at = (position(full, k), position(full, v));
            apply_param(&mut dsn, &decode(full, k)?, &decode(full, v)?, at)?;
        }
    }
    finish(dsn)
}

fn split_host_port<'a>(full: &str, hp: &'a str) -> Result<(&'a str, Option<&'a str>), DsnError> {
    if let Some(rest) = hp.strip_prefix('[') {
        let end = rest.find(']').ok_or(DsnError::Malformed {
            position: position(full, hp),
            why: "'[' without a closing ']'",
        })?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        return Ok((host, after.strip_prefix(':').filter(|p| !p.is_empty())));
    }
    Ok(match hp.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hp, None),
    })
}

// === key=value form ===

fn parse_kv(full: &str, s: &str) -> Result<Dsn, DsnError> {
    let base = position(full, s) - 1;
    let pos = |i: usize| base + position_at(s, i);
    let mut dsn = empty_dsn();
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
        match key.as_str() {
            "host" => {
                if value.contains(',') {
                    return Err(DsnError::MultiHost);
                }
                dsn.host = if value.starts_with('/') {
                    Host::Socket(value.into())
                } else {
                    Host::Tcp(value)
                }
            }
            "hostaddr" => dsn.host = Host::Tcp(value),
            "port" => {
                dsn.port = parse_port_value(&value).ok_or(DsnError::Port(pos(value_at)))?;
            }
            "user" => dsn.user = value,
            "password" => dsn.password = Some(value),
            "dbname" => dsn.dbname = value,
            _ => apply_param(&mut dsn, &key, &value, (pos(key_at), pos(value_at)))?,
        }
    }
    finish(dsn)
}

// === shared ===

fn empty_dsn() -> Dsn {
    Dsn {
        host: Host::Socket(DEFAULT_SOCKET_DIR.into()),
        port: DEFAULT_PORT,
        user: String::new(),
        password: None,
        dbname: String::new(),
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        connect_timeout: None,
        application_name: None,
    }
}

fn finish(mut dsn: Dsn) -> Result<Dsn, DsnError> {
    if dsn.user.is_empty() {
        // libpq defaults the user to the OS user; the agent needs a name it can show.
        dsn.user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_owned());
    }
    if dsn.dbname.is_empty() {
        dsn.dbname = dsn.user.clone();
    }
    Ok(dsn)
}

/// Applies one parameter; `at` is the character position of its key and of its value.
fn apply_param(dsn: &mut Dsn, key: &str, value: &str, at: (usize, usize)) -> Result<(), DsnError> {
    let bad = |key: &'static str, expected: &'static str| DsnError::BadValue {
        key,
        position: at.1,
        expected,
    };
    match key {
        "host" => {
            if value.contains(',') {
                return Err(DsnError::MultiHost);
            }
            dsn.host = if value.starts_with('/') {
                Host::Socket(value.into())
            } else {
                Host::Tcp(value.to_owned())
            };
        }
        "port" => dsn.port = parse_port_value(value).ok_or(DsnError::Port(at.1))?,
        "user" => dsn.user = value.to_owned(),
        "password" => dsn.password = Some(value.to_owned()),
        "dbname" => dsn.dbname = value.to_owned(),
        "sslmode" => {
            dsn.sslmode = match value {
                "disable" => SslMode::Disable,
                "allow" | "prefer" => SslMode::Prefer,
                "require" => SslMode::Require,
                "verify-ca" => SslMode::VerifyCa,
                "verify-full" => SslMode::VerifyFull,
                _ => {
                    return Err(bad(
                        "sslmode",
                        "disable, allow, prefer, require, verify-ca or verify-full",
                    ));
                }
            }
        }
        "sslrootcert" => dsn.sslrootcert = Some(value.into()),
        "connect_timeout" => {
            let secs: u64 = value
                .parse()
                .map_err(|_| bad("connect_timeout", "a number of seconds"))?;
            dsn.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
        }
        "application_name" => dsn.application_name = Some(value.to_owned()),
        // Accepted for compatibility with the app's DSN; the agent sets its own values.
        "options"
        | "target_session_attrs"
        | "keepalives"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "gssencmode"
        | "channel_binding"
        | "client_encoding"
        | "fallback_application_name" => {}
        other => {
            return Err(DsnError::UnknownParam {
                position: at.0,
                suggestion: closest_param(other),
            });
        }
    }
    Ok(())
}

fn parse_port_value(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|n| *n > 0)
}

fn parse_port(full: &str, p: &str) -> Result<u16, DsnError> {
    parse_port_value(p).ok_or(DsnError::Port(position(full, p)))
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

/// A configured URL for an error message: shown (redacted) only when it cannot hold
/// credentials, i.e. has no '@'; a URL without its scheme (`user:pw@host`) escapes
/// [`redact`], so it is not shown at all.
pub fn url_for_message(url: &str) -> String {
    if url.contains('@') {
        "the value (not shown: it may hold credentials)".to_owned()
    } else {
        format!("'{}'", redact(url))
    }
}

/// Scrubs passwords from any text that may hold a DSN in either form: `scheme://user:PASS@`
/// becomes `scheme://user:****@`, and `password=PASS` / `password='PASS'` becomes `password=****`.
/// Used on foreign text (driver errors, echoed input) before it is logged or shown.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // URL form: everything between "://user:" and the last '@' before the next whitespace.
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let token = &tail[..end];
        match (token.rfind('@'), token.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&token[..colon + 1]);
                out.push_str("****");
                out.push_str(&token[at..]);
            }
            _ => out.push_str(token),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_kv(&out)
}

fn redact_kv(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(off) = lower[pos..].find("password") {
        let start = pos + off;
        let mut j = start + "password".len();
        let bytes = text.as_bytes();
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && (bytes[j] == b'=' || bytes[j] == b':') {
            j += 1;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            out.push_str(&text[pos..j]);
            out.push_str("****");
            let mut k = j;
            if k < bytes.len() && (bytes[k] == b'\'' || bytes[k] == b'"') {
                let q = bytes[k];
                k += 1;
                while k < bytes.len() && bytes[k] != q {
                    k += if bytes[k] == b'\\' { 2 } else { 1 };
                }
                k = (k + 1).min(bytes.len());
            } else {
                while k < bytes.len()
                    && !bytes[k].is_ascii_whitespace()
                    && bytes[k] != b'&'
                    && bytes[k] != b','
                {
                    k += 1;
                }
            }
            pos = k;
        } else {
            out.push_str(&text[pos..j]);
            pos = j;
        }
    }
    out.push_str(&text[pos..]);
    out
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
            Dsn::parse("postgresql://a,b/db"),
            Err(DsnError::MultiHost)
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
    fn redact_scrubs_both_forms() {
        let t = "failed postgresql://u:hunter2@h/db and host=h password=hunter3 user=u and password = 'x y'";
        let r = redact(t);
        assert!(
            !r.contains("hunter2") && !r.contains("hunter3") && !r.contains("x y"),
            "{r}"
        );
        assert!(r.contains("postgresql://u:****@h/db"), "{r}");
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
                format!("postgresql+psycopg://rose_monitor:{secret}@host/db"),
                DsnError::Scheme("'postgresql+psycopg' (SQLAlchemy's; write postgresql://)"),
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
}
