//! Hostile input: property tests over DSN, configuration and query-result parsing (no panic,
//! every rejection a clear error that never echoes the password), and proof that the agent's
//! session cannot write.

use crate::support;

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

    /// Arbitrary text around a known password, not only `postgresql://` input: a missing or
    /// mistyped scheme, key=value with stray spaces or quotes, JSON, junk on either side. No
    /// error and no config problem shows any part of it; a parsed DSN shows it nowhere unless
    /// it is also in a part that is not secret (host, user, database).
    #[test]
    fn dsn_text_around_a_password_never_echoes_it(
        pre in dsn_prefix(),
        pw in password(),
        post in dsn_suffix(),
    ) {
        let dsn = format!("{pre}{pw}{post}");
        check_no_echo(&dsn)?;
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
        let env: HashMap<&str, &str> = HashMap::new();
        if let Err(e) = Config::from_text(Some((&text, "agent.toml")), &env) {
            prop_assert!(e.0.iter().all(|p| !p.key.is_empty() && !p.message.is_empty()));
        }
    }

    /// TOML built from the file's own sections and keys with hostile values: validated, every
    /// problem named, never a panic.
    #[test]
    fn config_file_with_real_keys_never_panics(text in config_toml_text()) {
        let env: HashMap<&str, &str> = HashMap::new();
        if let Err(e) = Config::from_text(Some((&text, "agent.toml")), &env) {
            prop_assert!(!e.0.is_empty());
            prop_assert!(e.0.iter().all(|p| !p.key.is_empty() && !p.message.is_empty()));
        }
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

    /// Any bytes as an app's health answer: judged without a panic; a body that is not JSON
    /// fails with a message saying so; every label value taken from it is bounded and safe.
    #[test]
    fn app_probe_bodies_never_panic_and_labels_stay_bounded(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        status in 100u16..600,
    ) {
        judge_body(&body, status)?;
    }

    /// JSON-shaped health answers (nested, odd keys, wrong types, many services).
    #[test]
    fn app_probe_json_bodies_keep_labels_safe(v in json_value()) {
        let body = serde_json::to_vec(&serde_json::json!({
            "status": v.clone(), "version": v.clone(), "services": v.clone(), "extra": v,
        })).unwrap();
        judge_body(&body, 200)?;
        let wrapped = serde_json::to_vec(&v).unwrap();
        judge_body(&wrapped, 200)?;
    }

    /// Any web config text: loaded or rejected with messages, never a panic.
    #[test]
    fn web_config_never_panics(text in web_config_text()) {
        if let Err(problems) = rose_agent::web::WebConfig::from_yaml(&text, "web.yml") {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.iter().all(|p| !p.is_empty()));
        }
    }

    /// Any `Authorization` header: a yes, a no or a "later" (failed attempts hold bcrypt off),
    /// never a panic; only the right password gets in, and it is never refused outright.
    #[test]
    fn authorization_headers_never_panic(h in authorization_header()) {
        use rose_agent::web::Verdict;
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let verdict = rt.block_on(auth().verify(Some(&h)));
        let good = format!("Basic {}", base64_of("prometheus:right-password"));
        let right = h == good || h == "Bearer tok-123";
        prop_assert_eq!(verdict == Verdict::Allowed, right && verdict != Verdict::Throttled);
        prop_assert!(!(right && verdict == Verdict::Denied));
    }

    /// Any OTEL_EXPORTER_OTLP_HEADERS value: parsed into pairs with non-empty keys.
    #[test]
    fn otlp_headers_never_panic(s in ".{0,120}") {
        for (k, _) in rose_agent::config::otel::parse_headers(&s) {
            prop_assert!(!k.is_empty());
        }
    }

    /// Any schema-expectations document: parsed or rejected with messages.
    #[test]
    fn expectations_documents_never_panic(text in ".{0,200}") {
        if let Err(problems) = rose_agent::config::Expectations::parse(&text) {
            prop_assert!(!problems.is_empty());
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

/// The password's marker parts: none of them may appear in an error, however truncated.
const PW_MARKS: [&str; 3] = ["Zq9x", "SECRET", "xQ7"];

fn password() -> impl Strategy<Value = String> {
    // The marks with what breaks parsers in between (unencoded '@' '/' ':' '#' '?', '%zz',
    // quotes, spaces, non-ASCII).
    ("[@/:#?%z' =é]{0,3}", "[@/:#?%z' =é]{0,3}").prop_map(|(a, b)| format!("Zq9x{a}SECRET{b}xQ7"))
}

fn dsn_prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("postgresql://rose_monitor:".to_owned()),
        Just("postgres://u:".to_owned()),
        Just("rose_monitor:".to_owned()),
        Just("postgresql:/rose_monitor:".to_owned()),
        Just("postgresql//rose_monitor:".to_owned()),
        Just("postgresql:rose_monitor:".to_owned()),
        Just("POSTGRESQL://u:".to_owned()),
        Just("postgresql+psycopg://u:".to_owned()),
        Just("host=h user=u password=".to_owned()),
        Just("host=h password='".to_owned()),
        Just("host=h password = ".to_owned()),
        Just("password=".to_owned()),
        Just("{\"url\": \"postgresql://u:".to_owned()),
        Just("\"postgresql://u:".to_owned()),
        Just("".to_owned()),
        "[a-z:/@=?&' ]{0,24}",
        ".{0,24}",
    ]
}

fn dsn_suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("@db.example:5432/rose".to_owned()),
        Just("@h/db?sslmode=require".to_owned()),
        Just("@h:port/db".to_owned()),
        Just("@h/db?sslmode=maybe".to_owned()),
        Just("@h/db?sslmod=require".to_owned()),
        Just(" dbname=rose".to_owned()),
        Just("' dbname=rose".to_owned()),
        Just("\"}".to_owned()),
        Just("".to_owned()),
        "[a-z0-9:/@?=&%' .]{0,30}",
        ".{0,30}",
    ]
}

/// The DSN through the parser and through the config (every DSN variable, and a config file):
/// errors and problems never show the password's marks.
fn check_no_echo(dsn: &str) -> Result<(), TestCaseError> {
    let leaks = |text: &str| PW_MARKS.iter().any(|m| text.contains(m));
    match Dsn::parse(dsn) {
        Err(e) => prop_assert!(!leaks(&e.to_string()), "{} <- {}", e, dsn),
        Ok(d) => {
            let public = format!(
                "{} {} {}",
                d.user,
                d.target(),
                d.application_name.clone().unwrap_or_default()
            );
            if !leaks(&public) {
                prop_assert!(!leaks(&format!("{d:?}")), "{:?} <- {}", d, dsn);
                prop_assert!(!leaks(&d.redacted_url()), "{} <- {}", d.redacted_url(), dsn);
            }
        }
    }
    for key in [
        "AGENT_DATABASE_URL",
        "DATABASE_URL",
        "DATABASE_READ_REPLICA_URL",
    ] {
        let env: HashMap<&str, &str> = [(key, dsn), ("FEATURE_DATABASE_TYPE", "postgresql")].into();
        if let Err(e) = Config::load(None, &env) {
            for p in &e.0 {
                prop_assert!(!leaks(&p.message), "{}: {} <- {}", p.key, p.message, dsn);
            }
        }
    }
    let file = format!("[database]\nurl = {}\n", toml_string(dsn));
    let env: HashMap<&str, &str> = HashMap::new();
    if let Err(e) = Config::from_text(Some((&file, "agent.toml")), &env) {
        for p in &e.0 {
            prop_assert!(!leaks(&p.message), "{}: {} <- {}", p.key, p.message, file);
        }
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn judge_body(body: &[u8], status: u16) -> Result<(), TestCaseError> {
    use rose_agent::check::app_probe::{Exchange, MAX_SERVICES, judge};
    let env: HashMap<&str, &str> = [("APP_BASE_URL", "http://127.0.0.1:9")].into();
    let cfg = Config::load(None, &env).expect("config").app.probes[0].clone();
    let ex = Exchange::Answer {
        status,
        body: body.to_vec(),
    };
    let v = judge(&cfg, &ex, std::time::Duration::from_millis(5));
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c))
    };
    if let Some(e) = &v.error {
        prop_assert!(!e.is_empty());
        if serde_json::from_slice::<serde_json::Value>(body).is_err() && status == 200 {
            prop_assert!(e.contains("not JSON"), "{}", e);
        }
    }
    if let Some(b) = &v.body {
        prop_assert!(b.services.len() <= MAX_SERVICES);
        prop_assert!(
            b.services
                .iter()
                .all(|s| safe(&s.name) && s.state.chars().count() <= 32)
        );
        prop_assert!(b.version.as_deref().is_none_or(safe));
        prop_assert!(b.status.as_ref().is_none_or(|s| s.chars().count() <= 32));
    }
    for e in &v.expectations {
        prop_assert!(e.mismatched_keys.len() <= 16);
        prop_assert!(e.mismatched_keys.iter().all(|k| k.chars().count() <= 32));
        prop_assert!(e.actual.as_ref().is_none_or(|a| a.chars().count() <= 64));
    }
    prop_assert!(!v.healthy || v.success);
    Ok(())
}

/// Arbitrary JSON, a few levels deep, with keys that are not label-safe.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("connected".into())),
        Just(Value::String("healthy".into())),
    ];
    leaf.prop_recursive(4, 64, 24, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..24).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}|.{0,40}", inner, 0..24)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// TOML from the example config's sections and keys, with values of any shape.
fn config_toml_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "\"[^\"\\\\]{0,24}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        "[0-9]{1,3}(ms|s|m|h|x)".prop_map(|s| format!("\"{s}\"")),
        ".{0,12}".prop_map(|s| s),
    ];
    let key = prop::sample::select(vec![
        "all_equal",
        "base_url",
        "connect_timeout",
        "database_type",
        "equals",
        "expect_status",
        "fallback_paths",
        "field",
        "growth_window",
        "instances",
        "interval",
        "labels_top_n",
        "langgraph_schema",
        "latency_threshold",
        "leader_election",
        "listen",
        "lock_timeout",
        "log_format",
        "max_overflow",
        "method",
        "name",
        "path",
        "pool_size",
        "rate_limit_per_minute",
        "report_services",
        "shutdown_grace",
        "slow_interval",
        "slow_query_threshold",
        "statement_timeout",
        "statements_top_n",
        "timeout",
        "url",
    ]);
    let line = prop_oneof![
        prop::sample::select(vec![
            "[agent]",
            "[database]",
            "[app]",
            "[[app.probes]]",
            "[[app.probes.expect]]",
            "[checks]",
            "[nowhere]",
        ])
        .prop_map(str::to_owned),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
    ];
    proptest::collection::vec(line, 0..12).prop_map(|v| v.join("\n"))
}

/// YAML-ish text built from the file's own keys, so the parser gets past the first line.
fn web_config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("tls_server_config:".to_owned()),
        "  (cert|key)_file: .{0,20}".prop_map(|s| s),
        Just("basic_auth_users:".to_owned()),
        "  [a-z]{1,6}: .{0,30}".prop_map(|s| s),
        "bearer_token_file: .{0,20}".prop_map(|s| s),
        "  (client_auth_type|client_ca_file|min_version|max_version): .{0,20}".prop_map(|s| s),
        "  (cipher_suites|curve_preferences): \\[.{0,30}\\]".prop_map(|s| s),
        Just("http_server_config:".to_owned()),
        "  (http2|prefer_server_cipher_suites): .{0,6}".prop_map(|s| s),
        Just("  headers:".to_owned()),
        "    [A-Za-z-]{1,25}: .{0,30}".prop_map(|s| s),
        ".{0,30}".prop_map(|s| s),
    ];
    proptest::collection::vec(line, 0..8).prop_map(|v| v.join("\n"))
}

fn authorization_header() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,60}".prop_map(|s| s),
        ".{0,40}".prop_map(|s| format!("Basic {}", base64_of(&s))),
        "[a-z]{0,12}:.{0,20}".prop_map(|s| format!("Basic {}", base64_of(&s))),
        "[A-Za-z0-9+/=]{0,40}".prop_map(|s| format!("Basic {s}")),
        ".{0,20}".prop_map(|s| format!("Bearer {s}")),
        Just(format!("Basic {}", base64_of("prometheus:right-password"))),
        Just(format!("Basic {}", base64_of("prometheus:wrong-password"))),
        Just("Bearer tok-123".to_owned()),
    ]
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One authenticator for all cases (bcrypt at cost 4 keeps the cases quick).
fn auth() -> std::sync::Arc<rose_agent::web::Auth> {
    static AUTH: std::sync::OnceLock<std::sync::Arc<rose_agent::web::Auth>> =
        std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rose-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "tok-123\n").unwrap();
        let hash = bcrypt::hash("right-password", 4).unwrap();
        let yaml = format!(
            "basic_auth_users:\n  prometheus: '{hash}'\nbearer_token_file: {}\n",
            token.display()
        );
        let web = rose_agent::web::WebConfig::from_yaml(&yaml, "web.yml").expect("web config");
        let _ = std::fs::remove_dir_all(&dir);
        web.auth.expect("auth")
    })
    .clone()
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
