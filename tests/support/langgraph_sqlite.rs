//! The app's real SQLite checkpointer for tests: LangGraph's `SqliteSaver`
//! (`langgraph-checkpoint-sqlite` from PyPI) in a Python venv cached under `target/tmp`, run as
//! its own uid; the agent run as another uid sharing a group (a shared volume with `fsGroup`);
//! and a snapshot of a directory (names, sizes, mtimes, owners, modes) to prove a read left it
//! as it was. Uids are numeric (`setpriv`), so no user is added to the machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::{Agent, free_port, http_get, wait_for};

/// The package the venv holds (pinned: the test exercises this release's SQL and pragmas).
pub const PACKAGE: &str = "langgraph-checkpoint-sqlite==3.1.2";
/// The app's uid and the group of the shared volume.
pub const APP_UID: u32 = 20_001;
pub const SHARED_GID: u32 = 20_000;
/// The agent's uid and its own primary group; `SHARED_GID` is a supplementary group.
pub const AGENT_UID: u32 = 20_002;
pub const AGENT_GID: u32 = 20_003;

/// The app: `write PATH N` puts N checkpoints through SqliteSaver and closes; `hold PATH N`
/// puts N, keeps the saver open and, per stdin line `put K`, puts K more and answers with
/// the number of checkpoints; it closes on `quit` or end of input. `cycle PATH N SECONDS`
/// opens, puts N and closes, over and over for that long, and prints the number of cycles.
/// `ROSE_TEST_THREAD` (a `str.format` pattern, default `thread-{}`) names the five threads the
/// checkpoints rotate over, and every `ROSE_TEST_META_<KEY>` variable adds `<key>` to their
/// metadata, as an interface of the app would.
const APP_PY: &str = r#"
import os, sys, time
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.base import empty_checkpoint, create_checkpoint

THREAD = os.environ.get("ROSE_TEST_THREAD", "thread-{}")
META = {k[len("ROSE_TEST_META_"):].lower(): v for k, v in os.environ.items() if k.startswith("ROSE_TEST_META_")}

def put(saver, k, start):
    for i in range(start, start + k):
        cfg = {"configurable": {"thread_id": THREAD.format(i % 5), "checkpoint_ns": ""}}
        cp = create_checkpoint(empty_checkpoint(), {}, i)
        saver.put(cfg, cp, {"source": "loop", "step": i, **META}, {})
    return start + k

def count(saver):
    return sum(1 for _ in saver.list(None))

cmd, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cmd == "cycle":
    cycles, until = 0, time.monotonic() + float(sys.argv[4])
    while time.monotonic() < until:
        with SqliteSaver.from_conn_string(path) as saver:
            saver.setup()
            put(saver, n, count(saver))
        cycles += 1
    print(cycles, flush=True)
    sys.exit(0)
with SqliteSaver.from_conn_string(path) as saver:
    saver.setup()
    done = put(saver, n, count(saver))
    print(count(saver), flush=True)
    if cmd == "hold":
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            done = put(saver, int(words[1]), done)
            print(count(saver), flush=True)
"#;

/// The venv's Python, created and filled on first use (one installer at a time across test
/// processes; reused while its marker names the same package).
pub fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvenv-langgraph-sqlite");
    let py = root.join("bin/python");
    let marker = root.join(".installed");
    let lock = std::fs::File::create(root.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(PACKAGE) && py.exists() {
        return py;
    }
    let _ = std::fs::remove_dir_all(&root);
    // The system interpreter: a venv of a per-user one (pyenv under /root) cannot run as
    // another uid.
    let base = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap();
    let out = Command::new(base)
        .args(["-m", "venv"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 -m venv failed (scripts/setup installs python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(root.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", PACKAGE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install {PACKAGE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, PACKAGE).unwrap();
    py
}

fn app_script() -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("langgraph_sqlite_app.py");
    if std::fs::read_to_string(&p).ok().as_deref() != Some(APP_PY) {
        let tmp = p.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, APP_PY).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
    p
}

/// `setpriv` prefix running a command as `uid` with these groups, umask 002 as under fsGroup.
fn as_uid(uid: u32, gid: u32, groups: &[u32], program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            format!(
                "--groups={}",
                groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .args(["--inh-caps=-all", "--"])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp");
    c
}

/// Runs the app as `APP_UID` (group `SHARED_GID`): puts `n` checkpoints and closes. Returns
/// the number of checkpoints in the file, or the app's error output.
pub fn app_write(db: &Path, n: u32) -> Result<u32, String> {
    let out = as_uid(APP_UID, SHARED_GID, &[SHARED_GID], &python())
        .arg(app_script())
        .arg("write")
        .arg(db)
        .arg(n.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.trim().parse() {
        Ok(c) if out.status.success() => Ok(c),
        _ => Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// Runs the app as `APP_UID` opening the file, putting `n` checkpoints and closing it, over
/// and over for `seconds`. Returns the number of cycles, or the app's error output.
pub fn app_cycles(db: &Path, n: u32, seconds: f64) -> Result<u32, String> {
    let out = as_uid(APP_UID, SHARED_GID, &[SHARED_GID], &python())
        .arg(app_script())
        .arg("cycle")
        .arg(db)
        .arg(n.to_string())
        .arg(seconds.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.trim().parse() {
        Ok(c) if out.status.success() => Ok(c),
        _ => Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// The app holding the file open (WAL live: `-wal` and `-shm` exist) between commands.
pub struct HeldApp {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl HeldApp {
    /// Starts the app as `APP_UID`, puts `n` checkpoints, keeps the file open.
    pub fn start(db: &Path, n: u32) -> (HeldApp, u32) {
        HeldApp::start_env(db, n, &[])
    }

    /// [`HeldApp::start`] with extra environment (`ROSE_TEST_THREAD`, `ROSE_TEST_META_*`: the
    /// thread ids and metadata an interface writes, see `APP_PY`).
    pub fn start_env(db: &Path, n: u32, env: &[(&str, &str)]) -> (HeldApp, u32) {
        let mut child = as_uid(APP_UID, SHARED_GID, &[SHARED_GID], &python())
            .envs(env.iter().copied())
            .arg(app_script())
            .arg("hold")
            .arg(db)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut app = HeldApp {
            child,
            stdin,
            stdout,
        };
        let count = app.answer();
        (app, count)
    }

    fn answer(&mut self) -> u32 {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("the app did not answer a count: {line:?}"))
    }

    /// Puts `k` more checkpoints; returns the count.
    pub fn put(&mut self, k: u32) -> u32 {
        writeln!(self.stdin.as_mut().unwrap(), "put {k}").unwrap();
        self.answer()
    }

    /// Closes the saver (SQLite's last close checkpoints and removes `-wal`/`-shm`).
    pub fn close(mut self) -> bool {
        drop(self.stdin.take());
        wait_for(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        })
        .is_some()
            && self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for HeldApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory the app owns: `shared` = the volume of a pod with `fsGroup` (group
/// `SHARED_GID`, setgid, group-writable: the agent may create files there); otherwise
/// `0755`, owned by the app (the agent cannot create anything).
pub fn app_dir(shared: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::os::unix::fs::chown(p, Some(APP_UID), Some(SHARED_GID)).unwrap();
    std::fs::set_permissions(
        p,
        std::fs::Permissions::from_mode(if shared { 0o2775 } else { 0o755 }),
    )
    .unwrap();
    dir
}

/// One directory entry as a snapshot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub mtime_ns: i128,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Every entry of `dir` (and `dir` itself as `.`), by name.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    let entry = |m: std::fs::Metadata| Entry {
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
    };
    let mut out = BTreeMap::new();
    out.insert(".".to_owned(), entry(std::fs::metadata(dir).unwrap()));
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            entry(std::fs::symlink_metadata(e.path()).unwrap()),
        );
    }
    out
}

/// Names, owners and modes only (what the app's activity does not change).
pub fn owners_and_modes(s: &BTreeMap<String, Entry>) -> BTreeMap<String, (u32, u32, u32)> {
    s.iter()
        .filter(|(n, _)| *n != ".")
        .map(|(n, e)| (n.clone(), (e.uid, e.gid, e.mode)))
        .collect()
}

/// `agent run` as `AGENT_UID` (supplementary group `SHARED_GID` when `in_shared_group`), fast
/// cadence, watching `db` (no DSN: the SQLite side alone).
pub fn agent_as_other_uid(db: &Path, in_shared_group: bool) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let groups: &[u32] = if in_shared_group { &[SHARED_GID] } else { &[] };
    let mut cmd = as_uid(
        AGENT_UID,
        AGENT_GID,
        groups,
        Path::new(env!("CARGO_BIN_EXE_agent")),
    );
    cmd.arg("run");
    for (k, v) in agent_env(db) {
        cmd.env(k, v);
    }
    cmd.env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info");
    cmd.stdout(std::fs::File::create(dir.path().join("stdout")).unwrap());
    cmd.stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let child = cmd.spawn().unwrap();
    let mut agent = Agent { child, port, dir };
    wait_for(Duration::from_secs(20), || {
        matches!(agent.child.try_wait(), Ok(Some(_)))
            || http_get(agent.port, "/healthz")
                .map(|r| r.0 == 200)
                .unwrap_or(false)
    })
    .filter(|_| matches!(agent.child.try_wait(), Ok(None)))
    .unwrap_or_else(|| panic!("agent did not serve /healthz: {}", agent.output()));
    agent
}

/// `agent diagnose --format json` as `AGENT_UID`: (exit code, report, all output).
pub fn diagnose_as_other_uid(db: &Path, in_shared_group: bool) -> (i32, serde_json::Value, String) {
    let groups: &[u32] = if in_shared_group { &[SHARED_GID] } else { &[] };
    let out = as_uid(
        AGENT_UID,
        AGENT_GID,
        groups,
        Path::new(env!("CARGO_BIN_EXE_agent")),
    )
    .args(["diagnose", "--format", "json"])
    .envs(agent_env(db))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {all}"));
    (out.status.code().unwrap_or(-1), json, all)
}

fn agent_env(db: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SHORT_TERM_MEMORY_DB_PATH", db.display().to_string()),
        ("AGENT_INTERVAL", "200ms".into()),
        ("AGENT_SLOW_INTERVAL", "200ms".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ]
}
