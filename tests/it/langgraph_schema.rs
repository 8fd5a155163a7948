//! LangGraph's tables where the app really puts them, created by the app's real library
//! (`PostgresSaver.setup()` from `langgraph-checkpoint-postgres`, see `support::langgraph`):
//! in a schema other than `public` (issue 13 item 8), and a monitoring role made by
//! `scripts/create-monitoring-role.sql` before the tables exist (item 10). Each asserts the
//! verdict on `agent diagnose` (JSON, exit code) and on `/metrics` of a running agent.

use crate::support;

use std::time::Duration;

use support::langgraph::{self, APP_USER};
use support::*;

/// A cluster without LangGraph's tables, the app role owning schema `rose`, and the tables
/// created there by the real `setup()` through a DSN whose search_path is `rose`.
fn cluster_with_langgraph_in_rose() -> Option<PgCluster> {
    let py = langgraph::python()?;
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..ClusterOpts::default()
    });
    langgraph::create_app_role(&pg, "rose");
    langgraph::setup(&py, &langgraph::app_url(&pg, Some("rose")));
    // The real library put them in `rose`, nothing in `public`.
    assert_eq!(
        pg.psql(
            "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) \
             FROM pg_tables WHERE tablename LIKE 'checkpoint%'"
        ),
        "rose.checkpoint_blobs,rose.checkpoint_migrations,rose.checkpoint_writes,rose.checkpoints"
    );
    Some(pg)
}

fn env(pg: &PgCluster, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ];
    e.extend(extra.iter().cloned());
    e
}

fn findings_of<'a>(report: &'a serde_json::Value, code: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .map(|a| a.iter().filter(|f| f["code"] == code).collect())
        .unwrap_or_default()
}

/// The migration version and table presence a running agent exports.
fn agent_reads_version(e: Vec<(&'static str, String)>) -> Metrics {
    let mut e = e;
    e.extend(fast_timing());
    let agent = Agent::start(&e);
    wait_for(Duration::from_secs(20), || {
        agent
            .metrics()
            .get("rose_pg_schema_migration_version")
            .is_some()
    })
    .unwrap_or_else(|| panic!("no migration version: {}", agent.get("/metrics").1));
    agent.metrics()
}

#[test]
fn tables_in_schema_rose_are_found_configured_from_the_dsn_or_detected() {
    let Some(pg) = cluster_with_langgraph_in_rose() else {
        return;
    };
    pg.psql(
        "GRANT USAGE ON SCHEMA rose TO rose_monitor; \
         GRANT SELECT ON rose.checkpoint_migrations TO rose_monitor",
    );
    let ways: [(&str, Vec<(&'static str, String)>); 3] = [
        ("detected", vec![]),
        (
            "the app DATABASE_URL's search_path",
            vec![("DATABASE_URL", langgraph::app_url(&pg, Some("rose")))],
        ),
        (
            "AGENT_LANGGRAPH_SCHEMA_NAME",
            vec![("AGENT_LANGGRAPH_SCHEMA_NAME", "rose".into())],
        ),
    ];
    for (how, extra) in &ways {
        let (code, report, all) = diagnose(&env(&pg, extra), &[]);
        let codes = codes(&report);
        assert!(
            !codes.iter().any(|c| c == "missing_table"
                || c == "schema_mismatch"
                || c == "missing_index"
                || c == "migration_version_unreadable"),
            "{how}: {codes:?}\n{all}"
        );
        assert_eq!(code, 0, "{how}: {codes:?}\n{all}");
    }
    // The version is read from rose.checkpoint_migrations: v9, ten rows.
    let m = agent_reads_version(env(&pg, &[]));
    assert_eq!(m.get("rose_pg_schema_migration_version"), Some(9.0));
    assert_eq!(m.get("rose_pg_schema_migration_rows"), Some(10.0));
    assert_eq!(
        m.get(r#"rose_pg_schema_object_present{kind="table",name="rose.checkpoints"}"#),
        Some(1.0),
        "{:?}",
        m.0.keys()
            .filter(|k| k.contains("object_present"))
            .collect::<Vec<_>>()
    );

    // A table really missing in that schema is still reported, by every way of finding it.
    pg.psql("DROP TABLE rose.checkpoint_blobs");
    for (how, extra) in &ways {
        let (code, report, all) = diagnose(&env(&pg, extra), &[]);
        let missing = findings_of(&report, "missing_table");
        assert_eq!(missing.len(), 1, "{how}: {:?}\n{all}", codes(&report));
        assert_eq!(
            missing[0]["subject"], "rose.checkpoint_blobs",
            "{how}: {all}"
        );
        assert!(
            missing[0]["evidence"]
                .as_str()
                .unwrap()
                .contains("in schema rose"),
            "{how}: {all}"
        );
        assert_eq!(code, 2, "{how}: {all}");
    }

    // Configured for the wrong schema: the four tables are missing there, and the step points
    // at the schema that holds them.
    let (_, report, all) = diagnose(
        &env(&pg, &[("AGENT_LANGGRAPH_SCHEMA_NAME", "public".into())]),
        &[],
    );
    let missing = findings_of(&report, "missing_table");
    assert_eq!(missing.len(), 4, "{all}");
    assert!(
        missing[0]["steps"][0]
            .as_str()
            .unwrap()
            .contains("AGENT_LANGGRAPH_SCHEMA_NAME=rose"),
        "{all}"
    );
}

#[test]
fn role_script_is_idempotent_before_setup_and_the_version_stays_readable() {
    let Some(py) = langgraph::python() else {
        return;
    };
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..ClusterOpts::default()
    });
    // The cluster's own rose_monitor would make the first run a re-run: start without it.
    pg.psql_db("postgres", "DROP ROLE rose_monitor");
    langgraph::create_app_role(&pg, "rose");
    let vars = [
        ("password", format!("'{MONITOR_PASSWORD}'")),
        ("app_role", APP_USER.to_owned()),
        ("schema", "rose".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Twice, before setup() created anything: exit 0 both times.
    for run in 1..=2 {
        let (code, out) = langgraph::run_role_script(&pg, &vars);
        assert_eq!(code, 0, "run {run}: {out}");
        assert!(!out.contains("ERROR"), "run {run}: {out}");
    }
    // A re-run without the password keeps the role as it is.
    let (code, out) = langgraph::run_role_script(&pg, &vars[1..]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        pg.psql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'rose_monitor'"),
        "5"
    );
    // Then the app creates its schema, as the app role, with the real library.
    langgraph::setup(&py, &langgraph::app_url(&pg, Some("rose")));
    let (code, report, all) = diagnose(&env(&pg, &[]), &[]);
    assert!(
        findings_of(&report, "migration_version_unreadable").is_empty()
            && findings_of(&report, "missing_table").is_empty(),
        "{:?}\n{all}",
        codes(&report)
    );
    assert_eq!(code, 0, "{all}");
    // The monitoring role reads no checkpoint data, only the version.
    let denied = std::process::Command::new(pg.psql_path())
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args([
            "-U",
            MONITOR_USER,
            "-d",
            DBNAME,
            "-c",
            "SELECT count(*) FROM rose.checkpoints",
        ])
        .env("PGPASSWORD", MONITOR_PASSWORD)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "the monitoring role can read checkpoints: {denied:?}"
    );
    let m = agent_reads_version(env(&pg, &[]));
    assert_eq!(m.get("rose_pg_schema_migration_version"), Some(9.0));

    // Unreadable: the finding, with the exact GRANT, on every surface diagnose has.
    pg.psql(&format!(
        "REVOKE EXECUTE ON FUNCTION rose_agent.langgraph_migrations(text) FROM {MONITOR_USER}"
    ));
    let (code, report, all) = diagnose(&env(&pg, &[]), &[]);
    let f = findings_of(&report, "migration_version_unreadable");
    assert_eq!(f.len(), 1, "{:?}\n{all}", codes(&report));
    let grant = format!(
        "GRANT USAGE ON SCHEMA \"rose\" TO \"{MONITOR_USER}\"; GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"{MONITOR_USER}\";"
    );
    // USAGE on rose was granted by the script (the schema existed): only SELECT is missing.
    let select_only =
        format!("GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"{MONITOR_USER}\";");
    let step = f[0]["steps"][0].as_str().unwrap();
    assert!(
        step.ends_with(&select_only) && !step.contains(&grant),
        "{all}"
    );
    assert!(
        f[0]["evidence"].as_str().unwrap().contains("42501"),
        "{all}"
    );
    assert_eq!(f[0]["severity"], "warning");
    assert_eq!(code, 1, "{all}");
    // The step really fixes it.
    pg.psql(&select_only);
    let (code, report, all) = diagnose(&env(&pg, &[]), &[]);
    assert!(
        findings_of(&report, "migration_version_unreadable").is_empty(),
        "{all}"
    );
    assert_eq!(code, 0, "{all}");
    assert!(!all.contains(MONITOR_PASSWORD));
}
