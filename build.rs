//! Build script: the labels of `rose_agent_build_info` (revision, rustc, target), set as
//! compile-time environment variables. No network; whatever cannot be learnt is `unknown`.
//! `ROSE_AGENT_REVISION` overrides the git revision (a container build has no `.git`).

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=ROSE_AGENT_REVISION");
    let revision = std::env::var("ROSE_AGENT_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves (a commit, a checkout), in a worktree too.
    if let Some(git_dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = run(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=ROSE_AGENT_REVISION={revision}");
    println!("cargo:rustc-env=ROSE_AGENT_RUSTC={rustc_version}");
    println!("cargo:rustc-env=ROSE_AGENT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
