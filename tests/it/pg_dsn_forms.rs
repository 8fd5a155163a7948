//! The connection-string forms the app and libpq write, each parsed by the agent and used
//! against a real PostgreSQL: SQLAlchemy URLs (`postgresql+psycopg://`, `+asyncpg` with its
//! `ssl=`), multi-host lists with the first host down and with `target_session_attrs`,
//! `hostaddr` (the host name still names the server for TLS), and client certificates against
//! a cluster whose pg_hba asks for `clientcert=verify-full` (with `channel_binding=require`).

use crate::support;

use std::time::Duration;

use support::*;

/// Runs an agent on `dsn` until its first connectivity verdict; returns its metrics and output.
fn run(dsn: &str) -> (Metrics, String) {
    let (m, out, ()) = run_with(dsn, || ());
    (m, out)
}

/// [`run`], calling `probe` while the agent still holds its session.
fn run_with<T>(dsn: &str, probe: impl FnOnce() -> T) -> (Metrics, String, T) {
    let agent = Agent::start(&[
        ("AGENT_DATABASE_URL", dsn.to_owned()),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_CONNECT_TIMEOUT", "3s".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ]);
    let m = wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up").is_some()
    })
    .map(|_| agent.metrics())
    .unwrap_or_default();
    let seen = probe();
    let out = agent.output();
    assert!(!out.contains(MONITOR_PASSWORD), "password in the output");
    (m, out, seen)
}

fn error_kind(m: &Metrics) -> Vec<String> {
    m.0.keys()
        .filter(|k| k.starts_with("rose_agent_check_errors_total{check=\"pg_connectivity\""))
        .cloned()
        .collect()
}

#[test]
fn sqlalchemy_urls_connect() {
    let pg = PgCluster::start();
    let url = pg.monitor_url();
    // Valid libpq keys the agent does not use: accepted, named (not their values) once.
    let (m, out) = run(&format!(
        "{}&tcp_user_timeout=5000&load_balance_hosts=disable&service=Zq-svc",
        url.replace("postgresql://", "postgresql+psycopg://")
    ));
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
    assert!(
        out.contains("does not use")
            && out.contains("tcp_user_timeout, load_balance_hosts, service"),
        "{out}"
    );
    assert!(!out.contains("Zq-svc"), "{out}");
    for dsn in [
        url.replace("postgresql://", "postgresql+psycopg://"),
        url.replace("postgresql://", "postgresql+psycopg2://"),
        url.replace("postgresql://", "postgresql+asyncpg://")
            .replace("sslmode=disable", "ssl=disable"),
    ] {
        let (m, out) = run(&dsn);
        assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
    }
}

#[test]
fn multi_host_with_the_first_host_down_and_target_session_attrs() {
    let pg = PgCluster::start();
    let dead = free_port();
    let kv = |ports: &str, extra: &str| {
        format!(
            "host=127.0.0.1,127.0.0.1 port={ports} user={MONITOR_USER} password={MONITOR_PASSWORD} dbname={DBNAME} sslmode=disable {extra}"
        )
    };
    // key=value with a port per host, the first refusing.
    let (m, out) = run(&kv(&format!("{dead},{}", pg.port), ""));
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
    // The URL form.
    let (m, out) = run(&format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{dead},127.0.0.1:{}/{DBNAME}?sslmode=disable",
        pg.port
    ));
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");

    // target_session_attrs=read-write skips a server whose sessions are read-only (the first
    // host), and takes the next; a second cluster plays the writable one.
    let ro = PgCluster::start();
    ro.psql(&format!(
        "ALTER ROLE {MONITOR_USER} SET default_transaction_read_only = on"
    ));
    let (m, out, held) = run_with(
        &kv(
            &format!("{},{}", ro.port, pg.port),
            "target_session_attrs=read-write",
        ),
        || (ro.agent_backends(), pg.agent_backends()),
    );
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
    assert_eq!(held, (0, 1), "(read-only, writable) sessions: {out}");
    // Only read-only servers: no session, and the message says why.
    let (m, out) = run(&kv(
        &format!("{},{}", ro.port, ro.port),
        "target_session_attrs=read-write",
    ));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(
        out.contains("the server is read-only (target_session_attrs=read-write)"),
        "{out}"
    );
    // A primary is no standby.
    let (m, out) = run(&kv(
        &format!("{dead},{}", pg.port),
        "target_session_attrs=standby",
    ));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(out.contains("the server is not a standby"), "{out}");
    // prefer-standby settles for the primary.
    let (m, out) = run(&kv(
        &format!("{dead},{}", pg.port),
        "target_session_attrs=prefer-standby",
    ));
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
}

#[test]
fn client_certificates_against_clientcert_verify_full() {
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(certs.path()) else {
        return;
    };
    let Some((client_cert, client_key)) = make_client_cert(certs.path(), MONITOR_USER) else {
        return;
    };
    let pg = PgCluster::start();
    pg.enable_tls(&cert, &key, Some(&ca));
    // The monitoring role must present a certificate whose CN is its name, over TLS only, and
    // still give its password (so channel binding has a SCRAM exchange to bind).
    pg.prepend_hba(&[
        &format!("hostssl all {MONITOR_USER} 127.0.0.1/32 scram-sha-256 clientcert=verify-full"),
        &format!("hostnossl all {MONITOR_USER} 127.0.0.1/32 reject"),
    ]);
    let base = format!(
        "postgresql+psycopg://{MONITOR_USER}:{MONITOR_PASSWORD}@localhost:{}/{DBNAME}?sslmode=verify-full&sslrootcert={ca}",
        pg.port
    );
    let with_cert = format!("{base}&sslcert={client_cert}&sslkey={client_key}");

    let agent = Agent::start(&[
        (
            "AGENT_DATABASE_URL",
            format!("{with_cert}&channel_binding=require"),
        ),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ]);
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("no session with the client certificate: {}", agent.output()));
    let dn = pg.psql(&format!(
        "SELECT s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = '{MONITOR_USER}' AND a.application_name = 'rose-agent'"
    ));
    assert_eq!(dn, format!("/CN={MONITOR_USER}"), "{}", agent.output());
    drop(agent);

    // hostaddr: the connection goes to the address, TLS verifies the host name.
    let (m, out) = run(&format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={MONITOR_USER} password={MONITOR_PASSWORD} dbname={DBNAME} sslmode=verify-full sslrootcert={ca} sslcert={client_cert} sslkey={client_key}",
        pg.port
    ));
    assert_eq!(m.get("rose_pg_up"), Some(1.0), "{out}");
    let (m, out) = run(&format!(
        "host=db.invalid hostaddr=127.0.0.1 port={} user={MONITOR_USER} password={MONITOR_PASSWORD} dbname={DBNAME} sslmode=verify-full sslrootcert={ca} sslcert={client_cert} sslkey={client_key}",
        pg.port
    ));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(
        error_kind(&m).iter().any(|k| k.contains("kind=\"tls\"")),
        "a name the certificate does not carry is a tls error: {m:?}"
    );

    // No client certificate: the server refuses, and the finding says it is pg_hba's doing.
    let (m, out) = run(&base);
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(
        error_kind(&m)
            .iter()
            .any(|k| k.contains("kind=\"hba_rejected\"")),
        "{:?}\n{out}",
        error_kind(&m)
    );
    assert!(out.contains("certificate"), "{out}");
    // The certificate without its key: a tls error naming the missing parameter.
    let (m, out) = run(&format!("{base}&sslcert={client_cert}"));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(
        error_kind(&m).iter().any(|k| k.contains("kind=\"tls\"")),
        "{:?}\n{out}",
        error_kind(&m)
    );
    assert!(out.contains("sets sslcert but not sslkey"), "{out}");
    // channel_binding=require cannot be met without TLS.
    let plain = PgCluster::start();
    let (m, out) = run(&format!("{}&channel_binding=require", plain.monitor_url()));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
}
