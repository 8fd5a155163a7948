//! Every script under `scripts/` and `bench/` answers `--help` and `-h` with its usage instead of running:
//! exit 0, a `usage:` first line, quickly, and without starting anything (the tools a script
//! runs, cargo, apt-get, pg_ctl, curl and the like, are stubs here that record being called).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the scripts start when they run; each is replaced by a stub that records the call.
const TOOLS: &[&str] = &[
    "cargo",
    "rustc",
    "rustup",
    "apt-get",
    "sudo",
    "runuser",
    "npm",
    "curl",
    "wrk",
    "hyperfine",
    "psql",
    "pg_ctl",
    "initdb",
    "promtool",
    "amtool",
    "pgbouncer",
    "chromium",
    "cc",
    "g++",
];

#[test]
fn every_script_answers_help_without_running() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stubs = tempfile::tempdir().unwrap();
    let marker = stubs.path().join("called");
    for tool in TOOLS {
        let p = stubs.path().join(tool);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit 97\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        stubs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut scripts: Vec<_> = ["scripts", "bench"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            // A script is executable or a `.py` with a shebang; a module the scripts import
            // (bench/common.py) is neither.
            let exec = p.metadata().unwrap().permissions().mode() & 0o111 != 0;
            let py_script = p.extension().is_some_and(|e| e == "py")
                && std::fs::read_to_string(p).is_ok_and(|t| t.starts_with("#!"));
            exec || py_script
        })
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 12, "{scripts:?}");
    for script in &scripts {
        for flag in ["--help", "-h"] {
            let mut cmd = if script.extension().is_some_and(|e| e == "py") {
                let mut c = Command::new("python3");
                c.arg(script);
                c
            } else {
                Command::new(script)
            };
            let started = Instant::now();
            let out = cmd
                .arg(flag)
                .current_dir(root)
                .env("PATH", &path)
                .output()
                .unwrap();
            let took = started.elapsed();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let name = script.file_name().unwrap().to_string_lossy();
            assert!(
                out.status.success(),
                "{name} {flag}: {:?}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout
                    .lines()
                    .next()
                    .is_some_and(|l| l.starts_with("usage: ")),
                "{name} {flag} prints no usage line first:\n{stdout}"
            );
            assert!(
                took < Duration::from_secs(10),
                "{name} {flag} took {took:?}"
            );
            let called = std::fs::read_to_string(&marker).unwrap_or_default();
            assert!(called.is_empty(), "{name} {flag} started: {called}");
        }
    }
}
