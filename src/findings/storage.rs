//! Rule `storage_near_limit`: the database size against its plan's storage limit (AGENT_PLAN or
//! AGENT_STORAGE_LIMIT) and the time until full at the observed growth, with the guide's "Cost
//! Estimation" plans as the way out.

use super::{Code, Context, Finding, Severity};
use crate::check::{Observation, pg};
use crate::config::PLAN_STORAGE;
use crate::snapshot::Snapshot;

/// Share of the limit in use from which the finding is a warning.
pub(crate) const WARN_RATIO: f64 = 0.8;
/// Share of the limit in use from which it is critical: writes are about to fail with "disk
/// full" (Railway stops the database at its volume's limit).
pub(crate) const CRITICAL_RATIO: f64 = 0.95;
/// Projected time to full under which it is a warning whatever the share: two weeks leave time
/// to prune or to upgrade the plan on a working day.
pub(crate) const WARN_FULL_SECONDS: f64 = 14.0 * 86_400.0;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    if let Some(Observation::PgDatabaseSize(s)) = snap.observation(pg::database_size::ID) {
        storage(s, cx, out);
    }
}

/// Sizes in SI units, as the plans are sold (`1.0 GB`, `12.3 MB`).
fn human_bytes(bytes: f64) -> String {
    let b = bytes.abs();
    let (div, unit) = match b {
        b if b >= 1e12 => (1e12, "TB"),
        b if b >= 1e9 => (1e9, "GB"),
        b if b >= 1e6 => (1e6, "MB"),
        b if b >= 1e3 => (1e3, "kB"),
        _ => return format!("{bytes:.0} B"),
    };
    format!("{:.1} {unit}", bytes / div)
}

fn days(seconds: f64) -> String {
    let d = seconds / 86_400.0;
    if d >= 1.0 {
        format!("{d:.1} days")
    } else {
        format!("{:.1} hours", seconds / 3600.0)
    }
}

/// The plan to move to: the guide's first plan with more storage than the current limit, else
/// Railway's Custom plan.
fn upgrade_step(limit: u64) -> String {
    match PLAN_STORAGE.iter().find(|(_, b, _)| *b > limit) {
        Some((name, bytes, price)) => {
            let mut n = name.to_string();
            n[..1].make_ascii_uppercase();
            format!(
                "Upgrade the database plan to Railway {n} ({} GB storage, {price}; the guide's \"Cost Estimation\"), then set AGENT_PLAN={name} (or AGENT_STORAGE_LIMIT) so the agent measures against it",
                bytes / 1_000_000_000
            )
        }
        None => "Move to a Railway Custom plan (storage to measure, price variable; the guide's \"Cost Estimation\": Pro is 10 GB at $10/month), then set AGENT_STORAGE_LIMIT to its storage".to_owned(),
    }
}

fn storage(s: &pg::database_size::DatabaseSize, cx: &Context, out: &mut Vec<Finding>) {
    let Some(limit) = &s.limit else { return };
    if limit.bytes == 0 {
        return;
    }
    let ratio = s.bytes as f64 / limit.bytes as f64;
    let soon = s.full_seconds.is_some_and(|f| f < WARN_FULL_SECONDS);
    if ratio < WARN_RATIO && !soon {
        return;
    }
    let severity = if ratio >= CRITICAL_RATIO {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let t = &cx.target;
    let plan = if limit.name == "custom" {
        "AGENT_STORAGE_LIMIT".to_owned()
    } else {
        format!("the {} plan", limit.name)
    };
    let growth = match (s.growth_bytes_per_second, s.full_seconds) {
        (Some(g), Some(f)) if g > 0.0 => format!(
            "; growing {}/day, full in {} at that rate",
            human_bytes(g * 86_400.0),
            days(f)
        ),
        (Some(g), _) => format!("; growth {}/day", human_bytes(g * 86_400.0)),
        (None, _) => "; growth known after two samples".to_owned(),
    };
    let summary = match s.full_seconds {
        Some(f) if f > 0.0 && soon => format!(
            "database {} uses {:.0}% of its {} storage limit and will be full in {} at {t}",
            s.datname,
            ratio * 100.0,
            human_bytes(limit.bytes as f64),
            days(f)
        ),
        _ => format!(
            "database {} uses {:.0}% of its {} storage limit at {t}",
            s.datname,
            ratio * 100.0,
            human_bytes(limit.bytes as f64)
        ),
    };
    out.push(
        Finding::new(
            Code::StorageNearLimit,
            summary,
            format!(
                "pg_database_size {} of {} ({} bytes, from {plan}){growth}; thresholds {:.0}% used or full within {} (critical from {:.0}%)",
                human_bytes(s.bytes as f64),
                human_bytes(limit.bytes as f64),
                limit.bytes,
                WARN_RATIO * 100.0,
                days(WARN_FULL_SECONDS),
                CRITICAL_RATIO * 100.0
            ),
            vec![
                "See what takes the space: SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class WHERE relkind IN ('r','m') ORDER BY pg_total_relation_size(oid) DESC LIMIT 10;".into(),
                "Prune old checkpoints (LangGraph keeps one per step): delete finished conversations with the saver's delete_thread(thread_id), or keep only the last checkpoints per thread (docs/runbooks/storage_near_limit.md has the SQL)".into(),
                "VACUUM (ANALYZE) checkpoints, checkpoint_blobs, checkpoint_writes; after pruning: plain VACUUM makes the space reusable, only VACUUM FULL (an exclusive lock: a quiet window) returns it to the plan".into(),
                upgrade_step(limit.bytes),
            ],
        )
        .with_severity(severity),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageLimit;
    use crate::findings::testutil::snap;

    fn size(bytes: u64, limit: Option<(&str, u64)>, growth: Option<f64>) -> Vec<Finding> {
        let limit = limit.map(|(n, b)| StorageLimit {
            name: n.into(),
            bytes: b,
        });
        let full_seconds = limit
            .as_ref()
            .and_then(|l| pg::database_size::full_seconds(bytes, l.bytes, growth));
        let s = snap(vec![(
            pg::database_size::ID,
            Ok(Observation::PgDatabaseSize(
                pg::database_size::DatabaseSize {
                    datname: "railway".into(),
                    bytes,
                    growth_bytes_per_second: growth,
                    limit,
                    full_seconds,
                },
            )),
        )]);
        let mut out = Vec::new();
        evaluate(&s, &Context::default(), &mut out);
        out
    }

    const GB: u64 = 1_000_000_000;

    #[test]
    fn no_limit_no_finding() {
        assert!(size(GB * 100, None, Some(1e9)).is_empty());
    }

    #[test]
    fn below_both_thresholds_no_finding() {
        // 50% used, 0.5 GB left at 100 bytes/s: 58 days.
        assert!(size(GB / 2, Some(("starter", GB)), Some(100.0)).is_empty());
        assert!(size(GB / 2, Some(("starter", GB)), None).is_empty());
    }

    #[test]
    fn share_threshold_warns_then_critical() {
        let f = size(GB * 85 / 100, Some(("starter", GB)), None);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].code, f[0].severity),
            ("storage_near_limit", Severity::Warning)
        );
        assert!(f[0].summary.contains("85%"), "{}", f[0].summary);
        let f = size(GB * 96 / 100, Some(("starter", GB)), None);
        assert_eq!(f[0].severity, Severity::Critical);
        let f = size(GB * 2, Some(("starter", GB)), None);
        assert_eq!(f[0].severity, Severity::Critical);
    }

    #[test]
    fn days_to_full_threshold_warns_early() {
        // 10% used but growing 1 GB/day toward 10 GB: full in 9 days.
        let f = size(GB, Some(("pro", 10 * GB)), Some(GB as f64 / 86_400.0));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("full in 9.0 days"),
            "{}",
            f[0].summary
        );
        assert!(
            f[0].evidence.contains("full in 9.0 days"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn steps_name_the_plan_to_move_to_and_its_price() {
        let f = size(GB * 9 / 10, Some(("starter", GB)), None);
        let steps = f[0].steps.join("\n");
        assert!(
            steps.contains("Railway Pro (10 GB storage, $10/month"),
            "{steps}"
        );
        assert!(
            steps.contains("delete_thread") && steps.contains("VACUUM"),
            "{steps}"
        );
        let f = size(GB * 9, Some(("pro", 10 * GB)), None);
        assert!(f[0].steps.join("\n").contains("Custom plan"));
        // A small custom limit moves to the first plan above it.
        let f = size(9_000_000, Some(("custom", 10_000_000)), None);
        let steps = f[0].steps.join("\n");
        assert!(
            steps.contains("Railway Starter (1 GB storage, $5/month"),
            "{steps}"
        );
        assert!(
            f[0].evidence.contains("AGENT_STORAGE_LIMIT"),
            "{}",
            f[0].evidence
        );
    }
}
