//! Rule `checkpoint_bloat`: a runaway conversation in LangGraph's PostgreSQL tables (too many
//! checkpoints, too many bytes, or one oversized checkpoint row or blob), from check
//! `checkpoint_threads`. Threads are named only by a hash prefix; an unreadable table is the
//! check's capability, never a finding.

use super::{Code, Context, Finding};
use crate::check::{Observation, pg};
use crate::snapshot::Snapshot;

/// Checkpoints in one thread above which it is a runaway: LangGraph writes one per step, and
/// a thousand steps is far beyond what a conversation needs to resume.
pub(crate) const MAX_THREAD_CHECKPOINTS: u64 = 1_000;
/// Stored bytes (checkpoints + blobs) of one thread above which it is a runaway: 50 MB is 5% of
/// the Starter plan's 1 GB for one conversation.
pub(crate) const MAX_THREAD_BYTES: f64 = 50_000_000.0;
/// Stored bytes of one checkpoint row or blob above which the state is oversized: every step
/// of such a thread writes (and the app reads back) 10 MB more.
pub(crate) const MAX_ROW_BYTES: u64 = 10_000_000;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    if let Some(Observation::CheckpointThreads(o)) = snap.observation(pg::checkpoint_threads::ID) {
        judge(o, cx, out);
    }
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

fn judge(o: &pg::checkpoint_threads::CheckpointThreads, cx: &Context, out: &mut Vec<Finding>) {
    let Some(s) = &o.stats else { return };
    let many = s
        .max_checkpoints
        .is_some_and(|n| n > MAX_THREAD_CHECKPOINTS);
    let big = s.max_thread_bytes.is_some_and(|b| b > MAX_THREAD_BYTES);
    let max_row = s.max_row_bytes.max(s.max_blob_bytes);
    let fat = max_row.is_some_and(|b| b > MAX_ROW_BYTES);
    if !(many || big || fat) {
        return;
    }
    let runaway: Vec<String> = s
        .top
        .iter()
        .filter(|t| {
            t.checkpoints > MAX_THREAD_CHECKPOINTS
                || t.bytes > MAX_THREAD_BYTES
                || t.max_row_bytes.is_some_and(|b| b > MAX_ROW_BYTES)
        })
        .map(|t| {
            format!(
                "md5 {}…: {} checkpoints, {}",
                t.id,
                t.checkpoints,
                mb(t.bytes)
            )
        })
        .collect();
    let mut why = Vec::new();
    if many {
        why.push(format!(
            "a thread has {} checkpoints (threshold {MAX_THREAD_CHECKPOINTS})",
            s.max_checkpoints.unwrap_or(0)
        ));
    }
    if big {
        why.push(format!(
            "a thread stores {} (threshold {})",
            mb(s.max_thread_bytes.unwrap_or(0.0)),
            mb(MAX_THREAD_BYTES)
        ));
    }
    if fat {
        why.push(format!(
            "a checkpoint row or blob is {} (threshold {})",
            mb(max_row.unwrap_or(0) as f64),
            mb(MAX_ROW_BYTES as f64)
        ));
    }
    let q = |t: &str| format!("{}.{t}", crate::check::pg::util::ident(&o.schema));
    out.push(Finding::new(
        Code::CheckpointBloat,
        format!(
            "runaway conversation in LangGraph's checkpoints at {}: {}",
            cx.target,
            why.join("; ")
        ),
        format!(
            "{} threads; checkpoints per thread median {}, p99 {}, max {}; largest thread {}; largest row {}, largest blob {}; runaway threads (md5 prefix of thread_id): {}",
            s.threads,
            s.median.unwrap_or(0),
            s.p99.unwrap_or(0),
            s.max_checkpoints.unwrap_or(0),
            mb(s.max_thread_bytes.unwrap_or(0.0)),
            mb(s.max_row_bytes.unwrap_or(0) as f64),
            mb(s.max_blob_bytes.unwrap_or(0) as f64),
            if runaway.is_empty() { "-".to_owned() } else { runaway.join("; ") }
        ),
        vec![
            format!(
                "See the biggest threads: SELECT left(md5(thread_id), 12) AS id_md5, thread_id, count(*) AS checkpoints, pg_size_pretty(sum(pg_column_size(checkpoint) + pg_column_size(metadata))) AS size FROM {} GROUP BY thread_id ORDER BY sum(pg_column_size(checkpoint) + pg_column_size(metadata)) DESC LIMIT 10; (blobs: the same over {} with pg_column_size(blob))",
                q("checkpoints"),
                q("checkpoint_blobs")
            ),
            "Delete a finished conversation with the saver: PostgresSaver.from_conn_string(DATABASE_URL).delete_thread(thread_id) (AsyncPostgresSaver: await adelete_thread), which removes its checkpoints, blobs and writes".into(),
            format!(
                "Or keep only the last K checkpoints of a thread (K=20 here; the app resumes from the newest): DELETE FROM {c} WHERE thread_id = '<id>' AND checkpoint_id NOT IN (SELECT checkpoint_id FROM {c} WHERE thread_id = '<id>' ORDER BY checkpoint_id DESC LIMIT 20); then the same for {w}; docs/runbooks/checkpoint_bloat.md has the blob clean-up",
                c = q("checkpoints"),
                w = q("checkpoint_writes")
            ),
            "A large state: keep big payloads (files, transcripts) out of the graph state (store a reference), so each step does not copy them into a new checkpoint".into(),
            format!(
                "Afterwards VACUUM (ANALYZE) {}, {}, {} so the space is reused",
                q("checkpoints"),
                q("checkpoint_blobs"),
                q("checkpoint_writes")
            ),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::pg::checkpoint_threads::{CheckpointThreads, ThreadStats, TopThread};

    fn stats(max_n: u64, max_bytes: f64, max_row: u64) -> CheckpointThreads {
        CheckpointThreads {
            schema: "public".into(),
            readable: true,
            stats: Some(ThreadStats {
                threads: 5,
                median: Some(3),
                p99: Some(max_n),
                max_checkpoints: Some(max_n),
                max_thread_bytes: Some(max_bytes),
                max_row_bytes: Some(max_row),
                max_blob_bytes: None,
                top: vec![
                    TopThread {
                        id: "abcdef012345".into(),
                        checkpoints: max_n,
                        bytes: max_bytes,
                        max_row_bytes: Some(max_row),
                    },
                    TopThread {
                        id: "999999999999".into(),
                        checkpoints: 3,
                        bytes: 1000.0,
                        max_row_bytes: Some(300),
                    },
                ],
            }),
        }
    }

    fn run(o: &CheckpointThreads) -> Vec<Finding> {
        let mut out = Vec::new();
        judge(o, &Context::default(), &mut out);
        out
    }

    #[test]
    fn small_threads_no_finding() {
        assert!(run(&stats(1000, 50e6, 10_000_000)).is_empty());
    }

    #[test]
    fn each_threshold_alone_raises_it() {
        for o in [
            stats(1001, 1e6, 1000),
            stats(10, 50e6 + 1.0, 1000),
            stats(10, 1e6, 10_000_001),
        ] {
            let f = run(&o);
            assert_eq!(f.len(), 1, "{o:?}");
            assert_eq!(f[0].code, "checkpoint_bloat");
            assert_eq!(f[0].severity, super::super::Severity::Warning);
            // Only the runaway thread, hashed.
            assert!(f[0].evidence.contains("abcdef012345"), "{}", f[0].evidence);
            assert!(!f[0].evidence.contains("999999999999"), "{}", f[0].evidence);
            let steps = f[0].steps.join("\n");
            assert!(steps.contains("delete_thread") && steps.contains("LIMIT 20"));
        }
    }

    #[test]
    fn unreadable_or_absent_is_no_finding() {
        let o = CheckpointThreads {
            schema: "public".into(),
            readable: false,
            stats: None,
        };
        assert!(run(&o).is_empty());
    }
}
