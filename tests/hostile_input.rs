//! Hostile input: property tests over DSN, configuration and query-result parsing (no panic,
//! every rejection a clear error that never echoes the password), and proof that the agent's
//! session cannot write.

mod support;

use std::collections::HashMap;

use proptest::prelude::*;
use rose_agent::config::{Config, RawConfig};
use rose_agent::dsn::Dsn;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any string: parsed or rejected, never a panic; a rejection never contains the password.
    #[test]
    fn dsn_parse_never_panics(s in ".{0,200}") {
        let _ = Dsn::parse(&s);
    }

    /// URL-shaped input with a distinctive password: errors, Debug and targets never show it.
    #[test]
    fn dsn_errors_never_echo_the_password(
        user in "[a-z]{1,8}",
        pw in "[A-Za-z0-9@/:#?%!]{1,16}",
        host in "[a-z0-9.:-]{0,20}",
        tail in "[a-z0-9/?=&._-]{0,30}",
    ) {
        let secret = format!("Zq{pw}Zq");
        let url = format!("postgresql://{user}:{secret}@{host}{tail}");
        match Dsn::parse(&url) {
            Ok(d) => {
                prop_assert!(!d.target().contains(&secret));
                let dbg = format!("{:?}", d);
                prop_assert!(!dbg.contains(&secret));
                prop_assert!(!d.redacted_url().contains(&secret));
            }
            Err(e) => prop_assert!(!e.to_string().contains(&secret), "{}", e),
        }
    }

    /// Any values for the variables the agent reads: a config or a list of problems, no panic,
    /// and every problem names a key.
    #[test]
    fn config_from_any_env_never_panics(
        url in ".{0,60}",
        pool in ".{0,8}",
        interval in ".{0,8}",
        kind in ".{0,12}",
        listen in ".{0,20}",
    ) {
        let env: HashMap<&str, &str> = [
            ("DATABASE_URL", url.as_str()),
            ("DATABASE_POOL_SIZE", pool.as_str()),
            ("AGENT_INTERVAL", interval.as_str()),
            ("FEATURE_DATABASE_TYPE", kind.as_str()),
            ("AGENT_LISTEN", listen.as_str()),
        ].into();
        if let Err(e) = Config::load(None, &env) {
            prop_assert!(!e.0.is_empty());
            prop_assert!(e.0.iter().all(|p| !p.key.is_empty() && !p.message.is_empty()));
        }
    }

    /// Any TOML text: parsed or rejected with a message, never a panic.
    #[test]
    fn config_file_never_panics(text in ".{0,300}") {
        let _ = toml::from_str::<RawConfig>(&text);
    }

    /// Any text where a check expects its statement's JSON document: decoded or a protocol
    /// error, never a panic.
    #[test]
    fn check_documents_never_panic(json in ".{0,120}", n in 0usize..8) {
        use rose_agent::check::{pg_connections, pg_util};
        if let Ok(raw) = pg_util::decode::<pg_connections::Raw>(&json, "connections") {
            let _ = pg_connections::from_raw(raw, n);
        }
    }

    /// Any text through the redactor keeps no `password=` value.
    #[test]
    fn redact_removes_kv_passwords(pw in "[A-Za-z0-9]{4,16}", pre in "[a-z =]{0,20}") {
        let secret = format!("Zq{pw}Zq");
        let text = format!("{pre} host=h password={secret} user=u");
        prop_assert!(!rose_agent::dsn::redact(&text).contains(&secret));
    }
}

/// Nothing the agent runs can write: its sessions are read-only from the startup packet on.
#[test]
fn the_agents_session_cannot_write() {
    let pg = support::PgCluster::start_with(support::ClusterOpts {
        schema: false,
        ..Default::default()
    });
    // Give the monitoring role a table it could write, were the session not read-only.
    pg.psql(&format!(
        "CREATE TABLE scratch (x int); GRANT ALL ON scratch TO {}",
        support::MONITOR_USER
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env: HashMap<&str, String> = [("AGENT_DATABASE_URL", pg.monitor_url())].into();
        let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = Config::load(None, &env).unwrap();
        let target = rose_agent::run::pg_target(&config, None).unwrap();
        let conn = target.conn().await.unwrap();
        for sql in [
            "INSERT INTO scratch VALUES (1)",
            "CREATE TABLE other (x int)",
            "UPDATE scratch SET x = 2",
        ] {
            let err = target.simple_query(&conn, sql).await.unwrap_err();
            assert_eq!(err.sqlstate.as_deref(), Some("25006"), "{sql}: {err}");
        }
        let rows = target
            .simple_query(&conn, "SHOW default_transaction_read_only")
            .await
            .unwrap();
        assert_eq!(rows[0][0].as_deref(), Some("on"));
        let rows = target
            .simple_query(&conn, "SHOW statement_timeout")
            .await
            .unwrap();
        assert_ne!(rows[0][0].as_deref(), Some("0"));
        let rows = target
            .simple_query(&conn, "SHOW idle_in_transaction_session_timeout")
            .await
            .unwrap();
        assert_ne!(rows[0][0].as_deref(), Some("0"));
    });
    assert_eq!(pg.psql("SELECT count(*) FROM scratch"), "0");
}
