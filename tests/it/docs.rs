//! Docs that are generated or parsed: `docs/metrics.md` must match the catalog, and the example
//! configuration must load.

use std::path::Path;

#[test]
fn metrics_doc_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
    let want = rose_agent::catalog::markdown();
    if std::env::var("UPDATE_DOCS").is_ok() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/metrics.md is stale: run `UPDATE_DOCS=1 cargo test --test it docs::`"
    );
}

/// `docs/findings.md` lists every finding code of the catalog under `## Codes`.
#[test]
fn findings_doc_lists_every_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/findings.md");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    let (head, _) = have
        .split_once("## Codes\n")
        .expect("docs/findings.md has a `## Codes` section");
    let want = format!(
        "{head}## Codes\n\n{}",
        rose_agent::findings::markdown_table()
    );
    if std::env::var("UPDATE_DOCS").is_ok() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/findings.md is stale: run `UPDATE_DOCS=1 cargo test --test it docs::`"
    );
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.example.toml");
    let env: std::collections::HashMap<&str, &str> =
        [("DATABASE_URL", "postgresql://u:p@h/db")].into();
    let c = rose_agent::config::Config::load(Some(&path), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.app.pool_size, 10);
}
