//! Which conversations make PostgreSQL grow (issue 19 item 3), for real: LangGraph's own
//! `PostgresSaver` writes one runaway thread (over a thousand checkpoints and a large state) and
//! a few small ones; the agent exports the per-thread figures, raises `checkpoint_bloat` on
//! `/findings`, and no thread id appears in `/metrics`, `/findings` or its log. Without SELECT
//! on the tables the check reports its capability and no finding. A million-checkpoint table
//! measures the check's statement against its budget (the session's statement timeout).

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Thread ids shaped like the app's (WhatsApp numbers): none may leave the database.
const RUNAWAY: &str = "whatsapp:+15550009999";
const SMALL: &str = "whatsapp:+1555000100{}";

const WRITE_PY: &str = r#"
import os, sys
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.base import empty_checkpoint, create_checkpoint
dsn, runaway, small = sys.argv[1], sys.argv[2], sys.argv[3]
def put(saver, thread, i, values, versions):
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saver.put(cfg, create_checkpoint(cp, None, i), {"source": "loop", "step": i}, versions)
with PostgresSaver.from_conn_string(dsn) as saver:
    for i in range(1100):
        put(saver, runaway, i, {}, {})
    # A large state: five steps, each a new 12 MB version of the "documents" channel (a string:
    # the saver keeps it inline in the checkpoint row, the issue's "five 10 MB checkpoint rows").
    for i in range(5):
        v = {"documents": f"{i + 1:032}.0"}
        put(saver, runaway, 1100 + i, {"documents": os.urandom(6_000_000).hex()}, v)
    for t in range(3):
        for i in range(3):
            # A list channel: the saver stores it in checkpoint_blobs.
            put(saver, small.format(t), i, {"messages": ["hello"] * (i + 1)}, {"messages": f"{i + 1:032}.0"})
print("ok")
"#;

/// After the runbook's "keep the last K": the saver still reads the newest checkpoint (with its
/// state); then `delete_thread` removes the thread; prints JSON.
const VERIFY_PY: &str = r#"
import json, sys
from langgraph.checkpoint.postgres import PostgresSaver
dsn, runaway = sys.argv[1], sys.argv[2]
cfg = {"configurable": {"thread_id": runaway, "checkpoint_ns": ""}}
with PostgresSaver.from_conn_string(dsn) as saver:
    t = saver.get_tuple(cfg)
    kept = len(list(saver.list(cfg)))
    out = {"kept": kept, "step": t.metadata["step"], "documents": len(t.checkpoint["channel_values"].get("documents", ""))}
    saver.delete_thread(runaway)
    out["after_delete"] = len(list(saver.list(cfg)))
print(json.dumps(out))
"#;

/// The runbook's "keep the last K checkpoints of a thread" SQL for `thread`, as written in
/// docs/runbooks/checkpoint_bloat.md.
fn runbook_keep_last_sql(thread: &str) -> String {
    let md = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks/checkpoint_bloat.md"),
    )
    .unwrap();
    let mitigation = md.split("## Mitigation").nth(1).unwrap();
    let block = mitigation.split("```sql").nth(1).unwrap();
    block
        .split("```")
        .next()
        .unwrap()
        .replace(":'id'", &format!("'{thread}'"))
}

fn metric(m: &Metrics, name: &str) -> Option<f64> {
    m.0.iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| *v)
}

#[test]
fn a_runaway_thread_written_by_langgraph_raises_checkpoint_bloat_without_ids() {
    let Some(py) = langgraph::python() else {
        return;
    };
    // LangGraph's own setup() creates the tables.
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let url = langgraph::superuser_url(&pg);
    langgraph::setup(&py, &url);
    let out = Command::new("timeout")
        .arg("300")
        .arg(&py)
        .args(["-c", WRITE_PY, &url, RUNAWAY, SMALL])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_SLOW_INTERVAL", "1s".to_string()),
        ("AGENT_FINDING_PENDING_CYCLES", "1".to_string()),
    ]);
    let agent = Agent::start(&env);

    // Least privilege first: the role may not read conversations: a capability, no finding.
    let seen = wait_for(Duration::from_secs(20), || {
        metric(&agent.metrics(), "rose_checkpoint_threads_readable").is_some()
    });
    assert!(
        seen.is_some(),
        "no rose_checkpoint_threads_readable\n{}",
        agent.output()
    );
    let m = agent.metrics();
    assert_eq!(metric(&m, "rose_checkpoint_threads_readable"), Some(0.0));
    assert_eq!(metric(&m, "rose_checkpoint_thread_max_checkpoints"), None);
    let findings = agent.get("/findings").1;
    assert!(!findings.contains("checkpoint_bloat"), "{findings}");

    // The documented grant (scripts/create-monitoring-role.sql, read_checkpoints).
    let (code, out) = langgraph::run_role_script(&pg, &[("read_checkpoints", "1")]);
    assert_eq!(code, 0, "{out}");
    let raised = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|d| {
                d["findings"]
                    .as_array()
                    .map(|a| a.iter().any(|f| f["code"] == "checkpoint_bloat"))
            })
            .unwrap_or(false)
    };
    let seen = wait_for(Duration::from_secs(30), || {
        raised(&agent.get("/findings").1)
    });
    let findings = agent.get("/findings").1;
    assert!(
        seen.is_some() && raised(&findings),
        "no checkpoint_bloat: {findings}\n{}",
        agent.output()
    );
    let m = agent.metrics();
    assert_eq!(metric(&m, "rose_checkpoint_threads_readable"), Some(1.0));
    assert_eq!(metric(&m, "rose_checkpoint_threads"), Some(4.0));
    assert_eq!(
        metric(&m, "rose_checkpoint_thread_max_checkpoints"),
        Some(1105.0)
    );
    assert_eq!(
        metric(&m, "rose_checkpoint_thread_checkpoints{quantile=\"0.5\"}"),
        Some(3.0),
        "{:?}",
        m.0
    );
    let thread_bytes = metric(&m, "rose_checkpoint_thread_max_bytes").unwrap();
    assert!(thread_bytes > 50e6, "{thread_bytes}");
    let row = metric(&m, "rose_checkpoint_max_row_bytes").unwrap();
    assert!(row > 10e6, "{row}");
    let blob = metric(&m, "rose_checkpoint_max_blob_bytes").unwrap();
    assert!(blob > 0.0 && blob < 1e6, "{blob}");

    // The runaway thread is named by its md5 prefix only; the small ones not at all.
    let md5 = pg.psql(&format!("SELECT left(md5('{RUNAWAY}'), 12)"));
    assert!(findings.contains(&md5), "{md5} not in {findings}");
    let metrics_body = agent.get("/metrics").1;
    let log = agent.output();
    for (what, text) in [
        ("/metrics", &metrics_body),
        ("/findings", &findings),
        ("log", &log),
    ] {
        assert!(!text.contains("+1555000"), "a thread id in {what}: {text}");
    }

    // The runbook's steps work on what the saver wrote: keep the last 20 (the saver still
    // resumes from the newest, with its state), then delete_thread; the finding clears.
    pg.psql(&runbook_keep_last_sql(RUNAWAY));
    let left = pg.psql(&format!(
        "SELECT count(*) FROM checkpoints WHERE thread_id = '{RUNAWAY}'"
    ));
    assert_eq!(left, "20");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&py)
        .args(["-c", VERIFY_PY, &url, RUNAWAY])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kept"], 20, "{v}");
    assert_eq!(v["step"], 1104, "{v}");
    assert_eq!(v["documents"], 12_000_000, "{v}");
    assert_eq!(v["after_delete"], 0, "{v}");
    let cleared = wait_for(Duration::from_secs(30), || {
        !raised(&agent.get("/findings").1)
            && metric(&agent.metrics(), "rose_checkpoint_threads") == Some(3.0)
    });
    assert!(
        cleared.is_some(),
        "checkpoint_bloat stays after pruning: {}",
        agent.get("/findings").1
    );
}

/// A million checkpoints (10,000 threads of 100) and 200,000 blobs, made with generate_series:
/// the check's aggregate stays well within the default statement timeout (5 s), the budget of
/// one statement of a slow cycle.
#[test]
fn the_per_thread_statement_is_bounded_on_a_million_checkpoints() {
    let pg = PgCluster::start();
    let t0 = Instant::now();
    pg.psql(
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint, metadata) \
         SELECT 'thread-' || (i % 10000), '', lpad(i::text, 12, '0'), 'msgpack', \
         jsonb_build_object('v', 1, 'id', i, 'channel_versions', jsonb_build_object('messages', i)), \
         jsonb_build_object('step', i) FROM generate_series(1, 1000000) i",
    );
    pg.psql(
        "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) \
         SELECT 'thread-' || (i % 10000), '', 'messages', i::text, 'msgpack', decode(md5(i::text), 'hex') \
         FROM generate_series(1, 200000) i",
    );
    pg.psql("VACUUM ANALYZE checkpoints");
    pg.psql("VACUUM ANALYZE checkpoint_blobs");
    eprintln!("filled in {:?}", t0.elapsed());
    let sql = rose_agent::check::checkpoint_threads::stats_sql("public", true);
    let mut times = Vec::new();
    let mut doc = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        doc = pg.psql(&sql);
        times.push(t.elapsed());
    }
    let best = times.iter().min().unwrap();
    eprintln!("checkpoint_threads on 1,000,000 checkpoints + 200,000 blobs: {times:?}");
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["threads"], 10000, "{v}");
    assert_eq!(v["max_checkpoints"], 100, "{v}");
    assert_eq!(v["median"], 100, "{v}");
    assert!(
        *best < Duration::from_secs(4),
        "{best:?} is over the budget of a 5 s statement timeout"
    );
}
