//! TLS to a real PostgreSQL with `ssl=on`, per the DSN's `sslmode` with libpq semantics:
//! `require` encrypts without verifying, `verify-full` verifies against `sslrootcert` (and fails
//! with the `tls` error kind against the wrong CA), and the session really is encrypted
//! (`pg_stat_ssl`).

use crate::support;

use std::time::Duration;

use support::*;

#[test]
fn sslmodes_against_a_tls_server() {
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(certs.path()) else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let Some((other_ca, _, _)) = make_certs(other.path()) else {
        return;
    };
    let pg = PgCluster::start();
    pg.enable_tls(&cert, &key, None);

    let base = pg.monitor_url().replace("?sslmode=disable", "");
    let run = |query: &str| {
        let agent = Agent::start(&[
            ("AGENT_DATABASE_URL", format!("{base}?{query}")),
            ("AGENT_INTERVAL", "1s".into()),
            ("AGENT_APP_PROBES", "off".into()),
        ]);
        let up = wait_for(Duration::from_secs(10), || {
            agent.metrics().get("rose_pg_up").is_some()
        })
        .map(|_| agent.metrics())
        .unwrap_or_default();
        // While the agent lives: is its session encrypted?
        let ssl = pg.psql(&format!(
            "SELECT coalesce(bool_and(s.ssl)::text, 'none') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = '{MONITOR_USER}'"
        ));
        (up, agent.output(), ssl)
    };
    for query in [
        "sslmode=require",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ] {
        let (m, out, ssl) = run(query);
        assert_eq!(m.get("rose_pg_up"), Some(1.0), "{query}: {out}");
        assert_eq!(ssl, "true", "{query}: the agent's session is not encrypted");
    }
    let (m, out, _) = run(&format!("sslmode=verify-full&sslrootcert={other_ca}"));
    assert_eq!(m.get("rose_pg_up"), Some(0.0), "{out}");
    assert!(
        m.get(r#"rose_agent_check_errors_total{check="pg_connectivity",kind="tls"}"#)
            .is_some(),
        "wrong CA should be a tls error: {m:?}\n{out}"
    );
}
