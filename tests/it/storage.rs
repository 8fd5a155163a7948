//! How long until the plan is full (issue 19 item 2), for real: a cluster with a small custom
//! storage limit (AGENT_STORAGE_LIMIT a few MB above its size) and a table growing toward it.
//! The agent exports the limit and the time to full, raises `storage_near_limit` with its steps
//! on `/findings` (warning from the days-to-full projection, critical when nearly full) and in
//! `agent diagnose`, and the alert rule's own expression (predict_linear) selects the database
//! in a real Prometheus scraping the agent. The runbook's prune SQL (keep the newest checkpoints
//! of every thread) runs on checkpoints the real `PostgresSaver` wrote, which reads them back.

use crate::oncall_support;
use crate::support;

use std::time::{Duration, Instant};

use support::prom::Prometheus;
use support::*;

fn active<'a>(doc: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| f["code"] == code)
}

fn size(pg: &PgCluster) -> u64 {
    pg.psql("SELECT pg_database_size(current_database())")
        .parse()
        .unwrap()
}

/// About 270 kB of heap: 500 rows of 512 uncompressed characters.
fn grow(pg: &PgCluster) {
    pg.psql("INSERT INTO grow (pad) SELECT repeat(md5(random()::text), 16) FROM generate_series(1, 500)");
}

#[test]
fn a_database_growing_toward_a_small_limit_raises_storage_near_limit() {
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE grow (id bigserial PRIMARY KEY, pad text)");
    let start = size(&pg);
    let limit = start + 8_000_000;
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_SLOW_INTERVAL", "1s".to_string()),
        ("AGENT_FINDING_PENDING_CYCLES", "1".to_string()),
        ("AGENT_STORAGE_LIMIT", format!("{limit}B")),
    ]);
    let agent = Agent::start(&env);
    let prom = Prometheus::start("rose-agent", &[format!("127.0.0.1:{}", agent.port)]);
    let fail = |what: String| -> ! {
        panic!(
            "{what}\n--- agent ---\n{}\n--- prometheus ---\n{}",
            agent.output(),
            prom.as_ref().map(|p| p.log()).unwrap_or_default()
        )
    };

    // Flat at ~50% of the limit: the limit is exported, nothing is near it.
    let m = wait_for(Duration::from_secs(20), || {
        agent
            .metrics()
            .names()
            .contains("rose_pg_storage_limit_bytes")
    });
    if m.is_none() {
        fail("no rose_pg_storage_limit_bytes".into());
    }
    let metrics = agent.metrics();
    let exported = metrics
        .0
        .iter()
        .find(|(k, _)| k.starts_with("rose_pg_storage_limit_bytes"))
        .map(|(_, v)| *v);
    assert_eq!(exported, Some(limit as f64), "{:?}", metrics.0);
    let doc: serde_json::Value = serde_json::from_str(&agent.get("/findings").1).unwrap();
    assert!(active(&doc, "storage_near_limit").is_none(), "{doc:#}");

    // Grow about 0.5 MB a second until the projection (full within 14 days) raises the finding.
    let (t0, s0) = (Instant::now(), size(&pg));
    let mut doc = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        grow(&pg);
        std::thread::sleep(Duration::from_millis(500));
        doc = serde_json::from_str(&agent.get("/findings").1).unwrap_or_default();
        if active(&doc, "storage_near_limit").is_some() {
            break;
        }
    }
    let (t1, s1) = (Instant::now(), size(&pg));
    let Some(f) = active(&doc, "storage_near_limit") else {
        fail(format!(
            "no storage_near_limit after growing to {s1} of {limit}: {doc:#}"
        ));
    };
    assert!((s1 as f64) < 0.95 * limit as f64, "grew too far: {s1}");
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert!(
        f["summary"].as_str().unwrap().contains("will be full in"),
        "{f:#}"
    );
    let steps = f["steps"].to_string();
    for want in [
        "delete_thread",
        "VACUUM",
        "Railway Starter (1 GB storage, $5/month",
    ] {
        assert!(steps.contains(want), "{want} not in {steps}");
    }

    // A plausible time to full: within a factor of 4 of the test's own measured rate (the
    // agent's average reaches back to before the growth started).
    let rate = (s1 - s0) as f64 / (t1 - t0).as_secs_f64();
    let expected = (limit - s1) as f64 / rate;
    let full = agent
        .metrics()
        .0
        .iter()
        .find(|(k, _)| k.starts_with("rose_pg_storage_full_seconds"))
        .map(|(_, v)| *v);
    let Some(full) = full else {
        fail("no rose_pg_storage_full_seconds while growing".into())
    };
    eprintln!(
        "grew {:.0} kB/s; agent: full in {full:.1} s, test's own rate: {expected:.1} s",
        rate / 1e3
    );
    assert!(
        full > expected / 4.0 && full < expected * 4.0,
        "full in {full} s vs {expected} s at the measured rate"
    );

    // The alert rule's expression (predict_linear over what Prometheus scraped) selects it.
    if let Some(prom) = &prom {
        let rule = oncall_support::alert_rules()
            .into_iter()
            .find(|r| {
                r.alert == "RosePostgresStorageNearLimit" && r.label("severity") == Some("warning")
            })
            .expect("the warning rule");
        let mut got = vec![];
        let seen = wait_for(Duration::from_secs(30), || {
            grow(&pg);
            got = prom.query(&rule.expr);
            !got.is_empty()
        });
        if seen.is_none() {
            fail(format!(
                "the rule's expression selects nothing: {}",
                rule.expr
            ));
        }
        assert_eq!(got[0]["metric"]["job"], "rose-agent", "{got:?}");
    }

    // Past 95%: critical; and a one-shot diagnose (no growth history) sees it from the share.
    let deadline = Instant::now() + Duration::from_secs(60);
    while size(&pg) < limit * 96 / 100 && Instant::now() < deadline {
        grow(&pg);
    }
    let crit = wait_for(Duration::from_secs(20), || {
        doc = serde_json::from_str(&agent.get("/findings").1).unwrap_or_default();
        active(&doc, "storage_near_limit").is_some_and(|f| f["severity"] == "critical")
    });
    if crit.is_none() {
        fail(format!("not critical at {} of {limit}: {doc:#}", size(&pg)));
    }
    let (code, report, all) = diagnose(&env, &[]);
    assert_eq!(code, 2, "{all}");
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "storage_near_limit")
        .unwrap_or_else(|| panic!("diagnose: {report:#}"));
    assert_eq!(f["severity"], "critical");
    let rung = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sizes")
        .unwrap_or_else(|| panic!("no sizes rung: {report:#}"));
    assert!(
        rung["detail"]
            .as_str()
            .unwrap_or("")
            .contains("storage_near_limit"),
        "{rung}"
    );
}

/// Writes checkpoints as the app does (a new blob version per step, a pending write per
/// checkpoint), or verifies what the saver reads back, as JSON.
const SAVER_PY: &str = r#"
import sys, json
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.base import empty_checkpoint
dsn, mode = sys.argv[1], sys.argv[2]
threads, steps = ["t0", "t1"], 30
with PostgresSaver.from_conn_string(dsn) as s:
    if mode == "write":
        s.setup()
        for t in threads:
            cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ""}}
            ver = None
            for i in range(steps):
                ver = s.get_next_version(ver, None)
                cp = empty_checkpoint()
                cp["channel_values"] = {"messages": [f"{t} step {i}", "x" * 2000]}
                cp["channel_versions"] = {"messages": ver}
                cfg = s.put(cfg, cp, {"source": "loop", "step": i}, {"messages": ver})
                s.put_writes(cfg, [("messages", [f"pending {i}"])], f"task-{i}")
        print(json.dumps({"ok": True}))
    else:
        out = {}
        for t in threads:
            cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ""}}
            tuples = list(s.list(cfg))
            latest = s.get_tuple(cfg)
            oldest = tuples[-1]
            out[t] = {
                "count": len(tuples),
                "latest": latest.checkpoint["channel_values"]["messages"][0],
                "oldest": oldest.checkpoint["channel_values"].get("messages", [None])[0],
                "oldest_step": oldest.metadata["step"],
                "latest_writes": len(latest.pending_writes or []),
            }
        print(json.dumps(out))
"#;

fn saver(py: &std::path::Path, dsn: &str, mode: &str) -> serde_json::Value {
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(py)
        .args(["-c", SAVER_PY, dsn, mode])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The runbook's "keep the newest checkpoints of every thread" SQL, as written in
/// docs/runbooks/storage_near_limit.md.
fn runbook_prune_sql() -> String {
    let md = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/runbooks/storage_near_limit.md"),
    )
    .unwrap();
    let mitigation = md.split("## Mitigation").nth(1).unwrap();
    let block = mitigation.split("```sql").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn the_runbooks_prune_keeps_the_newest_checkpoints_and_the_saver_still_reads_them() {
    let Some(py) = support::langgraph::python() else {
        return;
    };
    let pg = PgCluster::start();
    let dsn = support::langgraph::superuser_url(&pg);
    saver(&py, &dsn, "write");
    let count = |t: &str| pg.psql(&format!("SELECT count(*) FROM {t}"));
    let before = (
        count("checkpoints"),
        count("checkpoint_blobs"),
        count("checkpoint_writes"),
    );
    assert_eq!(
        before,
        ("60".into(), "60".into(), "60".into()),
        "{before:?}"
    );
    pg.psql(&runbook_prune_sql());
    let after = (
        count("checkpoints"),
        count("checkpoint_blobs"),
        count("checkpoint_writes"),
    );
    // 20 per thread kept, with their blobs and writes; the rest gone.
    assert_eq!(after, ("40".into(), "40".into(), "40".into()), "{after:?}");
    let v = saver(&py, &dsn, "verify");
    for t in ["t0", "t1"] {
        let r = &v[t];
        assert_eq!(r["count"], 20, "{v:#}");
        assert_eq!(r["latest"], format!("{t} step 29"), "{v:#}");
        assert_eq!(r["oldest_step"], 10, "{v:#}");
        assert_eq!(
            r["oldest"],
            format!("{t} step 10"),
            "the oldest kept still has its blob: {v:#}"
        );
        assert_eq!(r["latest_writes"], 1, "{v:#}");
    }
}
