//! Rules over `pg_schema`: the LangGraph checkpointer's tables, indexes, `task_path` column and
//! migration version, and the indexes a declarative expectations file lists. Steps carry the
//! exact SQL to run (`CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`).

use super::{Code, Context, Finding};
use crate::check::Observation;
use crate::check::pg::schema::{self, ObjectKind, ObjectProblem, SchemaReport};
use crate::snapshot::Snapshot;

/// LangGraph's own step: `setup()` creates and migrates everything, idempotently.
const SETUP: &str = "Run the checkpointer's setup() once against DATABASE_URL (e.g. `python -c \"from langgraph.checkpoint.postgres import PostgresSaver; import os; cm = PostgresSaver.from_conn_string(os.environ['DATABASE_URL']); s = cm.__enter__(); s.setup()\"`): the app's checkpointer factory never calls it";

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    if let Some(Observation::PgSchema(r)) = snap.observation(schema::ID) {
        judge(r, cx, out);
    }
}

/// Pure: the findings of one schema report.
pub(crate) fn judge(r: &SchemaReport, cx: &Context, out: &mut Vec<Finding>) {
    let t = &cx.target;
    let mut mismatch: Vec<String> = Vec::new();
    let (where_, elsewhere) = langgraph_place(r);
    for o in &r.objects {
        match (&o.kind, &o.problem) {
            (_, None) | (ObjectKind::Column | ObjectKind::Index, Some(ObjectProblem::TableMissing)) => {}
            (ObjectKind::Table, Some(_)) => out.push(
                Finding::new(
                    Code::MissingTable,
                    format!("Table {} is missing at {t}", o.name),
                    format!("expected table {} does not exist{where_}", o.name),
                    elsewhere
                        .iter()
                        .cloned()
                        .chain([
                            SETUP.into(),
                            "Verify FEATURE_DATABASE_TYPE=postgresql and DATABASE_URL point at this database".into(),
                            "Then check `agent diagnose` shows the schema rung ok".into(),
                        ])
                        .collect(),
                )
                .with_subject(o.name.clone()),
            ),
            (ObjectKind::Column, Some(_)) => mismatch.push(format!("column {} is missing", o.name)),
            (ObjectKind::Index, Some(ObjectProblem::Missing)) => out.push(
                Finding::new(
                    Code::MissingIndex,
                    format!("Index {} is missing at {t}", o.name),
                    format!("expected index {} on {} does not exist", o.name, o.table),
                    vec![
                        create_index_step(&o.name, &o.table, None),
                        "Or run the checkpointer's setup(), which creates LangGraph's indexes".into(),
                    ],
                )
                .with_subject(o.name.clone()),
            ),
            (ObjectKind::Index, Some(ObjectProblem::Invalid { definition })) => out.push(invalid(&o.name, definition, t)),
            (ObjectKind::Index, Some(ObjectProblem::WrongColumns { expected, actual, definition })) => out.push(
                Finding::new(
                    Code::MissingIndex,
                    format!("Index {} at {t} covers other columns than expected", o.name),
                    format!("{} has ({}) instead of ({}): {definition}", o.name, actual.join(", "), expected.join(", ")),
                    vec![
                        format!("DROP INDEX CONCURRENTLY IF EXISTS {};", o.name),
                        create_index_step(&o.name, &o.table, Some(expected)),
                    ],
                )
                .with_subject(o.name.clone()),
            ),
        }
    }
    // Invalid indexes outside the expected list too.
    for i in &r.invalid_indexes {
        if !r.objects.iter().any(|o| o.name == i.name) {
            out.push(invalid(&i.name, &i.definition, t));
        }
    }
    for d in &r.duplicate_indexes {
        let keep = d
            .indexes
            .iter()
            .find(|n| n.ends_with("_thread_id_idx") || n.ends_with("_pkey"))
            .unwrap_or(&d.indexes[0]);
        let drop: Vec<&String> = d.indexes.iter().filter(|n| *n != keep).collect();
        out.push(
            Finding::new(
                Code::DuplicateIndex,
                format!("{} indexes on {}({}) are duplicates", d.indexes.len(), d.table, d.columns.join(", ")),
                format!("{} cover the same columns; each costs writes and space", d.indexes.join(", ")),
                drop.iter()
                    .map(|n| format!("DROP INDEX CONCURRENTLY IF EXISTS {n};  -- keeps {keep}"))
                    .chain(std::iter::once(
                        "The guide's custom idx_checkpoints_thread_id duplicates LangGraph's own checkpoints_thread_id_idx: skip that step".into(),
                    ))
                    .collect(),
            )
            .with_subject(d.indexes.join(",")),
        );
    }
    if let Some(lg) = &r.langgraph
        && lg.behind() == Some(true)
    {
        let m = lg.migrations.as_ref();
        mismatch.push(format!(
            "checkpoint_migrations at v{} ({} rows) of expected v{} ({} schema)",
            m.and_then(|m| m.max_version).unwrap_or(-1),
            m.map_or(0, |m| m.rows),
            lg.expected_version,
            lg.detected.as_str()
        ));
    }
    if let Some(lg) = &r.langgraph
        && let Some(grant) = &lg.migrations_grant
    {
        out.push(
            Finding::new(
                Code::MigrationVersionUnreadable,
                format!("The LangGraph migration version at {t} cannot be read"),
                format!(
                    "{}; without it a schema behind the library (RoseLangGraphSchemaMismatch) cannot be detected",
                    lg.migrations_note.as_deref().unwrap_or("SQLSTATE 42501 on checkpoint_migrations")
                ),
                vec![
                    format!("Run as the table owner or a superuser: {grant}"),
                    "Or re-run scripts/create-monitoring-role.sql (idempotent) with -v app_role=<the role that runs setup()> so tables the app creates later stay readable".into(),
                    "Then check `agent diagnose` shows the schema rung without this finding".into(),
                ],
            )
            .with_subject(schema::table_label(&lg.schema, schema::MIGRATIONS_TABLE)),
        );
    }
    if !mismatch.is_empty() {
        out.push(Finding::new(
            Code::SchemaMismatch,
            format!("The LangGraph schema at {t} is behind the library"),
            mismatch.join("; "),
            vec![
                SETUP.into(),
                "Verify LangGraph version matches: the pinned langgraph-checkpoint-postgres expects migrations v0..9 (shallow: v0..7) and checkpoint_writes.task_path".into(),
                "Check for manual schema modifications (a dropped column or index, rows deleted from checkpoint_migrations)".into(),
                "Drop and recreate tables (development only!)".into(),
            ],
        ));
    }
}

/// For a missing LangGraph table: where it was looked for (evidence), and, when another schema
/// holds LangGraph's tables, the step that points the agent there.
fn langgraph_place(r: &SchemaReport) -> (String, Option<String>) {
    let Some(lg) = &r.langgraph else {
        return (String::new(), None);
    };
    let how = match lg.schema_source.as_str() {
        "configured" => "AGENT_LANGGRAPH_SCHEMA_NAME",
        "search_path" => "the first existing schema of DATABASE_URL's search_path",
        "detected" => "the schema holding LangGraph's tables",
        _ => "no schema holds LangGraph's tables and DATABASE_URL sets no search_path",
    };
    let others: Vec<String> = lg
        .candidates
        .iter()
        .filter(|c| c.schema != lg.schema)
        .map(|c| format!("{} ({} of 4 tables)", c.schema, c.tables))
        .collect();
    let mut evidence = format!(" in schema {} ({how})", lg.schema);
    if !others.is_empty() {
        evidence.push_str(&format!(
            "; LangGraph tables exist in {}",
            others.join(", ")
        ));
    }
    let step = lg
        .candidates
        .iter()
        .filter(|c| c.schema != lg.schema)
        .max_by_key(|c| c.tables)
        .map(|c| {
            format!(
                "If the app uses schema {s} (search_path), set AGENT_LANGGRAPH_SCHEMA_NAME={s} (or options=-c search_path={s} in DATABASE_URL) so the agent looks there",
                s = c.schema
            )
        });
    (evidence, step)
}

fn invalid(name: &str, definition: &str, t: &str) -> Finding {
    let rebuild = definition
        .replacen("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)
        .replacen(
            "CREATE UNIQUE INDEX ",
            "CREATE UNIQUE INDEX CONCURRENTLY ",
            1,
        );
    Finding::new(
        Code::InvalidIndex,
        format!("Index {name} at {t} is INVALID"),
        format!("{name} has indisvalid = false (an interrupted CREATE INDEX CONCURRENTLY): queries do not use it, writes still maintain it"),
        vec![
            format!("DROP INDEX CONCURRENTLY IF EXISTS {name};"),
            format!("{rebuild};"),
            "If a UNIQUE index failed on duplicates, remove the duplicate rows first".into(),
        ],
    )
    .with_subject(name.to_owned())
}

/// `CREATE INDEX CONCURRENTLY` for an expected index: LangGraph's `*_thread_id_idx` are on
/// `(thread_id)`; others use the expected columns when known.
fn create_index_step(name: &str, table: &str, columns: Option<&Vec<String>>) -> String {
    let cols = match columns {
        Some(c) if !c.is_empty() => c.join(", "),
        _ if name.ends_with("_thread_id_idx") => "thread_id".into(),
        _ => {
            return format!(
                "Create index {name} on {table} as declared in the expectations file, with CREATE INDEX CONCURRENTLY"
            );
        }
    };
    // The label is schema-qualified outside public; CREATE INDEX takes a bare name (the index
    // goes into its table's schema).
    let bare = name.rsplit_once('.').map_or(name, |(_, n)| n);
    format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {bare} ON {table}({cols});")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::pg::schema::{
        DuplicateIndexes, LangGraphState, Migrations, ObjectStatus, Variant,
    };
    use crate::config::LangGraphSchema;

    fn obj(
        kind: ObjectKind,
        name: &str,
        table: &str,
        problem: Option<ObjectProblem>,
    ) -> ObjectStatus {
        ObjectStatus {
            kind,
            name: name.into(),
            table: table.into(),
            present: problem.is_none(),
            problem,
        }
    }

    fn report(objects: Vec<ObjectStatus>, version: i64) -> SchemaReport {
        SchemaReport {
            objects,
            indexes: vec![],
            invalid_indexes: vec![],
            duplicate_indexes: vec![],
            langgraph: Some(LangGraphState {
                configured: LangGraphSchema::Auto,
                detected: Variant::Full,
                schema: "public".into(),
                schema_source: "default".into(),
                candidates: vec![],
                expected_version: 9,
                migrations: Some(Migrations {
                    max_version: Some(version),
                    rows: version + 1,
                }),
                migrations_note: None,
                migrations_grant: None,
            }),
            catalog_reads: 0,
        }
    }

    fn judge_codes(r: &SchemaReport) -> Vec<Finding> {
        let mut out = vec![];
        judge(r, &Context::default(), &mut out);
        out
    }

    #[test]
    fn healthy_schema_has_no_findings() {
        assert!(
            judge_codes(&report(
                vec![obj(ObjectKind::Table, "checkpoints", "checkpoints", None)],
                9
            ))
            .is_empty()
        );
    }

    #[test]
    fn dropped_index_gives_the_exact_statement() {
        let f = judge_codes(&report(
            vec![obj(
                ObjectKind::Index,
                "checkpoints_thread_id_idx",
                "checkpoints",
                Some(ObjectProblem::Missing),
            )],
            9,
        ));
        assert_eq!(f[0].code, "missing_index");
        assert_eq!(
            f[0].steps[0],
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id);"
        );
    }

    #[test]
    fn migrations_behind_and_missing_column_are_one_schema_mismatch() {
        let f = judge_codes(&report(
            vec![obj(
                ObjectKind::Column,
                "checkpoint_writes.task_path",
                "checkpoint_writes",
                Some(ObjectProblem::Missing),
            )],
            7,
        ));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "schema_mismatch");
        assert!(
            f[0].evidence.contains("task_path") && f[0].evidence.contains("v7"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn missing_table_invalid_and_duplicate_indexes() {
        let mut r = report(
            vec![
                obj(ObjectKind::Table, "checkpoint_blobs", "checkpoint_blobs", Some(ObjectProblem::Missing)),
                obj(ObjectKind::Index, "checkpoint_blobs_thread_id_idx", "checkpoint_blobs", Some(ObjectProblem::TableMissing)),
                obj(
                    ObjectKind::Index,
                    "checkpoints_thread_id_idx",
                    "checkpoints",
                    Some(ObjectProblem::Invalid { definition: "CREATE INDEX checkpoints_thread_id_idx ON public.checkpoints USING btree (thread_id)".into() }),
                ),
            ],
            9,
        );
        r.duplicate_indexes.push(DuplicateIndexes {
            table: "checkpoints".into(),
            columns: vec!["thread_id".into()],
            indexes: vec![
                "checkpoints_thread_id_idx".into(),
                "idx_checkpoints_thread_id".into(),
            ],
            definitions: vec![],
        });
        let f = judge_codes(&r);
        let codes: Vec<&str> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            vec!["missing_table", "invalid_index", "duplicate_index"],
            "{f:?}"
        );
        assert_eq!(
            f[1].steps[1],
            "CREATE INDEX CONCURRENTLY checkpoints_thread_id_idx ON public.checkpoints USING btree (thread_id);"
        );
        assert!(
            f[2].steps[0]
                .starts_with("DROP INDEX CONCURRENTLY IF EXISTS idx_checkpoints_thread_id;")
        );
    }

    #[test]
    fn an_index_outside_public_is_created_with_a_bare_name() {
        assert_eq!(
            create_index_step("rose.checkpoints_thread_id_idx", "rose.checkpoints", None),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON rose.checkpoints(thread_id);"
        );
    }

    #[test]
    fn an_unreadable_version_is_a_finding_with_the_grant() {
        let mut r = report(vec![], 9);
        let lg = r.langgraph.as_mut().unwrap();
        lg.schema = "rose".into();
        lg.migrations = None;
        lg.migrations_note = Some("the monitoring role rose_monitor may not read rose.checkpoint_migrations (SQLSTATE 42501: no SELECT on the table)".into());
        lg.migrations_grant =
            Some("GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"rose_monitor\";".into());
        let f = judge_codes(&r);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, "migration_version_unreadable");
        assert_eq!(f[0].subject.as_deref(), Some("rose.checkpoint_migrations"));
        assert!(
            f[0].steps[0].ends_with(
                "GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"rose_monitor\";"
            )
        );
        assert!(f[0].evidence.contains("42501"), "{}", f[0].evidence);
    }

    #[test]
    fn a_missing_table_names_its_schema_and_where_the_tables_are() {
        let mut r = report(
            vec![obj(
                ObjectKind::Table,
                "checkpoints",
                "checkpoints",
                Some(ObjectProblem::Missing),
            )],
            9,
        );
        let lg = r.langgraph.as_mut().unwrap();
        lg.schema_source = "configured".into();
        lg.candidates = vec![schema::Candidate {
            schema: "rose".into(),
            tables: 4,
        }];
        let f = judge_codes(&r);
        assert_eq!(f[0].code, "missing_table");
        assert!(
            f[0].evidence
                .contains("in schema public (AGENT_LANGGRAPH_SCHEMA_NAME)")
                && f[0].evidence.contains("rose (4 of 4 tables)"),
            "{}",
            f[0].evidence
        );
        assert!(
            f[0].steps[0].contains("AGENT_LANGGRAPH_SCHEMA_NAME=rose"),
            "{:?}",
            f[0].steps
        );
    }
}
