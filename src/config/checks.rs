//! Validated settings of the PostgreSQL checks (`[checks]`): thresholds, top-N limits, the
//! connection-budget plan, which LangGraph schema to expect, and the declarative expectations
//! file another app can use to list its own tables, columns and indexes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{Problem, RawChecks};

/// The guide's Railway plans ("Cost Estimation"): name and connection limit.
pub(crate) const PLANS: &[(&str, u32)] = &[("starter", 22), ("pro", 97)];

/// The guide's Railway plans' storage ("Cost Estimation": Starter 1GB at $5/month, Pro 10GB at
/// $10/month): name, limit in bytes, monthly price. The table writes "GB"; read as SI (10^9), the
/// smaller reading, so the finding comes early rather than late.
pub(crate) const PLAN_STORAGE: &[(&str, u64, &str)] = &[
    ("starter", 1_000_000_000, "$5/month"),
    ("pro", 10_000_000_000, "$10/month"),
];

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// Which LangGraph checkpointer schema the `pg_schema` check expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LangGraphSchema {
    /// Detect full (PostgresSaver) or shallow (ShallowPostgresSaver) from the columns.
    Auto,
    Full,
    Shallow,
    /// Do not expect LangGraph's tables (another app; use the expectations file).
    Off,
}

/// The connection limit the budget is measured against, when not the server's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanLimit {
    /// `starter`, `pro`, or `custom` for AGENT_MAX_CONNECTIONS.
    pub(crate) name: String,
    pub(crate) max_connections: u32,
}

/// The storage limit the database size is measured against (`storage_near_limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct StorageLimit {
    /// `starter`, `pro`, or `custom` for AGENT_STORAGE_LIMIT.
    pub(crate) name: String,
    pub(crate) bytes: u64,
}

/// Pure: a size such as `1GB`, `10GiB`, `500 MB` or `1048576` (bytes) in bytes. SI prefixes
/// (kB, MB, GB, TB: powers of 1000) and IEC ones (KiB, MiB, GiB, TiB: powers of 1024); the `B`
/// may be left off (`10G` is 10 GB) and case does not matter.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.chars().filter(|&c| c == '.').count() > 1 || num.ends_with('.') {
        return Err("expected a number followed by a unit such as MB, GB, GiB".into());
    }
    let value: f64 = num
        .parse()
        .map_err(|_| "expected a number followed by a unit such as MB, GB, GiB".to_string())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' (use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = (value * mult).round();
    if !(1.0..=1e18).contains(&bytes) {
        return Err("must be between 1 byte and 1 EB".into());
    }
    Ok(bytes as u64)
}

/// `[checks]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChecksConfig {
    pub(crate) slow_query_threshold: Duration,
    pub(crate) idle_in_transaction_threshold: Duration,
    pub(crate) labels_top_n: u32,
    pub(crate) statements_top_n: u32,
    pub(crate) plan: Option<PlanLimit>,
    /// From the plan's storage or AGENT_STORAGE_LIMIT (which wins); `None`: no limit known.
    pub(crate) storage_limit: Option<StorageLimit>,
    pub(crate) langgraph_schema: LangGraphSchema,
    /// The schema of LangGraph's tables when set (`AGENT_LANGGRAPH_SCHEMA_NAME`); else detected.
    pub(crate) langgraph_schema_name: Option<String>,
    /// The app DATABASE_URL's `search_path` (`$user` resolved): preferred when detecting.
    pub(crate) langgraph_search_path: Vec<String>,
    pub(crate) expectations_file: Option<PathBuf>,
    /// The expectations file's content (empty without a file).
    pub(crate) expectations: Expectations,
    /// Show other sessions' raw SQL (literals included) in `/findings` and `agent diagnose`;
    /// off by default, never in logs or pushed alerts.
    pub(crate) raw_query_text: bool,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            slow_query_threshold: Duration::from_secs(2),
            idle_in_transaction_threshold: Duration::from_secs(60),
            labels_top_n: 5,
            statements_top_n: 10,
            plan: None,
            storage_limit: None,
            langgraph_schema: LangGraphSchema::Auto,
            langgraph_schema_name: None,
            langgraph_search_path: Vec::new(),
            expectations_file: None,
            expectations: Expectations::default(),
            raw_query_text: false,
        }
    }
}

/// The expectations file: what another app needs in its database.
///
/// ```toml
/// [[tables]]
/// name = "orders"
/// schema = "public"                 # optional, default public
/// columns = ["id", "created_at"]    # optional
///
/// [[indexes]]
/// name = "orders_created_at_idx"
/// table = "orders"
/// columns = ["created_at"]          # optional: also compare the key columns, in order
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub(crate) tables: Vec<ExpectedTable>,
    #[serde(default)]
    pub(crate) indexes: Vec<ExpectedIndex>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectedTable {
    pub(crate) name: String,
    #[serde(default = "public")]
    pub(crate) schema: String,
    #[serde(default)]
    pub(crate) columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectedIndex {
    pub(crate) name: String,
    pub(crate) table: String,
    #[serde(default = "public")]
    pub(crate) schema: String,
    #[serde(default)]
    pub(crate) columns: Option<Vec<String>>,
}

fn public() -> String {
    "public".into()
}

/// Why an identifier cannot be used, if it cannot.
pub(crate) fn identifier_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        Some("an empty name".into())
    } else if s.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "'{s}' is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
        ))
    } else if s.chars().any(char::is_control) {
        Some("a name with control characters".into())
    } else {
        None
    }
}

impl Expectations {
    /// Parses and checks an expectations file's text; every problem is returned.
    pub fn parse(text: &str) -> Result<Expectations, Vec<String>> {
        let e: Expectations = toml::from_str(text).map_err(|e| vec![e.message().to_owned()])?;
        let mut bad = Vec::new();
        let mut check = |what: &str, s: &str| {
            if let Some(p) = identifier_problem(s) {
                bad.push(format!("{what}: {p}"));
            }
        };
        for t in &e.tables {
            check("tables.name", &t.name);
            check("tables.schema", &t.schema);
            for c in &t.columns {
                check("tables.columns", c);
            }
        }
        for i in &e.indexes {
            check("indexes.name", &i.name);
            check("indexes.table", &i.table);
            check("indexes.schema", &i.schema);
            for c in i.columns.iter().flatten() {
                check("indexes.columns", c);
            }
        }
        if bad.is_empty() { Ok(e) } else { Err(bad) }
    }
}

/// Validates `[checks]`, adding every problem found.
pub(crate) fn validate(raw: &RawChecks, problems: &mut Vec<Problem>) -> ChecksConfig {
    let mut p = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };
    let d = ChecksConfig::default();
    let mut dur = |key: &str, v: Option<&str>, example: &str, default: Duration| {
        match super::duration::parse(v, example, true) {
            Ok(t) => t.unwrap_or(default),
            Err(m) => {
                p(key, m);
                default
            }
        }
    };
    let slow_query_threshold = dur(
        "AGENT_SLOW_QUERY_THRESHOLD",
        raw.slow_query_threshold.as_deref(),
        "2s or 500ms",
        d.slow_query_threshold,
    );
    let idle_in_transaction_threshold = dur(
        "AGENT_IDLE_IN_TRANSACTION_THRESHOLD",
        raw.idle_in_transaction_threshold.as_deref(),
        "60s",
        d.idle_in_transaction_threshold,
    );
    let mut top = |key: &str, v: Option<i64>, default: u32| match v {
        None => default,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            p(key, format!("{n} is out of range (1 to 100)"));
            default
        }
    };
    let labels_top_n = top("AGENT_LABELS_TOP_N", raw.labels_top_n, d.labels_top_n);
    let statements_top_n = top(
        "AGENT_STATEMENTS_TOP_N",
        raw.statements_top_n,
        d.statements_top_n,
    );
    let mut plan = match raw.plan.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => None,
        Some(name) => match PLANS.iter().find(|(n, _)| *n == name) {
            Some((n, c)) => Some(PlanLimit {
                name: (*n).to_owned(),
                max_connections: *c,
            }),
            None => {
                p(
                    "AGENT_PLAN",
                    format!(
                        "'{name}' is not one of: starter (22 connections), pro (97); set AGENT_MAX_CONNECTIONS for a custom plan"
                    ),
                );
                None
            }
        },
    };
    match raw.max_connections {
        None => {}
        Some(n) if (1..=262_143).contains(&n) => {
            plan = Some(PlanLimit {
                name: "custom".into(),
                max_connections: n as u32,
            })
        }
        Some(n) => p(
            "AGENT_MAX_CONNECTIONS",
            format!("{n} is out of range (1 to 262143, PostgreSQL's limit)"),
        ),
    }
    // The preset's storage stays when AGENT_MAX_CONNECTIONS overrides its connections.
    let plan_name = raw.plan.as_deref().map(|s| s.trim().to_ascii_lowercase());
    let mut storage_limit = plan_name.and_then(|name| {
        PLAN_STORAGE
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(n, b, _)| StorageLimit {
                name: (*n).to_owned(),
                bytes: *b,
            })
    });
    if let Some(v) = raw.storage_limit.as_deref() {
        match parse_size(v) {
            Ok(bytes) => {
                storage_limit = Some(StorageLimit {
                    name: "custom".into(),
                    bytes,
                })
            }
            Err(why) => p(
                "AGENT_STORAGE_LIMIT",
                format!("'{}' is not a size such as 1GB or 10GiB: {why}", v.trim()),
            ),
        }
    }
    let langgraph_schema = match raw
        .langgraph_schema
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("auto") => LangGraphSchema::Auto,
        Some("full") => LangGraphSchema::Full,
        Some("shallow") => LangGraphSchema::Shallow,
        Some("off") => LangGraphSchema::Off,
        Some(other) => {
            p(
                "AGENT_LANGGRAPH_SCHEMA",
                format!("'{other}' is not one of: auto, full, shallow, off"),
            );
            LangGraphSchema::Auto
        }
    };
    let langgraph_schema_name = match raw.langgraph_schema_name.as_deref().map(str::trim) {
        None => None,
        Some(name) => match identifier_problem(name) {
            None => Some(name.to_owned()),
            Some(why) => {
                p(
                    "AGENT_LANGGRAPH_SCHEMA_NAME",
                    format!("{why}: give the schema name exactly as in pg_namespace (e.g. rose)"),
                );
                None
            }
        },
    };
    let expectations_file = raw.expectations_file.as_ref().map(PathBuf::from);
    let expectations = match &expectations_file {
        None => Expectations::default(),
        Some(path) => match crate::files::read_to_string(path) {
            Ok(text) => match Expectations::parse(&text) {
                Ok(e) => e,
                Err(errs) => {
                    for e in errs {
                        p(
                            "AGENT_SCHEMA_EXPECTATIONS",
                            format!("{}: {e}", path.display()),
                        );
                    }
                    Expectations::default()
                }
            },
            Err(e) => {
                p(
                    "AGENT_SCHEMA_EXPECTATIONS",
                    format!("cannot read {}: {e}", path.display()),
                );
                Expectations::default()
            }
        },
    };
    ChecksConfig {
        slow_query_threshold,
        idle_in_transaction_threshold,
        labels_top_n,
        statements_top_n,
        plan,
        storage_limit,
        langgraph_schema,
        langgraph_schema_name,
        langgraph_search_path: Vec::new(),
        expectations_file,
        expectations,
        raw_query_text: raw.raw_query_text.unwrap_or(d.raw_query_text),
    }
}

impl ChecksConfig {
    /// Back to the file's shape, for `--print-config`.
    pub(crate) fn to_raw(&self) -> RawChecks {
        RawChecks {
            slow_query_threshold: Some(
                humantime::format_duration(self.slow_query_threshold).to_string(),
            ),
            idle_in_transaction_threshold: Some(
                humantime::format_duration(self.idle_in_transaction_threshold).to_string(),
            ),
            labels_top_n: Some(self.labels_top_n.into()),
            statements_top_n: Some(self.statements_top_n.into()),
            plan: self
                .plan
                .as_ref()
                .filter(|p| p.name != "custom")
                .map(|p| p.name.clone()),
            max_connections: self
                .plan
                .as_ref()
                .filter(|p| p.name == "custom")
                .map(|p| p.max_connections.into()),
            storage_limit: self
                .storage_limit
                .as_ref()
                .filter(|s| s.name == "custom")
                .map(|s| s.bytes.to_string()),
            langgraph_schema: Some(format!("{:?}", self.langgraph_schema).to_ascii_lowercase()),
            langgraph_schema_name: self.langgraph_schema_name.clone(),
            expectations_file: self
                .expectations_file
                .as_ref()
                .map(|p| p.display().to_string()),
            raw_query_text: Some(self.raw_query_text),
        }
    }
}
