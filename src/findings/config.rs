//! Findings about the agent's own configuration, judged from the validated configuration alone
//! (no check output): `no_database_configured` (the app runs on PostgreSQL but the agent has no
//! DSN, so nothing about the database can ever be reported) and `unknown_variable` (an `AGENT_*`
//! variable that is set, not read, and close to one that is: a misspelling whose setting keeps
//! its default). Names only: a value is never shown (a misspelled DSN variable holds a password).

use super::{Code, Context, Finding};
use crate::config::{DSN_VARIABLES, DatabaseType};

pub(crate) fn evaluate(cx: &Context, out: &mut Vec<Finding>) {
    let typos: Vec<_> = cx
        .unknown_variables
        .iter()
        .filter(|u| u.likely_typo())
        .collect();
    if cx.database_type == DatabaseType::Postgresql && !cx.dsn_configured {
        let dsn_typos: Vec<_> = typos
            .iter()
            .filter(|u| DSN_VARIABLES.contains(&u.closest))
            .collect();
        let mut evidence = format!(
            "FEATURE_DATABASE_TYPE=postgresql, and none of {} is set (nor [database] url, url_file or [app] database_url in the file): no PostgreSQL check runs, rose_pg_up is absent and no database finding or alert can fire",
            DSN_VARIABLES.join(", ")
        );
        let mut steps = Vec::new();
        for u in &dsn_typos {
            evidence.push_str(&format!(
                "; {} is set but not read: a misspelling of {}?",
                u.name, u.closest
            ));
            steps.push(format!(
                "Rename {} to {} where the agent's environment is set (deployment, Railway variables, compose file)",
                u.name, u.closest
            ));
        }
        steps.extend([
            "Set AGENT_DATABASE_URL to the monitoring role's DSN (scripts/create-monitoring-role.sql creates the role), or AGENT_DATABASE_URL_FILE to a file holding it (a mounted secret); with neither, the agent uses the app's DATABASE_URL".to_owned(),
            "If the app really runs on SQLite, give the agent the app's setting: FEATURE_DATABASE_TYPE=sqlite".to_owned(),
            "Restart the agent and verify: agent diagnose walks the dns, tcp, auth rungs, and rose_pg_up appears in /metrics".to_owned(),
        ]);
        out.push(Finding::new(
            Code::NoDatabaseConfigured,
            "The app runs on PostgreSQL but the agent has no DSN: the database is not monitored",
            evidence,
            steps,
        ));
    }
    for u in typos {
        out.push(
            Finding::new(
                Code::UnknownVariable,
                format!(
                    "{} is set but the agent does not read it: did you mean {}?",
                    u.name, u.closest
                ),
                format!(
                    "{} is set (value not shown) and {} edit{} from {}, a variable the agent reads; the setting {} keeps its value from the file or its default",
                    u.name,
                    u.distance,
                    if u.distance == 1 { "" } else { "s" },
                    u.closest,
                    u.closest
                ),
                vec![
                    format!(
                        "Rename {} to {} where the agent's environment is set (deployment, Railway variables, compose file), then restart the agent",
                        u.name, u.closest
                    ),
                    "Every variable the agent reads is listed in the README's configuration tables; agent run --print-config shows what it understood".into(),
                ],
            )
            .with_subject(u.name.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars::UnknownVariable;
    use crate::findings::Severity;

    fn typo(name: &str, closest: &'static str, distance: usize) -> UnknownVariable {
        UnknownVariable {
            name: name.into(),
            closest,
            distance,
        }
    }

    fn run(cx: &Context) -> Vec<Finding> {
        let mut out = Vec::new();
        evaluate(cx, &mut out);
        out
    }

    #[test]
    fn postgresql_without_dsn_is_critical_and_names_the_variables() {
        let cx = Context {
            dsn_configured: false,
            target: String::new(),
            database_type: DatabaseType::Postgresql,
            ..Context::default()
        };
        let f = run(&cx);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, "no_database_configured");
        assert_eq!(f[0].severity, Severity::Critical);
        for v in DSN_VARIABLES {
            assert!(f[0].evidence.contains(v), "{}", f[0].evidence);
        }
        assert!(
            f[0].steps
                .iter()
                .any(|s| s.contains("FEATURE_DATABASE_TYPE=sqlite"))
        );
    }

    #[test]
    fn sqlite_without_dsn_or_with_a_dsn_is_no_finding() {
        for (ty, configured) in [
            (DatabaseType::Sqlite, false),
            (DatabaseType::Postgresql, true),
            (DatabaseType::Sqlite, true),
        ] {
            let cx = Context {
                dsn_configured: configured,
                database_type: ty,
                ..Context::default()
            };
            assert!(run(&cx).is_empty(), "{ty:?} {configured}");
        }
    }

    #[test]
    fn a_misspelled_dsn_variable_is_named_in_both_findings() {
        let cx = Context {
            dsn_configured: false,
            database_type: DatabaseType::Postgresql,
            unknown_variables: vec![typo("AGENT_DATABSE_URL", "AGENT_DATABASE_URL", 1)],
            ..Context::default()
        };
        let f = run(&cx);
        let codes: Vec<_> = f.iter().map(|f| f.code).collect();
        assert_eq!(codes, ["no_database_configured", "unknown_variable"]);
        assert!(
            f[0].evidence
                .contains("AGENT_DATABSE_URL is set but not read")
        );
        assert!(f[0].steps[0].starts_with("Rename AGENT_DATABSE_URL to AGENT_DATABASE_URL"));
        assert_eq!(f[1].severity, Severity::Warning);
        assert_eq!(f[1].subject.as_deref(), Some("AGENT_DATABSE_URL"));
        assert!(f[1].summary.contains("did you mean AGENT_DATABASE_URL?"));
    }

    #[test]
    fn far_names_are_no_finding() {
        let cx = Context {
            unknown_variables: vec![typo("AGENT_WORKDIR", "AGENT_PLAN", 6)],
            ..Context::default()
        };
        assert!(run(&cx).is_empty());
    }
}
