//! Every declared dependency is used (issue 16): a crate in `[dependencies]` must be named by a
//! path (`name::`) or a `use` in src/ or build.rs, one in `[dev-dependencies]` also counts
//! tests/. An unused one (as `humantime-serde` was) fails here with its name, to be removed
//! from Cargo.toml.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources(dirs: &[&str]) -> String {
    let mut files = Vec::new();
    for d in dirs {
        let p = root().join(d);
        if p.is_file() {
            files.push(p);
        } else {
            rust_files(&p, &mut files);
        }
    }
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` names crate `krate` (`krate::...`, `use krate`, `extern crate krate`), not as
/// the tail of a longer identifier.
fn names_crate(code: &str, krate: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(krate).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = &code[i + krate.len()..];
        before.is_none_or(|c| !ident(c))
            && (after.starts_with("::")
                || (after.starts_with([';', ' ', ':', '}', ','])
                    && (code[..i].trim_end().ends_with("use")
                        || code[..i].trim_end().ends_with("crate"))))
    })
}

/// The crates of a `[section]` of the manifest, as code names them (`-` becomes `_`).
fn declared(manifest: &toml::Table, section: &str) -> Vec<(String, String)> {
    manifest
        .get(section)
        .and_then(|t| t.as_table())
        .map(|t| t.keys().map(|k| (k.clone(), k.replace('-', "_"))).collect())
        .unwrap_or_default()
}

fn unused(manifest: &toml::Table, section: &str, code: &str) -> Vec<String> {
    declared(manifest, section)
        .into_iter()
        .filter(|(_, krate)| !names_crate(code, krate))
        .map(|(name, _)| name)
        .collect()
}

fn manifest() -> toml::Table {
    std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_dependency_is_used() {
    let m = manifest();
    let lib = sources(&["src", "build.rs"]);
    let none: Vec<String> = Vec::new();
    assert_eq!(
        unused(&m, "dependencies", &lib),
        none,
        "declared in [dependencies] and never used in src/ or build.rs: remove them from Cargo.toml"
    );
    let all = format!("{lib}\n{}", sources(&["tests", "benches"]));
    assert_eq!(
        unused(&m, "dev-dependencies", &all),
        none,
        "declared in [dev-dependencies] and never used: remove them from Cargo.toml"
    );
    assert!(declared(&m, "dependencies").len() > 10, "manifest not read");
}

#[test]
fn the_check_sees_an_unused_crate_and_not_a_used_one() {
    let m: toml::Table =
        "[dependencies]\nhumantime-serde = \"1\"\nserde-json = \"1\"\nfoo = \"1\"\nbar = \"1\"\n"
            .parse()
            .unwrap();
    let code = "use serde_json::Value;\nfn f() { bar::baz(); my_foo::x(); }\n";
    assert_eq!(
        unused(&m, "dependencies", code),
        vec!["foo".to_owned(), "humantime-serde".to_owned()]
    );
    assert!(names_crate("use foo;", "foo"));
    assert!(names_crate("extern crate foo;", "foo"));
    assert!(!names_crate("let foo = 1;", "foo"));
}
