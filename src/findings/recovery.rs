//! Rule `app_not_recovered`: PostgreSQL restarted and the app has not answered healthy within
//! the bound (the guide's Next Steps, "Test Failover": the app must survive a database restart).

use super::{Code, Context, Finding};
use crate::check::{Observation, app_recovery};
use crate::snapshot::Snapshot;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    if let Some(Observation::AppRecovery(r)) = snap.observation(app_recovery::ID) {
        not_recovered(r, cx, out);
    }
}

fn not_recovered(r: &app_recovery::Recovery, cx: &Context, out: &mut Vec<Finding>) {
    let Some(waiting) = r.waiting_seconds else {
        return;
    };
    if waiting <= r.bound_seconds {
        return;
    }
    out.push(Finding::new(
        Code::AppNotRecovered,
        format!(
            "the app has not answered healthy for {waiting:.0} s since PostgreSQL at {} restarted",
            cx.target
        ),
        format!(
            "server back up {waiting:.0} s ago (new pg_postmaster_start_time); no healthy answer from the app's probes since; bound {:.0} s (AGENT_APP_RECOVERY_TIMEOUT)",
            r.bound_seconds
        ),
        vec![
            "Check the app's own health answer and log: curl -s $APP_BASE_URL/api/health; look for \"server closed the connection unexpectedly\" or \"terminating connection due to administrator command\"".into(),
            "Pools keep dead connections after a restart: SQLAlchemy create_engine(..., pool_pre_ping=True); psycopg_pool ConnectionPool(..., check=ConnectionPool.check_connection)".into(),
            "Restart the app instances now to drop the dead connections (railway redeploy, or systemctl restart)".into(),
            "Then rehearse it (the guide's \"Test Failover\"): restart PostgreSQL in a quiet window and watch rose_app_recovery_seconds".into(),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::findings::testutil::snap;

    fn run(restart: Option<f64>, recovered: Option<f64>, now: f64) -> Vec<Finding> {
        let s = snap(vec![(
            app_recovery::ID,
            Ok(Observation::AppRecovery(app_recovery::judge(
                restart,
                recovered,
                now,
                Duration::from_secs(60),
            ))),
        )]);
        let mut out = vec![];
        evaluate(&s, &Context::default(), &mut out);
        out
    }

    #[test]
    fn unrecovered_past_the_bound_is_a_finding() {
        assert!(run(None, None, 1000.0).is_empty());
        assert!(
            run(Some(1000.0), None, 1059.0).is_empty(),
            "within the bound"
        );
        assert!(
            run(Some(1000.0), Some(1090.0), 2000.0).is_empty(),
            "recovered late"
        );
        let f = run(Some(1000.0), None, 1075.0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "app_not_recovered");
        assert!(f[0].summary.contains("75 s"), "{}", f[0].summary);
        assert!(f[0].steps.join("\n").contains("pool_pre_ping"));
    }
}
