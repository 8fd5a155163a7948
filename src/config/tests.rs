//! Unit tests of the two-stage configuration parse.

use std::collections::HashMap;
use std::io::Write;

use super::raw::VARIABLES;
use super::*;

fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<Config, ConfigError> {
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    let f = file.map(|text| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    });
    Config::load(f.as_ref().map(|f| f.path()), &env)
}

#[test]
fn defaults_follow_the_app() {
    let c = load(&[("DATABASE_URL", "postgresql://u:p@h/db")], None).unwrap();
    assert_eq!(c.app.pool_size, 10);
    assert_eq!(c.app.max_overflow, 20);
    assert_eq!(c.app.database_type, DatabaseType::Sqlite);
    assert_eq!(c.agent.interval, Duration::from_secs(15));
    assert_eq!(c.agent.listen.to_string(), "0.0.0.0:9188");
    assert_eq!(c.database.dsn_source, "DATABASE_URL");
}

#[test]
fn agent_url_wins_over_app_url_and_env_over_file() {
    let c = load(
        &[
            ("DATABASE_URL", "postgresql://app@h/db"),
            ("AGENT_DATABASE_URL", "postgresql://mon@h/db"),
            ("AGENT_INTERVAL", "2s"),
        ],
        Some("[agent]\ninterval = \"30s\"\n"),
    )
    .unwrap();
    assert_eq!(c.database.dsn.unwrap().user, "mon");
    assert_eq!(c.agent.interval, Duration::from_secs(2));
}

#[test]
fn dsn_from_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "postgresql://mon:pw@h:5433/rose").unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    let c = load(&[("AGENT_DATABASE_URL_FILE", &path)], None).unwrap();
    assert_eq!(c.database.dsn.unwrap().target(), "h:5433/rose");
}

#[test]
fn every_bad_key_is_reported_at_once() {
    let e = load(
        &[
            ("DATABASE_URL", "postgresql://rose:p@ss@h/db"),
            ("DATABASE_POOL_SIZE", "ten"),
            ("FEATURE_DATABASE_TYPE", "mysql"),
            ("AGENT_INTERVAL", "soon"),
            ("AGENT_LISTEN", "nowhere"),
            ("AGENT_LOG_FORMAT", "xml"),
        ],
        None,
    )
    .unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "FEATURE_DATABASE_TYPE",
        "AGENT_INTERVAL",
        "AGENT_LISTEN",
        "AGENT_LOG_FORMAT",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let text = e.to_string();
    assert!(text.contains("percent-encode"), "{text}");
    assert!(!text.contains("p@ss"), "password leaked: {text}");
}

#[test]
fn unknown_file_keys_are_rejected_and_named() {
    let e = load(&[], Some("[agent]\nintervl = \"5s\"\n")).unwrap_err();
    assert!(e.to_string().contains("intervl"), "{e}");
}

#[test]
fn file_errors_name_their_line_and_an_unreadable_file_still_reports_the_env() {
    let e = load(&[], Some("[agent]\n\nintervl = \"5s\"\n")).unwrap_err();
    assert!(e.to_string().contains("(line 3)"), "{e}");
    let env: HashMap<&str, &str> = [("AGENT_INTERVAL", "soon")].into();
    let e = Config::load(Some(std::path::Path::new("/nonexistent/agent.toml")), &env).unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"--config") && keys.contains(&"AGENT_INTERVAL"),
        "{e}"
    );
}

#[test]
fn file_syntax_errors_do_not_echo_passwords() {
    let e = load(
        &[],
        Some("[database]\nurl = \"postgresql://u:TopSecret9@h/db\" junk\n"),
    )
    .unwrap_err();
    assert!(!e.to_string().contains("TopSecret9"), "{e}");
}

/// No DSN with the app on PostgreSQL is the finding `no_database_configured`, not an exit: the
/// agent keeps serving (app probes, SQLite) and says what is missing.
#[test]
fn postgresql_without_dsn_loads_without_a_dsn() {
    let c = load(&[("FEATURE_DATABASE_TYPE", "PostgreSQL")], None).unwrap();
    assert_eq!(c.app.database_type, DatabaseType::Postgresql);
    assert!(c.database.dsn.is_none());
    assert!(
        c.effective_toml()
            .contains("none of AGENT_DATABASE_URL, AGENT_DATABASE_URL_FILE, DATABASE_URL is set"),
        "{}",
        c.effective_toml()
    );
}

#[test]
fn unknown_agent_variables_are_kept_for_reporting() {
    let c = load(
        &[
            ("FEATURE_DATABASE_TYPE", "postgresql"),
            ("AGENT_DATABSE_URL", "postgresql://u:Secret9@h/db"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
        None,
    )
    .unwrap();
    let (unknown, omitted) = &c.unknown_variables;
    assert_eq!(*omitted, 0);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].name, "AGENT_DATABSE_URL");
    assert_eq!(unknown[0].closest, "AGENT_DATABASE_URL");
}

/// An environment that answers every key with `value` (or nothing) and records what was asked.
struct Recording {
    value: Option<&'static str>,
    asked: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Env for Recording {
    fn get(&self, key: &str) -> Option<String> {
        self.asked.borrow_mut().insert(key.to_owned());
        self.value.map(str::to_owned)
    }
}

/// `raw::VARIABLES` is the list the reader reads: every variable the configuration asks for
/// (with nothing set, and with everything set, so conditional reads are seen too) is in it, and
/// every name in it is asked for. Adding a variable to the reader without the list fails here.
#[test]
fn the_known_variables_are_exactly_what_the_reader_reads() {
    let mut asked = std::collections::BTreeSet::new();
    for value in [None, Some("1"), Some("http://127.0.0.1:1"), Some("off")] {
        let env = Recording {
            value,
            asked: Default::default(),
        };
        let _ = Config::load(None, &env);
        asked.extend(env.asked.into_inner());
    }
    let listed: std::collections::BTreeSet<String> =
        VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    let unlisted: Vec<_> = asked.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "read but missing from config::raw::VARIABLES: {unlisted:?}"
    );
    let unread: Vec<_> = listed.difference(&asked).collect();
    assert!(
        unread.is_empty(),
        "in config::raw::VARIABLES but never read: {unread:?}"
    );
}

#[test]
fn timeouts_must_fit_in_the_interval() {
    let e = load(
        &[
            ("DATABASE_URL", "postgresql://h/db"),
            ("AGENT_INTERVAL", "1s"),
            ("AGENT_STATEMENT_TIMEOUT", "2s"),
        ],
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("within one interval"), "{e}");
}

#[test]
fn short_intervals_keep_a_connect_timeout_a_distant_database_needs() {
    // Issue 14 item 9: at 2s the derived connect timeout was 500ms, below the ~2s a database
    // 400ms away needs; and --print-config showed "666ms 666us 666ns".
    for interval in ["1s", "2s", "15s"] {
        let c = load(
            &[
                ("DATABASE_URL", "postgresql://h/db"),
                ("AGENT_INTERVAL", interval),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            c.database.connect_timeout, DEFAULT_CONNECT_TIMEOUT,
            "{interval}"
        );
        assert_eq!(c.database.statement_timeout.subsec_nanos() % 1_000_000, 0);
    }
    let c = load(
        &[
            ("DATABASE_URL", "postgresql://h/db"),
            ("AGENT_INTERVAL", "2s"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.database.statement_timeout, Duration::from_millis(667));
    let t = c.effective_toml();
    assert!(t.contains("statement_timeout = \"667ms\""), "{t}");
    assert!(!t.contains("ms ") && !t.contains("ns\""), "{t}");
    // An explicit longer connect timeout is accepted at a short interval too.
    load(
        &[
            ("DATABASE_URL", "postgresql://h/db"),
            ("AGENT_INTERVAL", "1s"),
            ("AGENT_CONNECT_TIMEOUT", "3s"),
        ],
        None,
    )
    .unwrap();
    // Sub-second soak intervals still derive a short one.
    let c = load(
        &[
            ("DATABASE_URL", "postgresql://h/db"),
            ("AGENT_INTERVAL", "100ms"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.database.connect_timeout, Duration::from_millis(25));
}

#[test]
fn soak_intervals_below_one_second_are_accepted_with_longer_timeouts() {
    let c = load(
        &[
            ("DATABASE_URL", "postgresql://h/db"),
            ("AGENT_INTERVAL", "10ms"),
            ("AGENT_CONNECT_TIMEOUT", "1s"),
            ("AGENT_STATEMENT_TIMEOUT", "1s"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.agent.interval, Duration::from_millis(10));
}

#[test]
fn effective_config_redacts_and_round_trips() {
    let c = load(&[("DATABASE_URL", "postgresql://rose:Sekr1t@h/db")], None).unwrap();
    let t = c.effective_toml();
    assert!(!t.contains("Sekr1t"), "{t}");
    assert!(t.contains("rose:****@h:5432"), "{t}");
    // The printed form is itself a valid file (less the redacted password).
    toml::from_str::<RawConfig>(t.trim_start_matches(|c| c != '\n')).unwrap();
}

#[test]
fn check_settings_default_to_the_guide() {
    let c = load(&[("DATABASE_URL", "postgresql://u:p@h/db")], None).unwrap();
    assert_eq!(c.checks.slow_query_threshold, Duration::from_secs(2));
    assert_eq!(c.checks.statements_top_n, 10);
    assert_eq!(c.checks.labels_top_n, 5);
    assert_eq!(c.checks.plan, None);
    assert_eq!(c.checks.langgraph_schema, LangGraphSchema::Auto);
    assert!(c.checks.expectations.tables.is_empty());
}

#[test]
fn plan_presets_and_the_override() {
    let c = load(&[("AGENT_PLAN", "Starter")], None).unwrap();
    assert_eq!(c.checks.plan.unwrap().max_connections, 22);
    let c = load(
        &[("AGENT_PLAN", "pro"), ("AGENT_MAX_CONNECTIONS", "50")],
        Some("[checks]\nslow_query_threshold = \"500ms\"\nlanggraph_schema = \"shallow\"\n"),
    )
    .unwrap();
    let plan = c.checks.plan.clone().unwrap();
    assert_eq!((plan.name.as_str(), plan.max_connections), ("custom", 50));
    assert_eq!(c.checks.slow_query_threshold, Duration::from_millis(500));
    assert_eq!(c.checks.langgraph_schema, LangGraphSchema::Shallow);
    let t = c.effective_toml();
    assert!(t.contains("max_connections = 50"), "{t}");
}

#[test]
fn storage_limit_from_the_plan_or_the_setting() {
    let c = load(&[("AGENT_PLAN", "starter")], None).unwrap();
    let s = c.checks.storage_limit.unwrap();
    assert_eq!((s.name.as_str(), s.bytes), ("starter", 1_000_000_000));
    // The connection override keeps the plan's storage.
    let c = load(
        &[("AGENT_PLAN", "pro"), ("AGENT_MAX_CONNECTIONS", "50")],
        None,
    )
    .unwrap();
    assert_eq!(c.checks.storage_limit.unwrap().bytes, 10_000_000_000);
    let c = load(
        &[("AGENT_PLAN", "pro"), ("AGENT_STORAGE_LIMIT", "10GiB")],
        None,
    )
    .unwrap();
    let s = c.checks.storage_limit.clone().unwrap();
    assert_eq!(
        (s.name.as_str(), s.bytes),
        ("custom", 10 * 1024 * 1024 * 1024)
    );
    assert!(
        c.effective_toml()
            .contains("storage_limit = \"10737418240\"")
    );
    assert_eq!(load(&[], None).unwrap().checks.storage_limit, None);
    let e = load(&[("AGENT_STORAGE_LIMIT", "lots")], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AGENT_STORAGE_LIMIT") && e.contains("'lots'"),
        "{e}"
    );
    let e = load(&[("AGENT_STORAGE_LIMIT", "5 parsecs")], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AGENT_STORAGE_LIMIT") && e.contains("unknown unit"),
        "{e}"
    );
}

#[test]
fn sizes_in_si_and_iec_units() {
    use super::checks::parse_size;
    for (s, want) in [
        ("1GB", 1_000_000_000),
        ("1 gb", 1_000_000_000),
        ("10GiB", 10 * (1u64 << 30)),
        ("1.5MB", 1_500_000),
        ("512MiB", 512 << 20),
        ("2T", 2_000_000_000_000),
        ("4096", 4096),
        ("64kB", 64_000),
        ("1KiB", 1024),
    ] {
        assert_eq!(parse_size(s), Ok(want), "{s}");
    }
    for bad in [
        "",
        "GB",
        "-1GB",
        "1..5GB",
        "1.GB",
        "0",
        "1 furlong",
        "1e3GB",
        "9999999EB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_bad_check_setting_is_reported_at_once() {
    let e = load(
        &[
            ("AGENT_SLOW_QUERY_THRESHOLD", "slowish"),
            ("AGENT_STATEMENTS_TOP_N", "0"),
            ("AGENT_LABELS_TOP_N", "many"),
            ("AGENT_PLAN", "enterprise"),
            ("AGENT_MAX_CONNECTIONS", "-3"),
            ("AGENT_LANGGRAPH_SCHEMA", "deep"),
            ("AGENT_SCHEMA_EXPECTATIONS", "/nonexistent/expect.toml"),
        ],
        None,
    )
    .unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "AGENT_SLOW_QUERY_THRESHOLD",
        "AGENT_STATEMENTS_TOP_N",
        "AGENT_LABELS_TOP_N",
        "AGENT_PLAN",
        "AGENT_MAX_CONNECTIONS",
        "AGENT_LANGGRAPH_SCHEMA",
        "AGENT_SCHEMA_EXPECTATIONS",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn expectations_file_is_parsed_and_checked() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[[tables]]\nname = \"orders\"\ncolumns = [\"id\"]\n\n[[indexes]]\nname = \"orders_idx\"\ntable = \"orders\"\ncolumns = [\"id\"]"
    )
    .unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    let c = load(&[("AGENT_SCHEMA_EXPECTATIONS", &path)], None).unwrap();
    assert_eq!(c.checks.expectations.tables[0].schema, "public");
    assert_eq!(
        c.checks.expectations.indexes[0].columns.as_deref(),
        Some(&["id".to_owned()][..])
    );

    let bad = Expectations::parse(&format!("[[tables]]\nname = \"{}\"\n", "x".repeat(64)));
    assert!(bad.unwrap_err()[0].contains("63 bytes"));
    assert!(Expectations::parse("[[tables]]\nnam = \"x\"\n").is_err());
    assert!(Expectations::parse("[[tables]]\nname = \"\"\n").is_err());
}

#[test]
fn endpoint_limits_are_read_and_bounded() {
    let c = load(&[("DATABASE_URL", "postgresql://u:p@h/db")], None).unwrap();
    assert_eq!(c.agent.web_limits, super::web::WebLimits::default());
    let c = load(
        &[
            ("DATABASE_URL", "postgresql://u:p@h/db"),
            ("AGENT_WEB_HEADER_TIMEOUT", "2s"),
            ("AGENT_WEB_MAX_CONNECTIONS", "500"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.agent.web_limits.header_timeout, Duration::from_secs(2));
    assert_eq!(c.agent.web_limits.max_connections, 500);
    let e = load(
        &[
            ("DATABASE_URL", "postgresql://u:p@h/db"),
            ("AGENT_WEB_HEADER_TIMEOUT", "0s"),
            ("AGENT_WEB_MAX_CONNECTIONS", "0"),
        ],
        None,
    )
    .unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"AGENT_WEB_HEADER_TIMEOUT"), "{e}");
    assert!(keys.contains(&"AGENT_WEB_MAX_CONNECTIONS"), "{e}");
}

#[test]
fn the_dsn_connect_timeout_is_honoured_unless_the_agent_variable_is_set() {
    let c = load(
        &[("DATABASE_URL", "postgresql://h/db?connect_timeout=9")],
        None,
    )
    .unwrap();
    assert_eq!(c.database.connect_timeout, Duration::from_secs(9));
    let c = load(
        &[
            (
                "DATABASE_URL",
                "postgresql+psycopg://h/db?connect_timeout=9",
            ),
            ("AGENT_CONNECT_TIMEOUT", "4s"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.database.connect_timeout, Duration::from_secs(4));
}
