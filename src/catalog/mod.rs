//! The metric catalog: every metric the agent can export (name, type, unit, labels, help), in
//! one list. A [`Sample`] points at a [`MetricDef`] here, so nothing outside the catalog can be
//! emitted; `/metrics`, OTLP and `docs/metrics.md` are all derived from it.
//!
//! Naming: `rose_<subsystem>_<name>_<unit>[_total]` (the standard `process_*` series excepted), base units (seconds, bytes), label values
//! from bounded sets (states, error kinds, check ids), never free text.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric's definition.
#[derive(Debug, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Base unit, for docs and OTLP (`seconds`, `bytes`, `1` for counts and ratios).
    pub(crate) unit: &'static str,
    /// Label names, in the order samples give their values.
    pub(crate) labels: &'static [&'static str],
    pub(crate) help: &'static str,
}

/// A histogram's state: cumulative bucket counts by upper bound, total count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Histogram(HistogramValue),
}

/// One exported series: a catalog entry, its label values (in `def.labels` order), a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub def: &'static MetricDef,
    pub labels: Vec<String>,
    pub(crate) value: Value,
}

impl Sample {
    pub(crate) fn new(def: &'static MetricDef, labels: &[&str], value: f64) -> Sample {
        debug_assert_eq!(
            def.labels.len(),
            labels.len(),
            "label arity of {}",
            def.name
        );
        Sample {
            def,
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            value: Value::Num(value),
        }
    }
    pub(crate) fn owned(def: &'static MetricDef, labels: Vec<String>, value: f64) -> Sample {
        debug_assert_eq!(
            def.labels.len(),
            labels.len(),
            "label arity of {}",
            def.name
        );
        Sample {
            def,
            labels,
            value: Value::Num(value),
        }
    }
    pub(crate) fn histogram(
        def: &'static MetricDef,
        labels: Vec<String>,
        h: HistogramValue,
    ) -> Sample {
        Sample {
            def,
            labels,
            value: Value::Histogram(h),
        }
    }
    /// The numeric value, for gauges and counters.
    pub fn num(&self) -> Option<f64> {
        match self.value {
            Value::Num(v) => Some(v),
            Value::Histogram(_) => None,
        }
    }
}

/// Defines metric statics and a list of them (textually scoped: declare submodules after it): `metrics! { list NAME; ID = "name", Kind, "unit", [labels], "help"; ... }`.
macro_rules! metrics {
    (list $list:ident; $( $(#[$m:meta])* $id:ident = $name:literal, $kind:ident, $unit:literal, [$($l:literal),*], $help:literal; )*) => {
        $( $(#[$m])* pub(crate) static $id: $crate::catalog::MetricDef = $crate::catalog::MetricDef {
            name: $name, kind: $crate::catalog::Kind::$kind, unit: $unit, labels: &[$($l),*], help: $help,
        }; )*
        /// This subsystem's metrics, in documentation order.
        pub(crate) static $list: &[&$crate::catalog::MetricDef] = &[$(&$id),*];
    };
}

mod agent;
mod app;
mod checkpoint;
pub mod checks;
mod findings;
mod host;
pub(crate) mod otel;
mod pg;
mod pg_checks;
mod process;
mod series;

pub(crate) use series::Series;

pub(crate) use agent::*;
pub(crate) use app::*;
pub(crate) use checkpoint::*;
pub(crate) use findings::*;
pub(crate) use host::*;
pub(crate) use pg::*;
pub(crate) use pg_checks::*;
pub(crate) use process::*;

/// Every subsystem's list, in documentation order.
static PARTS: &[&[&MetricDef]] = &[
    pg::PG,
    pg_checks::PG_CHECKS,
    findings::FINDINGS,
    app::APP,
    checkpoint::CHECKPOINT,
    host::HOST,
    agent::AGENT,
    process::PROCESS,
];

/// Every metric, in documentation order.
pub fn all() -> impl Iterator<Item = &'static MetricDef> {
    PARTS.iter().flat_map(|p| p.iter().copied())
}

/// `docs/metrics.md`, generated from the catalog.
pub fn markdown() -> String {
    let mut s = String::from(
        "# Metrics\n\nGenerated from `src/catalog.rs` by `cargo test` (set `UPDATE_DOCS=1` to rewrite); do not edit by hand.\n\n\
         Every series the agent exports comes from this list. Values come from the last completed\n\
         check run held in the snapshot: a scrape never queries the database. A failed check exports\n\
         no stale values: its series disappear and `rose_agent_check_success{check}` drops to 0.\n\n\
         `/metrics` serves the Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper's\n\
         `Accept` asks for it (Prometheus does: counters are then typed without `_total`, units are\n\
         declared, the body ends with `# EOF`), gzipped when `Accept-Encoding` allows; HEAD too.\n\n\
         OTLP export uses the OTel name and UCUM unit in the last two columns (see docs/otel.md).\n\n\
         | name | type | unit | labels | help | OTel name | OTel unit |\n|---|---|---|---|---|---|---|\n",
    );
    for d in all() {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | `{}` | `{}` |\n",
            d.name,
            d.kind.as_str(),
            d.unit,
            if d.labels.is_empty() {
                "".to_owned()
            } else {
                d.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            d.help,
            otel::otel_name(d),
            otel::otel_unit(d)
        ));
    }
    s.push_str(
        "\n## Error kinds\n\nThe `kind` label of `rose_agent_check_errors_total` takes one of:\n\n",
    );
    for k in crate::error::ErrorKind::ALL {
        s.push_str(&format!("- `{}`: {}\n", k.as_str(), k.describe()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in all() {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            // The standard process series keep their standard names.
            assert!(
                d.name.starts_with("rose_") || PROCESS.contains(&d),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            if d.unit == "seconds" {
                assert!(
                    d.name.ends_with("_seconds") || d.name.ends_with("_seconds_total"),
                    "{}",
                    d.name
                );
            }
            if d.unit == "bytes" {
                assert!(
                    d.name.ends_with("_bytes") || d.name.ends_with("_bytes_total"),
                    "{}",
                    d.name
                );
            }
            assert!(d.help.ends_with('.'), "{}", d.name);
        }
    }
}
