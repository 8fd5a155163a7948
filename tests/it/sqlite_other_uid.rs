//! The SQLite check against files the app's real library (LangGraph's `SqliteSaver`) wrote,
//! with the agent running as another uid, as deploy/ recommends (issue 14 item 1, issue 13
//! item 9): on a shared volume (group-writable, setgid) the agent's read must leave the
//! directory exactly as it was, so the app can write again; in a directory the agent cannot
//! write the file is still readable; and while the app holds the file open in WAL mode the
//! agent sees its current data and creates nothing.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rose_agent::check::sqlite::{QuickCheck, SqliteErrorKind, read_store};

use support::langgraph_sqlite::{
    APP_UID, HeldApp, agent_as_other_uid, app_cycles, app_dir, app_write, diagnose_as_other_uid,
    owners_and_modes, snapshot,
};
use support::*;

fn rows(m: &Metrics) -> Option<f64> {
    m.get(r#"rose_sqlite_rows_estimate{table="checkpoints"}"#)
}

/// Runs the agent until it has read `want` checkpoints from the file, then stops it.
fn agent_reads(db: &Path, in_shared_group: bool, want: u32) {
    let mut agent = agent_as_other_uid(db, in_shared_group);
    let mut last = Metrics::default();
    let seen = wait_for(Duration::from_secs(15), || {
        last = agent.metrics();
        last.get("rose_sqlite_readable") == Some(1.0) && rows(&last) == Some(f64::from(want))
    });
    assert!(
        seen.is_some(),
        "the agent did not read {want} checkpoints: {:?}\n{}",
        last.0
            .iter()
            .filter(|(k, _)| k.starts_with("rose_sqlite"))
            .collect::<Vec<_>>(),
        agent.output()
    );
    // Several more cycles (quick_check included) before it stops.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(agent.metrics().get("rose_sqlite_readable"), Some(1.0));
    assert_eq!(agent.terminate(), Some(0), "{}", agent.output());
}

#[test]
fn shared_volume_read_leaves_the_directory_as_it_was_and_the_app_writes_again() {
    let dir = app_dir(true);
    let db = dir.path().join("ck.db");
    assert_eq!(app_write(&db, 12), Ok(12));
    let before = snapshot(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        [".", "ck.db"],
        "a cleanly closed WAL file has no -wal/-shm: {before:?}"
    );

    agent_reads(&db, true, 12);
    let (_, report, out) = diagnose_as_other_uid(&db, true);
    assert!(
        !codes(&report).iter().any(|c| c == "sqlite_unreadable"),
        "{out}"
    );

    // Names, sizes, mtimes, owners and modes, of the directory too: nothing changed.
    assert_eq!(snapshot(dir.path()), before);
    // The app (its own uid) writes again after the agent read: before the fix the agent's
    // -wal/-shm made this fail with "attempt to write a readonly database".
    assert_eq!(app_write(&db, 5), Ok(17));
    let after = snapshot(dir.path());
    assert_eq!(after.keys().collect::<Vec<_>>(), [".", "ck.db"]);
    assert!(after.values().all(|e| e.uid == APP_UID), "{after:?}");
}

#[test]
fn read_only_directory_is_readable_not_sqlite_unreadable() {
    let dir = app_dir(false);
    let db = dir.path().join("ck.db");
    assert_eq!(app_write(&db, 7), Ok(7));
    let before = snapshot(dir.path());

    let (_, report, out) = diagnose_as_other_uid(&db, false);
    assert!(
        !codes(&report).iter().any(|c| c == "sqlite_unreadable"),
        "a healthy file the agent may only read: {out}"
    );
    agent_reads(&db, false, 7);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn live_wal_file_is_read_current_and_nothing_is_created() {
    let dir = app_dir(true);
    let db = dir.path().join("ck.db");
    let (mut app, n) = HeldApp::start(&db, 9);
    assert_eq!(n, 9);
    let before = snapshot(dir.path());
    assert!(
        before.contains_key("ck.db-wal") && before.contains_key("ck.db-shm"),
        "the app holds the WAL open: {before:?}"
    );

    let mut agent = agent_as_other_uid(&db, true);
    // The rows are still in the WAL (no checkpoint yet): seeing them means reading the WAL.
    let current = |agent: &Agent, want: u32| {
        wait_for(Duration::from_secs(15), || {
            rows(&agent.metrics()) == Some(f64::from(want))
        })
        .is_some()
    };
    assert!(current(&agent, 9), "{}", agent.output());
    for k in 1..=5 {
        let n = app.put(k * 3);
        assert!(
            current(&agent, n),
            "after the app wrote {n}: {}",
            agent.output()
        );
    }
    assert_eq!(agent.metrics().get("rose_sqlite_readable"), Some(1.0));
    assert_eq!(agent.terminate(), Some(0), "{}", agent.output());

    // Same files, same owners and modes (their sizes and mtimes are the app's to change).
    assert_eq!(
        owners_and_modes(&snapshot(dir.path())),
        owners_and_modes(&before)
    );
    let n = app.put(4);
    assert!(app.close(), "the app failed to close");
    // The app's last close removed -wal/-shm: no reader left a lock or a file behind.
    let after = snapshot(dir.path());
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [".", "ck.db"],
        "{after:?}"
    );
    assert_eq!(app_write(&db, 1), Ok(n + 1));
}

#[test]
fn app_opening_and_closing_during_reads_is_busy_at_worst_never_corrupt() {
    // The app opens the closed file, writes and closes, over and over, while the agent's read
    // path runs flat out (quick_check included), switching between immutable (closed) and
    // WAL-reader (open) mode under it. A read the app disturbed may be `busy`, never corrupt,
    // and the app never fails.
    let dir = app_dir(true);
    let db = dir.path().join("ck.db");
    assert_eq!(app_write(&db, 20), Ok(20));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut busy, mut modes) = (0u32, 0u32, BTreeSet::new());
                while !stop.load(Ordering::Relaxed) {
                    let (c, qc) = read_store(&p, true);
                    match &c.error {
                        None => ok += 1,
                        Some(e) if e.kind == SqliteErrorKind::Busy => busy += 1,
                        Some(e) => panic!("read failed: {e:?} {c:?}"),
                    }
                    assert!(
                        !matches!(qc, QuickCheck::Problems { .. }),
                        "false corruption: {qc:?}"
                    );
                    modes.extend(c.open_mode.map(|m| format!("{m:?}")));
                }
                (ok, busy, modes)
            })
        })
        .collect();
    let cycles = app_cycles(&db, 3, 4.0);
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!("app cycles {cycles:?}; readers (ok, busy, modes): {results:?}");
    let cycles = cycles.expect("the app failed while the agent read");
    let ok: u32 = results.iter().map(|r| r.0).sum();
    assert!(cycles > 3 && ok > 10, "{cycles} cycles, {results:?}");
    let (c, qc) = read_store(&db, true);
    assert_eq!(
        c.checkpoints_max_rowid,
        Some(u64::from(20 + cycles * 3)),
        "{c:?}"
    );
    assert!(matches!(qc, QuickCheck::Ok { .. }), "{qc:?}");
    // A WAL reader's lock makes the app's last close keep its -wal/-shm (as any reader
    // does); whatever is there is the app's, and its next clean close removes it.
    let files = snapshot(dir.path());
    assert!(files.values().all(|e| e.uid == APP_UID), "{files:?}");
    assert_eq!(app_write(&db, 1), Ok(20 + cycles * 3 + 1));
    let files = snapshot(dir.path());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [".", "ck.db"],
        "{files:?}"
    );
}
