//! The integration tests as one test binary (`cargo nextest run --test it`), so the shared
//! support is compiled and linked once instead of once per suite. Each module is one suite, run
//! alone with its path as the filter: `cargo nextest run --test it faults::`. Shared scenario
//! set-up lives in `tests/support` (clusters, the agent as a child process, the stand-in app,
//! HTTP) and `tests/oncall_support` (rule files, dashboards, PromQL names).

#[path = "../oncall_support/mod.rs"]
mod oncall_support;
#[path = "../support/mod.rs"]
mod support;

mod activity;
mod alert_push;
mod alerts;
mod app_probes;
mod app_recovery;
mod checkpoint_bloat;
mod connections;
mod dashboards;
mod dependencies;
mod deploy;
mod diagnose;
mod docs;
mod exposition;
mod faults;
mod first_hour;
mod fleet;
mod floors;
mod hostile_input;
mod http_handlers;
mod langgraph_schema;
mod metric_names;
mod migration;
mod migration_threads;
mod no_dsn;
mod oncall_e2e;
mod otel;
mod pg_batch;
mod pg_checks;
mod pg_dsn_forms;
mod pg_session;
mod pg_tls;
mod recovery;
mod reload;
mod run_core;
mod scripts_help;
mod secrets;
mod sqlite;
mod sqlite_other_uid;
mod status_cli;
mod status_page;
mod storage;
mod surfaces;
mod web_endpoint;
mod web_floods;

/// Every suite lives here: a new `tests/*.rs` would be a binary of its own again (compiling the
/// support once more), and a file in `tests/it/` not declared above would never run.
#[test]
fn every_integration_suite_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let rs = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let stray = rs(&tests);
    assert!(
        stray.is_empty(),
        "move {stray:?} into tests/it/ (git mv tests/X.rs tests/it/X.rs) and declare `mod X;` in tests/it/main.rs"
    );
    let main = std::fs::read_to_string(tests.join("it/main.rs")).unwrap();
    let undeclared: Vec<String> = rs(&tests.join("it"))
        .into_iter()
        .filter(|m| m != "main" && !main.contains(&format!("\nmod {m};\n")))
        .collect();
    assert!(
        undeclared.is_empty(),
        "tests/it/{undeclared:?}.rs: declare them in tests/it/main.rs"
    );
}
